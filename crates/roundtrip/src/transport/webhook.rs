//! The `webhook` listener: an HTTP server that the SUT calls.
//!
//! [`WebhookListener::start`] binds the channel's `listen` address and returns once the
//! server accepts connections; with port 0 the operating system picks a free port and
//! [`RunningListener::endpoint`] carries the real one (`http://127.0.0.1:43121/events`),
//! so a test can hand it to the SUT.
//!
//! Every `POST` or `PUT` to the channel's `path` is one observation: the body (any bytes:
//! JSON, text, binary, empty) and the headers. The server answers `200 OK` only after
//! the store has committed the observation, and `503 Service Unavailable` when it could
//! not, so a SUT that retries on failure is recorded at least once. Other paths answer
//! `404`, other methods `405`; both are counted as faults and not recorded.
//!
//! Bodies larger than the channel's `max_payload` are accepted and recorded truncated
//! (marked so, with their full size). Bodies beyond a hard cap of 64 MiB answer `413`
//! and count as faults.
//!
//! [`RunningListener::stop`] stops accepting connections, lets requests in flight finish
//! (up to 10 s), then returns.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use roundtrip_core::model::WebhookChannel;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

use super::registry::PlanError;
use super::{ListenError, Listener, ObservationSink, Received, RunningListener};

/// The largest body the server reads; larger ones answer `413 Payload Too Large`.
pub const MAX_BODY: usize = 64 << 20;

/// How long [`RunningListener::stop`] waits for requests in flight.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A webhook server that has not started yet.
#[derive(Debug)]
pub struct WebhookListener {
    channel: String,
    listen: String,
    path: String,
}

impl WebhookListener {
    /// A listener for `channel`; checks the path.
    pub fn new(channel: &str, spec: &WebhookChannel) -> Result<WebhookListener, PlanError> {
        if !spec.path.starts_with('/') {
            return Err(PlanError::Invalid {
                channel: channel.to_owned(),
                message: format!("the webhook path `{}` must start with `/`", spec.path),
            });
        }
        if spec.listen.trim().is_empty() {
            return Err(PlanError::Invalid {
                channel: channel.to_owned(),
                message: "the webhook `listen` address is empty; write `host:port`, e.g. \
                          `127.0.0.1:7002` (port 0 picks a free port)"
                    .to_owned(),
            });
        }
        Ok(WebhookListener {
            channel: channel.to_owned(),
            listen: spec.listen.trim().to_owned(),
            path: spec.path.clone(),
        })
    }

    fn start_error(&self, message: String, source: std::io::Error) -> ListenError {
        ListenError::Start {
            channel: self.channel.clone(),
            message,
            source: Some(Box::new(source)),
        }
    }
}

#[derive(Debug)]
struct Shared {
    path: String,
    sink: ObservationSink,
}

#[async_trait]
impl Listener for WebhookListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let listener = TcpListener::bind(&self.listen).await.map_err(|e| {
            let message = match e.kind() {
                std::io::ErrorKind::AddrInUse => format!(
                    "{} is already in use (another process listens there; pick another port \
                     or stop it)",
                    self.listen
                ),
                std::io::ErrorKind::AddrNotAvailable => format!(
                    "{} is not an address of this machine; listen on `127.0.0.1:PORT` or \
                     `0.0.0.0:PORT`",
                    self.listen
                ),
                std::io::ErrorKind::PermissionDenied => format!(
                    "not allowed to listen on {} (ports below 1024 need privileges)",
                    self.listen
                ),
                _ => format!("cannot listen on {}", self.listen),
            };
            self.start_error(message, e)
        })?;
        let local: SocketAddr = listener
            .local_addr()
            .map_err(|e| self.start_error(format!("cannot listen on {}", self.listen), e))?;
        let endpoint = format!("http://{local}{}", self.path);

        let shared = Arc::new(Shared {
            path: self.path,
            sink,
        });
        let app = Router::new().fallback(handle).with_state(shared);

        let shutdown = Arc::new(Notify::new());
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown({
                let shutdown = Arc::clone(&shutdown);
                async move { shutdown.notified().await }
            })
            .into_future();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tokio::pin!(serve);
            tokio::select! {
                // `serve` only ends on its own if accepting fails for good.
                _ = &mut serve => {}
                // Stopped, or the handle was dropped: stop accepting, finish in-flight
                // requests (bounded, in case a client never finishes its request).
                _ = stop_rx => {
                    shutdown.notify_one();
                    let _ = tokio::time::timeout(STOP_GRACE, serve).await;
                }
            }
        });
        // The socket is bound and listening: connections queue in the backlog until the
        // task accepts them, so the listener is ready as of now.
        Ok(RunningListener::new(
            endpoint,
            "at-least-once",
            false,
            stop_tx,
            task,
        ))
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if request.uri().path() != shared.path {
        shared.sink.fault();
        return (
            StatusCode::NOT_FOUND,
            format!("roundtrip: nothing here; post to {}\n", shared.path),
        )
            .into_response();
    }
    if request.method() != Method::POST && request.method() != Method::PUT {
        shared.sink.fault();
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST, PUT")],
            "roundtrip: use POST or PUT\n",
        )
            .into_response();
    }
    let (parts, body) = request.into_parts();
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("roundtrip: bodies are limited to {MAX_BODY} bytes\n"),
        )
            .into_response()
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        shared.sink.fault();
        return too_large();
    }
    let body = match read_body(body, MAX_BODY).await {
        Ok(Some(body)) => body,
        Ok(None) => {
            shared.sink.fault();
            return too_large();
        }
        Err(_) => {
            // The client went away or sent a malformed body: nothing to record.
            shared.sink.fault();
            return (
                StatusCode::BAD_REQUEST,
                "roundtrip: could not read the body\n",
            )
                .into_response();
        }
    };
    let received = Received {
        body,
        headers: headers(&parts.headers),
        message_id: None,
        key: None,
        redelivered: false,
    };
    // The sink counts store failures as faults itself.
    match shared.sink.record(received).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("roundtrip: failed to record the message: {e}\n"),
        )
            .into_response(),
    }
}

/// Reads a body up to `limit` bytes; `Ok(None)` when it is longer.
async fn read_body(mut body: Body, limit: usize) -> Result<Option<Vec<u8>>, axum::Error> {
    let hint = usize::try_from(body.size_hint().lower()).unwrap_or(limit);
    let mut out = Vec::with_capacity(hint.min(limit));
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            if out.len() + data.len() > limit {
                return Ok(None);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Some(out))
}

/// Header names and values; values that are not UTF-8 are decoded lossily.
fn headers(map: &HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}
