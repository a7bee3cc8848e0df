//! The `jetstream` driver: NATS JetStream, at-least-once, acknowledged after the store
//! committed. It connects as [`nats`](super::nats) does.

mod listener;
mod producer;

use roundtrip_core::model::JetStreamChannel;

pub use listener::JetStreamListener;
pub use producer::JetStreamProducer;

crate::transport::constructors!(
    "jetstream",
    JetStreamChannel,
    JetStreamProducer,
    JetStreamListener
);
