//! The Kafka-API driver (`kafka`) over librdkafka (rdkafka, bundled build).
//!
//! - The producer sends with `acks=all` and idempotence; headers travel as record
//!   headers, the key defaults to the correlation id (so one event's records share a
//!   partition).
//! - Without a `group`, the listener is assigned every partition of the topic at its
//!   current end (read with ListOffsets before `start` returns: nothing produced after
//!   that can be missed) and commits nothing.
//! - With a `group`, it joins the consumer group (a new group starts at the earliest
//!   offset) and is ready once partitions are assigned. Offsets are stored only after the
//!   store committed the record, in arrival order, and committed every 200 ms and at stop
//!   by the listener itself (librdkafka's auto-commit, which also commits on close, is off):
//!   a restarted listener resumes where the group stopped, re-reading at most what was
//!   recorded but not yet committed (counted as duplicates by the expectations).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use roundtrip_core::model::KafkaChannel;
use tokio::sync::{OnceCell, oneshot, watch};

use super::conn::{self, Credentials, TlsFiles};
use super::registry::PlanError;
use super::{
    DriverContext, ListenError, Listener, ObservationSink, Outgoing, ProduceError, Producer,
    Receipt, Received, RunningListener,
};

/// Records recorded concurrently (offsets are still stored in arrival order).
const IN_FLIGHT: usize = 512;

/// The client settings shared by producer and listener. `Debug` leaves out `config`,
/// which holds the SASL password.
#[derive(Clone)]
struct KafkaConn {
    channel: String,
    brokers: String,
    topic: String,
    config: Vec<(String, String)>,
    timeout: Duration,
    /// Partitions to create the topic with when it is missing (`create: true`).
    create: Option<i32>,
}

