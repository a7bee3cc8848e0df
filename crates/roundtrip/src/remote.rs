//! Channels recorded by a deployed listener service (`roundtrip listen`) instead of by
//! the run: `roundtrip run --remote URL`.
//!
//! Before planning, the runner asks the service what it records (`GET /v1/service`);
//! each of the suite's listened channels that the service has is remote: the run starts
//! no listener for it. Its [`RemoteListener`] checks, before the first send, that the
//! service's listener on it is subscribed, then waits on one of two feeds:
//! - **the store** ([`Feed::Store`]), when the runner's store is the service's (the
//!   service's own run is in it): the service records into the run's rows, and the
//!   store's cross-process feed (Postgres) brings them to the run;
//! - **the service's event stream** ([`Feed::Events`]) otherwise (an SQLite or DynamoDB
//!   store of the runner's own): each observation of the run is copied into the run's
//!   store as the service recorded it, with its receive time. A dropped stream is
//!   resumed from its last event id (nothing skipped, nothing repeated), the time it
//!   was away a gap.
//!
//! An observation recorded in another process has only a wall-clock receive time, so
//! its latency is measured by wall clocks; the verdict says `wall_clock`.

use std::time::Duration;

use async_trait::async_trait;
use roundtrip_core::observation::Observation;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::transport::backoff::Backoff;
use crate::transport::{
    BoundAddress, Delivery, ListenError, Listener, ObservationSink, Outage, RunningListener,
};

/// How long one request to the service may take (opening a stream included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an event stream may stay silent: three of the service's keep-alives.
const IDLE: Duration = Duration::from_secs(45);
/// The metadata of a copy of a service's observation: the original's sequence number in
/// the service's store.
pub const COPY_OF: &str = "copy_of";

/// Where the listener service is, and the token to read it with.
#[derive(Clone)]
pub struct Remote {
    /// Its API's base URL, e.g. `http://listener.staging:7070`.
    pub url: String,
    /// A read token (from `ROUNDTRIP_REMOTE_TOKEN`), if the service wants one.
    pub token: Option<String>,
    /// A PEM file of the authorities to trust for an `https://` service (from
    /// `ROUNDTRIP_REMOTE_CA`), beside the system's.
    pub ca: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &roundtrip_core::redact::url(&self.url))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("ca", &self.ca)
            .finish()
    }
}

/// Why the service could not be used.
#[derive(Debug, thiserror::Error)]
#[error("use the listener service at {url}: {message}")]
pub struct RemoteError {
    /// The service's URL, secrets masked.
    pub url: String,
    /// What went wrong and what to do.
    pub message: String,
    /// Whether the configuration is at fault (the URL, the CA file, the token, a suite
    /// that does not fit the service): exit code 2, not 3.
    pub usage: bool,
}

/// What the service said of itself.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceInfo {
    /// Its name.
    pub name: String,
    /// Its own run: in the runner's store only if they share it.
    pub home_run: String,
    /// Its channels, with their states.
    pub channels: Vec<ChannelInfo>,
}

/// One channel of the service.
#[derive(Debug, Clone, Deserialize)]
pub struct ChannelInfo {
    /// The channel's name, as the suite names it.
    pub name: String,
    /// Its transport.
    pub transport: String,
    /// `listening`, `reconnecting` or `stopped`.
    pub state: String,
    /// Where the SUT delivers to, for a channel that binds an address (a webhook).
    #[serde(default)]
    pub url: Option<String>,
}

impl Remote {
    fn error(&self, message: impl Into<String>) -> RemoteError {
        RemoteError {
            url: roundtrip_core::redact::url(&self.url),
            message: message.into(),
            usage: false,
        }
    }

    /// An error of the configuration: the URL, the CA file or the token.
    fn usage(&self, message: impl Into<String>) -> RemoteError {
        RemoteError {
            usage: true,
            ..self.error(message)
        }
    }

