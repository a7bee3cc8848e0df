//! The `nats` driver: core NATS, at-most-once.
//!
//! Correlation travels in NATS headers. The listener's subscription buffer is sized
//! large (1,048,576 messages by default) because async-nats drops messages silently when
//! it fills; the client's slow-consumer and disconnect events are recorded as gaps in the
//! listener's report, so a loss the listener could not prevent is never blamed on the SUT
//! without saying so. The connection is shared with [`jetstream`](super::jetstream).

pub(crate) mod conn;
mod listener;
mod producer;

use roundtrip_core::model::NatsChannel;

pub use conn::DEFAULT_BUFFER;
pub use listener::NatsListener;
pub use producer::NatsProducer;

crate::transport::constructors!("nats", NatsChannel, NatsProducer, NatsListener);
