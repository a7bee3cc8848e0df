//! The `jetstream` driver: NATS JetStream, at-least-once, acknowledged after the store
//! committed. It connects as [`nats`](super::nats) does.

mod listener;
mod producer;

use roundtrip_core::model::JetStreamChannel;

pub use listener::JetStreamListener;
pub use producer::JetStreamProducer;

use super::{DriverContext, Listener, PlanError, Producer};

/// The producer for a `jetstream` channel.
pub fn producer(
    channel: &str,
    spec: &JetStreamChannel,
    ctx: &DriverContext,
) -> Result<Box<dyn Producer>, PlanError> {
    Ok(Box::new(JetStreamProducer::new(channel, spec, ctx)?))
}

/// The listener for a `jetstream` channel.
pub fn listener(
    channel: &str,
    spec: &JetStreamChannel,
    ctx: &DriverContext,
) -> Result<Box<dyn Listener>, PlanError> {
    Ok(Box::new(JetStreamListener::new(channel, spec, ctx)?))
}