    /// An HTTP client for the service: its URL's scheme checked (`https://` needs the
    /// `tls` feature), `ca` trusted.
    fn client(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::Client, RemoteError> {
        let scheme = self
            .url
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("http") if self.ca.is_some() => {
                return Err(self.usage(
                    "ROUNDTRIP_REMOTE_CA names the authority of an https:// service, but the \
                     service's URL is http://: make it https:// (the service's `api.tls`), or \
                     unset ROUNDTRIP_REMOTE_CA",
                ));
            }
            Some("http") => {}
            Some("https") if cfg!(feature = "tls") => {}
            Some("https") => {
                return Err(self.usage(
                    "an https:// service needs a roundtrip built with TLS (the `tls` feature, \
                     or `full`)",
                ));
            }
            _ => {
                return Err(self.usage(
                    "the service's URL is its API's, `http://HOST:PORT` or `https://HOST:PORT`",
                ));
            }
        }
        #[cfg(feature = "tls")]
        let builder = match &self.ca {
            None => builder,
            Some(path) => {
                let pem = crate::pem::read(path).map_err(|why| {
                    self.usage(format!("ROUNDTRIP_REMOTE_CA: `{}` {why}", path.display()))
                })?;
                let roots = reqwest::Certificate::from_pem_bundle(&pem)
                    .ok()
                    .filter(|roots| !roots.is_empty())
                    .ok_or_else(|| {
                        self.usage(format!(
                            "ROUNDTRIP_REMOTE_CA names `{}`, which holds no PEM certificate",
                            path.display()
                        ))
                    })?;
                roots
                    .into_iter()
                    .fold(builder, reqwest::ClientBuilder::add_root_certificate)
            }
        };
        builder
            .build()
            .map_err(|e| self.error(format!("no HTTP client: {e}")))
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }

    fn get(&self, client: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        let request = client.get(self.endpoint(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Asks the service what it records.
    pub async fn describe(&self) -> Result<ServiceInfo, RemoteError> {
        let client = self.client(reqwest::Client::builder().timeout(REQUEST_TIMEOUT))?;
        let response = self.get(&client, "/v1/service").send().await.map_err(|e| {
            let cause = reqwest_cause(&e);
            let hint = unreachable_hint(&cause);
            self.error(format!("it is not reachable ({cause}); {hint}"))
        })?;
        match response.status().as_u16() {
            200 => {}
            401 => {
                return Err(self.usage(
                    "it refused the token (401): set ROUNDTRIP_REMOTE_TOKEN to one of its read \
                     tokens",
                ));
            }
            status => {
                return Err(self.error(format!(
                    "it answered {status} to GET /v1/service; is this a roundtrip listener \
                     service of the same version?"
                )));
            }
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.error(format!("its answer broke off ({})", reqwest_cause(&e))))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.error(format!("its answer to GET /v1/service is not one ({e})")))
    }
}

/// The innermost cause of a reqwest error, which says what failed (refused, timed out).
/// What to check when the service could not be asked: what its cause suggests.
fn unreachable_hint(cause: &str) -> &'static str {
    if cause.contains("UnknownIssuer") || cause.contains("invalid peer certificate") {
        "its certificate is not signed by an authority this runner trusts: set \
         ROUNDTRIP_REMOTE_CA to the PEM file of the one that signed it"
    } else if cause.contains("invalid HTTP version") {
        "it did not answer in HTTP: if its API serves HTTPS (`api.tls`), write https://"
    } else if cause.contains("InvalidContentType") || cause.contains("corrupt message") {
        "it did not answer in TLS: if its API serves plain HTTP, write http://"
    } else {
        "check `--remote` and that `roundtrip listen` runs there"
    }
}

fn reqwest_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    roundtrip_core::redact::text(&cause.to_string())
}

/// How a remote channel's observations reach the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The runner shares the service's store: its feed brings them, pushed, or read
    /// every `polled` (a Postgres store with `listen=false`: the report says so).
    Store {
        /// The feed's poll interval, when it only polls.
        polled: Option<Duration>,
    },
    /// The service's event stream brings them, and the runner records copies.
    Events,
}

/// A channel recorded by the service.
#[derive(Debug)]
pub struct RemoteListener {
    channel: String,
    remote: Remote,
    feed: Feed,
}

impl RemoteListener {
    /// The listener for `channel`, recorded by the service at `remote`.
    pub fn new(channel: &str, remote: Remote, feed: Feed) -> RemoteListener {
        RemoteListener {
            channel: channel.to_owned(),
            remote,
            feed,
        }
    }

    fn start_error(&self, e: RemoteError) -> ListenError {
        ListenError::Start {
            channel: self.channel.clone(),
            message: e.to_string(),
            source: None,
        }
    }
}

