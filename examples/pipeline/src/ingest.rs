//! The HTTP ingest endpoint.
//!
//! - `POST /events` with a JSON object as the body: the event is written durably to the
//!   storage directory, then handed to the processing loop, and the answer is
//!   `202 {"accepted": "<event id>"}`. A body that is not JSON, or not a JSON object, is
//!   answered `400 {"error": "..."}` and nothing is stored. The content type is not
//!   checked.
//! - `GET /health`: `200 {"status": "ok"}` (the server only accepts requests once events
//!   left from an earlier run have been queued).
//! - Any other path is `404`, any other method on these paths `405`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::chain::error_chain;
use crate::process::Queued;
use crate::propagate::Propagated;
use crate::storage::Storage;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// The event storage.
    pub storage: Arc<Storage>,
    /// The processing loop's inbox.
    pub queue: mpsc::UnboundedSender<Queued>,
}

/// The ingest endpoint's routes.
pub fn router(ingest: Ingest) -> Router {
    Router::new()
        .route("/events", post(accept_event))
        .route("/health", get(health))
        .fallback(not_found)
        .with_state(ingest)
}

async fn accept_event(State(ingest): State<Ingest>, headers: HeaderMap, body: Bytes) -> Response {
    let event = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(event)) => event,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "the body must be a JSON object"),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not JSON: {e}"),
            );
        }
    };
    let propagated = Propagated::from_headers(&headers);
    let storage = Arc::clone(&ingest.storage);
    let stored = tokio::task::spawn_blocking(move || storage.store(event, propagated)).await;
    let event = match stored {
        Ok(Ok(event)) => event,
        Ok(Err(e)) => {
            let message = format!("failed to {}", error_chain(&e));
            eprintln!("pipeline: {message}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, &message);
        }
        Err(e) => {
            let message = format!("failed to store the event: {e}");
            eprintln!("pipeline: {message}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, &message);
        }
    };
    let id = event.id.clone();
    // If the loop is gone the process is exiting; the event stays stored for the next run.
    let _ = ingest.queue.send(Queued::fresh(event));
    (StatusCode::ACCEPTED, Json(json!({ "accepted": id }))).into_response()
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint: try POST /events or GET /health",
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
