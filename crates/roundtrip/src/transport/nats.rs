//! NATS drivers: core NATS (`nats`, at-most-once) and JetStream (`jetstream`,
//! at-least-once, acknowledged after the store committed).
//!
//! Correlation travels in NATS headers. The listener's subscription buffer is sized
//! large (1,048,576 messages by default) because async-nats drops messages silently when
//! it fills; the client's slow-consumer and disconnect events are recorded as gaps in the
//! listener's report, so a loss the listener could not prevent is never blamed on the SUT
//! without saying so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, message::PublishMessage};
use async_nats::{Client, ConnectOptions, Event, HeaderMap};
use async_trait::async_trait;
use futures_util::StreamExt;
use roundtrip_core::model::{Connection, JetStreamChannel, NatsChannel};
use tokio::sync::{OnceCell, oneshot};

use super::conn::{self, Credentials, TlsFiles};
use super::registry::PlanError;
use super::{
    DriverContext, ListenError, Listener, ObservationSink, Outgoing, ProduceError, Producer,
    Receipt, Received, RunningListener,
};

/// Messages buffered per subscription unless the channel says otherwise.
pub const DEFAULT_BUFFER: usize = 1 << 20;
/// Messages recorded concurrently by one listener.
const IN_FLIGHT: usize = 512;

/// Connection settings shared by both NATS transports.
#[derive(Debug, Clone)]
struct NatsConn {
    channel: String,
    url: String,
    credentials: Credentials,
    tls: Option<TlsFiles>,
    timeout: Duration,
}

impl NatsConn {
    fn new(
        channel: &str,
        spec: &dyn Connection,
        ctx: &DriverContext,
    ) -> Result<NatsConn, PlanError> {
        conn::ensure_crypto_provider();
        Ok(NatsConn {
            channel: channel.to_owned(),
            url: spec.url().to_owned(),
            credentials: Credentials::from_env(channel, spec.auth())?,
            tls: TlsFiles::resolve(channel, spec.tls(), ctx)?,
            timeout: conn::timeout(spec.connect_timeout()),
        })
    }

    fn endpoint(&self) -> String {
        conn::redact(&self.url)
    }

    /// Connects; `events` receives the client's connection events (listeners record them
    /// as gaps). Fails when the server does not answer within the timeout.
    async fn connect(
        &self,
        buffer: usize,
        events: Option<ObservationSink>,
    ) -> Result<Client, String> {
        let mut options = ConnectOptions::new()
            .connection_timeout(self.timeout)
            .request_timeout(Some(self.timeout))
            .subscription_capacity(buffer)
            .name("roundtrip");
        let c = &self.credentials;
        if let (Some(user), Some(pass)) = (&c.username, &c.password) {
            options = options.user_and_password(user.clone(), pass.clone());
        }
        if let Some(token) = &c.token {
            options = options.token(token.clone());
        }
        if let Some(tls) = &self.tls {
            options = options.require_tls(true);
            if let Some(ca) = &tls.ca {
                options = options.add_root_certificates(ca.clone());
            }
            if let Some((cert, key)) = &tls.client {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
        }
        if let Some(sink) = events {
            let down: Arc<std::sync::Mutex<Option<(Instant, String, usize)>>> = Arc::default();
            options = options.event_callback(move |event| {
                let sink = sink.clone();
                let down = Arc::clone(&down);
                async move { record_event(&sink, &down, event) }
            });
        }
        let endpoint = self.endpoint();
        match tokio::time::timeout(self.timeout, options.connect(self.url.as_str())).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(conn::connect_failed("NATS", &endpoint, e)),
            Err(_) => Err(conn::timed_out("NATS at", &endpoint, self.timeout)),
        }
    }
}

