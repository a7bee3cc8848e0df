//! The `redis_pubsub` driver: Redis Pub/Sub channels and patterns. It carries the payload
//! only and is at-most-once. It connects as [`redis_stream`](super::redis_stream) does.

mod listener;
mod producer;

use roundtrip_core::model::RedisPubSubChannel;

pub use listener::PubSubListener;
pub use producer::PubSubProducer;

crate::transport::constructors!(
    "redis_pubsub",
    RedisPubSubChannel,
    PubSubProducer,
    PubSubListener
);
