//! The `redis_stream` producer: XADD with a `body` field and one field per header.

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use roundtrip_core::model::RedisStreamChannel;
use tokio::sync::OnceCell;

use crate::transport::conn::{self};
use crate::transport::redis_stream::conn::{RedisConn, shared_connection};
use crate::transport::{DriverContext, Outgoing, PlanError, ProduceError, Producer, Receipt};

/// The stream field that carries the payload.
pub const BODY_FIELD: &str = "body";

/// XADDs entries to a stream.
#[derive(Debug)]
pub struct StreamProducer {
    conn: RedisConn,
    stream: String,
    connection: OnceCell<MultiplexedConnection>,
}

impl StreamProducer {
    /// Plans a producer for `channel`.
    pub fn new(
        channel: &str,
        spec: &RedisStreamChannel,
        ctx: &DriverContext,
    ) -> Result<StreamProducer, PlanError> {
        Ok(StreamProducer {
            conn: RedisConn::new(channel, spec, ctx)?,
            stream: spec.stream.clone(),
            connection: OnceCell::new(),
        })
    }
}

#[async_trait]
impl Producer for StreamProducer {
    async fn connect(&self) -> Result<(), ProduceError> {
        shared_connection(&self.connection, &self.conn)
            .await
            .map(drop)
    }

    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError> {
        let mut connection = shared_connection(&self.connection, &self.conn)
            .await?
            .clone();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.stream)
            .arg("*")
            .arg(BODY_FIELD)
            .arg(message.body.as_ref());
        for (name, value) in conn::headers_with_content_type(&message.headers, message.content_type)
        {
            if name != BODY_FIELD {
                cmd.arg(name).arg(value);
            }
        }
        let id: String = cmd
            .query_async(&mut connection)
            .await
            .map_err(|e| crate::transport::error::unreachable(&self.conn.channel, e))?;
        Ok(Receipt { detail: Some(id) })
    }
}