#[async_trait]
impl Listener for RemoteListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        // Subscribed there before anything is sent here: no race.
        let info = self
            .remote
            .describe()
            .await
            .map_err(|e| self.start_error(e))?;
        let Some(channel) = info.channels.iter().find(|c| c.name == self.channel) else {
            return Err(self.start_error(
                self.remote
                    .error(format!("it no longer records channel `{}`", self.channel)),
            ));
        };
        if channel.state != "listening" {
            return Err(self.start_error(self.remote.error(format!(
                "its listener on channel `{}` is {}, not listening; see its /readyz",
                self.channel,
                roundtrip_core::escape::escape(&channel.state)
            ))));
        }
        let bound = channel.url.as_deref().and_then(bound_address);
        let (stop_tx, stop_rx) = oneshot::channel();
        let endpoint = format!(
            "{} ({}, via {})",
            roundtrip_core::redact::url(&self.remote.url),
            info.name,
            match self.feed {
                Feed::Store { polled: None } => "the shared store".to_owned(),
                Feed::Store {
                    polled: Some(every),
                } => format!(
                    "the shared store, polled every {}",
                    humantime::format_duration(every)
                ),
                Feed::Events => "its event stream".to_owned(),
            }
        );
        let task = match self.feed {
            Feed::Store { .. } => tokio::spawn(async move {
                let _ = stop_rx.await;
            }),
            Feed::Events => {
                let client = self
                    .remote
                    .client(reqwest::Client::builder().connect_timeout(REQUEST_TIMEOUT))
                    .map_err(|e| self.start_error(e))?;
                let stream = Stream {
                    client,
                    remote: self.remote.clone(),
                    channel: self.channel.clone(),
                    run: sink.run_id().to_owned(),
                };
                let response = tokio::time::timeout(REQUEST_TIMEOUT, stream.open(0))
                    .await
                    .map_err(|_| {
                        self.start_error(self.remote.error(format!(
                            "its event stream did not answer within {}s",
                            REQUEST_TIMEOUT.as_secs()
                        )))
                    })?
                    .map_err(|e| self.start_error(self.remote.error(e)))?;
                tokio::spawn(stream.follow(response, sink, stop_rx))
            }
        };
        let polling = matches!(self.feed, Feed::Store { polled: Some(_) });
        let running = RunningListener::new(endpoint, Delivery::AtLeastOnce, polling, stop_tx, task);
        Ok(match bound {
            Some(bound) => running.bound_at(bound),
            None => running,
        })
    }
}

/// The address a service's webhook channel is delivered to, from its URL
/// (`http://HOST:PORT/PATH`): what the SUT's `{{ channel.NAME.url }}` and `.addr`
/// render to.
fn bound_address(url: &str) -> Option<BoundAddress> {
    let rest = url.strip_prefix("http://")?;
    let addr = rest.split('/').next().filter(|a| !a.is_empty())?;
    Some(BoundAddress {
        addr: addr.to_owned(),
        url: url.to_owned(),
    })
}

/// One run's event stream from the service.
struct Stream {
    client: reqwest::Client,
    remote: Remote,
    channel: String,
    run: String,
}

impl Stream {
    /// Opens the stream after event `last`; resolves once the service answered, so
    /// the subscription is in place.
    async fn open(&self, last: u64) -> Result<reqwest::Response, String> {
        let mut request = self
            .remote
            .get(&self.client, &format!("/v1/runs/{}/events", self.run))
            .header("accept", "text/event-stream");
        if last > 0 {
            request = request.header("last-event-id", last.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("its event stream did not open ({})", reqwest_cause(&e)))?;
        if !response.status().is_success() {
            return Err(format!(
                "its event stream answered {}",
                response.status().as_u16()
            ));
        }
        Ok(response)
    }

    /// Records the stream's observations on this channel until stopped; reopens it
    /// after the last event seen when it breaks.
    async fn follow(
        self,
        mut response: reqwest::Response,
        sink: ObservationSink,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut events = Events::default();
        let mut last = 0u64;
        let mut outage = Outage::default();
        let mut backoff = Backoff::default();
        loop {
            // The service sends a comment every 15 s: a stream silent for longer is a
            // connection that died without closing.
            let chunk = tokio::select! {
                chunk = tokio::time::timeout(IDLE, response.chunk()) => chunk,
                _ = &mut stop => return,
            };
            let broken = match chunk {
                Ok(Ok(Some(bytes))) => {
                    match self.record(&sink, &mut events, &bytes, &mut last).await {
                        Ok(()) => continue,
                        Err(cause) => cause,
                    }
                }
                Ok(Ok(None)) => "the service ended it".to_owned(),
                Ok(Err(e)) => reqwest_cause(&e),
                Err(_) => format!("nothing came for {}s", IDLE.as_secs()),
            };
            // Open it again after the last event recorded here.
            outage.failed(&sink, "the service's event stream broke off", Some(broken));
            loop {
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = &mut stop => return,
                }
                let opened = tokio::select! {
                    opened = tokio::time::timeout(REQUEST_TIMEOUT, self.open(last)) => opened,
                    _ = &mut stop => return,
                };
                if let Ok(Ok(again)) = opened {
                    response = again;
                    events = Events::default();
                    backoff.reset();
                    outage.recovered(&sink, "resumed after the last event recorded");
                    break;
                }
            }
        }
    }

