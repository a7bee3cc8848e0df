//! The `s3` producer: one object per event, the correlation id also in its metadata.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use roundtrip_core::model::S3Channel;
use tokio::sync::OnceCell;

use crate::aws::describe_endpoint;
use crate::transport::error::unreachable;
use crate::transport::s3::{client, ensure_bucket};
use crate::transport::{DriverContext, Outgoing, PlanError, ProduceError, Producer, Receipt};

/// Puts objects; headers become object metadata.
#[derive(Debug)]
pub struct S3Producer {
    channel: String,
    spec: S3Channel,
    client: OnceCell<Client>,
}

impl S3Producer {
    /// A producer for `spec` (connects on [`Producer::connect`] or the first send).
    pub fn new(channel: &str, spec: &S3Channel, _ctx: &DriverContext) -> Result<Self, PlanError> {
        Ok(S3Producer {
            channel: channel.to_owned(),
            spec: spec.clone(),
            client: OnceCell::new(),
        })
    }

    async fn client(&self) -> Result<&Client, ProduceError> {
        self.client
            .get_or_try_init(|| async {
                let (client, config) = client(&self.spec).await?;
                ensure_bucket(&client, &config, &self.spec.bucket, self.spec.create)
                    .await
                    .map_err(|e| format!("S3 at {}: {e}", describe_endpoint(&config)))?;
                Ok(client)
            })
            .await
            .map_err(|e: String| unreachable(&self.channel, e))
    }
}

#[async_trait]
impl Producer for S3Producer {
    async fn connect(&self) -> Result<(), ProduceError> {
        self.client().await.map(|_| ())
    }

    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError> {
        let client = self.client().await?;
        let key = message
            .key
            .clone()
            .unwrap_or_else(|| message.correlation_id.clone());
        let mut request = client
            .put_object()
            .bucket(&self.spec.bucket)
            .key(&key)
            .content_type(message.content_type)
            .body(ByteStream::from(message.body.clone()));
        for (name, value) in &message.headers {
            if name.eq_ignore_ascii_case("content-type") {
                request = request.content_type(value);
            } else {
                request = request.metadata(name, value);
            }
        }
        request
            .send()
            .await
            .map_err(|e| crate::transport::aws::send_error(&self.channel, &e))?;
        Ok(Receipt {
            detail: Some(format!("s3://{}/{key}", self.spec.bucket)),
        })
    }
}
