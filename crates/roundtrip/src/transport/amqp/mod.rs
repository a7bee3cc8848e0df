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

use super::{DriverContext, Listener, PlanError, Producer};

/// The producer for a `amqp` channel.
pub fn producer(
    channel: &str,
    spec: &AmqpChannel,
    ctx: &DriverContext,
) -> Result<Box<dyn Producer>, PlanError> {
    Ok(Box::new(AmqpProducer::new(channel, spec, ctx)?))
}

/// The listener for a `amqp` channel.
pub fn listener(
    channel: &str,
    spec: &AmqpChannel,
    ctx: &DriverContext,
) -> Result<Box<dyn Listener>, PlanError> {
    Ok(Box::new(AmqpListener::new(channel, spec, ctx)?))
}
