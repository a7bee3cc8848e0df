//! The `jetstream` producer: publish and wait for the stream's ack.

use async_nats::jetstream::{self, message::PublishMessage};
use async_trait::async_trait;
use roundtrip_core::model::JetStreamChannel;
use tokio::sync::OnceCell;

use crate::transport::nats::conn::{DEFAULT_BUFFER, NatsConn, header_map};
use crate::transport::{DriverContext, Outgoing, PlanError, ProduceError, Producer, Receipt};

/// Publishes to a JetStream subject, waiting for the stream's ack; the correlation id is
/// the `Nats-Msg-Id`, so the server deduplicates a retried send.
#[derive(Debug)]
pub struct JetStreamProducer {
    conn: NatsConn,
    stream: String,
    subject: String,
    create: bool,
    context: OnceCell<jetstream::Context>,
}

impl JetStreamProducer {
    /// Plans a producer for `channel`.
    pub fn new(
        channel: &str,
        spec: &JetStreamChannel,
        ctx: &DriverContext,
    ) -> Result<JetStreamProducer, PlanError> {
        Ok(JetStreamProducer {
            conn: NatsConn::new(channel, spec, ctx)?,
            stream: spec.stream.clone(),
            subject: spec.subject.clone(),
            create: spec.create,
            context: OnceCell::new(),
        })
    }

    async fn context(&self) -> Result<&jetstream::Context, ProduceError> {
        let channel = &self.conn.channel;
        self.context
            .get_or_try_init(|| async {
                let client = self
                    .conn
                    .connect(DEFAULT_BUFFER, None)
                    .await
                    .map_err(|e| crate::transport::error::unreachable(channel, e))?;
                let js = jetstream::new(client);
                if self.create {
                    ensure_stream(&js, &self.stream, &self.subject)
                        .await
                        .map_err(|e| crate::transport::error::unreachable(channel, e))?;
                }
                Ok(js)
            })
            .await
    }
}

/// Creates the stream over `subject` (file storage) unless it exists.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
) -> Result<jetstream::stream::Stream, String> {
    js.get_or_create_stream(jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: vec![subject.to_owned()],
        ..Default::default()
    })
    .await
    .map_err(|e| format!("create stream `{stream}` over `{subject}`: {e}"))
}

#[async_trait]
impl Producer for JetStreamProducer {
    async fn connect(&self) -> Result<(), ProduceError> {
        self.context().await.map(drop)
    }

    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError> {
        let js = self.context().await?;
        let channel = &self.conn.channel;
        let publish = PublishMessage::build()
            .payload(message.body)
            .headers(header_map(&message.headers, message.content_type))
            .message_id(&message.correlation_id);
        let pending = js
            .send_publish(self.subject.clone(), publish)
            .await
            .map_err(|e| crate::transport::error::unreachable(channel, e))?;
        let ack = tokio::time::timeout(self.conn.timeout, pending)
            .await
            .map_err(|_| {
                crate::transport::error::rejected(
                    channel,
                    format!(
                        "JetStream did not acknowledge the publish to `{}` within {:?}",
                        self.subject, self.conn.timeout
                    ),
                )
            })?
            .map_err(|e| {
                crate::transport::error::rejected(
                    channel,
                    format!(
                        "JetStream did not acknowledge the publish to `{}`: {e} (does a \
                         stream cover the subject? `create: true` creates one)",
                        self.subject
                    ),
                )
            })?;
        Ok(Receipt {
            detail: Some(format!(
                "stream {} seq {}{}",
                ack.stream,
                ack.sequence,
                if ack.duplicate { " (duplicate)" } else { "" }
            )),
        })
    }
}
