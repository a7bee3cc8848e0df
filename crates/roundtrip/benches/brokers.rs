//! Per broker transport: the round-trip time to detect, and the sustained ingest rate.
//!
//! Against the real local servers (`scripts/services.sh start`), with roundtrip's own
//! producer and listener for each transport and a file-backed SQLite store (WAL,
//! synchronous=FULL: every observation is durable before it counts):
//!
//! - **time to detect**: 500 messages sent one at a time; for each, from just before the
//!   producer's `send` to the moment the committed observation reaches the store's feed
//!   (the point where an expectation would learn of it). Includes the broker's ack of
//!   the send where the transport has one.
//! - **sustained ingest**: 20,000 messages of ~150 B sent with 256 in flight while the
//!   listener records; from the first send to the last commit. This is the end-to-end
//!   rate of producer, broker, listener and durable store together.
//!
//! Run: `cargo bench -p roundtrip --features full --bench brokers` (prints a markdown
//! table). One transport: `… --bench brokers -- nats`.

use roundtrip_core::run::RunStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use roundtrip::core::correlate::Correlator;
use roundtrip::core::latency::{LatencySummary, format_ns};
use roundtrip::core::model::*;
use roundtrip::store::RunRecord;
use roundtrip::transport::{DriverContext, ObservationSink, Outgoing, Producer, registry};
use tokio::sync::broadcast::error::RecvError;

const DETECT: usize = 500;
const INGEST: usize = 20_000;

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn timeout() -> Option<DurationSpec> {
    Some(DurationSpec(Duration::from_secs(5)))
}

/// (name, producer spec, listener spec, correlation by header)
fn cases() -> Vec<(&'static str, ChannelSpec, ChannelSpec, bool)> {
    let nats = ChannelSpec::Nats(NatsChannel {
        connect_timeout: timeout(),
        ..NatsChannel::new("nats://127.0.0.1:4222", unique("bench.nats"))
    });
    let stream = unique("BENCH");
    let js = |durable: Option<String>| {
        ChannelSpec::JetStream(JetStreamChannel {
            create: true,
            durable,
            connect_timeout: timeout(),
            ..JetStreamChannel::new(
                "nats://127.0.0.1:4222",
                stream.clone(),
                format!("bench.js.{stream}"),
            )
        })
    };
    let rstream = unique("bench:stream");
    let redis_stream = |group: Option<&str>| {
        ChannelSpec::RedisStream(RedisStreamChannel {
            group: group.map(str::to_owned),
            connect_timeout: timeout(),
            ..RedisStreamChannel::new("redis://127.0.0.1:6379", rstream.clone())
        })
    };
    let pubsub = ChannelSpec::RedisPubSub(RedisPubSubChannel {
        connect_timeout: timeout(),
        ..RedisPubSubChannel::new("redis://127.0.0.1:6379", unique("bench:pubsub"))
    });
    let amqp = ChannelSpec::Amqp(AmqpChannel {
        queue: Some(unique("bench.amqp")),
        declare: true,
        connect_timeout: timeout(),
        ..AmqpChannel::new("amqp://guest:guest@127.0.0.1:5672/%2f")
    });
    let topic = unique("bench/mqtt");
    let mqtt = |client_id: Option<String>| {
        ChannelSpec::Mqtt(MqttChannel {
            client_id,
            connect_timeout: timeout(),
            ..MqttChannel::new("mqtt://127.0.0.1:1883", topic.clone())
        })
    };
    let ktopic = unique("bench-kafka");
    let kafka = |group: Option<String>| {
        ChannelSpec::Kafka(KafkaChannel {
            create: true,
            partitions: Some(3),
            group,
            connect_timeout: timeout(),
            ..KafkaChannel::new("127.0.0.1:9092", ktopic.clone())
        })
    };
    vec![
        ("nats", nats.clone(), nats, true),
        ("jetstream", js(None), js(Some(unique("durable"))), true),
        (
            "redis_stream (group)",
            redis_stream(None),
            redis_stream(Some("bench")),
            true,
        ),
        ("redis_pubsub", pubsub.clone(), pubsub, false),
        ("amqp", amqp.clone(), amqp, true),
        (
            "mqtt 5 (QoS 1)",
            mqtt(None),
            mqtt(Some(unique("bench"))),
            true,
        ),
        (
            "kafka (group)",
            kafka(None),
            kafka(Some(unique("group"))),
            true,
        ),
        ("kafka (assigned)", kafka(None), kafka(None), true),
    ]
}

