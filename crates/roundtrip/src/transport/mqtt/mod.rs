//! The MQTT driver (`mqtt`), protocol 3.1.1 or 5, over rumqttc.
//!
//! - MQTT 5 carries headers as user properties; MQTT 3.1.1 has none, so the correlation id
//!   travels in the payload (`correlate.json`).
//! - The producer resolves a send when the broker acknowledged it: on the wire for QoS 0,
//!   PUBACK for QoS 1, PUBCOMP for QoS 2.
//! - The listener subscribes and is ready once the SUBACK grants the subscription. With
//!   QoS ≥ 1 it uses manual acks, acknowledging each message (in order) only after the
//!   store committed it, and, when the channel names a `client_id`, a persistent session:
//!   a restarted listener with the same `client_id` receives what it missed (reported
//!   at-least-once; without a `client_id`, at-most-once). A message the broker flags `dup` is recorded
//!   as a redelivery. QoS 0 is at-most-once and reported so. The listener subscribes at
//!   QoS 1 even when the channel says 2: it records at least once and counts duplicates
//!   itself, and a QoS 2 handshake in flight cannot be resumed after a restart.

pub(crate) mod conn;
mod listener;
mod producer;

use roundtrip_core::model::MqttChannel;

pub use listener::MqttListener;
pub use producer::MqttProducer;

crate::transport::constructors!("mqtt", MqttChannel, MqttProducer, MqttListener);
