//! The `amqp` listener: a queue (or a temporary queue bound to an exchange) consumed with
//! manual acks, each sent after the store committed the delivery.

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use roundtrip_core::model::AmqpChannel;
use tokio::sync::oneshot;

use crate::transport::amqp::conn::AmqpConn;
use crate::transport::backoff::Backoff;
use crate::transport::{
    Delivery, DriverContext, GapKind, ListenError, Listener, ObservationSink, Outage, PlanError,
    Received, RunningListener,
};

/// Unacknowledged deliveries in flight unless the channel says otherwise.
const DEFAULT_PREFETCH: u16 = 512;

fn headers_of(properties: &BasicProperties) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(table) = properties.headers() {
        for (name, value) in table.inner() {
            let text = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                other => format!("{other:?}"),
            };
            out.push((name.as_str().to_owned(), text));
        }
    }
    if let Some(ct) = properties.content_type() {
        out.push(("content-type".to_owned(), ct.as_str().to_owned()));
    }
    if let Some(id) = properties.correlation_id() {
        out.push(("amqp-correlation-id".to_owned(), id.as_str().to_owned()));
    }
    out
}

/// Consumes a queue with manual acks after the store committed.
#[derive(Debug)]
pub struct AmqpListener {
    conn: AmqpConn,
    queue: Option<String>,
    declare: bool,
    bind: Option<(String, String)>,
    prefetch: u16,
}

impl AmqpListener {
    /// Plans a listener for `channel`.
    pub fn new(
        channel: &str,
        spec: &AmqpChannel,
        ctx: &DriverContext,
    ) -> Result<AmqpListener, PlanError> {
        let bind = match (&spec.queue, &spec.exchange, &spec.routing_key) {
            (Some(_), _, _) => None,
            (None, Some(exchange), Some(key)) if !exchange.is_empty() => {
                Some((exchange.clone(), key.clone()))
            }
            _ => {
                return Err(PlanError::Invalid {
                    channel: channel.to_owned(),
                    message: "an `amqp` listener needs a `queue` to consume, or an \
                              `exchange` and a `routing_key` to bind a temporary queue to"
                        .into(),
                });
            }
        };
        Ok(AmqpListener {
            conn: AmqpConn::new(channel, spec, ctx)?,
            queue: spec.queue.clone(),
            declare: spec.declare,
            bind,
            prefetch: spec.prefetch.unwrap_or(DEFAULT_PREFETCH),
        })
    }
}

/// The name a listener's connection carries in RabbitMQ's management tools:
/// `roundtrip listener <channel>`, and ` queue=<queue>` when it consumes a named queue.
pub fn listener_connection_name(channel: &str, queue: Option<&str>) -> String {
    match queue {
        Some(queue) => format!("roundtrip listener {channel} queue={queue}"),
        None => format!("roundtrip listener {channel}"),
    }
}

/// An open consumer: its connection, channel, the queue it reads, and the deliveries.
struct Consuming {
    connection: Connection,
    channel: Channel,
    queue: String,
    consumer: lapin::Consumer,
}

