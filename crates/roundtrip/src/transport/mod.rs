//! Transports: producers send events into the SUT's input channels; listeners record
//! what comes out of its output channels.
//!
//! One module per transport (`transport/<name>/`, named as suite files name it), each
//! behind its own cargo feature when it needs a client library; `http`, `webhook` and
//! `dir` need none. A module has the same files wherever it has both sides: `mod.rs`
//! (its docs and the `producer` and `listener` constructors), `producer.rs`,
//! `listener.rs`, and `conn.rs` for a connection the two share (`jetstream` connects as
//! `nats` does, `redis_pubsub` as `redis_stream`). [`registry`] is the one list that maps
//! a channel's [`ChannelSpec`](roundtrip_core::model::ChannelSpec) to its driver, and
//! answers a compiled-out transport with the feature to enable.
//!
//! ## Contracts
//! - A [`Producer`] resolves `send` when the transport accepted the message (an HTTP 2xx,
//!   a file renamed into place, a broker ack) and returns a [`ProduceError`] otherwise.
//! - [`Listener::start`] returns only once the listener is subscribed (bound, consuming):
//!   that is the readiness handshake that lets the engine send without sleeping.
//!   Every received message goes through [`ObservationSink::record`], which resolves after
//!   the store committed it; only then may the listener acknowledge (answer 2xx, ack).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use roundtrip_core::correlate::Correlator;
use roundtrip_core::observation::{NewObservation, Observation, Payload, UnixNanos};

use crate::clock;
use crate::store::{Store, StoreError};

// One module per transport, named as suite files name it; `registry` is the one list of
// them. Modules every driver shares come first.
pub mod backoff;
#[cfg(feature = "_broker")]
pub mod conn;
pub mod error;
pub mod registry;

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "aws")]
pub mod aws;
pub mod dir;
#[cfg(feature = "aws")]
pub mod eventbridge;
pub mod http;
#[cfg(feature = "nats")]
pub mod jetstream;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "redis")]
pub mod redis_pubsub;
#[cfg(feature = "redis")]
pub mod redis_stream;
#[cfg(feature = "aws")]
pub mod s3;
#[cfg(feature = "aws")]
pub mod sns;
#[cfg(feature = "aws")]
pub mod sqs;
pub mod webhook;

pub use error::{ListenError, PlanError, ProduceError};

/// The payload limit when a channel sets none: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// One message to produce.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// The body bytes.
    pub body: bytes::Bytes,
    /// `application/json`, `text/plain; charset=utf-8` or `application/octet-stream`.
    pub content_type: &'static str,
    /// Headers / attributes, including the correlation, run id and `traceparent`.
    pub headers: Vec<(String, String)>,
    /// The correlation id stamped on the message.
    pub correlation_id: String,
    /// A rendered key where the transport has one (the `dir` file name, the S3 object
    /// key, the Kafka record key).
    pub key: Option<String>,
    /// The message group and deduplication id, for an SQS FIFO queue.
    pub fifo: Option<Fifo>,
}

/// SQS FIFO ids of one message, rendered per event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fifo {
    /// The message group: messages of one group are delivered in order.
    pub group_id: String,
    /// The deduplication id: a second send with the same id within 5 minutes is dropped.
    pub dedup_id: String,
}

/// What a transport said when it accepted a message.
#[derive(Debug, Clone, Default)]
pub struct Receipt {
    /// A broker message id, an HTTP status, a file path: whatever identifies the send.
    pub detail: Option<String>,
}

/// Sends events into one input channel. Shared by a scenario's concurrent sends.
#[async_trait]
pub trait Producer: Send + Sync + std::fmt::Debug {
    /// Connects to the transport ahead of the first send, so that an unreachable broker
    /// or bad credentials end the run as a harness error before anything is sent.
    /// Transports without a connection do nothing.
    async fn connect(&self) -> Result<(), ProduceError> {
        Ok(())
    }

    /// Sends one message; resolves when the transport accepted it.
    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError>;
}

/// A message as a listener received it, before correlation and commit.
#[derive(Debug, Clone)]
pub struct Received {
    /// The raw body (the sink truncates it to the channel's limit).
    pub body: Vec<u8>,
    /// Headers or attributes; names are lowercased by the sink.
    pub headers: Vec<(String, String)>,
    /// The broker's message id.
    pub message_id: Option<String>,
    /// A transport key (file name, partition key).
    pub key: Option<String>,
    /// The broker says it delivered this message before (an unacked delivery retried).
    pub redelivered: bool,
    /// The message's full size, when `body` holds only its first part (a listener that
    /// streams and keeps only the channel's `max_payload`).
    pub size: Option<u64>,
    /// The transport's metadata, under the names docs/report-format.md lists.
    pub meta: Vec<(String, String)>,
}

