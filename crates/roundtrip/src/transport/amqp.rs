//! The AMQP 0.9.1 driver (`amqp`), e.g. RabbitMQ.
//!
//! The producer publishes with publisher confirms and the `mandatory` flag: a send is
//! accepted when the broker confirmed it, and a message no queue would take is reported
//! as unroutable instead of vanishing. Headers travel as message headers; the correlation
//! id is also the message's `correlation_id` property and the message id.
//!
//! The listener consumes a queue (or a temporary queue bound to an exchange) with manual
//! acks, acknowledging a delivery only after the store committed it; deliveries the
//! broker flags `redelivered` are recorded as redeliveries.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use roundtrip_core::model::AmqpChannel;
use tokio::sync::{OnceCell, oneshot};

use super::conn::{self, Backoff, Credentials, TlsFiles};
use super::registry::PlanError;
use super::{
    DriverContext, ListenError, Listener, ObservationSink, Outgoing, ProduceError, Producer,
    Receipt, Received, RunningListener,
};

/// Unacknowledged deliveries in flight unless the channel says otherwise.
const DEFAULT_PREFETCH: u16 = 512;

/// How to reach the broker. `Debug` shows the redacted endpoint, never `uri`.
#[derive(Clone)]
struct AmqpConn {
    channel: String,
    uri: String,
    endpoint: String,
    tls: Option<TlsFiles>,
    timeout: Duration,
}

impl std::fmt::Debug for AmqpConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConn")
            .field("channel", &self.channel)
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AmqpConn {
    fn new(channel: &str, spec: &AmqpChannel, ctx: &DriverContext) -> Result<AmqpConn, PlanError> {
        conn::ensure_crypto_provider();
        let credentials = Credentials::from_env(channel, spec.auth.as_ref())?;
        let uri = with_credentials(&spec.url, &credentials).ok_or_else(|| PlanError::Invalid {
            channel: channel.to_owned(),
            message: format!(
                "`{}` is not an AMQP URL; write it like `amqp://127.0.0.1:5672/%2f`",
                conn::redact(&spec.url)
            ),
        })?;
        Ok(AmqpConn {
            channel: channel.to_owned(),
            endpoint: conn::redact(&uri),
            uri,
            tls: TlsFiles::resolve(channel, spec.tls.as_ref(), ctx)?,
            timeout: conn::timeout(spec.connect_timeout),
        })
    }

    /// Connects; `name` is the connection's name in the broker's management tools.
    async fn connect(&self, name: &str) -> Result<Connection, String> {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connecting = async {
            match &self.tls {
                None => Connection::connect(&self.uri, properties).await,
                Some(files) => {
                    let config = tls_config(files)?;
                    let runtime = lapin::runtime::default_runtime()?;
                    Connection::connect_with_config(&self.uri, properties, config, runtime).await
                }
            }
        };
        match tokio::time::timeout(self.timeout, connecting).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(conn::connect_failed("AMQP broker", &self.endpoint, e)),
            Err(_) => Err(conn::timed_out(
                "AMQP broker at",
                &self.endpoint,
                self.timeout,
            )),
        }
    }
}

fn tls_config(files: &TlsFiles) -> lapin::Result<OwnedTLSConfig> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(lapin::Error::from);
    let cert_chain = match &files.ca {
        Some(ca) => Some(String::from_utf8_lossy(&read(ca)?).into_owned()),
        None => None,
    };
    let identity = match &files.client {
        Some((cert, key)) => Some(OwnedIdentity::PKCS8 {
            pem: read(cert)?,
            key: read(key)?,
        }),
        None => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// The URL with the user and password from the environment, when `auth` names them.
fn with_credentials(url: &str, credentials: &Credentials) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "amqp" | "amqps") {
        return None;
    }
    let Some(user) = &credentials.username else {
        return Some(url.to_owned());
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let password = credentials.password.as_deref().unwrap_or_default();
    Some(format!("{scheme}://{}:{}@{host}", enc(user), enc(password)))
}

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
                    .map_err(|e| conn::unreachable(name, e))?;
                let channel = connection
                    .create_channel()
                    .await
                    .map_err(|e| conn::unreachable(name, e))?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(|e| conn::unreachable(name, e))?;
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
            .map_err(|e| conn::unreachable(name, e))?;
        let confirmation = tokio::time::timeout(self.conn.timeout, confirm)
            .await
            .map_err(|_| {
                conn::rejected(
                    name,
                    format!("no publisher confirm within {:?}", self.conn.timeout),
                )
            })?
            .map_err(|e| conn::unreachable(name, e))?;
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(Receipt::default()),
            Confirmation::Ack(Some(returned)) => Err(conn::rejected(
                name,
                format!(
                    "unroutable: exchange `{}` has no queue bound for routing key `{}` ({} {})",
                    self.exchange, self.routing_key, returned.reply_code, returned.reply_text
                ),
            )),
            Confirmation::Nack(_) => Err(conn::rejected(name, "the broker nacked the message")),
        }
    }
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
        let fail = |what: &str, e: lapin::Error| conn::start_error(name, what.to_owned(), e);
        let connection = self
            .conn
            .connect(&listener_connection_name(name, self.queue.as_deref()))
            .await
            .map_err(|m| conn::start_error(name, m, "connect"))?;
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
                return Err(conn::start_error(
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
                    sink.gap_counted("an ack was not delivered; the broker will redeliver", 0);
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
        let task =
            tokio::spawn(async move {
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
                    let (since, at) = (std::time::Instant::now(), crate::clock::format_wall_now());
                    let index = sink.open_gap(format!(
                        "the AMQP connection was lost at {at}; not back yet"
                    ));
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
                    sink.update_gap(index, format!(
                    "the AMQP connection was lost at {at} for {:?}; {}",
                    since.elapsed(),
                    if self.bind.is_some() {
                        "the temporary queue went with it: messages routed meanwhile were lost"
                    } else {
                        "the queue kept what arrived meanwhile; unacked deliveries come again"
                    }
                ));
                }
            });
        Ok(RunningListener::new(
            endpoint,
            "at-least-once",
            false,
            stop,
            task,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_the_environment_replace_the_urls() {
        let c = Credentials {
            username: Some("svc user".into()),
            password: Some("p@ss/word".into()),
            token: None,
        };
        assert_eq!(
            with_credentials("amqp://guest:guest@127.0.0.1:5672/%2f", &c).as_deref(),
            Some("amqp://svc%20user:p%40ss%2Fword@127.0.0.1:5672/%2f")
        );
        assert_eq!(
            with_credentials("amqp://127.0.0.1", &Credentials::default()).as_deref(),
            Some("amqp://127.0.0.1")
        );
        assert_eq!(with_credentials("http://x", &c), None);
    }
}
