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

crate::transport::constructors!(
    "redis_stream",
    RedisStreamChannel,
    StreamProducer,
    StreamListener
);
