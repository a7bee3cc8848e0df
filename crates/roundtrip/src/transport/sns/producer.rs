//! The `sns` producer: Publish, headers as message attributes.

use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;
use roundtrip_core::model::SnsChannel;
use tokio::sync::OnceCell;

use crate::aws::{describe_endpoint, load_config};
use crate::transport::aws::queue;
use crate::transport::error::{rejected, unreachable};
use crate::transport::sns::topic_arn;
use crate::transport::{DriverContext, Outgoing, PlanError, ProduceError, Producer, Receipt};

#[derive(Debug)]
struct Connected {
    client: Client,
    arn: String,
}

/// Publishes to an SNS topic; message attributes carry the headers.
#[derive(Debug)]
pub struct SnsProducer {
    channel: String,
    spec: SnsChannel,
    connected: OnceCell<Connected>,
}

impl SnsProducer {
    /// A producer for `spec` (connects on [`Producer::connect`] or the first send).
    pub fn new(channel: &str, spec: &SnsChannel, _ctx: &DriverContext) -> Result<Self, PlanError> {
        Ok(SnsProducer {
            channel: channel.to_owned(),
            spec: spec.clone(),
            connected: OnceCell::new(),
        })
    }

    async fn connected(&self) -> Result<&Connected, ProduceError> {
        self.connected
            .get_or_try_init(|| async {
                let spec = &self.spec;
                let config = load_config(spec.region.as_deref(), spec.endpoint.as_deref()).await?;
                let client = Client::new(&config);
                let arn = topic_arn(&client, &spec.topic, spec.create)
                    .await
                    .map_err(|e| format!("SNS at {}: {e}", describe_endpoint(&config)))?;
                Ok(Connected { client, arn })
            })
            .await
            .map_err(|e: String| unreachable(&self.channel, e))
    }
}

#[async_trait]
impl Producer for SnsProducer {
    async fn connect(&self) -> Result<(), ProduceError> {
        self.connected().await.map(|_| ())
    }

    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError> {
        let connected = self.connected().await?;
        let (body, attributes) = queue::text_message(&self.channel, &message)?;
        let mut request = connected
            .client
            .publish()
            .topic_arn(&connected.arn)
            .message(body);
        for (name, value) in attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| rejected(&self.channel, e.to_string()))?;
            request = request.message_attributes(name, value);
        }
        if connected.arn.ends_with(".fifo") {
            let (group, dedup) = queue::fifo_ids(&message);
            request = request
                .message_group_id(group)
                .message_deduplication_id(dedup);
        }
        let sent = request
            .send()
            .await
            .map_err(|e| crate::transport::aws::send_error(&self.channel, &e))?;
        Ok(Receipt {
            detail: sent.message_id,
        })
    }
}
