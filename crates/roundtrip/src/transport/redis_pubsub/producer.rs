//! The `redis_pubsub` producer: PUBLISH.

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use roundtrip_core::model::RedisPubSubChannel;
use tokio::sync::OnceCell;

use crate::transport::redis_stream::conn::{RedisConn, shared_connection};
use crate::transport::{DriverContext, Outgoing, PlanError, ProduceError, Producer, Receipt};

/// PUBLISHes the payload (Pub/Sub has no headers).
#[derive(Debug)]
pub struct PubSubProducer {
    conn: RedisConn,
    channel_name: String,
    connection: OnceCell<MultiplexedConnection>,
}

impl PubSubProducer {
    /// Plans a producer for `channel`.
    pub fn new(
        channel: &str,
        spec: &RedisPubSubChannel,
        ctx: &DriverContext,
    ) -> Result<PubSubProducer, PlanError> {
        let Some(name) = spec.channel.clone() else {
            return Err(PlanError::Invalid {
                channel: channel.to_owned(),
                message: "a `redis_pubsub` producer needs `channel` (a pattern cannot be \
                          published to)"
                    .into(),
            });
        };
        Ok(PubSubProducer {
            conn: RedisConn::new(channel, spec, ctx)?,
            channel_name: name,
            connection: OnceCell::new(),
        })
    }
}

#[async_trait]
impl Producer for PubSubProducer {
    async fn connect(&self) -> Result<(), ProduceError> {
        shared_connection(&self.connection, &self.conn)
            .await
            .map(drop)
    }

    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError> {
        let mut connection = shared_connection(&self.connection, &self.conn)
            .await?
            .clone();
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(&self.channel_name)
            .arg(message.body.as_ref())
            .query_async(&mut connection)
            .await
            .map_err(|e| crate::transport::error::unreachable(&self.conn.channel, e))?;
        Ok(Receipt {
            detail: Some(format!("{receivers} subscribers")),
        })
    }
}
