//! Redis drivers: Streams (`redis_stream`) and Pub/Sub (`redis_pubsub`).
//!
//! A produced stream entry has a `body` field with the payload and one field per header
//! (the correlation id travels there). A listened entry without a `body` field is
//! recorded as a JSON object of all its fields, so streams written by other tools are
//! readable too. In a consumer group the listener XACKs an entry only after the store
//! committed it, and at start re-reads what it had been given but not acknowledged
//! (recorded as redeliveries). Pub/Sub carries the payload only and is at-most-once.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, Value};
use roundtrip_core::model::{Connection, RedisPubSubChannel, RedisStreamChannel};
use tokio::sync::{OnceCell, oneshot};

use super::conn::{self, Backoff, Credentials, TlsFiles};
use super::registry::PlanError;
use super::{
    DriverContext, ListenError, Listener, ObservationSink, Outgoing, ProduceError, Producer,
    Receipt, Received, RunningListener,
};

/// Entries read per XREAD / XREADGROUP call.
const BATCH: usize = 1000;
/// How long one blocking read waits before the loop checks for a stop.
const BLOCK_MS: u64 = 500;
/// A blocking read answers within `BLOCK_MS`; a connection that goes silent for longer
/// than that plus the connect timeout is dead (a half-open TCP connection raises no
/// error by itself).
fn listener_response_timeout(connect: Duration) -> Duration {
    Duration::from_millis(BLOCK_MS) + connect
}

/// The stream field that carries the payload.
pub const BODY_FIELD: &str = "body";

/// How to reach one Redis server.
#[derive(Debug, Clone)]
struct RedisConn {
    channel: String,
    endpoint: String,
    client: Client,
    timeout: Duration,
}

impl RedisConn {
    fn new(
        channel: &str,
        spec: &dyn Connection,
        ctx: &DriverContext,
    ) -> Result<RedisConn, PlanError> {
        conn::ensure_crypto_provider();
        let (url, tls, auth, timeout) =
            (spec.url(), spec.tls(), spec.auth(), spec.connect_timeout());
        let invalid = |message: String| PlanError::Invalid {
            channel: channel.to_owned(),
            message,
        };
        let mut info = url.into_connection_info().map_err(|e| {
            invalid(format!(
                "`{}` is not a Redis URL ({e}); write it like `redis://127.0.0.1:6379/0`",
                conn::redact(url)
            ))
        })?;
        let credentials = Credentials::from_env(channel, auth)?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &credentials.username {
            settings = settings.set_username(user);
        }
        if let Some(pass) = &credentials.password {
            settings = settings.set_password(pass);
        }
        info = info.set_redis_settings(settings);
        let client = match TlsFiles::resolve(channel, tls, ctx)? {
            None => Client::open(info),
            Some(files) => build_tls(info, &files).map_err(invalid)?,
        }
        .map_err(|e| invalid(format!("{e}")))?;
        Ok(RedisConn {
            channel: channel.to_owned(),
            endpoint: conn::redact(url),
            client,
            timeout: conn::timeout(timeout),
        })
    }

    /// A multiplexed connection; `response_timeout` bounds each command.
    async fn connect(&self, response_timeout: Duration) -> Result<MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(response_timeout));
        match tokio::time::timeout(
            self.timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(conn::connect_failed("Redis", &self.endpoint, e)),
            Err(_) => Err(conn::timed_out("Redis at", &self.endpoint, self.timeout)),
        }
    }
}

fn build_tls(
    info: redis::ConnectionInfo,
    files: &TlsFiles,
) -> Result<redis::RedisResult<Client>, String> {
    let read =
        |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("read `{}`: {e}", p.display()));
    let root_cert = files.ca.as_deref().map(read).transpose()?;
    let client_tls = match &files.client {
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        None => None,
    };
    Ok(Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    ))
}

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

async fn shared_connection<'c>(
    cell: &'c OnceCell<MultiplexedConnection>,
    conn: &RedisConn,
) -> Result<&'c MultiplexedConnection, ProduceError> {
    cell.get_or_try_init(|| conn.connect(conn.timeout))
        .await
        .map_err(|e| conn::unreachable(&conn.channel, e))
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
            .map_err(|e| conn::unreachable(&self.conn.channel, e))?;
        Ok(Receipt { detail: Some(id) })
    }
}

