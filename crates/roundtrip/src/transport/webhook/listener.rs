//! The `webhook` listener: a bounded HTTP/1 server that answers after the store committed.

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
use base64::Engine as _;
use roundtrip_core::model::{ChannelOptions, WebhookChannel};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::serve::ServeLimits;
use crate::transport::{
    BoundAddress, Delivery, ListenError, Listener, ObservationSink, PlanError, Received,
    RunningListener,
};

/// The largest body the server reads; larger ones answer `413 Payload Too Large`.
pub const MAX_BODY: usize = 64 << 20;

/// How long [`RunningListener::stop`] waits for requests in flight.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The header that names the headers whose values were not UTF-8 and are stored
/// base64-encoded (comma-separated, lowercase).
pub const BASE64_HEADERS: &str = "x-roundtrip-base64-headers";

/// What one client may cost the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's headers, and the longest idle time between requests on
    /// a kept-alive connection.
    pub header_timeout: Duration,
    /// Time to send a request's body.
    pub body_timeout: Duration,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// A webhook server that has not started yet.
#[derive(Debug)]
pub struct WebhookListener {
    channel: String,
    listen: String,
    path: String,
    limits: Limits,
}

impl WebhookListener {
    /// A listener for `channel`; its options must follow the channel's rules (a
    /// `host:port` to listen on, a path starting with `/`), as the loader checks them.
    pub fn new(channel: &str, spec: &WebhookChannel) -> Result<WebhookListener, PlanError> {
        if let Some(problem) = spec.problems().into_iter().next() {
            return Err(PlanError::Invalid {
                channel: channel.to_owned(),
                message: format!("{}; {}", problem.message(), problem.help),
            });
        }
        Ok(WebhookListener {
            channel: channel.to_owned(),
            listen: spec.listen.trim().to_owned(),
            path: spec.path.clone(),
            limits: Limits::default(),
        })
    }

    /// The same listener with other [`Limits`] (tests use short timeouts).
    pub fn with_limits(mut self, limits: Limits) -> WebhookListener {
        self.limits = limits;
        self
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
    limits: Limits,
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
        let bound = BoundAddress::http(local, &self.path);

        let limits = self.limits;
        let shared = Arc::new(Shared {
            path: self.path,
            sink: sink.clone(),
            limits,
        });
        let app = Router::new().fallback(handle).with_state(shared);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, limits, sink, stop_rx));
        // The socket is bound and listening: connections queue in the backlog until the
        // task accepts them, so the listener is ready as of now.
        Ok(
            RunningListener::new(endpoint, Delivery::AtLeastOnce, false, stop_tx, task)
                .bound_at(bound),
        )
    }
}

/// Serves until stopped (or the handle is dropped); a connection over the limit is a
/// fault.
async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    sink: ObservationSink,
    stop: oneshot::Receiver<()>,
) {
    let limits = ServeLimits {
        header_timeout: limits.header_timeout,
        max_connections: limits.max_connections,
        grace: STOP_GRACE,
    };
    let stop = async {
        let _ = stop.await;
    };
    crate::serve::serve(listener, app, limits, None, || sink.fault(), stop).await;
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
    let keep = shared.sink.max_payload();
    let read = tokio::time::timeout(shared.limits.body_timeout, read_body(body, keep, MAX_BODY));
    let (body, size) = match read.await {
        Ok(Ok(Some(read))) => read,
        Ok(Ok(None)) => {
            shared.sink.fault();
            return too_large();
        }
        Err(_) => {
            shared.sink.fault();
            return (
                StatusCode::REQUEST_TIMEOUT,
                "roundtrip: the body took too long to arrive\n",
            )
                .into_response();
        }
        Ok(Err(_)) => {
            // The client went away or sent a malformed body: nothing to record.
            shared.sink.fault();
            return (
                StatusCode::BAD_REQUEST,
                "roundtrip: could not read the body\n",
            )
                .into_response();
        }
    };
    let mut meta = vec![
        ("method".to_owned(), parts.method.as_str().to_owned()),
        ("path".to_owned(), parts.uri.path().to_owned()),
    ];
    if let Some(query) = parts.uri.query() {
        meta.push((
            "query".to_owned(),
            roundtrip_core::redact::url(&format!("?{query}")),
        ));
    }
    let received = Received {
        body,
        headers: headers(&parts.headers),
        message_id: None,
        key: None,
        redelivered: false,
        size: Some(size),
        meta,
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

/// Reads a body, keeping its first `keep` bytes; returns them with the full size, or
/// `Ok(None)` when it is longer than `limit`.
async fn read_body(
    mut body: Body,
    keep: usize,
    limit: usize,
) -> Result<Option<(Vec<u8>, u64)>, axum::Error> {
    let hint = usize::try_from(body.size_hint().lower()).unwrap_or(keep);
    let mut out = Vec::with_capacity(hint.min(keep));
    let mut size = 0usize;
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            size = size.saturating_add(data.len());
            if size > limit {
                return Ok(None);
            }
            let room = keep.saturating_sub(out.len());
            out.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok(Some((out, size as u64)))
}

/// Header names and values. A value that is not UTF-8 is kept exactly: base64-encoded,
/// and its name listed in [`BASE64_HEADERS`].
fn headers(map: &HeaderMap) -> Vec<(String, String)> {
    let mut encoded = Vec::new();
    let mut out: Vec<(String, String)> = map
        .iter()
        .map(|(name, value)| {
            let text = match std::str::from_utf8(value.as_bytes()) {
                Ok(text) => text.to_owned(),
                Err(_) => {
                    encoded.push(name.as_str().to_owned());
                    base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
                }
            };
            (name.as_str().to_owned(), text)
        })
        .collect();
    if !encoded.is_empty() {
        encoded.dedup();
        out.push((BASE64_HEADERS.to_owned(), encoded.join(",")));
    }
    out
}