impl std::fmt::Debug for KafkaConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConn")
            .field("channel", &self.channel)
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KafkaConn {
    fn new(
        channel: &str,
        spec: &KafkaChannel,
        ctx: &DriverContext,
    ) -> Result<KafkaConn, PlanError> {
        let credentials = Credentials::from_env(channel, spec.auth.as_ref())?;
        let tls = TlsFiles::resolve(channel, spec.tls.as_ref(), ctx)?;
        let mut config = vec![("bootstrap.servers".to_owned(), spec.brokers.clone())];
        let sasl = credentials.username.is_some();
        let protocol = match (tls.is_some(), sasl) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        config.push(("security.protocol".into(), protocol.into()));
        if let Some(tls) = tls {
            if let Some(ca) = tls.ca {
                config.push(("ssl.ca.location".into(), ca.display().to_string()));
            }
            if let Some((cert, key)) = tls.client {
                config.push((
                    "ssl.certificate.location".into(),
                    cert.display().to_string(),
                ));
                config.push(("ssl.key.location".into(), key.display().to_string()));
            }
        }
        if let Some(user) = credentials.username {
            config.push(("sasl.mechanism".into(), "PLAIN".into()));
            config.push(("sasl.username".into(), user));
            config.push((
                "sasl.password".into(),
                credentials.password.unwrap_or_default(),
            ));
        }
        Ok(KafkaConn {
            channel: channel.to_owned(),
            brokers: spec.brokers.clone(),
            topic: spec.topic.clone(),
            config,
            timeout: conn::timeout(spec.connect_timeout),
            create: spec
                .create
                .then(|| i32::try_from(spec.partitions.unwrap_or(1).max(1)).unwrap_or(i32::MAX)),
        })
    }

    /// Creates the topic when `create` is set; an existing topic is fine.
    async fn ensure_topic(&self) -> Result<(), String> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::types::RDKafkaErrorCode;
        let Some(partitions) = self.create else {
            return Ok(());
        };
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| format!("create an admin client: {e}"))?;
        let topic = NewTopic::new(&self.topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results =
            tokio::time::timeout(self.timeout * 2, admin.create_topics(&[topic], &options))
                .await
                .map_err(|_| conn::timed_out("Kafka at", &self.brokers, self.timeout))?
                .map_err(|e| format!("create topic `{}` on {}: {e}", self.topic, self.brokers))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, e)) => {
                    return Err(format!(
                        "create topic `{}` on {}: {e}",
                        self.topic, self.brokers
                    ));
                }
            }
        }
        Ok(())
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.config {
            c.set(k, v);
        }
        let ms = self.timeout.as_millis().to_string();
        c.set("socket.connection.setup.timeout.ms", ms.as_str());
        c.set("log_level", "3");
        c
    }

    /// The topic's partitions, read from the cluster's metadata (a blocking call, run on
    /// the blocking pool). Fails clearly when the broker is unreachable or the topic
    /// missing.
    async fn partitions<C: Consumer<X> + Send + Sync + 'static, X: ConsumerContext + 'static>(
        &self,
        client: Arc<C>,
    ) -> Result<Vec<i32>, String> {
        let topic = self.topic.clone();
        let brokers = self.brokers.clone();
        let timeout = self.timeout;
        let result = tokio::task::spawn_blocking(move || {
            client.fetch_metadata(Some(&topic), timeout).map(|m| {
                m.topics().iter().find(|t| t.name() == topic).map(|t| {
                    (
                        t.error(),
                        t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>(),
                    )
                })
            })
        })
        .await
        .map_err(|e| e.to_string())?;
        match result {
            Err(e) => Err(format!(
                "read metadata from Kafka at {brokers}: {e}; {}",
                conn::SERVICES_HINT
            )),
            Ok(Some((None, partitions))) if !partitions.is_empty() => Ok(partitions),
            Ok(_) => Err(format!(
                "topic `{}` does not exist on {brokers}; create it first, or set `create: \
                 true` on the channel",
                self.topic
            )),
        }
    }
}

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
                let producer: FutureProducer =
                    config.create().map_err(|e| conn::unreachable(channel, e))?;
                self.conn
                    .ensure_topic()
                    .await
                    .map_err(|e| conn::unreachable(channel, e))?;
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
                .map_err(|e| conn::unreachable(channel, e))?
                .map_err(|e| {
                    conn::unreachable(
                        channel,
                        format!(
                            "read metadata from Kafka at {}: {e}; {}",
                            self.conn.brokers,
                            conn::SERVICES_HINT
                        ),
                    )
                })?;
                if !known {
                    return Err(conn::unreachable(
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
            Err((e, _)) => Err(conn::rejected(
                &self.conn.channel,
                format!("produce to `{}`: {e}", self.conn.topic),
            )),
        }
    }
}

/// How often a group listener commits the offsets of what it recorded.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// The next offset to commit per partition: one past the last recorded record. Records
/// are taken back in arrival order, so this only moves forward; after a record the store
/// failed to take, its partition's offset stops moving, so the record is read again after
/// a restart rather than skipped.
#[derive(Debug, Default)]
struct Offsets {
    next: std::collections::BTreeMap<(String, i32), i64>,
    frozen: std::collections::BTreeSet<(String, i32)>,
}

impl Offsets {
    fn taken_back(&mut self, committed: bool, (topic, partition, offset): (String, i32, i64)) {
        let key = (topic, partition);
        if !committed {
            self.frozen.insert(key);
        } else if !self.frozen.contains(&key) {
            self.next.insert(key, offset + 1);
        }
    }

    fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    /// Commits and forgets what was recorded; a failed commit is a gap (the records come
    /// again after a restart, as duplicates).
    fn commit<C: Consumer<X>, X: ConsumerContext>(
        &mut self,
        consumer: &C,
        mode: CommitMode,
        sink: &ObservationSink,
    ) {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in std::mem::take(&mut self.next) {
            if tpl
                .add_partition_offset(&topic, partition, Offset::Offset(next))
                .is_err()
            {
                continue;
            }
        }
        if let Err(e) = consumer.commit(&tpl, mode) {
            sink.gap(format!(
                "an offset commit failed ({e}); recorded records may be read again"
            ));
        }
    }
}