fn message(seq: usize) -> Outgoing {
    let id = uuid::Uuid::now_v7().to_string();
    let body = serde_json::to_vec(&serde_json::json!({
        "correlationId": id, "seq": seq, "item": "widget", "note": "bench payload"
    }))
    .unwrap_or_default();
    Outgoing {
        body: Bytes::from(body),
        content_type: "application/json",
        headers: vec![("x-correlation-id".into(), id.clone())],
        correlation_id: id,
        key: None,
        fifo: None,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    println!(
        "| transport | detect p50 | detect p99 | ingest (msg/s, durable) | listener drain \
         (msg/s, durable) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (name, produce, listen, headers) in cases() {
        if !only.is_empty() && !only.iter().any(|o| name.starts_with(o.as_str())) {
            continue;
        }
        let dir = tempfile::tempdir()?;
        let store = roundtrip::store::open(&format!(
            "sqlite:{}",
            dir.path().join("bench.sqlite").display()
        ))
        .await?;
        let run_id = uuid::Uuid::now_v7().to_string();
        store
            .create_run(&RunRecord {
                run_id: run_id.clone(),
                suite: "brokers bench".into(),
                suite_path: "-".into(),
                started_at: 0,
                finished_at: None,
                status: RunStatus::Running,
                owner: None,
            })
            .await?;
        let rule = if headers {
            CorrelationRule::default()
        } else {
            CorrelationRule {
                header: None,
                json: Some("$.correlationId".into()),
                traceparent: None,
            }
        };
        let sink = ObservationSink::new(
            Arc::clone(&store),
            run_id.clone(),
            "out",
            Arc::new(Correlator::new(&rule)?),
            registry::max_payload(&listen),
        );
        let ctx = DriverContext {
            base_dir: ".".into(),
        };
        let mut feed = store.subscribe();
        let listener_stats = sink.stats();
        let listener = registry::listener("out", &listen, &ctx)?
            .start(sink)
            .await?;
        let producer: Arc<dyn Producer> = registry::producer("in", &produce, &ctx)?.into();
        producer.connect().await?;

        let detect = time_to_detect(&producer, &mut feed).await?;
        // Mosquitto queues at most 1,000 messages (and 20 in flight) per subscriber by
        // default and drops beyond that: a producer with 16 or 256 in flight outruns a
        // listener that acks only after a durable commit (seen). 4 in flight keeps within.
        let in_flight = if name.starts_with("mqtt") { 4 } else { 256 };
        let rate = match ingest(in_flight, &producer, &mut feed).await {
            Ok(rate) => format!("{rate:.0} ({in_flight} in flight)"),
            Err(e) => format!("failed: {e}"),
        };
        let stats = listener_stats
            .recorded
            .load(std::sync::atomic::Ordering::Relaxed);
        listener.stop().await;
        // The listener alone: a backlog left in the broker while no listener ran, then
        // drained by a restarted one (durable consumers, groups and queues only).
        let drain = if DRAINABLE.iter().any(|d| name.starts_with(d)) {
            let sink = ObservationSink::new(
                Arc::clone(&store),
                run_id.clone(),
                "out",
                Arc::new(Correlator::new(&rule)?),
                registry::max_payload(&listen),
            );
            match drain(&producer, &listen, &ctx, sink, &mut feed).await {
                Ok(rate) => format!("{rate:.0}"),
                Err(e) => format!("failed: {e}"),
            }
        } else {
            "—".to_owned()
        };
        println!(
            "| {name} | {} | {} | {rate} | {drain} |",
            format_ns(detect.p50_ns),
            format_ns(detect.p99_ns)
        );
        eprintln!("{name}: {stats} recorded, gaps {:?}", listener_stats.gaps());
    }
    Ok(())
}

/// Transports whose broker keeps a backlog for a stopped listener.
const DRAINABLE: &[&str] = &["jetstream", "redis_stream", "amqp", "kafka (group)"];

/// Fills the broker with [`INGEST`] messages while no listener runs, then times a
/// restarted listener from `start` to the last durable commit.
async fn drain(
    producer: &Arc<dyn Producer>,
    listen: &ChannelSpec,
    ctx: &DriverContext,
    sink: ObservationSink,
    feed: &mut tokio::sync::broadcast::Receiver<Arc<roundtrip::core::observation::Observation>>,
) -> Result<f64, Box<dyn std::error::Error>> {
    futures_util::stream::iter(0..INGEST)
        .for_each_concurrent(256, |seq| {
            let producer = Arc::clone(producer);
            async move {
                if let Err(e) = producer.send(message(seq)).await {
                    eprintln!("send failed: {e}");
                }
            }
        })
        .await;
    while let Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) =
        tokio::time::timeout(Duration::ZERO, feed.recv()).await
    {}
    let started = Instant::now();
    let listener = registry::listener("out", listen, ctx)?.start(sink).await?;
    let mut seen = 0usize;
    while seen < INGEST {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(10), feed.recv()).await else {
            listener.stop().await;
            return Err(format!("only {seen} of {INGEST} drained").into());
        };
        match next {
            Ok(_) => seen += 1,
            Err(RecvError::Lagged(n)) => seen += usize::try_from(n).unwrap_or(usize::MAX),
            Err(RecvError::Closed) => return Err("the feed closed".into()),
        }
    }
    let rate = INGEST as f64 / started.elapsed().as_secs_f64();
    listener.stop().await;
    Ok(rate)
}