impl Received {
    /// A first delivery of `body` with `headers`.
    pub fn new(body: Vec<u8>, headers: Vec<(String, String)>) -> Received {
        Received {
            body,
            headers,
            message_id: None,
            key: None,
            redelivered: false,
            size: None,
            meta: Vec::new(),
        }
    }

    /// Adds a metadata entry (`subject`, `topic`, `partition`, …).
    pub fn with_meta(mut self, name: &str, value: impl Into<String>) -> Received {
        self.meta.push((name.to_owned(), value.into()));
        self
    }
}

/// The header an observation carries when the broker redelivered it.
pub const REDELIVERED_HEADER: &str = "x-roundtrip-redelivered";

/// Counters a listener keeps while it runs.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Observations committed.
    pub recorded: AtomicU64,
    /// Messages rejected or not recorded (wrong method/path, store errors).
    pub faults: AtomicU64,
    /// Deliveries the broker marked as redeliveries.
    pub redelivered: AtomicU64,
    /// Gaps in the subscription: disconnects, slow-consumer drops.
    pub gaps: std::sync::Mutex<Vec<String>>,
    /// When each gap (same index) was, and what it may have lost.
    pub spans: std::sync::Mutex<Vec<GapSpan>>,
}

impl ListenerStats {
    /// The gaps recorded so far.
    pub fn gaps(&self) -> Vec<String> {
        self.gaps.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// When the gaps were and what they may have lost, in the order of [`Self::gaps`].
    pub fn spans(&self) -> Vec<GapSpan> {
        self.spans.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// The time and extent of one gap, for accounting for a loss: a message missing from
/// an at-most-once listener must be covered by a gap's count or fall in its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapSpan {
    /// When it began (wall clock).
    pub from: UnixNanos,
    /// When it ended; `None` while it goes on.
    pub to: Option<UnixNanos>,
    /// How many messages it lost, when the transport says (`Some(0)`: none, e.g. an
    /// ack that failed and will be redelivered); `None` when it cannot know.
    pub lost: Option<u64>,
}

/// Where a listener hands what it receives: correlates, truncates, timestamps, and
/// commits to the store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ObservationSink {
    inner: Arc<SinkInner>,
}

#[derive(Debug)]
struct SinkInner {
    store: Arc<dyn Store>,
    run_id: String,
    channel: String,
    correlator: Arc<Correlator>,
    max_payload: usize,
    stats: Arc<ListenerStats>,
}

impl ObservationSink {
    /// A sink that records into `store` for `run_id` on `channel`.
    pub fn new(
        store: Arc<dyn Store>,
        run_id: impl Into<String>,
        channel: impl Into<String>,
        correlator: Arc<Correlator>,
        max_payload: usize,
    ) -> ObservationSink {
        ObservationSink {
            inner: Arc::new(SinkInner {
                store,
                run_id: run_id.into(),
                channel: channel.into(),
                correlator,
                max_payload,
                stats: Arc::new(ListenerStats::default()),
            }),
        }
    }

    /// The channel this sink records for.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    /// The run this sink records for.
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// How many bytes of a message this sink keeps (the channel's `max_payload`).
    pub fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    /// This sink's counters (shared with the listener summary).
    pub fn stats(&self) -> Arc<ListenerStats> {
        Arc::clone(&self.inner.stats)
    }