/// Reads a stream, in a consumer group (XACK after commit) or with plain XREAD.
#[derive(Debug)]
pub struct StreamListener {
    conn: RedisConn,
    stream: String,
    group: Option<String>,
    consumer: String,
}

impl StreamListener {
    /// Plans a listener for `channel`.
    pub fn new(
        channel: &str,
        spec: &RedisStreamChannel,
        ctx: &DriverContext,
    ) -> Result<StreamListener, PlanError> {
        Ok(StreamListener {
            conn: RedisConn::new(channel, spec, ctx)?,
            stream: spec.stream.clone(),
            group: spec.group.clone(),
            consumer: spec
                .consumer
                .clone()
                .unwrap_or_else(|| "roundtrip".to_owned()),
        })
    }
}

/// Where a stream listener reads from next.
#[derive(Debug)]
enum Cursor {
    /// Plain XREAD after this id.
    After(String),
    /// XREADGROUP; `pending` while re-reading this consumer's unacknowledged entries.
    Group {
        group: String,
        consumer: String,
        pending: bool,
    },
}

#[async_trait]
impl Listener for StreamListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let channel = self.conn.channel.clone();
        let mut connection = self
            .conn
            .connect(listener_response_timeout(self.conn.timeout))
            .await
            .map_err(|m| conn::start_error(&channel, m, "connect"))?;
        name_connection(&mut connection, &self.stream).await;
        // Readiness: the position is fixed before start returns, so every entry added
        // afterwards is read.
        let cursor = match &self.group {
            Some(group) => {
                let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&self.stream)
                    .arg(group)
                    .arg("$")
                    .arg("MKSTREAM")
                    .query_async(&mut connection)
                    .await;
                match created {
                    Ok(()) => {}
                    Err(e) if e.code() == Some("BUSYGROUP") => {}
                    Err(e) => {
                        return Err(conn::start_error(
                            &channel,
                            format!("create consumer group `{group}` on `{}`", self.stream),
                            e,
                        ));
                    }
                }
                Cursor::Group {
                    group: group.clone(),
                    consumer: self.consumer.clone(),
                    pending: true,
                }
            }
            None => {
                let last: Vec<(String, Vec<(String, Vec<u8>)>)> = redis::cmd("XREVRANGE")
                    .arg(&self.stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| conn::start_error(&channel, "read the stream's last id", e))?;
                Cursor::After(
                    last.first()
                        .map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone()),
                )
            }
        };
        let delivery = if self.group.is_some() {
            "at-least-once"
        } else {
            "at-most-once"
        };
        let endpoint = format!("{} stream {}", self.conn.endpoint, self.stream);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(read_stream(*self, connection, cursor, sink, stopped));
        Ok(RunningListener::new(endpoint, delivery, false, stop, task))
    }
}