/// Signals partition assignment, and records rebalances that take partitions away.
struct GroupContext {
    assigned: watch::Sender<bool>,
    sink: ObservationSink,
    /// Set when the listener stops: the revocation that closing causes is no gap.
    stopping: std::sync::atomic::AtomicBool,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        match rebalance {
            Rebalance::Assign(tpl) if tpl.count() > 0 => {
                let _ = self.assigned.send(true);
            }
            Rebalance::Revoke(_) if self.stopping.load(std::sync::atomic::Ordering::Relaxed) => {}
            Rebalance::Revoke(tpl) if tpl.count() > 0 => self.sink.gap(format!(
                "{} partitions revoked at {} by a group rebalance; they resume from the \
                 last committed offset",
                tpl.count(),
                crate::clock::format_wall_now()
            )),
            Rebalance::Error(e) => self.sink.gap(format!("rebalance error: {e}")),
            _ => {}
        }
    }
}

/// Consumes a topic: assigned partitions at their end, or a consumer group.
#[derive(Debug)]
pub struct KafkaListener {
    conn: KafkaConn,
    group: Option<String>,
}

impl KafkaListener {
    /// Plans a listener for `channel`.
    pub fn new(
        channel: &str,
        spec: &KafkaChannel,
        ctx: &DriverContext,
    ) -> Result<KafkaListener, PlanError> {
        Ok(KafkaListener {
            conn: KafkaConn::new(channel, spec, ctx)?,
            group: spec.group.clone(),
        })
    }
}