/// Turns connection events into gaps: a disconnect (with how long it lasted) and every
/// slow-consumer drop.
fn record_event(
    sink: &ObservationSink,
    down: &std::sync::Mutex<Option<(Instant, String, usize)>>,
    event: Event,
) {
    let Ok(mut down) = down.lock() else { return };
    match event {
        // The gap is recorded at once, and completed with its length on reconnect: a
        // report written while the listener is away still shows it.
        Event::Disconnected => {
            let at = crate::clock::format_wall_now();
            let index = sink.open_gap(format!("disconnected at {at}; not reconnected yet"));
            *down = Some((Instant::now(), at, index));
        }
        Event::Connected => {
            if let Some((since, at, index)) = down.take() {
                sink.update_gap(
                    index,
                    format!(
                        "disconnected at {at} for {:?}; messages published meanwhile were \
                         not delivered (at-most-once) or will be redelivered (JetStream)",
                        since.elapsed()
                    ),
                );
            }
        }
        Event::SlowConsumer(_) => sink.gap(format!(
            "slow consumer at {}: the client's subscription buffer was full and dropped \
             messages; raise the channel's `buffer`",
            crate::clock::format_wall_now()
        )),
        // `Closed` is the listener's own stop (the server closing a connection shows as
        // `Disconnected`).
        _ => {}
    }
}

/// Proves the server has processed every SUB sent so far: it handles one connection's
/// protocol messages in order, so once a probe published after them comes back on a
/// probe subscription made after them, they are in effect.
async fn confirm_subscribed(client: &Client, timeout: Duration) -> Result<(), String> {
    let subject = format!("_ROUNDTRIP.probe.{}", uuid::Uuid::new_v4().simple());
    let mut probe = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| format!("subscribe the readiness probe: {e}"))?;
    client
        .publish(subject, bytes::Bytes::new())
        .await
        .map_err(|e| format!("publish the readiness probe: {e}"))?;
    client
        .flush()
        .await
        .map_err(|e| format!("flush the readiness probe: {e}"))?;
    match tokio::time::timeout(timeout, probe.next()).await {
        Ok(Some(_)) => {
            let _ = probe.unsubscribe().await;
            Ok(())
        }
        Ok(None) => Err("the connection closed before the subscription was confirmed".into()),
        Err(_) => Err(format!(
            "the server did not confirm the subscription within {timeout:?}"
        )),
    }
}

fn header_map(headers: &[(String, String)], content_type: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in conn::headers_with_content_type(headers, content_type) {
        map.insert(name.as_str(), value.as_str());
    }
    map
}

fn headers_of(map: Option<&HeaderMap>) -> Vec<(String, String)> {
    let Some(map) = map else { return Vec::new() };
    let mut out = Vec::new();
    for (name, values) in map.iter() {
        for value in values {
            out.push((name.to_string(), value.as_str().to_owned()));
        }
    }
    out
}

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
            .map_err(|e| conn::unreachable(&self.conn.channel, e))
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
                .map_err(|e| conn::unreachable(channel, e))?;
            let excerpt = String::from_utf8_lossy(&reply.payload[..reply.payload.len().min(200)]);
            return Ok(Receipt {
                detail: Some(format!("reply: {excerpt}")),
            });
        }
        client
            .publish_with_headers(self.subject.clone(), headers, message.body)
            .await
            .map_err(|e| conn::unreachable(channel, e))?;
        // A flush makes "accepted" mean "written to the server's socket", and surfaces a
        // dead connection now rather than at the next send.
        client
            .flush()
            .await
            .map_err(|e| conn::unreachable(channel, e))?;
        Ok(Receipt::default())
    }
}

/// Subscribes to a NATS subject (wildcards allowed). At-most-once.
#[derive(Debug)]
pub struct NatsListener {
    conn: NatsConn,
    subject: String,
    queue_group: Option<String>,
    buffer: usize,
}

impl NatsListener {
    /// Plans a listener for `channel`.
    pub fn new(
        channel: &str,
        spec: &NatsChannel,
        ctx: &DriverContext,
    ) -> Result<NatsListener, PlanError> {
        Ok(NatsListener {
            conn: NatsConn::new(channel, spec, ctx)?,
            subject: spec.subject.clone(),
            queue_group: spec.queue_group.clone(),
            buffer: spec.buffer.map_or(DEFAULT_BUFFER, |b| {
                usize::try_from(b).unwrap_or(DEFAULT_BUFFER)
            }),
        })
    }
}

