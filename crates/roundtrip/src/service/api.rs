//! The listener service's HTTP API (axum).
//!
//! | endpoint | token | what |
//! | --- | --- | --- |
//! | `GET /healthz` | none | the process is alive |
//! | `GET /readyz` | none | every listener subscribed and the store reachable; each channel's state |
//! | `GET /openapi.json` | read | this API as an OpenAPI 3.0 document (`schema/openapi.json`) |
//! | `GET /metrics` | read | Prometheus text: per channel, never per run |
//! | `GET /v1/service` | read | the service: its name, its own run, its channels and their states |
//! | `GET /v1/runs` | read | the newest runs (`?limit=`) |
//! | `GET /v1/runs/{run}` | read | one run |
//! | `GET /v1/runs/{run}/observations` | read | a run's observations by `after` (cursor), `limit`, `channel`, `correlation_id` |
//! | `GET /v1/runs/{run}/events` | read | server-sent events, one per observation of the run (also one not recorded yet: a runner subscribes before it sends); `Last-Event-ID` (or `?after=`) resumes |
//! | `POST /v1/retention` | admin | deletes runs older than the retention now (Postgres) |
//!
//! Errors are JSON, `{"error": "…"}`. A missing or wrong token is `401` with
//! `WWW-Authenticate: Bearer`; a read token on an admin operation is `403`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use roundtrip_core::observation::Observation;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::auth::Access;
use super::{ChannelState, Shared};
use crate::serve::{ServeLimits, serve as serve_http};
use crate::store::{RunRecord, StoreError};

/// The most observations one page holds.
pub const MAX_PAGE: usize = 1000;
/// The most runs one listing holds.
pub const MAX_RUNS: usize = 1000;
/// The most payload bytes one page (or one read of a stream's backlog) holds.
pub const MAX_PAGE_BYTES: usize = 16 << 20;
/// How many observations a stream reads from its backlog at once.
const BACKLOG_PAGE: usize = 64;
/// How many events a stream holds for a client that does not read them.
const STREAM_BUFFER: usize = 16;
/// How many observations one page request scans looking for matches before it answers
/// with what it found and a cursor to go on from.
const MAX_SCAN: usize = 10_000;
/// How often an idle event stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The largest request body (the API takes none).
const MAX_REQUEST_BODY: usize = 16 << 10;
/// The longest run id a stream is opened for.
const MAX_RUN_ID: usize = 128;
/// How long the readiness check waits for the store.
const STORE_CHECK: Duration = Duration::from_secs(2);

type App = Arc<Shared>;

/// An error answer.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong, and what to do.
    pub error: String,
}

/// One channel of the service, as `/readyz` and `/v1/service` show it.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ChannelStatus {
    /// The channel's name, as the config (and a suite) names it.
    pub name: String,
    /// Its transport.
    pub transport: String,
    /// `listening`, `reconnecting` or `stopped`.
    pub state: String,
    /// Where the SUT delivers to, for a webhook channel (`/v1/service` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Whether the store answered.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct StoreStatus {
    /// It answered.
    pub ok: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The readiness answer.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Readiness {
    /// Every listener subscribed and the store answering.
    pub ready: bool,
    /// The store.
    pub store: StoreStatus,
    /// Each channel.
    pub channels: Vec<ChannelStatus>,
}

/// What a runner needs to know of the service.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ServiceBody {
    /// The service's name.
    pub name: String,
    /// Its own run, holding the observations that name no run.
    pub home_run: String,
    /// Its channels.
    pub channels: Vec<ChannelStatus>,
}

/// A list of runs, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct RunsBody {
    /// The runs.
    pub runs: Vec<RunRecord>,
}

/// A page of a run's observations.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ObservationsBody {
    /// The observations, in sequence order.
    pub observations: Vec<Observation>,
    /// Where to go on from (`after=`) while there may be more; `null` at the end.
    pub next: Option<u64>,
}

/// What retention deleted.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct DeletedBody {
    /// Runs deleted.
    pub deleted_runs: u64,
    /// Their observations.
    pub deleted_observations: u64,
}

/// Serves the API until the service's shutdown flag is set.
pub(crate) async fn serve(
    socket: TcpListener,
    shared: App,
    tls: Option<crate::serve::ServerTls>,
    grace: Duration,
) {
    let mut shutdown = shared.shutdown.clone();
    let limits = ServeLimits {
        header_timeout: Duration::from_secs(10),
        max_connections: 256,
        grace,
    };
    let stop = async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    };
    serve_http(socket, router(shared), limits, tls, || {}, stop).await;
}