    /// Records the observations on this channel that `bytes` completes, moving `last`
    /// past each one recorded (or not this channel's); `Err` when a copy could not be
    /// recorded, so the stream is reopened from the last one that was.
    async fn record(
        &self,
        sink: &ObservationSink,
        events: &mut Events,
        bytes: &[u8],
        last: &mut u64,
    ) -> Result<(), String> {
        for event in events.push(bytes) {
            let Some(id) = event.id else { continue };
            if event.kind != "observation" || id <= *last {
                continue;
            }
            match serde_json::from_str::<Observation>(&event.data) {
                // A copy some run recorded into the service's own store (which it
                // shares): the original came, or comes, on this stream itself.
                Ok(o) if o.meta.iter().any(|(k, _)| k == COPY_OF) => {}
                Ok(o) if o.channel == self.channel => {
                    if let Err(e) = sink.record_copy(o).await {
                        return Err(format!("a copy could not be recorded ({e})"));
                    }
                }
                Ok(_) => {}
                Err(e) => sink.consumer_error(format!("an event that is not an observation ({e})")),
            }
            *last = id;
        }
        Ok(())
    }
}

/// One server-sent event.
#[derive(Debug, Default, PartialEq)]
struct Event {
    id: Option<u64>,
    kind: String,
    data: String,
}

/// A server-sent event parser: bytes in, whole events out (the WHATWG rules that matter
/// here: `id`, `event`, `data` lines, comments, CRLF or LF).
#[derive(Debug, Default)]
struct Events {
    line: Vec<u8>,
    current: Event,
    has_data: bool,
}

