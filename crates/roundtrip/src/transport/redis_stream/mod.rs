//! The `redis_stream` driver: Redis Streams.
//!
//! A produced stream entry has a `body` field with the payload and one field per header
//! (the correlation id travels there). A listened entry without a `body` field is
//! recorded as a JSON object of all its fields, so streams written by other tools are
//! readable too. In a consumer group the listener XACKs an entry only after the store
//! committed it, and at start re-reads what it had been given but not acknowledged
//! (recorded as redeliveries). The connection is shared with
//! [`redis_pubsub`](super::redis_pubsub).

pub(crate) mod conn;
mod listener;
mod producer;

use roundtrip_core::model::RedisStreamChannel;

pub use listener::{StreamListener, connection_name};
pub use producer::{BODY_FIELD, StreamProducer};

use super::{DriverContext, Listener, PlanError, Producer};

/// The producer for a `redis_stream` channel.
pub fn producer(
    channel: &str,
    spec: &RedisStreamChannel,
    ctx: &DriverContext,
) -> Result<Box<dyn Producer>, PlanError> {
    Ok(Box::new(StreamProducer::new(channel, spec, ctx)?))
}

/// The listener for a `redis_stream` channel.
pub fn listener(
    channel: &str,
    spec: &RedisStreamChannel,
    ctx: &DriverContext,
) -> Result<Box<dyn Listener>, PlanError> {
    Ok(Box::new(StreamListener::new(channel, spec, ctx)?))
}
