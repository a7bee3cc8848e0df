//! `sns`: publish to a topic; listen by subscribing a queue the harness creates for the
//! run (raw message delivery, so message attributes arrive as headers), and remove the
//! subscription and the queue when the listener stops.

pub(crate) mod listener;
mod producer;

pub use listener::SnsListener;
pub use producer::SnsProducer;

use aws_sdk_sns::Client;
use roundtrip_core::model::SnsChannel;

use crate::aws::service_error;

crate::transport::constructors!("sns", SnsChannel, SnsProducer, SnsListener);

/// The ARN of `topic` (a name or an ARN), creating it when `create`.
async fn topic_arn(client: &Client, topic: &str, create: bool) -> Result<String, String> {
    if create {
        let name = topic.rsplit(':').next().unwrap_or(topic);
        let mut request = client.create_topic().name(name);
        if name.ends_with(".fifo") {
            request = request.attributes("FifoTopic", "true");
        }
        return request
            .send()
            .await
            .map_err(|e| format!("create topic `{name}`: {}", service_error(&e)))?
            .topic_arn
            .ok_or_else(|| format!("create topic `{name}`: SNS returned no ARN"));
    }
    if topic.starts_with("arn:") {
        client
            .get_topic_attributes()
            .topic_arn(topic)
            .send()
            .await
            .map_err(|e| format!("topic {topic}: {}", service_error(&e)))?;
        return Ok(topic.to_owned());
    }
    let suffix = format!(":{topic}");
    let mut pages = client.list_topics().into_paginator().items().send();
    while let Some(item) = pages.next().await {
        let item = item.map_err(|e| format!("list topics: {}", service_error(&e)))?;
        if let Some(arn) = item.topic_arn
            && arn.ends_with(&suffix)
        {
            return Ok(arn);
        }
    }
    Err(format!(
        "topic `{topic}` does not exist; create it, or set `create: true` on the channel"
    ))
}