async fn read_stream(
    listener: StreamListener,
    mut connection: MultiplexedConnection,
    mut cursor: Cursor,
    sink: ObservationSink,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut backoff = Backoff::default();
    let mut down: Option<(Instant, String, String, usize)> = None;
    loop {
        let cmd = match &cursor {
            Cursor::After(id) => {
                let mut c = redis::cmd("XREAD");
                c.arg("COUNT").arg(BATCH).arg("BLOCK").arg(BLOCK_MS);
                c.arg("STREAMS").arg(&listener.stream).arg(id);
                c
            }
            Cursor::Group {
                group,
                consumer,
                pending,
            } => {
                let mut c = redis::cmd("XREADGROUP");
                c.arg("GROUP")
                    .arg(group)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(BATCH);
                if !pending {
                    c.arg("BLOCK").arg(BLOCK_MS);
                }
                c.arg("STREAMS")
                    .arg(&listener.stream)
                    .arg(if *pending { "0" } else { ">" });
                c
            }
        };
        let reply: redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
            reply = cmd.query_async(&mut connection) => reply,
            _ = &mut stopped => return,
        };
        let entries = match reply {
            Ok(reply) => {
                if let Some((since, at, why, index)) = down.take() {
                    sink.update_gap(
                        index,
                        format!(
                            "connection lost at {at} for {:?} ({why}); {}",
                            since.elapsed(),
                            if matches!(cursor, Cursor::Group { .. }) {
                                "the group kept the position, nothing was skipped"
                            } else {
                                "reading resumed after the last entry read"
                            }
                        ),
                    );
                }
                backoff.reset();
                reply
                    .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>())
                    .unwrap_or_default()
            }
            Err(e) => {
                if down.is_none() {
                    let at = crate::clock::format_wall_now();
                    let why = e.to_string();
                    let index =
                        sink.open_gap(format!("connection lost at {at} ({why}); not back yet"));
                    down = Some((Instant::now(), at, why, index));
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = &mut stopped => return,
                }
                if let Ok(mut fresh) = listener
                    .conn
                    .connect(listener_response_timeout(listener.conn.timeout))
                    .await
                {
                    name_connection(&mut fresh, &listener.stream).await;
                    connection = fresh;
                }
                continue;
            }
        };
        let redelivered = matches!(cursor, Cursor::Group { pending: true, .. });
        if redelivered && entries.is_empty() {
            if let Cursor::Group { pending, .. } = &mut cursor {
                *pending = false;
            }
            continue;
        }
        let mut recorded = Vec::with_capacity(entries.len());
        let stream_name = listener.stream.as_str();
        let records = entries.into_iter().map(|entry| {
            let sink = sink.clone();
            async move {
                if entry.map.is_empty() {
                    // Deleted while pending: nothing to record, but ack it away.
                    return Some(entry.id);
                }
                let mut received = entry_to_received(&entry.map)
                    .with_meta("stream", stream_name)
                    .with_meta("entry_id", entry.id.as_str());
                received.message_id = Some(entry.id.clone());
                received.redelivered = redelivered;
                sink.record(received).await.ok().map(|_| entry.id)
            }
        });
        for id in futures_util::future::join_all(records)
            .await
            .into_iter()
            .flatten()
        {
            recorded.push(id);
        }
        match &mut cursor {
            Cursor::After(last) => {
                if let Some(id) = recorded.last() {
                    last.clone_from(id);
                }
            }
            Cursor::Group { group, .. } if !recorded.is_empty() => {
                let acked: redis::RedisResult<i64> = redis::cmd("XACK")
                    .arg(&listener.stream)
                    .arg(&*group)
                    .arg(&recorded)
                    .query_async(&mut connection)
                    .await;
                if let Err(e) = acked {
                    sink.gap_counted(
                        format!(
                            "XACK of {} entries failed ({e}); they will be read again",
                            recorded.len()
                        ),
                        0,
                    );
                }
            }
            Cursor::Group { .. } => {}
        }
    }
}

/// The name a stream listener's connection carries in `CLIENT LIST`:
/// `roundtrip:<stream>`, with anything but visible ASCII replaced by `_`.
pub fn connection_name(stream: &str) -> String {
    let stream: String = stream
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    format!("roundtrip:{stream}")
}

/// Names the connection (best effort), so an operator can tell a listener's connection
/// apart in `CLIENT LIST`.
async fn name_connection(connection: &mut MultiplexedConnection, stream: &str) {
    let _: redis::RedisResult<()> = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(connection_name(stream))
        .query_async(connection)
        .await;
}

fn entry_to_received(map: &std::collections::HashMap<String, Value>) -> Received {
    let bytes = |v: &Value| -> Vec<u8> {
        match v {
            Value::BulkString(b) => b.clone(),
            Value::SimpleString(s) => s.clone().into_bytes(),
            Value::Int(i) => i.to_string().into_bytes(),
            other => format!("{other:?}").into_bytes(),
        }
    };
    let text = |v: &Value| String::from_utf8_lossy(&bytes(v)).into_owned();
    match map.get(BODY_FIELD) {
        Some(body) => {
            let headers = map
                .iter()
                .filter(|(k, _)| k.as_str() != BODY_FIELD)
                .map(|(k, v)| (k.clone(), text(v)))
                .collect();
            Received::new(bytes(body), headers)
        }
        None => {
            let object: serde_json::Map<String, serde_json::Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(text(v))))
                .collect();
            let headers = map.iter().map(|(k, v)| (k.clone(), text(v))).collect();
            Received::new(serde_json::to_vec(&object).unwrap_or_default(), headers)
        }
    }
}

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
            .map_err(|e| conn::unreachable(&self.conn.channel, e))?;
        Ok(Receipt {
            detail: Some(format!("{receivers} subscribers")),
        })
    }
}

