//! The `amqp` producer: publisher confirms and `mandatory`, so an unroutable message is
//! reported instead of vanishing.

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use roundtrip_core::model::AmqpChannel;
use tokio::sync::OnceCell;

use crate::transport::amqp::conn::AmqpConn;
use crate::transport::{DriverContext, Outgoing, PlanError, ProduceError, Producer, Receipt};

fn field_table(headers: &[(String, String)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in headers {
        table.insert(
            ShortString::from(name.as_str()),
            AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
        );
    }
    table
}

/// Publishes to an exchange with a routing key, waiting for the broker's confirm.
#[derive(Debug)]
pub struct AmqpProducer {
    conn: AmqpConn,
    exchange: String,
    routing_key: String,
    channel: OnceCell<(Connection, Channel)>,
}

impl AmqpProducer {
    /// Plans a producer for `channel`.
    pub fn new(
        channel: &str,
        spec: &AmqpChannel,
        ctx: &DriverContext,
    ) -> Result<AmqpProducer, PlanError> {
        let routing_key = match (&spec.routing_key, &spec.queue) {
            (Some(key), _) => key.clone(),
            (None, Some(queue)) if spec.exchange.as_deref().unwrap_or_default().is_empty() => {
                queue.clone()
            }
            _ => {
                return Err(PlanError::Invalid {
                    channel: channel.to_owned(),
                    message: "an `amqp` producer needs a `routing_key` (or, for the default \
                              exchange, a `queue`)"
                        .into(),
                });
            }
        };
        Ok(AmqpProducer {
            conn: AmqpConn::new(channel, spec, ctx)?,
            exchange: spec.exchange.clone().unwrap_or_default(),
            routing_key,
            channel: OnceCell::new(),
        })
    }

    async fn channel(&self) -> Result<&Channel, ProduceError> {
        let name = &self.conn.channel;
        let (_, channel) = self
            .channel
            .get_or_try_init(|| async {
                let connection = self
                    .conn
                    .connect(&format!("roundtrip producer {name}"))
                    .await
                    .map_err(|e| crate::transport::error::unreachable(name, e))?;
                let channel = connection
                    .create_channel()
                    .await
                    .map_err(|e| crate::transport::error::unreachable(name, e))?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(|e| crate::transport::error::unreachable(name, e))?;
                Ok::<_, ProduceError>((connection, channel))
            })
            .await?;
        Ok(channel)
    }
}

#[async_trait]
impl Producer for AmqpProducer {
    async fn connect(&self) -> Result<(), ProduceError> {
        self.channel().await.map(drop)
    }

    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError> {
        let channel = self.channel().await?;
        let name = &self.conn.channel;
        let properties = BasicProperties::default()
            .with_content_type(message.content_type.into())
            .with_headers(field_table(&message.headers))
            .with_correlation_id(message.correlation_id.as_str().into())
            .with_message_id(message.correlation_id.as_str().into())
            .with_delivery_mode(2);
        let confirm = channel
            .basic_publish(
                self.exchange.as_str().into(),
                self.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &message.body,
                properties,
            )
            .await
            .map_err(|e| crate::transport::error::unreachable(name, e))?;
        let confirmation = tokio::time::timeout(self.conn.timeout, confirm)
            .await
            .map_err(|_| {
                crate::transport::error::rejected(
                    name,
                    format!("no publisher confirm within {:?}", self.conn.timeout),
                )
            })?
            .map_err(|e| crate::transport::error::unreachable(name, e))?;
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(Receipt::default()),
            Confirmation::Ack(Some(returned)) => Err(crate::transport::error::rejected(
                name,
                format!(
                    "unroutable: exchange `{}` has no queue bound for routing key `{}` ({} {})",
                    self.exchange, self.routing_key, returned.reply_code, returned.reply_text
                ),
            )),
            Confirmation::Nack(_) => Err(crate::transport::error::rejected(
                name,
                "the broker nacked the message",
            )),
        }
    }
}
