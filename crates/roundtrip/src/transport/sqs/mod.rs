//! `sqs`: send messages to a queue; consume one, deleting each message only after the
//! store committed it.

mod listener;
mod producer;

pub use listener::SqsListener;
pub use producer::SqsProducer;

use aws_sdk_sqs::Client;
use roundtrip_core::model::SqsChannel;

use crate::aws::{describe_endpoint, load_config};
use crate::transport::{DriverContext, Listener, PlanError, Producer};

/// The producer for an `sqs` channel.
pub fn producer(
    channel: &str,
    spec: &SqsChannel,
    ctx: &DriverContext,
) -> Result<Box<dyn Producer>, PlanError> {
    Ok(Box::new(SqsProducer::new(channel, spec, ctx)?))
}

/// The listener for an `sqs` channel.
pub fn listener(
    channel: &str,
    spec: &SqsChannel,
    ctx: &DriverContext,
) -> Result<Box<dyn Listener>, PlanError> {
    Ok(Box::new(SqsListener::new(channel, spec, ctx)?))
}

/// The SQS client for a channel's region and endpoint.
async fn client(region: Option<&str>, endpoint: Option<&str>) -> Result<(Client, String), String> {
    let config = load_config(region, endpoint).await?;
    Ok((Client::new(&config), describe_endpoint(&config)))
}