/// The routes, each behind its token.
pub(crate) fn router(shared: App) -> Router {
    let read = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/service", get(service))
        .route("/openapi.json", get(openapi))
        .route("/v1/runs", get(runs))
        .route("/v1/runs/{run}", get(run))
        .route("/v1/runs/{run}/observations", get(observations))
        .route("/v1/runs/{run}/events", get(events))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            require_read,
        ));
    let admin = Router::new()
        .route("/v1/retention", post(retention))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            require_admin,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(read)
        .merge(admin)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            time_limit,
        ))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .with_state(shared)
}

/// A JSON error.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

/// The answer to a store failure: the store's error, without its cause's details
/// (they may name hosts); `503`, since a retry may succeed.
fn store_error(e: &StoreError) -> Response {
    match e {
        StoreError::NoSuchRun(_) => error(StatusCode::NOT_FOUND, "no such run"),
        other => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store failed: failed to {other}"),
        ),
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint; see /openapi.json")
}

fn access(app: &Shared, headers: &HeaderMap) -> Access {
    if !app.tokens.any() {
        // An open API: the config allows it on loopback only.
        return Access::Admin;
    }
    app.tokens.check(
        headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    )
}

fn unauthorized() -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "a bearer token is required: `Authorization: Bearer TOKEN`",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"roundtrip\""),
    );
    response
}

async fn require_read(State(app): State<App>, request: Request, next: Next) -> Response {
    match access(&app, request.headers()) {
        Access::None => unauthorized(),
        Access::Read | Access::Admin => next.run(request).await,
    }
}

async fn require_admin(State(app): State<App>, request: Request, next: Next) -> Response {
    match access(&app, request.headers()) {
        Access::None => unauthorized(),
        Access::Read => error(StatusCode::FORBIDDEN, "this operation needs an admin token"),
        Access::Admin => next.run(request).await,
    }
}

/// Every request answers within the request timeout (an event stream's response
/// starts at once; its body is not bounded by it).
async fn time_limit(State(app): State<App>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(app.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the request took longer than the service's request timeout",
        ),
    }
}

async fn openapi() -> Response {
    axum::Json(super::openapi::document()).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Each channel's state; with its URL (for `/v1/service`, which needs a token).
fn channel_states(app: &Shared, with_url: bool) -> Vec<ChannelStatus> {
    app.channels
        .iter()
        .map(|c| ChannelStatus {
            name: c.name.clone(),
            transport: c.transport.to_owned(),
            state: c.state().as_str().to_owned(),
            url: c.url.clone().filter(|_| with_url),
        })
        .collect()
}

/// What a runner needs to know of the service: its channels (which it then does not
/// listen on itself), where a webhook channel is delivered to (for the SUT's
/// `{{ channel.NAME.url }}`), and its own run (which tells a runner whether they share
/// a store).
async fn service(State(app): State<App>) -> Response {
    axum::Json(ServiceBody {
        name: app.name.clone(),
        home_run: app.home_run.clone(),
        channels: channel_states(&app, true),
    })
    .into_response()
}

async fn readyz(State(app): State<App>) -> Response {
    let store = match tokio::time::timeout(STORE_CHECK, app.store.run(&app.home_run)).await {
        Ok(Ok(_)) => StoreStatus {
            ok: true,
            error: None,
        },
        Ok(Err(e)) => StoreStatus {
            ok: false,
            error: Some(format!("failed to {e}")),
        },
        Err(_) => StoreStatus {
            ok: false,
            error: Some("the store did not answer within 2s".to_owned()),
        },
    };
    let channels = channel_states(&app, false);
    let ready = store.ok && channels.iter().all(|c| c.state == "listening");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(Readiness {
            ready,
            store,
            channels,
        }),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    limit: Option<usize>,
}

async fn runs(State(app): State<App>, Query(q): Query<RunsQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_RUNS);
    match app.store.runs(limit).await {
        Ok(runs) => axum::Json(RunsBody { runs }).into_response(),
        Err(e) => store_error(&e),
    }
}

/// Whether `run` can name a run at all: not empty, not too long, no NUL (which a
/// Postgres store cannot even look up).
fn plausible_run(run: &str) -> bool {
    !run.is_empty() && run.len() <= MAX_RUN_ID && !run.contains('\0')
}