impl AmqpListener {
    /// Connects, sets the prefetch, declares or binds the queue, and starts consuming;
    /// returns once the broker confirmed the consumer (`basic.consume-ok`).
    async fn consume(&self) -> Result<Consuming, ListenError> {
        let name = &self.conn.channel;
        let fail = |what: &str, e: lapin::Error| {
            crate::transport::error::start_error(name, what.to_owned(), e)
        };
        let connection = self
            .conn
            .connect(&listener_connection_name(name, self.queue.as_deref()))
            .await
            .map_err(|m| crate::transport::error::start_error(name, m, "connect"))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| fail("open a channel", e))?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| fail("set the prefetch", e))?;
        let queue = match (&self.queue, &self.bind) {
            (Some(queue), _) => {
                let options = QueueDeclareOptions {
                    passive: !self.declare,
                    durable: true,
                    ..Default::default()
                };
                channel
                    .queue_declare(queue.as_str().into(), options, FieldTable::default())
                    .await
                    .map_err(|e| {
                        fail(
                            &format!(
                                "queue `{queue}` is not there; declare it, or set `declare: true`"
                            ),
                            e,
                        )
                    })?;
                queue.clone()
            }
            (None, Some((exchange, key))) => {
                let options = QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                };
                let declared = channel
                    .queue_declare("".into(), options, FieldTable::default())
                    .await
                    .map_err(|e| fail("declare a temporary queue", e))?;
                let queue = declared.name().as_str().to_owned();
                channel
                    .queue_bind(
                        queue.as_str().into(),
                        exchange.as_str().into(),
                        key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| fail(&format!("bind to exchange `{exchange}` with `{key}`"), e))?;
                queue
            }
            (None, None) => {
                return Err(crate::transport::error::start_error(
                    name,
                    "no queue to consume",
                    "checked when planned",
                ));
            }
        };
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("roundtrip-{name}").into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| fail(&format!("consume from `{queue}`"), e))?;
        Ok(Consuming {
            connection,
            channel,
            queue,
            consumer,
        })
    }
}

/// Records deliveries until the consumer ends; acks each after its commit.
async fn record_deliveries(
    consumer: lapin::Consumer,
    in_flight: usize,
    sink: &ObservationSink,
    stopped: &mut oneshot::Receiver<()>,
) {
    consumer
        .take_until(stopped)
        .for_each_concurrent(in_flight, |delivery| {
            let sink = sink.clone();
            async move {
                let delivery = match delivery {
                    Ok(d) => d,
                    Err(e) => {
                        sink.consumer_error(e);
                        return;
                    }
                };
                let mut received =
                    Received::new(delivery.data.clone(), headers_of(&delivery.properties))
                        .with_meta("exchange", delivery.exchange.as_str())
                        .with_meta("routing_key", delivery.routing_key.as_str());
                received.key = Some(delivery.routing_key.as_str().to_owned());
                received.message_id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.as_str().to_owned());
                received.redelivered = delivery.redelivered;
                if sink.record(received).await.is_ok()
                    && delivery.ack(BasicAckOptions::default()).await.is_err()
                {
                    sink.gap_counted(
                        GapKind::AckFailed,
                        "an ack was not delivered; the broker will redeliver",
                        0,
                    );
                }
            }
        })
        .await;
}

#[async_trait]
impl Listener for AmqpListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        // `consume` returns after basic.consume-ok: the consumer is registered and gets
        // every message routed to the queue from now on.
        let first = self.consume().await?;
        let endpoint = format!("{} queue {}", self.conn.endpoint, first.queue);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let in_flight = usize::from(self.prefetch);
        let task = tokio::spawn(async move {
            let mut current = first;
            let mut backoff = Backoff::default();
            loop {
                let Consuming {
                    connection,
                    channel,
                    consumer,
                    ..
                } = current;
                record_deliveries(consumer, in_flight, &sink, &mut stopped).await;
                if stopped.try_recv() != Err(oneshot::error::TryRecvError::Empty) {
                    let _ = channel
                        .close(200, "roundtrip listener stopped".into())
                        .await;
                    let _ = connection
                        .close(200, "roundtrip listener stopped".into())
                        .await;
                    return;
                }
                // The connection or channel closed under us: reconnect with backoff.
                let mut outage = Outage::default();
                outage.failed(&sink, "the AMQP connection was lost", None);
                current = loop {
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = &mut stopped => return,
                    }
                    if let Ok(c) = self.consume().await {
                        break c;
                    }
                };
                backoff.reset();
                outage.recovered(
                    &sink,
                    if self.bind.is_some() {
                        "the temporary queue went with it: messages routed meanwhile were lost"
                    } else {
                        "the queue kept what arrived meanwhile; unacked deliveries come again"
                    },
                );
            }
        });
        Ok(RunningListener::new(
            endpoint,
            Delivery::AtLeastOnce,
            false,
            stop,
            task,
        ))
    }
}