#[async_trait]
impl Listener for KafkaListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let channel = self.conn.channel.clone();
        let fail = |m: String| conn::start_error(&channel, m, "kafka");
        let (assigned_tx, mut assigned) = watch::channel(false);
        let mut config = self.conn.client_config();
        let group = self
            .group
            .clone()
            .unwrap_or_else(|| format!("roundtrip-{}", uuid::Uuid::new_v4().simple()));
        config
            .set("group.id", &group)
            // Offsets are committed by the listener itself, only ever for recorded
            // records: librdkafka's own commits (periodic, and on close or revocation)
            // are off.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("max.poll.interval.ms", "10000")
            .set("session.timeout.ms", "6000")
            // A fetch waits at most 1 ms for data: the listener learns of a record about
            // a millisecond after it is written, at the cost of idle fetch requests.
            .set("fetch.wait.max.ms", "1")
            .set("fetch.error.backoff.ms", "10");
        let consumer: Arc<StreamConsumer<GroupContext>> = Arc::new(
            config
                .create_with_context(GroupContext {
                    assigned: assigned_tx,
                    sink: sink.clone(),
                    stopping: std::sync::atomic::AtomicBool::new(false),
                })
                .map_err(|e| fail(format!("create the consumer: {e}")))?,
        );
        self.conn.ensure_topic().await.map_err(fail)?;
        let partitions = self
            .conn
            .partitions(Arc::clone(&consumer))
            .await
            .map_err(fail)?;
        let topic = self.conn.topic.clone();
        if self.group.is_some() {
            consumer
                .subscribe(&[&topic])
                .map_err(|e| fail(format!("subscribe to `{topic}`: {e}")))?;
        } else {
            // Every partition at its current end: the listener's start position is fixed
            // before `start` returns.
            let c = Arc::clone(&consumer);
            let (t, timeout) = (topic.clone(), self.conn.timeout);
            let tpl = tokio::task::spawn_blocking(move || {
                let mut tpl = TopicPartitionList::new();
                for p in partitions {
                    let (_, high) = c.fetch_watermarks(&t, p, timeout)?;
                    tpl.add_partition_offset(&t, p, Offset::Offset(high))?;
                }
                Ok::<_, rdkafka::error::KafkaError>(tpl)
            })
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(format!("read the end offsets of `{topic}`: {e}")))?;
            consumer
                .assign(&tpl)
                .map_err(|e| fail(format!("assign the partitions of `{topic}`: {e}")))?;
            let _ = assigned.borrow_and_update();
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let task_consumer = Arc::clone(&consumer);
        let commits = self.group.is_some();
        let task = tokio::spawn(async move {
            let consumer = task_consumer;
            let mut ready = Some(ready_tx);
            if !commits && let Some(r) = ready.take() {
                let _ = r.send(());
            }
            let mut offsets = Offsets::default();
            {
                let stream = consumer.stream().take_until(stopped);
                let mut stream = std::pin::pin!(stream);
                let mut records = futures_util::stream::FuturesOrdered::new();
                let mut tick = tokio::time::interval(COMMIT_EVERY);
                loop {
                    tokio::select! {
                        biased;
                        Some((committed, position)) = records.next(), if !records.is_empty() => {
                            if commits {
                                offsets.taken_back(committed, position);
                            }
                        }
                        _ = tick.tick(), if commits && !offsets.is_empty() => {
                            offsets.commit(&*consumer, CommitMode::Async, &sink);
                        }
                        changed = assigned.changed(), if ready.is_some() => {
                            if changed.is_ok() && *assigned.borrow()
                                && let Some(r) = ready.take() {
                                let _ = r.send(());
                            }
                        }
                        next = stream.next(), if records.len() < IN_FLIGHT => {
                            let Some(next) = next else { break };
                            let message = match next {
                                Ok(m) => m.detach(),
                                Err(e) => {
                                    sink.consumer_error(e);
                                    continue;
                                }
                            };
                            let mut headers = Vec::new();
                            if let Some(h) = message.headers() {
                                for header in h.iter() {
                                    let value = header.value.map(|v| String::from_utf8_lossy(v).into_owned());
                                    headers.push((header.key.to_owned(), value.unwrap_or_default()));
                                }
                            }
                            let mut received = Received::new(message.payload().unwrap_or_default().to_vec(), headers);
                            received.key = message.key().map(|k| String::from_utf8_lossy(k).into_owned());
                            let position = (message.topic().to_owned(), message.partition(), message.offset());
                            received.message_id = Some(format!("{}/{}/{}", position.0, position.1, position.2));
                            received.meta.extend([
                                ("topic".to_owned(), position.0.clone()),
                                ("partition".to_owned(), position.1.to_string()),
                                ("offset".to_owned(), position.2.to_string()),
                            ]);
                            let sink = sink.clone();
                            records.push_back(async move { (sink.record(received).await.is_ok(), position) });
                        }
                    }
                }
                while let Some((committed, position)) = records.next().await {
                    if commits {
                        offsets.taken_back(committed, position);
                    }
                }
            }
            consumer
                .context()
                .stopping
                .store(true, std::sync::atomic::Ordering::Relaxed);
            // The final commit, and the consumer's close (librdkafka leaves the group,
            // which can take a while), happen off the async workers, bounded.
            let sink = sink.clone();
            let closing = tokio::task::spawn_blocking(move || {
                if commits && !offsets.is_empty() {
                    offsets.commit(&*consumer, CommitMode::Sync, &sink);
                }
                drop(consumer);
            });
            let _ = tokio::time::timeout(Duration::from_secs(10), closing).await;
        });
        if !matches!(
            tokio::time::timeout(self.conn.timeout * 3, ready_rx).await,
            Ok(Ok(()))
        ) {
            task.abort();
            return Err(fail(format!(
                "consumer group `{group}` got no partitions of `{topic}` within {:?}",
                self.conn.timeout * 3
            )));
        }
        let endpoint = format!(
            "{} topic {topic}{}",
            self.conn.brokers,
            self.group
                .as_ref()
                .map(|g| format!(" group {g}"))
                .unwrap_or_default()
        );
        Ok(RunningListener::new(
            endpoint,
            "at-least-once",
            false,
            stop,
            task,
        ))
    }
}