    /// Counts a message the listener had to reject before recording it.
    pub fn fault(&self) {
        self.inner.stats.faults.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a gap in the subscription (shown in the report) that may have lost an
    /// unknown number of messages, e.g. `slow consumer at …: dropped messages`.
    pub fn gap(&self, what: impl Into<String>) {
        self.point_gap(what.into(), None);
    }

    /// Records a gap that lost exactly `lost` messages (a broker's drop counter), or
    /// none (`0`: an ack that failed, so the message comes again).
    pub fn gap_counted(&self, what: impl Into<String>, lost: u64) {
        self.point_gap(what.into(), Some(lost));
    }

    fn point_gap(&self, what: String, lost: Option<u64>) {
        let now = clock::wall_now();
        let span = GapSpan {
            from: now,
            to: Some(now),
            lost,
        };
        self.push_gap(what, span);
    }

    /// Records a gap that is still going on (a disconnect); returns its index for
    /// [`ObservationSink::update_gap`], which completes it.
    pub fn open_gap(&self, what: impl Into<String>) -> usize {
        let span = GapSpan {
            from: clock::wall_now(),
            to: None,
            lost: None,
        };
        self.push_gap(what.into(), span)
    }

    fn push_gap(&self, what: String, span: GapSpan) -> usize {
        let stats = &self.inner.stats;
        match (stats.gaps.lock(), stats.spans.lock()) {
            (Ok(mut gaps), Ok(mut spans)) => {
                gaps.push(what);
                spans.push(span);
                gaps.len() - 1
            }
            _ => usize::MAX,
        }
    }

    /// Records a client-side consumer error as a gap: the message it was about (if any)
    /// was not recorded.
    pub fn consumer_error(&self, error: impl std::fmt::Display) {
        self.gap(format!(
            "consumer error at {}: {error}",
            crate::clock::format_wall_now()
        ));
    }

    /// Rewrites a gap recorded earlier, e.g. with its length once the listener is back;
    /// its window ends now.
    pub fn update_gap(&self, index: usize, what: impl Into<String>) {
        if let Ok(mut gaps) = self.inner.stats.gaps.lock()
            && let Some(gap) = gaps.get_mut(index)
        {
            *gap = what.into();
        }
        if let Ok(mut spans) = self.inner.stats.spans.lock()
            && let Some(span) = spans.get_mut(index)
        {
            span.to = Some(clock::wall_now());
        }
    }

    /// Records a received message; resolves after the store committed it.
    pub async fn record(&self, received: Received) -> Result<Arc<Observation>, StoreError> {
        let received_mono = clock::mono_now();
        let received_at = clock::wall_now();
        let s = &self.inner;
        let mut headers: Vec<(String, String)> = received
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        if received.redelivered {
            s.stats.redelivered.fetch_add(1, Ordering::Relaxed);
            headers.push((REDELIVERED_HEADER.to_owned(), "true".to_owned()));
        }
        let mut payload = Payload::from_bytes(received.body, s.max_payload);
        if let Some(size) = received.size
            && size > payload.size
        {
            // The listener kept only the first part.
            payload.size = size;
            payload.truncated = true;
            payload.json = None;
        }
        let correlation_id =
            s.correlator
                .extract(&headers, payload.json.as_ref(), received.key.as_deref());
        let observation = NewObservation {
            run_id: s.run_id.clone(),
            channel: s.channel.clone(),
            correlation_id,
            payload,
            headers,
            message_id: received.message_id,
            key: received.key,
            meta: received.meta,
            received_at,
            received_mono: Some(received_mono),
        };
        match s.store.record(observation).await {
            Ok(committed) => {
                s.stats.recorded.fetch_add(1, Ordering::Relaxed);
                Ok(committed)
            }
            Err(e) => {
                s.stats.faults.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

/// A listener that has not started yet.
#[async_trait]
pub trait Listener: Send + std::fmt::Debug {
    /// Binds/subscribes, then returns a handle once ready to receive. Messages go to
    /// `sink` from then on, until the handle is stopped.
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError>;
}

/// A started listener.
#[derive(Debug)]
pub struct RunningListener {
    /// Where it listens, for logs and reports (an address, a path).
    pub endpoint: String,
    /// `at-least-once` or `at-most-once`.
    pub delivery: &'static str,
    /// True for listeners that poll their source.
    pub polling: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningListener {
    /// Wraps a listener task that stops when the `stop` sender fires or is dropped.
    pub fn new(
        endpoint: String,
        delivery: &'static str,
        polling: bool,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    ) -> RunningListener {
        RunningListener {
            endpoint,
            delivery,
            polling,
            stop: Some(stop),
            task,
        }
    }

    /// Ends the listener abruptly, as a crash would: nothing more is recorded or
    /// acknowledged, and what was in flight is abandoned (its connection closes).
    /// Resolves once the task is gone. For tests of redelivery.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Stops receiving; resolves once every message it accepted has been committed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// What a driver needs besides its channel spec.
#[derive(Debug, Clone)]
pub struct DriverContext {
    /// The suite file's directory: relative paths are resolved against it.
    pub base_dir: PathBuf,
}
