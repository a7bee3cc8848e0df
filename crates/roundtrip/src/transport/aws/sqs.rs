//! `sqs`: send messages to a queue; consume one, deleting each message only after the
//! store committed it.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;
use roundtrip_core::model::SqsChannel;
use tokio::sync::OnceCell;

use super::queue::{self, OwnedQueue, Plain, QueueSource};
use crate::aws::{describe_endpoint, load_config};
use crate::transport::conn::{rejected, start_error, unreachable};
use crate::transport::registry::PlanError;
use crate::transport::{
    DriverContext, ListenError, Listener, ObservationSink, Outgoing, ProduceError, Producer,
    Receipt, RunningListener,
};

/// The SQS client for a channel's region and endpoint.
pub(crate) async fn client(
    region: Option<&str>,
    endpoint: Option<&str>,
) -> Result<(Client, String), String> {
    let config = load_config(region, endpoint).await?;
    Ok((Client::new(&config), describe_endpoint(&config)))
}

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
            .map_err(|e| super::send_error(&self.channel, &e))?;
        Ok(Receipt {
            detail: sent.message_id,
        })
    }
}

/// Long-polls an SQS queue; deletes each message after the store committed it.
#[derive(Debug)]
pub struct SqsListener {
    channel: String,
    spec: SqsChannel,
}

impl SqsListener {
    /// A listener for `spec`.
    pub fn new(channel: &str, spec: &SqsChannel, _ctx: &DriverContext) -> Result<Self, PlanError> {
        Ok(SqsListener {
            channel: channel.to_owned(),
            spec: spec.clone(),
        })
    }
}

/// Long-poll wait and visibility timeout of a listener, in whole seconds.
pub(crate) fn timings(
    wait: Option<roundtrip_core::model::DurationSpec>,
    visibility: Option<roundtrip_core::model::DurationSpec>,
) -> (i32, i32) {
    let secs = |d: roundtrip_core::model::DurationSpec| {
        i32::try_from(d.0.as_secs().max(1)).unwrap_or(i32::MAX)
    };
    (
        // At least 1 s: 0 would be short polling, a loop that never waits. The default is
        // short because a stop waits for the receive in flight (see `queue::consume`).
        wait.map_or(2, |w| {
            i32::try_from(w.0.as_secs().clamp(1, 20)).unwrap_or(20)
        }),
        visibility.map_or(30, secs),
    )
}

#[async_trait]
impl Listener for SqsListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let spec = &self.spec;
        let (client, endpoint) = client(spec.region.as_deref(), spec.endpoint.as_deref())
            .await
            .map_err(|e| start_error(&self.channel, e.clone(), e))?;
        let url = queue::queue_url(&client, &spec.queue, spec.create)
            .await
            .map_err(|e| {
                let message = format!("SQS at {endpoint}: {e}");
                start_error(&self.channel, message.clone(), message)
            })?;
        let (wait_secs, visibility_secs) = timings(spec.wait, spec.visibility_timeout);
        let source = QueueSource {
            client,
            url: url.clone(),
            wait_secs,
            visibility_secs,
            shared: true,
        };
        let queue = OwnedQueue { source, owned: () };
        Ok(queue.listen(url, sink, Plain))
    }
}
