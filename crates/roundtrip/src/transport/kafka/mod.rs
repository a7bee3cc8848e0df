//! The Kafka-API driver (`kafka`) over librdkafka (rdkafka, bundled build).
//!
//! - The producer sends with `acks=all` and idempotence; headers travel as record
//!   headers, the key defaults to the correlation id (so one event's records share a
//!   partition).
//! - Without a `group`, the listener is assigned every partition of the topic at its
//!   current end (read with ListOffsets before `start` returns: nothing produced after
//!   that can be missed) and commits nothing.
//! - With a `group`, it joins the consumer group (a new group starts at the earliest
//!   offset) and is ready once partitions are assigned. Offsets are stored only after the
//!   store committed the record, in arrival order, and committed every 200 ms and at stop
//!   by the listener itself (librdkafka's auto-commit, which also commits on close, is off):
//!   a restarted listener resumes where the group stopped, re-reading at most what was
//!   recorded but not yet committed (counted as duplicates by the expectations).

pub(crate) mod conn;
mod listener;
mod producer;

use roundtrip_core::model::KafkaChannel;

pub use listener::KafkaListener;
pub use producer::KafkaProducer;

crate::transport::constructors!("kafka", KafkaChannel, KafkaProducer, KafkaListener);
