//! `sqs`: send messages to a queue; consume one, deleting each message only after the
//! store committed it.

mod listener;
mod producer;

pub use listener::SqsListener;
pub use producer::SqsProducer;

use aws_sdk_sqs::Client;
use roundtrip_core::model::SqsChannel;

use crate::aws::{describe_endpoint, load_config};

crate::transport::constructors!("sqs", SqsChannel, SqsProducer, SqsListener);

/// The SQS client for a channel's region and endpoint.
async fn client(region: Option<&str>, endpoint: Option<&str>) -> Result<(Client, String), String> {
    let config = load_config(region, endpoint).await?;
    Ok((Client::new(&config), describe_endpoint(&config)))
}