async fn time_to_detect(
    producer: &Arc<dyn Producer>,
    feed: &mut tokio::sync::broadcast::Receiver<Arc<roundtrip::core::observation::Observation>>,
) -> Result<LatencySummary, Box<dyn std::error::Error>> {
    let mut samples = Vec::with_capacity(DETECT);
    for seq in 0..DETECT {
        let message = message(seq);
        let id = message.correlation_id.clone();
        let sent = Instant::now();
        producer.send(message).await?;
        loop {
            let observation = tokio::time::timeout(Duration::from_secs(30), feed.recv()).await??;
            if observation.correlation_id.as_deref() == Some(id.as_str()) {
                break;
            }
        }
        samples.push(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    LatencySummary::from_ns(&samples).ok_or_else(|| "no samples".into())
}

async fn ingest(
    in_flight: usize,
    producer: &Arc<dyn Producer>,
    feed: &mut tokio::sync::broadcast::Receiver<Arc<roundtrip::core::observation::Observation>>,
) -> Result<f64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let sending = {
        let producer = Arc::clone(producer);
        tokio::spawn(async move {
            futures_util::stream::iter(0..INGEST)
                .for_each_concurrent(in_flight, |seq| {
                    let producer = Arc::clone(&producer);
                    async move {
                        if let Err(e) = producer.send(message(seq)).await {
                            eprintln!("send failed: {e}");
                        }
                    }
                })
                .await;
        })
    };
    let mut seen = 0usize;
    while seen < INGEST {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(10), feed.recv()).await else {
            return Err(format!(
                "only {seen} of {INGEST} recorded; nothing more for 10 s (a broker-side drop)"
            )
            .into());
        };
        match next {
            Ok(_) => seen += 1,
            Err(RecvError::Lagged(n)) => seen += usize::try_from(n).unwrap_or(usize::MAX),
            Err(RecvError::Closed) => return Err("the feed closed".into()),
        }
    }
    sending.await?;
    Ok(INGEST as f64 / started.elapsed().as_secs_f64())
}