impl Events {
    fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
            if line.is_empty() {
                let event = std::mem::take(&mut self.current);
                if std::mem::take(&mut self.has_data) {
                    out.push(Event {
                        kind: if event.kind.is_empty() {
                            "message".to_owned()
                        } else {
                            event.kind
                        },
                        ..event
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = value.parse().ok(),
                "event" => value.clone_into(&mut self.current.kind),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed_across_chunks_with_comments_and_crlf() {
        let mut p = Events::default();
        let mut got = p.push(b": keep-alive\n\nid: 7\r\nevent: observation\r\ndata: {\"a\"");
        assert!(got.is_empty());
        got.extend(p.push(b":1}\r\n\r\nid: 8\ndata: x\ndata: y\n\n"));
        assert_eq!(
            got,
            [
                Event {
                    id: Some(7),
                    kind: "observation".to_owned(),
                    data: "{\"a\":1}".to_owned()
                },
                Event {
                    id: Some(8),
                    kind: "message".to_owned(),
                    data: "x\ny".to_owned()
                },
            ]
        );
    }

    #[test]
    fn the_token_is_never_in_the_debug_form() {
        let remote = Remote {
            url: "http://svc:7070".to_owned(),
            token: Some("s3cret-token-value".to_owned()),
            ca: None,
        };
        let shown = format!("{remote:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn a_client_is_refused_for_what_cannot_work() {
        let client = |url: &str, ca: Option<&std::path::Path>| {
            Remote {
                url: url.to_owned(),
                token: None,
                ca: ca.map(std::path::Path::to_path_buf),
            }
            .client(reqwest::Client::builder())
            .map(drop)
            .map_err(|e| e.to_string())
        };
        client("http://svc:7070", None).expect("plain http");
        let err = client("svc:7070", None).expect_err("no scheme");
        assert!(
            err.contains("`http://HOST:PORT` or `https://HOST:PORT`"),
            "{err}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").expect("write");
        let err = client("http://svc:7070", Some(&ca)).expect_err("a CA for http");
        assert!(err.contains("but the service's URL is http://"), "{err}");
        let https = client("https://svc:7070", Some(&ca));
        if cfg!(feature = "tls") {
            let err = https.expect_err("no certificate in the file");
            assert!(err.contains("holds no PEM certificate"), "{err}");
            let err = client("https://svc:7070", Some(&dir.path().join("missing.pem")))
                .expect_err("a missing file");
            assert!(err.contains("cannot be read"), "{err}");
        } else {
            let err = https.expect_err("https without the tls feature");
            assert!(err.contains("the `tls` feature"), "{err}");
        }
    }

    /// The service's stream broken by its stop and the service started again on the same
    /// address and store: the listener reopens the stream after the last event it
    /// recorded, so the observation made before is not copied twice and the one made
    /// after is copied once, and the time away is one outage gap, ended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_stream_is_reopened_after_the_last_event_recorded() {
        use std::path::PathBuf;
        use std::sync::Arc;

        use roundtrip_core::correlate::Correlator;
        use roundtrip_core::listen::{LoadedListenConfig, parse_with};
        use roundtrip_core::model::CorrelationRule;
        use roundtrip_core::vars::Vars;

        use crate::service::{RunningService, ServiceOptions, Tokens};
        use crate::store::{RunRecord, RunStatus};
        use crate::transport::{GapKind, Listener};

        const RUN: &str = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let dir = tempfile::tempdir().expect("a temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let text = format!(
            "name: t\napi: {{ listen: '127.0.0.1:{port}' }}\n\
             channels:\n  out: {{ webhook: {{ listen: '127.0.0.1:0' }} }}\n"
        );
        let loaded = LoadedListenConfig {
            config: parse_with("t.yaml", &text, &Vars::default()).expect("a config"),
            path: PathBuf::from("t.yaml"),
            base_dir: PathBuf::from("."),
        };
        let url = format!("sqlite:{}", dir.path().join("service.sqlite").display());
        let start = || async {
            let store = crate::store::open(&url).await.expect("the service's store");
            let options = ServiceOptions {
                store_url: url.clone(),
                tokens: Tokens::none(),
            };
            RunningService::start(&loaded, store, options)
                .await
                .expect("the service starts")
        };
        let post = |service: &RunningService, id: &'static str| {
            let hook = service.endpoints()[0].1.clone();
            async move {
                let status = reqwest::Client::new()
                    .post(hook)
                    .header("x-roundtrip-run", RUN)
                    .header("x-correlation-id", id)
                    .body("{}")
                    .send()
                    .await
                    .expect("the webhook answers")
                    .status();
                assert!(status.is_success(), "{status}");
            }
        };

        let local = crate::store::open("sqlite::memory:")
            .await
            .expect("a store");
        local
            .create_run(&RunRecord {
                run_id: RUN.to_owned(),
                suite: "t".to_owned(),
                suite_path: "t.yaml".to_owned(),
                started_at: 0,
                finished_at: None,
                status: RunStatus::Running,
                owner: None,
            })
            .await
            .expect("the run");
        let mut feed = local.subscribe();
        let sink = ObservationSink::new(
            Arc::clone(&local),
            RUN,
            "out",
            Arc::new(Correlator::new(&CorrelationRule::default()).expect("a rule")),
            1 << 20,
        );
        let stats = sink.stats();

        let first = start().await;
        let remote = Remote {
            url: format!("http://127.0.0.1:{port}"),
            token: None,
            ca: None,
        };
        let listener = Box::new(RemoteListener::new("out", remote, Feed::Events))
            .start(sink)
            .await
            .expect("subscribed");
        post(&first, "before").await;
        let copied = feed.recv().await.expect("the first copy");
        assert_eq!(copied.correlation_id.as_deref(), Some("before"));
        first.stop().await.expect("stops");

        let second = start().await;
        post(&second, "after").await;
        let copied = tokio::time::timeout(std::time::Duration::from_secs(30), feed.recv())
            .await
            .expect("copied after the stream was reopened")
            .expect("the second copy");
        assert_eq!(copied.correlation_id.as_deref(), Some("after"));
        listener.stop().await;
        second.stop().await.expect("stops");

        let all = local.observations(RUN, 0, 100).await.expect("read");
        let ids: Vec<_> = all
            .iter()
            .filter_map(|o| o.correlation_id.clone())
            .collect();
        assert_eq!(ids, ["before", "after"], "each copied once");
        let gaps = stats.gaps();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(gaps[0].kind, GapKind::Outage);
        assert!(gaps[0].end.is_some(), "{gaps:?}");
        assert!(
            gaps[0]
                .cause
                .contains("resumed after the last event recorded"),
            "{gaps:?}"
        );
    }
}
