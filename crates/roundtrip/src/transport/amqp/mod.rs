//! The AMQP 0.9.1 driver (`amqp`), e.g. RabbitMQ.
//!
//! The producer publishes with publisher confirms and the `mandatory` flag: a send is
//! accepted when the broker confirmed it, and a message no queue would take is reported
//! as unroutable instead of vanishing. Headers travel as message headers; the correlation
//! id is also the message's `correlation_id` property and the message id.
//!
//! The listener consumes a queue (or a temporary queue bound to an exchange) with manual
//! acks, acknowledging a delivery only after the store committed it; deliveries the
//! broker flags `redelivered` are recorded as redeliveries.

pub(crate) mod conn;
mod listener;
mod producer;

use roundtrip_core::model::AmqpChannel;

pub use listener::{AmqpListener, listener_connection_name};
pub use producer::AmqpProducer;

crate::transport::constructors!("amqp", AmqpChannel, AmqpProducer, AmqpListener);