#[async_trait]
impl Listener for NatsListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let channel = self.conn.channel.clone();
        let client = self
            .conn
            .connect(self.buffer, Some(sink.clone()))
            .await
            .map_err(|m| conn::start_error(&channel, m, "connect"))?;
        let subscribed = match &self.queue_group {
            Some(group) => {
                client
                    .queue_subscribe(self.subject.clone(), group.clone())
                    .await
            }
            None => client.subscribe(self.subject.clone()).await,
        };
        let mut subscriber = subscribed.map_err(|e| {
            conn::start_error(&channel, format!("subscribe to `{}`", self.subject), e)
        })?;
        confirm_subscribed(&client, self.conn.timeout)
            .await
            .map_err(|m| conn::start_error(&channel, m, "confirm the subscription"))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let messages = futures_util::stream::poll_fn(|cx| subscriber.poll_next_unpin(cx))
                .take_until(stopped);
            messages
                .for_each_concurrent(IN_FLIGHT, |msg| {
                    let sink = sink.clone();
                    async move {
                        let mut received =
                            Received::new(msg.payload.to_vec(), headers_of(msg.headers.as_ref()))
                                .with_meta("subject", msg.subject.to_string());
                        if let Some(reply) = &msg.reply {
                            received.meta.push(("reply".to_owned(), reply.to_string()));
                        }
                        received.key = Some(msg.subject.to_string());
                        // A store error is counted as a fault by the sink.
                        let _ = sink.record(received).await;
                    }
                })
                .await;
            drop(client);
        });
        Ok(RunningListener::new(
            format!("{} subject {}", self.conn.endpoint(), self.subject),
            "at-most-once",
            false,
            stop,
            task,
        ))
    }
}

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
                    .map_err(|e| conn::unreachable(channel, e))?;
                let js = jetstream::new(client);
                if self.create {
                    ensure_stream(&js, &self.stream, &self.subject)
                        .await
                        .map_err(|e| conn::unreachable(channel, e))?;
                }
                Ok(js)
            })
            .await
    }
}