/// SUBSCRIBEs to a channel or PSUBSCRIBEs to a pattern. At-most-once.
#[derive(Debug)]
pub struct PubSubListener {
    conn: RedisConn,
    channel_name: Option<String>,
    pattern: Option<String>,
}

impl PubSubListener {
    /// Plans a listener for `channel`.
    pub fn new(
        channel: &str,
        spec: &RedisPubSubChannel,
        ctx: &DriverContext,
    ) -> Result<PubSubListener, PlanError> {
        Ok(PubSubListener {
            conn: RedisConn::new(channel, spec, ctx)?,
            channel_name: spec.channel.clone(),
            pattern: spec.pattern.clone(),
        })
    }

    /// Connects and subscribes; returns once the server confirmed the subscription.
    async fn subscribe(&self) -> Result<redis::aio::PubSub, String> {
        let endpoint = &self.conn.endpoint;
        let subscribing = async {
            let mut pubsub = self
                .conn
                .client
                .get_async_pubsub()
                .await
                .map_err(|e| conn::connect_failed("Redis", endpoint, e))?;
            match (&self.channel_name, &self.pattern) {
                (_, Some(p)) => pubsub.psubscribe(p).await,
                (Some(c), None) => pubsub.subscribe(c).await,
                (None, None) => return Err("no channel or pattern".to_owned()),
            }
            .map_err(|e| format!("subscribe on {endpoint}: {e}"))?;
            Ok(pubsub)
        };
        tokio::time::timeout(self.conn.timeout, subscribing)
            .await
            .unwrap_or_else(|_| Err(conn::timed_out("Redis at", endpoint, self.conn.timeout)))
    }
}

#[async_trait]
impl Listener for PubSubListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let channel = self.conn.channel.clone();
        let pubsub = self
            .subscribe()
            .await
            .map_err(|m| conn::start_error(&channel, m, "subscribe"))?;
        let endpoint = format!(
            "{} {}",
            self.conn.endpoint,
            self.pattern
                .as_ref()
                .map(|p| format!("pattern {p}"))
                .or_else(|| self.channel_name.as_ref().map(|c| format!("channel {c}")))
                .unwrap_or_default()
        );
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut pubsub = pubsub;
            let mut backoff = Backoff::default();
            loop {
                let messages = pubsub.into_on_message().take_until(&mut stopped);
                messages
                    .for_each_concurrent(512, |msg| {
                        let sink = sink.clone();
                        async move {
                            let mut received =
                                Received::new(msg.get_payload_bytes().to_vec(), Vec::new())
                                    .with_meta("channel", msg.get_channel_name());
                            if let Ok(pattern) = msg.get_pattern::<String>() {
                                received.meta.push(("pattern".to_owned(), pattern));
                            }
                            received.key = Some(msg.get_channel_name().to_owned());
                            let _ = sink.record(received).await;
                        }
                    })
                    .await;
                if stopped.try_recv() != Err(oneshot::error::TryRecvError::Empty) {
                    return;
                }
                // The connection dropped: resubscribe, and say how long nothing was heard.
                let since = Instant::now();
                let at = crate::clock::format_wall_now();
                let index = sink.open_gap(format!(
                    "unsubscribed at {at} after the connection dropped; not back yet"
                ));
                pubsub = loop {
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = &mut stopped => return,
                    }
                    if let Ok(p) = self.subscribe().await {
                        break p;
                    }
                };
                backoff.reset();
                sink.update_gap(
                    index,
                    format!(
                        "unsubscribed at {at} for {:?} after the connection dropped; \
                         messages published meanwhile were lost (Pub/Sub keeps nothing)",
                        since.elapsed()
                    ),
                );
            }
        });
        Ok(RunningListener::new(
            endpoint,
            "at-most-once",
            false,
            stop,
            task,
        ))
    }
}