async fn run(State(app): State<App>, Path(run): Path<String>) -> Response {
    if !plausible_run(&run) {
        return error(StatusCode::NOT_FOUND, "no such run");
    }
    match app.store.run(&run).await {
        Ok(Some(record)) => axum::Json(record).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such run"),
        Err(e) => store_error(&e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObservationsQuery {
    after: Option<u64>,
    limit: Option<usize>,
    channel: Option<String>,
    correlation_id: Option<String>,
}

async fn observations(
    State(app): State<App>,
    Path(run): Path<String>,
    Query(q): Query<ObservationsQuery>,
) -> Response {
    if !plausible_run(&run) {
        return error(StatusCode::NOT_FOUND, "no such run");
    }
    match app.store.run(&run).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such run"),
        Err(e) => return store_error(&e),
    }
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let wanted = |o: &Observation| {
        q.channel.as_deref().is_none_or(|c| o.channel == c)
            && q.correlation_id
                .as_deref()
                .is_none_or(|id| o.correlation_id.as_deref() == Some(id))
    };
    let mut found = Vec::new();
    let mut bytes = 0usize;
    let mut after = q.after.unwrap_or(0);
    let mut scanned = 0;
    // Pages of the store are read whole (a filter that matches little costs few
    // queries); `next` is where to go on from, while there may be more. A page ends at
    // `limit` observations or `MAX_PAGE_BYTES` of payload, whichever comes first.
    let next = 'scan: loop {
        let page = match app.store.observations(&run, after, MAX_PAGE).await {
            Ok(page) => page,
            Err(e) => return store_error(&e),
        };
        let full = page.len() == MAX_PAGE;
        scanned += page.len();
        for o in page {
            after = o.seq;
            if wanted(&o) {
                bytes += o.payload.bytes.len();
                found.push(o);
                if found.len() == limit || bytes >= MAX_PAGE_BYTES {
                    break 'scan Some(after);
                }
            }
        }
        if full && scanned >= MAX_SCAN {
            break Some(after);
        }
        if !full {
            break None;
        }
    };
    axum::Json(ObservationsBody {
        observations: found,
        next,
    })
    .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<u64>,
}

/// One stream of a run's observations. The store's feed is subscribed before the
/// backlog is read, and every observation is sent once, in sequence order, so a
/// stream resumed from its last event id neither skips nor repeats.
async fn events(
    State(app): State<App>,
    Path(run): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    let resume = match headers.get("last-event-id") {
        None => q.after.unwrap_or(0),
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(seq) => seq,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "`Last-Event-ID` must be the id of an event this stream sent (a number)",
                );
            }
        },
    };
    if !plausible_run(&run) {
        return error(StatusCode::NOT_FOUND, "no such run");
    }
    // Subscribed before the backlog is read. A run the store does not hold yet is
    // streamed once it does: a runner subscribes before its first send.
    let feed = app.store.subscribe();
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(STREAM_BUFFER);
    tokio::spawn(stream(Arc::clone(&app), run, resume, feed, tx));
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// Counts the open streams while it lives.
struct StreamGuard(App);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

fn event_of(o: &Observation) -> Event {
    let data = serde_json::to_string(o).unwrap_or_else(|_| "{}".to_owned());
    Event::default()
        .id(o.seq.to_string())
        .event("observation")
        .data(data)
}

/// Sends the run's observations after `last`: the backlog from the store, then the
/// feed, until the client leaves or the service stops.
async fn stream(
    app: App,
    run: String,
    mut last: u64,
    mut feed: tokio::sync::broadcast::Receiver<Arc<Observation>>,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    app.streams.fetch_add(1, Ordering::Relaxed);
    let _guard = StreamGuard(Arc::clone(&app));
    let mut shutdown = app.shutdown.clone();
    let mut backlog = true;
    loop {
        if backlog {
            // Everything committed after `last` so far; what commits meanwhile is on the
            // feed too, and skipped there by its sequence number.
            loop {
                let page = match app.store.observations(&run, last, BACKLOG_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        let message = json!({ "error": format!("failed to {e}") }).to_string();
                        let _ = tx
                            .send(Ok(Event::default().event("error").data(message)))
                            .await;
                        return;
                    }
                };
                let done = page.len() < BACKLOG_PAGE;
                for o in &page {
                    if tx.send(Ok(event_of(o))).await.is_err() {
                        return;
                    }
                    last = o.seq;
                }
                if done {
                    break;
                }
            }
            backlog = false;
        }
        tokio::select! {
            received = feed.recv() => match received {
                Ok(o) if o.run_id == run && o.seq > last => {
                    if tx.send(Ok(event_of(&o))).await.is_err() {
                        return;
                    }
                    last = o.seq;
                }
                Ok(_) => {}
                // Fell behind the feed: read what was missed from the store.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => backlog = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            () = async { let _ = shutdown.wait_for(|stopping| *stopping).await; } => return,
            () = tx.closed() => return,
        }
    }
}

