//! The `kafka` producer: `acks=all` and idempotence; the key defaults to the correlation
//! id, so one event's records share a partition.

use async_trait::async_trait;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use roundtrip_core::model::KafkaChannel;
use tokio::sync::OnceCell;

use crate::transport::conn::{self};
use crate::transport::kafka::conn::KafkaConn;
use crate::transport::{DriverContext, Outgoing, PlanError, ProduceError, Producer, Receipt};

fn owned_headers(headers: &[(String, String)]) -> OwnedHeaders {
    headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        })
    })
}

/// Produces records with `acks=all`.
#[derive(Debug)]
pub struct KafkaProducer {
    conn: KafkaConn,
    producer: OnceCell<Rd<FutureProducer>>,
}

/// An rdkafka client, which has no `Debug`.
struct Rd<T>(T);

impl<T> std::fmt::Debug for Rd<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("rdkafka client")
    }
}

impl KafkaProducer {
    /// Plans a producer for `channel`.
    pub fn new(
        channel: &str,
        spec: &KafkaChannel,
        ctx: &DriverContext,
    ) -> Result<KafkaProducer, PlanError> {
        Ok(KafkaProducer {
            conn: KafkaConn::new(channel, spec, ctx)?,
            producer: OnceCell::new(),
        })
    }

    async fn producer(&self) -> Result<&FutureProducer, ProduceError> {
        let channel = &self.conn.channel;
        self.producer
            .get_or_try_init(|| async {
                let mut config = self.conn.client_config();
                config
                    .set("acks", "all")
                    .set("enable.idempotence", "true")
                    .set("linger.ms", "0")
                    .set("message.max.bytes", "16777216")
                    .set(
                        "message.timeout.ms",
                        self.conn.timeout.as_millis().to_string().as_str(),
                    );
                let producer: FutureProducer = config
                    .create()
                    .map_err(|e| crate::transport::error::unreachable(channel, e))?;
                self.conn
                    .ensure_topic()
                    .await
                    .map_err(|e| crate::transport::error::unreachable(channel, e))?;
                // Metadata, read through the producer's own client, proves the broker
                // answers and the topic exists, and warms the producer's cache: its first
                // send does not wait for a metadata refresh.
                let (probe, topic, timeout) =
                    (producer.clone(), self.conn.topic.clone(), self.conn.timeout);
                let known = tokio::task::spawn_blocking(move || {
                    probe
                        .client()
                        .fetch_metadata(Some(&topic), timeout)
                        .map(|m| {
                            m.topics().iter().any(|t| {
                                t.name() == topic
                                    && t.error().is_none()
                                    && !t.partitions().is_empty()
                            })
                        })
                })
                .await
                .map_err(|e| crate::transport::error::unreachable(channel, e))?
                .map_err(|e| {
                    crate::transport::error::unreachable(
                        channel,
                        format!(
                            "read metadata from Kafka at {}: {e}; {}",
                            self.conn.brokers,
                            crate::transport::error::SERVICES_HINT
                        ),
                    )
                })?;
                if !known {
                    return Err(crate::transport::error::unreachable(
                        channel,
                        format!(
                            "topic `{}` does not exist on {}; create it first, or set \
                             `create: true` on the channel",
                            self.conn.topic, self.conn.brokers
                        ),
                    ));
                }
                Ok(Rd(producer))
            })
            .await
            .map(|p| &p.0)
    }
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn connect(&self) -> Result<(), ProduceError> {
        self.producer().await.map(drop)
    }

    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError> {
        let producer = self.producer().await?;
        let headers = conn::headers_with_content_type(&message.headers, message.content_type);
        let key = message.key.as_deref().unwrap_or(&message.correlation_id);
        let record = FutureRecord::to(&self.conn.topic)
            .payload(message.body.as_ref())
            .key(key)
            .headers(owned_headers(&headers));
        match producer.send(record, self.conn.timeout).await {
            Ok(delivery) => Ok(Receipt {
                detail: Some(format!(
                    "{} partition {} offset {}",
                    self.conn.topic, delivery.partition, delivery.offset
                )),
            }),
            Err((e, _)) => Err(crate::transport::error::rejected(
                &self.conn.channel,
                format!("produce to `{}`: {e}", self.conn.topic),
            )),
        }
    }
}