/// Creates the stream over `subject` (file storage) unless it exists.
async fn ensure_stream(
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
            .map_err(|e| conn::unreachable(channel, e))?;
        let ack = tokio::time::timeout(self.conn.timeout, pending)
            .await
            .map_err(|_| {
                conn::rejected(
                    channel,
                    format!(
                        "JetStream did not acknowledge the publish to `{}` within {:?}",
                        self.subject, self.conn.timeout
                    ),
                )
            })?
            .map_err(|e| {
                conn::rejected(
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

/// Consumes a JetStream stream through a pull consumer; acks after the store committed.
#[derive(Debug)]
pub struct JetStreamListener {
    conn: NatsConn,
    stream: String,
    subject: String,
    create: bool,
    durable: Option<String>,
    ack_wait: Duration,
}

impl JetStreamListener {
    /// Plans a listener for `channel`.
    pub fn new(
        channel: &str,
        spec: &JetStreamChannel,
        ctx: &DriverContext,
    ) -> Result<JetStreamListener, PlanError> {
        Ok(JetStreamListener {
            conn: NatsConn::new(channel, spec, ctx)?,
            stream: spec.stream.clone(),
            subject: spec.subject.clone(),
            create: spec.create,
            durable: spec.durable.clone(),
            ack_wait: spec.ack_wait.map_or(Duration::from_secs(30), |d| d.0),
        })
    }
}

#[async_trait]
impl Listener for JetStreamListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let channel = self.conn.channel.clone();
        let client = self
            .conn
            .connect(DEFAULT_BUFFER, Some(sink.clone()))
            .await
            .map_err(|m| conn::start_error(&channel, m, "connect"))?;
        let js = jetstream::new(client);
        let stream = if self.create {
            ensure_stream(&js, &self.stream, &self.subject)
                .await
                .map_err(|m| conn::start_error(&channel, m, "create stream"))?
        } else {
            js.get_stream(&self.stream).await.map_err(|e| {
                conn::start_error(
                    &channel,
                    format!(
                        "stream `{}` is not there ({e}); create it, or set `create: true`",
                        self.stream
                    ),
                    "get stream",
                )
            })?
        };
        let config = pull::Config {
            durable_name: self.durable.clone(),
            filter_subject: self.subject.clone(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            max_ack_pending: 20_000,
            inactive_threshold: Duration::from_secs(300),
            ..Default::default()
        };
        // Creating the consumer fixes its start sequence: every message stored after this
        // returns is delivered (a durable one resumes where it stopped).
        let consumer = match &self.durable {
            Some(name) => stream.get_or_create_consumer(name, config).await,
            None => stream.create_consumer(config).await,
        }
        .map_err(|e| conn::start_error(&channel, "create the consumer", e))?;
        // The first pull request is made before `start` returns, so that a consumer that
        // cannot be pulled from fails here.
        let first = pull_batch(&consumer)
            .await
            .map_err(|e| conn::start_error(&channel, "start consuming", e))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = Arc::clone(&stopping);
            let watcher = tokio::spawn(async move {
                let _ = stopped.await;
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let mut batch = Some(first);
            let mut backoff = conn::Backoff::default();
            loop {
                let messages = match batch.take() {
                    Some(b) => b,
                    None if stopping.load(std::sync::atomic::Ordering::Relaxed) => break,
                    None => match pull_batch(&consumer).await {
                        Ok(b) => {
                            backoff.reset();
                            b
                        }
                        Err(e) => {
                            sink.consumer_error(e);
                            tokio::time::sleep(backoff.next_delay()).await;
                            continue;
                        }
                    },
                };
                // A pull request ends by itself within PULL_EXPIRES; no new one is made
                // once the listener stops, and what the last one still delivers is
                // released at once (nak) for the next consumer of a durable, instead of
                // waiting out `ack_wait` unacknowledged.
                messages
                    .for_each_concurrent(IN_FLIGHT, |msg| {
                        let sink = sink.clone();
                        let stopping = Arc::clone(&stopping);
                        async move {
                            let msg = match msg {
                                Ok(msg) => msg,
                                Err(e) => {
                                    // The end of a pull request is not an error.
                                    if !is_batch_end(&e) {
                                        sink.consumer_error(e);
                                    }
                                    return;
                                }
                            };
                            if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                                let _ = msg.ack_with(jetstream::AckKind::Nak(None)).await;
                                return;
                            }
                            record_jetstream(&sink, msg).await;
                        }
                    })
                    .await;
            }
            watcher.abort();
            // Acks queued just before the stop must reach the server before the client
            // goes: async-nats drops unsent commands when it is dropped.
            let _ = tokio::time::timeout(Duration::from_secs(5), js.client().flush()).await;
            drop(js);
        });
        Ok(RunningListener::new(
            format!(
                "{} stream {} subject {}",
                self.conn.endpoint(),
                self.stream,
                self.subject
            ),
            "at-least-once",
            false,
            stop,
            task,
        ))
    }
}

/// How long one pull request waits for messages; also the longest a stop waits for the
/// last one to end.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// Messages asked for per pull request.
const PULL_BATCH: usize = 500;

/// One pull request: the messages delivered for it, until it is full or expires.
async fn pull_batch(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
) -> Result<jetstream::consumer::pull::Batch, jetstream::consumer::pull::BatchError> {
    consumer
        .batch()
        .max_messages(PULL_BATCH)
        .expires(PULL_EXPIRES)
        .messages()
        .await
}

/// Whether a batch's error only says that the pull request ended.
fn is_batch_end(e: &async_nats::Error) -> bool {
    let text = e.to_string();
    text.contains("timed out") || text.contains("Request Timeout") || text.contains("no messages")
}

/// Records one JetStream message and acks it once the store holds it; an unacked
/// message is redelivered after `ack_wait`.
async fn record_jetstream(sink: &ObservationSink, msg: jetstream::Message) {
    let mut received = Received::new(msg.payload.to_vec(), headers_of(msg.headers.as_ref()))
        .with_meta("subject", msg.subject.to_string());
    received.key = Some(msg.subject.to_string());
    if let Ok(info) = msg.info() {
        received.redelivered = info.delivered > 1;
        received.message_id = Some(format!("{}", info.stream_sequence));
        received.meta.extend([
            ("stream".to_owned(), info.stream.to_owned()),
            (
                "stream_sequence".to_owned(),
                info.stream_sequence.to_string(),
            ),
            ("delivered".to_owned(), info.delivered.to_string()),
        ]);
    }
    if sink.record(received).await.is_ok() && msg.ack().await.is_err() {
        sink.gap_counted("an ack was not delivered; the message will come again", 0);
    }
}