async fn retention(State(app): State<App>) -> Response {
    match super::retention::trim(&app).await {
        Ok(Some((runs, observations))) => axum::Json(DeletedBody {
            deleted_runs: runs,
            deleted_observations: observations,
        })
        .into_response(),
        Ok(None) => error(
            StatusCode::CONFLICT,
            "this store does not delete old runs: an SQLite store is a file, and DynamoDB \
             expires items itself (`ttl=` in its URL)",
        ),
        Err(e) => store_error(&e),
    }
}

/// One per-channel metric: name, type, help, and how to read it.
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&super::Channel) -> u64,
);

/// A Prometheus label value, escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(State(app): State<App>) -> Response {
    let mut out = String::new();
    let per_channel: [Metric; 8] = [
        (
            "roundtrip_listen_observations_total",
            "counter",
            "Observations committed to the store.",
            |c| c.stats.recorded.load(Ordering::Relaxed),
        ),
        (
            "roundtrip_listen_faults_total",
            "counter",
            "Messages rejected or not recorded (store failures, bad requests).",
            |c| c.stats.faults.load(Ordering::Relaxed),
        ),
        (
            "roundtrip_listen_redelivered_total",
            "counter",
            "Deliveries the broker marked as redeliveries.",
            |c| c.stats.redelivered.load(Ordering::Relaxed),
        ),
        (
            "roundtrip_listen_unattributed_total",
            "counter",
            "Observations that named no run, kept under the service's own run.",
            |c| c.stats.unattributed.load(Ordering::Relaxed),
        ),
        (
            "roundtrip_listen_dropped_total",
            "counter",
            "Observations that named no run, dropped by `record: correlated_only`.",
            |c| c.stats.dropped.load(Ordering::Relaxed),
        ),
        (
            "roundtrip_listen_gaps_total",
            "counter",
            "Gaps in the subscription (outages, drops, consumer errors).",
            |c| c.stats.gaps().len() as u64,
        ),
        (
            "roundtrip_listen_reconnects_total",
            "counter",
            "Outages of the source that ended with the listener back.",
            |c| {
                c.stats
                    .gaps()
                    .iter()
                    .filter(|g| g.kind == crate::transport::GapKind::Outage && g.end.is_some())
                    .count() as u64
            },
        ),
        (
            "roundtrip_listen_up",
            "gauge",
            "1 while the channel's listener is subscribed.",
            |c| u64::from(c.state() == ChannelState::Listening),
        ),
    ];
    for (name, kind, help, value) in per_channel {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for c in &app.channels {
            let _ = writeln!(out, "{name}{{channel=\"{}\"}} {}", label(&c.name), value(c));
        }
    }
    let name = "roundtrip_listen_record_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from receiving a message to its commit (the listener's lag).\n\
         # TYPE {name} summary"
    );
    for c in &app.channels {
        let nanos = c.stats.record_nanos.load(Ordering::Relaxed);
        let count = c.stats.recorded.load(Ordering::Relaxed);
        let channel = label(&c.name);
        let _ = writeln!(
            out,
            "{name}_sum{{channel=\"{channel}\"}} {:.9}\n{name}_count{{channel=\"{channel}\"}} {count}",
            nanos as f64 / 1e9
        );
    }
    for (name, kind, help, value) in [
        (
            "roundtrip_listen_event_streams",
            "gauge",
            "Event streams open now.",
            app.streams.load(Ordering::Relaxed),
        ),
        (
            "roundtrip_listen_retention_runs_total",
            "counter",
            "Runs deleted by retention.",
            app.retention_runs.load(Ordering::Relaxed),
        ),
        (
            "roundtrip_listen_retention_observations_total",
            "counter",
            "Observations deleted by retention.",
            app.retention_observations.load(Ordering::Relaxed),
        ),
        (
            "roundtrip_listen_retention_failures_total",
            "counter",
            "Retention passes that failed.",
            app.retention_failures.load(Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
