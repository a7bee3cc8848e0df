//! The `redis_pubsub` driver: Redis Pub/Sub channels and patterns. It carries the payload
//! only and is at-most-once. It connects as [`redis_stream`](super::redis_stream) does.

mod listener;
mod producer;

use roundtrip_core::model::RedisPubSubChannel;

pub use listener::PubSubListener;
pub use producer::PubSubProducer;

use super::{DriverContext, Listener, PlanError, Producer};

/// The producer for a `redis_pubsub` channel.
pub fn producer(
    channel: &str,
    spec: &RedisPubSubChannel,
    ctx: &DriverContext,
) -> Result<Box<dyn Producer>, PlanError> {
    Ok(Box::new(PubSubProducer::new(channel, spec, ctx)?))
}

/// The listener for a `redis_pubsub` channel.
pub fn listener(
    channel: &str,
    spec: &RedisPubSubChannel,
    ctx: &DriverContext,
) -> Result<Box<dyn Listener>, PlanError> {
    Ok(Box::new(PubSubListener::new(channel, spec, ctx)?))
}
