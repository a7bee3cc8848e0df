//! The `sqs` producer: SendMessage, with FIFO ids on a FIFO queue.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;
use roundtrip_core::model::SqsChannel;
use tokio::sync::OnceCell;

use crate::transport::aws::queue::{self};
use crate::transport::error::{rejected, unreachable};
use crate::transport::sqs::client;
use crate::transport::{DriverContext, Outgoing, PlanError, ProduceError, Producer, Receipt};

#[derive(Debug)]
struct Connected {
    client: Client,
    url: String,
}

/// Sends to an SQS queue: message attributes carry the headers; FIFO queues get the
/// event's group and deduplication ids.
#[derive(Debug)]
pub struct SqsProducer {
    channel: String,
    spec: SqsChannel,
    connected: OnceCell<Connected>,
}

impl SqsProducer {
    /// A producer for `spec` (connects on [`Producer::connect`] or the first send).
    pub fn new(channel: &str, spec: &SqsChannel, _ctx: &DriverContext) -> Result<Self, PlanError> {
        Ok(SqsProducer {
            channel: channel.to_owned(),
            spec: spec.clone(),
            connected: OnceCell::new(),
        })
    }

    async fn connected(&self) -> Result<&Connected, ProduceError> {
        self.connected
            .get_or_try_init(|| async {
                let spec = &self.spec;
                let (client, endpoint) =
                    client(spec.region.as_deref(), spec.endpoint.as_deref()).await?;
                let url = queue::queue_url(&client, &spec.queue, spec.create)
                    .await
                    .map_err(|e| format!("SQS at {endpoint}: {e}"))?;
                Ok(Connected { client, url })
            })
            .await
            .map_err(|e: String| unreachable(&self.channel, e))
    }
}

#[async_trait]
impl Producer for SqsProducer {
    async fn connect(&self) -> Result<(), ProduceError> {
        self.connected().await.map(|_| ())
    }

    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError> {
        let connected = self.connected().await?;
        let (body, attributes) = queue::text_message(&self.channel, &message)?;
        let mut request = connected
            .client
            .send_message()
            .queue_url(&connected.url)
            .message_body(body);
        for (name, value) in attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| rejected(&self.channel, e.to_string()))?;
            request = request.message_attributes(name, value);
        }
        if self.spec.is_fifo() {
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
