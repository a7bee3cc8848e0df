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

use async_trait::async_trait;

/// The `producer` and `listener` constructors the registry calls, for a transport whose
/// drivers are both built from `(channel, spec, ctx)`.
#[cfg(any(feature = "_broker", feature = "aws"))]
macro_rules! constructors {
    ($transport:literal, $spec:ty, $producer:ty, $listener:ty) => {
        #[doc = concat!("The producer for a `", $transport, "` channel.")]
        pub fn producer(
            channel: &str,
            spec: &$spec,
            ctx: &$crate::transport::DriverContext,
        ) -> Result<Box<dyn $crate::transport::Producer>, $crate::transport::PlanError> {
            Ok(Box::new(<$producer>::new(channel, spec, ctx)?))
        }

        #[doc = concat!("The listener for a `", $transport, "` channel.")]
        pub fn listener(
            channel: &str,
            spec: &$spec,
            ctx: &$crate::transport::DriverContext,
        ) -> Result<Box<dyn $crate::transport::Listener>, $crate::transport::PlanError> {
            Ok(Box::new(<$listener>::new(channel, spec, ctx)?))
        }
    };
}
#[cfg(any(feature = "_broker", feature = "aws"))]
pub(crate) use constructors;

// One module per transport, named as suite files name it; `registry` is the one list of
// them. Modules every driver shares come first.
pub mod backoff;
#[cfg(feature = "_broker")]
pub mod conn;
pub mod error;
pub mod registry;
mod sink;

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
pub(crate) use sink::TapOrder;
pub use sink::{Attribution, Gap, GapKind, ListenerStats, ObservationSink, Outage};

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

/// A listener that has not started yet.
#[async_trait]
pub trait Listener: Send + std::fmt::Debug {
    /// Binds/subscribes, then returns a handle once ready to receive. Messages go to
    /// `sink` from then on, until the handle is stopped.
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError>;
}

/// What a listener promises about the messages it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every message is recorded at least once: acknowledged only after the commit, or
    /// re-read after a restart (duplicates are counted).
    AtLeastOnce,
    /// A message given while the listener is away (or dropped by the client) is lost;
    /// such losses show as gaps.
    AtMostOnce,
}

impl Delivery {
    /// `at-least-once` or `at-most-once`, as the report says.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::AtLeastOnce => "at-least-once",
            Delivery::AtMostOnce => "at-most-once",
        }
    }
}

/// Where a listener that binds an address of its own (a webhook) can be reached:
/// what `{{ channel.NAME.url }}` and `{{ channel.NAME.addr }}` render to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundAddress {
    /// `host:port`; an unspecified host (`0.0.0.0`, `[::]`) as loopback, which reaches it.
    pub addr: String,
    /// The URL the SUT delivers to.
    pub url: String,
}

impl BoundAddress {
    /// The address of a socket bound at `local`, with `path` for its URL.
    pub fn http(local: std::net::SocketAddr, path: &str) -> BoundAddress {
        let mut reachable = local;
        if local.ip().is_unspecified() {
            reachable.set_ip(match local {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        BoundAddress {
            addr: reachable.to_string(),
            url: format!("http://{reachable}{path}"),
        }
    }
}

/// A started listener.
#[derive(Debug)]
pub struct RunningListener {
    /// Where it listens, for logs and reports (an address, a path).
    pub endpoint: String,
    /// What it promises about delivery.
    pub delivery: Delivery,
    /// True for listeners that poll their source.
    pub polling: bool,
    /// Where it was bound, for a listener that binds an address of its own.
    pub bound: Option<BoundAddress>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningListener {
    /// Wraps a listener task that stops when the `stop` sender fires or is dropped.
    pub fn new(
        endpoint: String,
        delivery: Delivery,
        polling: bool,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    ) -> RunningListener {
        RunningListener {
            endpoint,
            delivery,
            polling,
            bound: None,
            stop: Some(stop),
            task,
        }
    }

    /// The same listener, bound at `address`.
    pub fn bound_at(mut self, address: BoundAddress) -> RunningListener {
        self.bound = Some(address);
        self
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
