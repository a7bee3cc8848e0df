//! The `kafka` listener: every partition at its end without a group; with a group, offsets
//! stored after the store committed and committed every 200 ms and at stop.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use roundtrip_core::model::KafkaChannel;
use tokio::sync::{oneshot, watch};

use crate::transport::kafka::conn::KafkaConn;
use crate::transport::{
    Delivery, DriverContext, GapKind, ListenError, Listener, ObservationSink, PlanError, Received,
    RunningListener,
};

/// Records recorded concurrently (offsets are still stored in arrival order).
const IN_FLIGHT: usize = 512;

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
            sink.gap(
                GapKind::AckFailed,
                format!("an offset commit failed ({e}); recorded records may be read again"),
            );
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
            Rebalance::Revoke(tpl) if tpl.count() > 0 => self.sink.gap(
                GapKind::Other,
                format!(
                    "{} partitions revoked at {} by a group rebalance; they resume from the \
                 last committed offset",
                    tpl.count(),
                    crate::clock::format_wall_now()
                ),
            ),
            Rebalance::Error(e) => self
                .sink
                .gap(GapKind::Other, format!("rebalance error: {e}")),
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

/// Assigns every partition of `topic` to `consumer` at its current end.
async fn assign_at_end(
    consumer: &Arc<StreamConsumer<GroupContext>>,
    topic: &str,
    partitions: Vec<i32>,
    timeout: Duration,
) -> Result<(), String> {
    let (c, t) = (Arc::clone(consumer), topic.to_owned());
    let tpl = tokio::task::spawn_blocking(move || {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            let (_, high) = c.fetch_watermarks(&t, p, timeout)?;
            tpl.add_partition_offset(&t, p, Offset::Offset(high))?;
        }
        Ok::<_, rdkafka::error::KafkaError>(tpl)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("read the end offsets of `{topic}`: {e}"))?;
    consumer
        .assign(&tpl)
        .map_err(|e| format!("assign the partitions of `{topic}`: {e}"))
}

/// A record as the sink takes it, and its position (topic, partition, offset).
fn received(message: &rdkafka::message::OwnedMessage) -> (Received, (String, i32, i64)) {
    let mut headers = Vec::new();
    if let Some(h) = message.headers() {
        for header in h.iter() {
            let value = header
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned());
            headers.push((header.key.to_owned(), value.unwrap_or_default()));
        }
    }
    let mut received = Received::new(message.payload().unwrap_or_default().to_vec(), headers);
    received.key = message
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned());
    let position = (
        message.topic().to_owned(),
        message.partition(),
        message.offset(),
    );
    received.message_id = Some(format!("{}/{}/{}", position.0, position.1, position.2));
    received.meta.extend([
        ("topic".to_owned(), position.0.clone()),
        ("partition".to_owned(), position.1.to_string()),
        ("offset".to_owned(), position.2.to_string()),
    ]);
    (received, position)
}

impl KafkaListener {
    /// The consumer's configuration in `group`.
    fn consumer_config(&self, group: &str) -> rdkafka::ClientConfig {
        let mut config = self.conn.client_config();
        config
            .set("group.id", group)
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
        config
    }
}

#[async_trait]
impl Listener for KafkaListener {
    async fn start(self: Box<Self>, sink: ObservationSink) -> Result<RunningListener, ListenError> {
        let channel = self.conn.channel.clone();
        let fail = |m: String| crate::transport::error::start_error(&channel, m, "kafka");
        let (assigned_tx, mut assigned) = watch::channel(false);
        let group = self
            .group
            .clone()
            .unwrap_or_else(|| format!("roundtrip-{}", uuid::Uuid::new_v4().simple()));
        let config = self.consumer_config(&group);
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
            assign_at_end(&consumer, &topic, partitions, self.conn.timeout)
                .await
                .map_err(fail)?;
            let _ = assigned.borrow_and_update();
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(consume(
            Arc::clone(&consumer),
            sink,
            self.group.is_some(),
            assigned,
            ready_tx,
            stopped,
        ));
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
            Delivery::AtLeastOnce,
            false,
            stop,
            task,
        ))
    }
}

/// Records what the consumer delivers until `stopped` fires, at most [`IN_FLIGHT`]
/// records at once; with `commits` (a group), commits the offsets of recorded records
/// every [`COMMIT_EVERY`] and once more at the end, off the async workers. `ready` fires
/// once partitions are assigned (at once without a group: they were assigned at start).
async fn consume(
    consumer: Arc<StreamConsumer<GroupContext>>,
    sink: ObservationSink,
    commits: bool,
    mut assigned: watch::Receiver<bool>,
    ready: oneshot::Sender<()>,
    stopped: oneshot::Receiver<()>,
) {
    let mut ready = Some(ready);
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
                    let (received, position) = received(&message);
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
    // The final commit, and the consumer's close (librdkafka leaves the group, which can
    // take a while), happen off the async workers, bounded.
    let closing = tokio::task::spawn_blocking(move || {
        if commits && !offsets.is_empty() {
            offsets.commit(&*consumer, CommitMode::Sync, &sink);
        }
        drop(consumer);
    });
    let _ = tokio::time::timeout(Duration::from_secs(10), closing).await;
}
