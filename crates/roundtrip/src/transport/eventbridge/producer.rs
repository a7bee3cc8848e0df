//! The `eventbridge` producer: PutEvents, the payload as the event's detail.

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use roundtrip_core::model::EventBridgeChannel;
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::aws::{describe_endpoint, load_config};
use crate::transport::error::{rejected, unreachable};
use crate::transport::eventbridge::{DEFAULT_DETAIL_TYPE, DEFAULT_SOURCE, ensure_bus};
use crate::transport::{DriverContext, Outgoing, PlanError, ProduceError, Producer, Receipt};

/// Puts events on an EventBridge bus.
#[derive(Debug)]
pub struct EventBridgeProducer {
    channel: String,
    spec: EventBridgeChannel,
    client: OnceCell<Client>,
}

impl EventBridgeProducer {
    /// A producer for `spec` (connects on [`Producer::connect`] or the first send).
    pub fn new(
        channel: &str,
        spec: &EventBridgeChannel,
        _ctx: &DriverContext,
    ) -> Result<Self, PlanError> {
        Ok(EventBridgeProducer {
            channel: channel.to_owned(),
            spec: spec.clone(),
            client: OnceCell::new(),
        })
    }

    async fn client(&self) -> Result<&Client, ProduceError> {
        self.client
            .get_or_try_init(|| async {
                let spec = &self.spec;
                let config = load_config(spec.region.as_deref(), spec.endpoint.as_deref()).await?;
                let client = Client::new(&config);
                ensure_bus(&client, &spec.bus, spec.create)
                    .await
                    .map_err(|e| format!("EventBridge at {}: {e}", describe_endpoint(&config)))?;
                Ok(client)
            })
            .await
            .map_err(|e: String| unreachable(&self.channel, e))
    }
}

#[async_trait]
impl Producer for EventBridgeProducer {
    async fn connect(&self) -> Result<(), ProduceError> {
        self.client().await.map(|_| ())
    }

    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError> {
        let client = self.client().await?;
        let detail = match serde_json::from_slice::<Value>(&message.body) {
            Ok(v @ Value::Object(_)) => v.to_string(),
            _ => {
                return Err(rejected(
                    &self.channel,
                    "an EventBridge event's detail must be a JSON object; send a `body:` \
                     mapping",
                ));
            }
        };
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.spec.bus)
            .source(self.spec.source.as_deref().unwrap_or(DEFAULT_SOURCE))
            .detail_type(
                self.spec
                    .detail_type
                    .as_deref()
                    .unwrap_or(DEFAULT_DETAIL_TYPE),
            )
            .detail(detail)
            .build();
        let out = client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| crate::transport::aws::send_error(&self.channel, &e))?;
        let Some(result) = out.entries().first() else {
            return Err(rejected(&self.channel, "EventBridge returned no result"));
        };
        if out.failed_entry_count() > 0 || result.error_code().is_some() {
            return Err(rejected(
                &self.channel,
                format!(
                    "EventBridge refused the event: {} {}",
                    result.error_code().unwrap_or("(no code)"),
                    result.error_message().unwrap_or_default()
                ),
            ));
        }
        Ok(Receipt {
            detail: result.event_id().map(str::to_owned),
        })
    }
}
