//! The `nats` producer: publish (or request) on a subject.

use async_nats::Client;
use async_trait::async_trait;
use roundtrip_core::model::NatsChannel;
use tokio::sync::OnceCell;

use crate::transport::nats::conn::{DEFAULT_BUFFER, NatsConn, header_map};
use crate::transport::{DriverContext, Outgoing, PlanError, ProduceError, Producer, Receipt};

/// Publishes to a NATS subject (or sends a request and waits for the reply).
#[derive(Debug)]
pub struct NatsProducer {
    conn: NatsConn,
    subject: String,
    request: bool,
    client: OnceCell<Client>,
}

impl NatsProducer {
    /// Plans a producer for `channel`.
    pub fn new(
        channel: &str,
        spec: &NatsChannel,
        ctx: &DriverContext,
    ) -> Result<NatsProducer, PlanError> {
        Ok(NatsProducer {
            conn: NatsConn::new(channel, spec, ctx)?,
            subject: spec.subject.clone(),
            request: spec.request,
            client: OnceCell::new(),
        })
    }

    async fn client(&self) -> Result<&Client, ProduceError> {
        self.client
            .get_or_try_init(|| self.conn.connect(DEFAULT_BUFFER, None))
            .await
            .map_err(|e| crate::transport::error::unreachable(&self.conn.channel, e))
    }
}

#[async_trait]
impl Producer for NatsProducer {
    async fn connect(&self) -> Result<(), ProduceError> {
        self.client().await.map(drop)
    }

    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError> {
        let client = self.client().await?;
        let headers = header_map(&message.headers, message.content_type);
        let channel = &self.conn.channel;
        if self.request {
            let reply = client
                .request_with_headers(self.subject.clone(), headers, message.body)
                .await
                .map_err(|e| crate::transport::error::unreachable(channel, e))?;
            let excerpt = String::from_utf8_lossy(&reply.payload[..reply.payload.len().min(200)]);
            return Ok(Receipt {
                detail: Some(format!("reply: {excerpt}")),
            });
        }
        client
            .publish_with_headers(self.subject.clone(), headers, message.body)
            .await
            .map_err(|e| crate::transport::error::unreachable(channel, e))?;
        // A flush makes "accepted" mean "written to the server's socket", and surfaces a
        // dead connection now rather than at the next send.
        client
            .flush()
            .await
            .map_err(|e| crate::transport::error::unreachable(channel, e))?;
        Ok(Receipt::default())
    }
}
