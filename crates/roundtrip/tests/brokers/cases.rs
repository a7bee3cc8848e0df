//! One [`Case`] per driver, and the conformance tests generated for each.

#![allow(
    unused_imports,
    reason = "each case imports what its transport needs; a build with some features leaves some unused"
)]

use roundtrip::core::model::*;

use super::checks::{self, Case};

/// Messages in the restart test, for brokers that keep everything for a listener.
#[cfg(feature = "_broker")]
const RESTART: u64 = 2_000;
/// Messages in the volume test.
#[cfg(feature = "_broker")]
const MANY: u64 = 10_000;
/// Mosquitto queues at most 1,000 messages for an offline client by default.
#[cfg(feature = "mqtt")]
const MQTT_RESTART: u64 = 800;

/// Short, so that an unreachable server fails fast.
#[cfg(feature = "_broker")]
fn connect_timeout() -> Option<DurationSpec> {
    Some(DurationSpec(std::time::Duration::from_secs(2)))
}

/// A name unique to one test.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}

/// Expands the items only when the flag is `true`.
macro_rules! when {
    (true; $($item:item)*) => { $($item)* };
    (false; $($item:item)*) => {};
}

/// Generates the conformance tests for one driver: only those that apply. `durable`
/// and `ordered` must agree with the case (the first test checks that), so a test
/// that does not apply is not generated rather than passing without asserting.
macro_rules! conformance {
    ($module:ident, $feature:literal, $case:path, unreachable: $unreachable:path, hint: $hint:literal,
     durable: $durable:tt, ordered: $ordered:tt) => {
        #[cfg(feature = $feature)]
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn round_trip_is_correlated_and_keeps_headers() {
                let case = $case().await;
                assert_eq!(
                    (case.durable, case.ordered),
                    ($durable, $ordered),
                    "the conformance! flags (durable, ordered) disagree with the case"
                );
                checks::round_trip(case).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn binary_and_large_payloads_arrive_intact() {
                checks::binary_and_large_payloads($case().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn many_messages_none_lost_silently() {
                checks::many_none_lost($case().await).await;
            }

            when! { $durable;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn a_killed_and_restarted_listener_loses_nothing() {
                    checks::restart_loses_nothing($case().await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn back_to_back_runs_on_one_durable_input_lose_nothing() {
                    checks::back_to_back_runs_lose_nothing($case().await).await;
                }
            }

            when! { $ordered;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn messages_arrive_in_order_where_promised() {
                    checks::ordered_per_key($case().await).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_unreachable_server_is_a_clear_error() {
                checks::unreachable_server($case().await, $unreachable(), $hint).await;
            }
        }
    };
}

// -------------------------------------------------------------------------------------
// NATS

#[cfg(feature = "nats")]
fn nats(subject: &str, url: &str) -> ChannelSpec {
    ChannelSpec::Nats(NatsChannel {
        connect_timeout: connect_timeout(),
        ..NatsChannel::new(url, subject)
    })
}

#[cfg(feature = "nats")]
async fn nats_case() -> Case {
    let subject = unique("conf.nats");
    Case {
        producer: nats(&subject, "nats://127.0.0.1:4222"),
        listener: nats(&subject, "nats://127.0.0.1:4222"),
        durable: false,
        ordered: true,
        headers: true,
        // The server's default max_payload is 1 MiB including headers.
        max_payload: (1 << 20) - 4096,
        restart_messages: RESTART,
        many: MANY,
        json_only: false,
        key_per_message: false,
    }
}

#[cfg(feature = "nats")]
fn nats_unreachable() -> ChannelSpec {
    nats("x", "nats://127.0.0.1:1")
}

conformance!(nats_core, "nats", nats_case, unreachable: nats_unreachable, hint: "NATS at nats://127.0.0.1:1", durable: false, ordered: true);

#[cfg(feature = "nats")]
fn jetstream(stream: &str, subject: &str, durable: Option<String>, url: &str) -> ChannelSpec {
    ChannelSpec::JetStream(JetStreamChannel {
        create: true,
        durable,
        ack_wait: Some(DurationSpec(std::time::Duration::from_secs(2))),
        connect_timeout: connect_timeout(),
        ..JetStreamChannel::new(url, stream, subject)
    })
}

#[cfg(feature = "nats")]
async fn jetstream_case() -> Case {
    let name = unique("CONF");
    let subject = format!("conf.js.{name}");
    Case {
        producer: jetstream(&name, &subject, None, "nats://127.0.0.1:4222"),
        listener: jetstream(
            &name,
            &subject,
            Some(format!("{name}-durable")),
            "nats://127.0.0.1:4222",
        ),
        durable: true,
        ordered: true,
        headers: true,
        max_payload: (1 << 20) - 4096,
        restart_messages: RESTART,
        many: MANY,
        json_only: false,
        key_per_message: false,
    }
}

#[cfg(feature = "nats")]
fn jetstream_unreachable() -> ChannelSpec {
    jetstream("S", "s", None, "nats://127.0.0.1:1")
}

conformance!(nats_jetstream, "nats", jetstream_case, unreachable: jetstream_unreachable, hint: "NATS at nats://127.0.0.1:1", durable: true, ordered: true);

// -------------------------------------------------------------------------------------
// Redis

#[cfg(feature = "redis")]
fn redis_stream(stream: &str, group: Option<&str>, url: &str) -> ChannelSpec {
    ChannelSpec::RedisStream(RedisStreamChannel {
        group: group.map(str::to_owned),
        connect_timeout: connect_timeout(),
        ..RedisStreamChannel::new(url, stream)
    })
}

#[cfg(feature = "redis")]
async fn redis_stream_case() -> Case {
    let stream = unique("conf:stream");
    Case {
        producer: redis_stream(&stream, None, "redis://127.0.0.1:6379"),
        listener: redis_stream(&stream, Some("roundtrip"), "redis://127.0.0.1:6379"),
        durable: true,
        ordered: true,
        headers: true,
        max_payload: 1 << 20,
        restart_messages: RESTART,
        many: MANY,
        json_only: false,
        key_per_message: false,
    }
}

#[cfg(feature = "redis")]
fn redis_stream_unreachable() -> ChannelSpec {
    redis_stream("s", None, "redis://127.0.0.1:1")
}

conformance!(redis_streams, "redis", redis_stream_case, unreachable: redis_stream_unreachable, hint: "Redis at redis://127.0.0.1:1", durable: true, ordered: true);

#[cfg(feature = "redis")]
async fn redis_stream_xread_case() -> Case {
    let stream = unique("conf:xread");
    Case {
        producer: redis_stream(&stream, None, "redis://127.0.0.1:6379"),
        listener: redis_stream(&stream, None, "redis://127.0.0.1:6379"),
        durable: false,
        ordered: true,
        headers: true,
        max_payload: 1 << 20,
        restart_messages: RESTART,
        many: MANY,
        json_only: false,
        key_per_message: false,
    }
}

conformance!(redis_streams_xread, "redis", redis_stream_xread_case, unreachable: redis_stream_unreachable, hint: "Redis at redis://127.0.0.1:1", durable: false, ordered: true);

#[cfg(feature = "redis")]
fn redis_pubsub(channel: &str, url: &str) -> ChannelSpec {
    ChannelSpec::RedisPubSub(RedisPubSubChannel {
        connect_timeout: connect_timeout(),
        ..RedisPubSubChannel::new(url, channel)
    })
}

#[cfg(feature = "redis")]
async fn redis_pubsub_case() -> Case {
    let channel = unique("conf:pubsub");
    Case {
        producer: redis_pubsub(&channel, "redis://127.0.0.1:6379"),
        listener: redis_pubsub(&channel, "redis://127.0.0.1:6379"),
        durable: false,
        ordered: true,
        headers: false,
        max_payload: 1 << 20,
        restart_messages: RESTART,
        many: MANY,
        json_only: false,
        key_per_message: false,
    }
}

#[cfg(feature = "redis")]
fn redis_pubsub_unreachable() -> ChannelSpec {
    redis_pubsub("c", "redis://127.0.0.1:1")
}

conformance!(redis_pubsub_, "redis", redis_pubsub_case, unreachable: redis_pubsub_unreachable, hint: "Redis at redis://127.0.0.1:1", durable: false, ordered: true);

// -------------------------------------------------------------------------------------
// AMQP

#[cfg(feature = "amqp")]
fn amqp(queue: &str, url: &str) -> ChannelSpec {
    ChannelSpec::Amqp(AmqpChannel {
        queue: Some(queue.to_owned()),
        declare: true,
        connect_timeout: connect_timeout(),
        ..AmqpChannel::new(url)
    })
}

#[cfg(feature = "amqp")]
async fn amqp_case() -> Case {
    let queue = unique("conf.amqp");
    Case {
        producer: amqp(&queue, "amqp://guest:guest@127.0.0.1:5672/%2f"),
        listener: amqp(&queue, "amqp://guest:guest@127.0.0.1:5672/%2f"),
        durable: true,
        ordered: true,
        headers: true,
        max_payload: 1 << 20,
        restart_messages: RESTART,
        many: MANY,
        json_only: false,
        key_per_message: false,
    }
}

#[cfg(feature = "amqp")]
fn amqp_unreachable() -> ChannelSpec {
    amqp("q", "amqp://127.0.0.1:1/%2f")
}

conformance!(amqp_queue, "amqp", amqp_case, unreachable: amqp_unreachable, hint: "AMQP broker at amqp://127.0.0.1:1", durable: true, ordered: true);

// -------------------------------------------------------------------------------------
// MQTT

/// A Mosquitto configured as docs/transports/mqtt.md advises for at-least-once
/// listeners (`max_queued_messages 0`; `scripts/services.sh` runs it). With the default
/// limit of 1,000 queued messages per client, a producer faster than a listener that acks
/// after each durable commit makes Mosquitto drop messages (it did here: 165 to 343 of
/// 10,000), which the listener reports as a gap but cannot prevent.
#[cfg(feature = "mqtt")]
const MQTT_ROOMY: &str = "mqtt://127.0.0.1:1884";

#[cfg(feature = "mqtt")]
fn mqtt(
    topic: &str,
    version: MqttVersion,
    qos: u8,
    client_id: Option<String>,
    url: &str,
) -> ChannelSpec {
    ChannelSpec::Mqtt(MqttChannel {
        qos,
        version,
        client_id,
        connect_timeout: connect_timeout(),
        ..MqttChannel::new(url, topic)
    })
}

#[cfg(feature = "mqtt")]
async fn mqtt5_case() -> Case {
    let topic = unique("conf/mqtt5");
    Case {
        producer: mqtt(&topic, MqttVersion::V5, 1, None, MQTT_ROOMY),
        listener: mqtt(
            &topic,
            MqttVersion::V5,
            1,
            Some(unique("rt-listener")),
            MQTT_ROOMY,
        ),
        durable: true,
        ordered: true,
        headers: true,
        max_payload: 1 << 20,
        restart_messages: MQTT_RESTART,
        many: MANY,
        json_only: false,
        key_per_message: false,
    }
}

#[cfg(feature = "mqtt")]
async fn mqtt311_case() -> Case {
    let topic = unique("conf/mqtt311");
    Case {
        producer: mqtt(&topic, MqttVersion::V311, 1, None, MQTT_ROOMY),
        listener: mqtt(
            &topic,
            MqttVersion::V311,
            1,
            Some(unique("rt-listener")),
            MQTT_ROOMY,
        ),
        durable: true,
        ordered: true,
        headers: false,
        max_payload: 1 << 20,
        restart_messages: MQTT_RESTART,
        many: MANY,
        json_only: false,
        key_per_message: false,
    }
}

#[cfg(feature = "mqtt")]
async fn mqtt_qos0_case() -> Case {
    let topic = unique("conf/mqtt0");
    Case {
        producer: mqtt(&topic, MqttVersion::V5, 0, None, "mqtt://127.0.0.1:1883"),
        listener: mqtt(&topic, MqttVersion::V5, 0, None, "mqtt://127.0.0.1:1883"),
        durable: false,
        ordered: true,
        headers: true,
        max_payload: 1 << 20,
        restart_messages: MQTT_RESTART,
        many: MANY,
        json_only: false,
        key_per_message: false,
    }
}

#[cfg(feature = "mqtt")]
fn mqtt_unreachable() -> ChannelSpec {
    mqtt("t", MqttVersion::V5, 1, None, "mqtt://127.0.0.1:1")
}

conformance!(mqtt_v5, "mqtt", mqtt5_case, unreachable: mqtt_unreachable, hint: "MQTT broker at mqtt://127.0.0.1:1", durable: true, ordered: true);
conformance!(mqtt_v311, "mqtt", mqtt311_case, unreachable: mqtt_unreachable, hint: "MQTT broker at mqtt://127.0.0.1:1", durable: true, ordered: true);
conformance!(mqtt_qos0, "mqtt", mqtt_qos0_case, unreachable: mqtt_unreachable, hint: "MQTT broker at mqtt://127.0.0.1:1", durable: false, ordered: true);

// -------------------------------------------------------------------------------------
// Kafka API (tansu)

#[cfg(feature = "kafka")]
pub const KAFKA_BROKERS: &str = "127.0.0.1:9092";

#[cfg(feature = "kafka")]
fn kafka(topic: &str, group: Option<String>, brokers: &str) -> ChannelSpec {
    ChannelSpec::Kafka(KafkaChannel {
        group,
        connect_timeout: Some(DurationSpec(std::time::Duration::from_secs(5))),
        ..KafkaChannel::new(brokers, topic)
    })
}

/// Creates a topic (the broker does not auto-create them).
#[cfg(feature = "kafka")]
pub async fn create_topic(topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", KAFKA_BROKERS)
        .create()
        .expect("an admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(10))),
        )
        .await
        .expect("create the topic: is the Kafka-API broker (tansu) running on 127.0.0.1:9092?");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

#[cfg(feature = "kafka")]
async fn kafka_case() -> Case {
    let topic = unique("conf-kafka");
    create_topic(&topic, 3).await;
    Case {
        producer: kafka(&topic, None, KAFKA_BROKERS),
        listener: kafka(&topic, Some(format!("{topic}-group")), KAFKA_BROKERS),
        durable: true,
        ordered: true,
        headers: true,
        max_payload: 1 << 20,
        restart_messages: RESTART,
        many: MANY,
        json_only: false,
        key_per_message: false,
    }
}

#[cfg(feature = "kafka")]
fn kafka_unreachable() -> ChannelSpec {
    kafka("t", None, "127.0.0.1:1")
}

conformance!(kafka_group, "kafka", kafka_case, unreachable: kafka_unreachable, hint: "Kafka at 127.0.0.1:1", durable: true, ordered: true);

// -------------------------------------------------------------------------------------
// Bad credentials: the servers that enforce them here.

#[cfg(feature = "amqp")]
#[tokio::test]
async fn amqp_bad_credentials_are_a_clear_error() {
    let spec = amqp("q", "amqp://guest:not-the-password@127.0.0.1:5672/%2f");
    let producer =
        roundtrip::transport::registry::producer("in", &spec, &checks::ctx()).expect("plan");
    let err = producer.connect().await.expect_err("wrong password");
    let shown = roundtrip::error::error_chain(&err);
    assert!(
        shown.contains("guest:***@127.0.0.1:5672"),
        "the password is redacted: {shown}"
    );
    assert!(
        !shown.contains("not-the-password"),
        "the password leaked: {shown}"
    );
    assert!(
        shown.to_lowercase().contains("access")
            || shown.contains("403")
            || shown.to_lowercase().contains("auth"),
        "the error says the credentials were refused: {shown}"
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_bad_credentials_are_a_clear_error() {
    let spec = redis_stream("s", None, "redis://nobody:not-the-password@127.0.0.1:6379");
    let producer =
        roundtrip::transport::registry::producer("in", &spec, &checks::ctx()).expect("plan");
    let err = producer.connect().await.expect_err("wrong password");
    let shown = roundtrip::error::error_chain(&err);
    assert!(
        !shown.contains("not-the-password"),
        "the password leaked: {shown}"
    );
    assert!(
        shown.contains("Redis at redis://nobody:***@127.0.0.1:6379"),
        "{shown}"
    );
}

// -------------------------------------------------------------------------------------
// Variants: wildcards and patterns, ephemeral consumers, exchange bindings, QoS 2,
// assigned partitions. Same checks, other options.

#[cfg(feature = "nats")]
async fn nats_wildcard_case() -> Case {
    let base = unique("conf.wild");
    let url = "nats://127.0.0.1:4222";
    Case {
        producer: nats(&format!("{base}.orders"), url),
        // A wildcard subscription, in a queue group.
        listener: ChannelSpec::Nats(NatsChannel {
            queue_group: Some("roundtrip".to_owned()),
            connect_timeout: connect_timeout(),
            ..NatsChannel::new(url, format!("{base}.*"))
        }),
        ..nats_case().await
    }
}

conformance!(nats_wildcard, "nats", nats_wildcard_case, unreachable: nats_unreachable, hint: "NATS at nats://127.0.0.1:1", durable: false, ordered: true);

#[cfg(feature = "nats")]
async fn jetstream_ephemeral_case() -> Case {
    let name = unique("EPH");
    let subject = format!("conf.eph.{name}");
    Case {
        producer: jetstream(&name, &subject, None, "nats://127.0.0.1:4222"),
        listener: jetstream(&name, &subject, None, "nats://127.0.0.1:4222"),
        durable: false,
        ..jetstream_case().await
    }
}

conformance!(nats_jetstream_ephemeral, "nats", jetstream_ephemeral_case, unreachable: jetstream_unreachable, hint: "NATS at nats://127.0.0.1:1", durable: false, ordered: true);

#[cfg(feature = "redis")]
async fn redis_pattern_case() -> Case {
    let base = unique("conf:pattern");
    let mut listener = redis_pubsub("unused", "redis://127.0.0.1:6379");
    if let ChannelSpec::RedisPubSub(l) = &mut listener {
        l.channel = None;
        l.pattern = Some(format!("{base}:*"));
    }
    Case {
        producer: redis_pubsub(&format!("{base}:orders"), "redis://127.0.0.1:6379"),
        listener,
        ..redis_pubsub_case().await
    }
}

conformance!(redis_psubscribe, "redis", redis_pattern_case, unreachable: redis_pubsub_unreachable, hint: "Redis at redis://127.0.0.1:1", durable: false, ordered: true);

#[cfg(feature = "amqp")]
async fn amqp_bind_case() -> Case {
    let key = unique("conf.bind");
    let spec = |queue: Option<String>| {
        ChannelSpec::Amqp(AmqpChannel {
            exchange: Some("amq.topic".to_owned()),
            routing_key: Some(key.clone()),
            queue,
            connect_timeout: connect_timeout(),
            ..AmqpChannel::new("amqp://guest:guest@127.0.0.1:5672/%2f")
        })
    };
    Case {
        producer: spec(None),
        listener: spec(None),
        // A temporary queue goes with its connection: nothing survives a restart.
        durable: false,
        ..amqp_case().await
    }
}

conformance!(amqp_bound_to_exchange, "amqp", amqp_bind_case, unreachable: amqp_unreachable, hint: "AMQP broker at amqp://127.0.0.1:1", durable: false, ordered: true);

#[cfg(feature = "mqtt")]
async fn mqtt_qos2_case() -> Case {
    let topic = unique("conf/mqtt2");
    Case {
        producer: mqtt(&topic, MqttVersion::V5, 2, None, MQTT_ROOMY),
        listener: mqtt(
            &topic,
            MqttVersion::V5,
            2,
            Some(unique("rt-listener")),
            MQTT_ROOMY,
        ),
        ..mqtt5_case().await
    }
}

conformance!(mqtt_qos2, "mqtt", mqtt_qos2_case, unreachable: mqtt_unreachable, hint: "MQTT broker at mqtt://127.0.0.1:1", durable: true, ordered: true);

#[cfg(feature = "kafka")]
async fn kafka_assigned_case() -> Case {
    let topic = unique("conf-kafka-assigned");
    create_topic(&topic, 3).await;
    Case {
        producer: kafka(&topic, None, KAFKA_BROKERS),
        listener: kafka(&topic, None, KAFKA_BROKERS),
        // Without a group nothing is committed: a restart starts at the end again.
        durable: false,
        ..kafka_case().await
    }
}

conformance!(kafka_assigned, "kafka", kafka_assigned_case, unreachable: kafka_unreachable, hint: "Kafka at 127.0.0.1:1", durable: false, ordered: true);

/// NATS request/reply: the producer waits for the reply, which becomes the receipt.
#[cfg(feature = "nats")]
#[tokio::test]
async fn nats_request_gets_the_reply() {
    use futures_util::StreamExt as _;
    let subject = unique("conf.request");
    let client = async_nats::connect("127.0.0.1:4222")
        .await
        .expect("connect");
    let mut requests = client.subscribe(subject.clone()).await.expect("subscribe");
    client.flush().await.expect("flush");
    let responder = {
        let client = client.clone();
        tokio::spawn(async move {
            let request = requests.next().await.expect("a request");
            let reply = request.reply.expect("a reply subject");
            let id = request
                .headers
                .as_ref()
                .and_then(|h| h.get("x-correlation-id"))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            client
                .publish(reply, format!("accepted {id}").into())
                .await
                .expect("reply");
            client.flush().await.expect("flush");
        })
    };
    let mut spec = nats(&subject, "nats://127.0.0.1:4222");
    if let ChannelSpec::Nats(n) = &mut spec {
        n.request = true;
    }
    let producer =
        roundtrip::transport::registry::producer("in", &spec, &checks::ctx()).expect("plan");
    producer.connect().await.expect("connect");
    let receipt = producer
        .send(checks::message("req-1", 1, None))
        .await
        .expect("the request is answered");
    assert_eq!(receipt.detail.as_deref(), Some("reply: accepted req-1"));
    responder.await.expect("the responder ran");
}

/// A listener whose connection the server drops reconnects, reads on from where it was,
/// and the report shows the gap.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_redis_connection_is_a_reported_gap_and_nothing_is_lost() {
    for group in [Some("roundtrip"), None] {
        let stream = unique("conf:gap");
        let case = Case {
            producer: redis_stream(&stream, None, "redis://127.0.0.1:6379"),
            listener: redis_stream(&stream, group, "redis://127.0.0.1:6379"),
            ..redis_stream_case().await
        };
        let bench = checks::Bench::new(&case).await;
        let mut feed = bench.store.subscribe();
        let (listener, sink) = bench.listen(&case.listener).await;
        let producer = bench.producer(&case.producer).await;
        producer
            .send(checks::message("before", 1, None))
            .await
            .expect("send");
        let first = feed.recv().await.expect("feed");
        assert_eq!(first.correlation_id.as_deref(), Some("before"));

        // Kill the listener's connection on the server side.
        let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
        let mut admin = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .expect("list");
        let name = roundtrip::transport::redis_stream::connection_name(&stream);
        let id = clients
            .lines()
            .find(|l| l.split(' ').any(|f| f == format!("name={name}")))
            .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .unwrap_or_else(|| panic!("the listener's connection `{name}` in {clients}"))
            .to_owned();
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(&id)
            .query_async(&mut admin)
            .await
            .expect("kill");
        assert_eq!(killed, 1);

        // Sent while the listener is away: the stream keeps it, the listener reads on.
        producer
            .send(checks::message("during", 2, None))
            .await
            .expect("send");
        let next = tokio::time::timeout(checks::PATIENCE, feed.recv())
            .await
            .expect("the listener comes back")
            .expect("feed");
        assert_eq!(next.correlation_id.as_deref(), Some("during"), "{group:?}");
        let gaps = sink.stats().gaps();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert!(gaps[0].cause.starts_with("connection lost at "), "{gaps:?}");
        listener.stop().await;
    }
}

/// A group listener's stop waits for its blocked read: once `stop` returns, no read of
/// its connection is left blocked on the server, where it would take the next entry
/// into its pending list, out of sight of the listener started next.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_group_listener_leaves_no_read_blocked() {
    let stream = unique("conf:stop");
    let case = Case {
        listener: redis_stream(&stream, Some("roundtrip"), "redis://127.0.0.1:6379"),
        ..redis_stream_case().await
    };
    let bench = checks::Bench::new(&case).await;
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let name = roundtrip::transport::redis_stream::connection_name(&stream);
    for round in 0..5 {
        let (listener, _) = bench.listen(&case.listener).await;
        // Wait (on the server's own word) until the listener's read is blocked.
        let waiting = tokio::time::Instant::now() + checks::PATIENCE;
        while blocked_reads(&mut admin, &name).await == 0 {
            assert!(
                tokio::time::Instant::now() < waiting,
                "round {round}: the listener never blocked in XREADGROUP"
            );
            tokio::task::yield_now().await;
        }
        listener.stop().await;
        assert_eq!(
            blocked_reads(&mut admin, &name).await,
            0,
            "round {round}: a read is still blocked after stop"
        );
    }
}

/// How many connections named `name` are blocked in a command, per `CLIENT LIST`.
#[cfg(feature = "redis")]
async fn blocked_reads(admin: &mut redis::aio::MultiplexedConnection, name: &str) -> usize {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .expect("list");
    let named = format!("name={name}");
    clients
        .lines()
        .filter(|l| l.split(' ').any(|f| f == named))
        .filter(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("flags="))
                .is_some_and(|flags| flags.contains('b'))
        })
        .count()
}

// -------------------------------------------------------------------------------------
// TLS: a NATS (4223) and a Redis (6390) that accept only mutual TLS, with the test CA
// and certificates `scripts/services.sh start` generates.

#[cfg(any(feature = "nats", feature = "redis", feature = "mqtt"))]
fn tls_file(name: &str) -> String {
    let dir = std::env::var("ROUNDTRIP_TLS_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/roundtrip-tls",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    format!("{dir}/{name}")
}

#[cfg(any(feature = "nats", feature = "redis", feature = "mqtt"))]
fn mutual_tls(client_cert: bool) -> Option<TlsOptions> {
    Some(TlsOptions {
        ca: Some(tls_file("ca.pem")),
        cert: client_cert.then(|| tls_file("client.pem")),
        key: client_cert.then(|| tls_file("client.key")),
    })
}

#[cfg(feature = "nats")]
async fn nats_tls_case() -> Case {
    let subject = unique("conf.tls");
    let spec = || {
        let mut spec = nats(&subject, "tls://127.0.0.1:4223");
        if let ChannelSpec::Nats(n) = &mut spec {
            n.tls = mutual_tls(true);
        }
        spec
    };
    Case {
        producer: spec(),
        listener: spec(),
        ..nats_case().await
    }
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_mutual_tls() {
    checks::round_trip(nats_tls_case().await).await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_tls_without_a_client_certificate_is_refused_clearly() {
    let mut spec = nats("x", "tls://127.0.0.1:4223");
    if let ChannelSpec::Nats(n) = &mut spec {
        n.tls = mutual_tls(false);
    }
    let producer =
        roundtrip::transport::registry::producer("in", &spec, &checks::ctx()).expect("plan");
    let err = producer
        .connect()
        .await
        .expect_err("the server wants a client certificate");
    let shown = roundtrip::error::error_chain(&err);
    assert!(shown.contains("NATS at tls://127.0.0.1:4223"), "{shown}");
    assert!(
        shown.to_lowercase().contains("certificate"),
        "the error says a certificate is missing: {shown}"
    );
}

#[cfg(feature = "redis")]
async fn redis_tls_case() -> Case {
    let stream = unique("conf:tls");
    let spec = |group: Option<&str>| {
        let mut spec = redis_stream(&stream, group, "rediss://127.0.0.1:6390");
        if let ChannelSpec::RedisStream(r) = &mut spec {
            r.tls = mutual_tls(true);
        }
        spec
    };
    Case {
        producer: spec(None),
        listener: spec(Some("roundtrip")),
        ..redis_stream_case().await
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_mutual_tls() {
    checks::round_trip(redis_tls_case().await).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tls_without_a_client_certificate_is_refused_clearly() {
    let mut spec = redis_stream("s", None, "rediss://127.0.0.1:6390");
    if let ChannelSpec::RedisStream(r) = &mut spec {
        r.tls = mutual_tls(false);
    }
    let producer =
        roundtrip::transport::registry::producer("in", &spec, &checks::ctx()).expect("plan");
    let err = producer
        .connect()
        .await
        .expect_err("the server wants a client certificate");
    let shown = roundtrip::error::error_chain(&err);
    assert!(
        shown.contains("Redis at rediss://127.0.0.1:6390"),
        "{shown}"
    );
    assert!(
        shown.to_lowercase().contains("certificate"),
        "the error says a certificate is missing: {shown}"
    );
}

#[cfg(feature = "mqtt")]
async fn mqtt_tls_case() -> Case {
    let topic = unique("conf/tls");
    let spec = |client_id: Option<String>| {
        let mut spec = mqtt(
            &topic,
            MqttVersion::V5,
            1,
            client_id,
            "mqtts://127.0.0.1:8883",
        );
        if let ChannelSpec::Mqtt(m) = &mut spec {
            m.tls = Some(TlsOptions {
                ca: Some(tls_file("ca.pem")),
                cert: Some(tls_file("client.pem")),
                key: Some(tls_file("client.key")),
            });
        }
        spec
    };
    Case {
        producer: spec(None),
        listener: spec(Some(unique("rt-tls"))),
        ..mqtt5_case().await
    }
}

#[cfg(feature = "mqtt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_mutual_tls() {
    checks::round_trip(mqtt_tls_case().await).await;
}

/// RabbitMQ closes the listener's connection (as an operator or a broker restart would):
/// the listener reconnects, the queue kept what arrived meanwhile, and the gap is reported.
#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_amqp_connection_is_a_reported_gap_and_nothing_is_lost() {
    let case = amqp_case().await;
    let ChannelSpec::Amqp(spec) = &case.listener else {
        unreachable!("an amqp case")
    };
    let name = roundtrip::transport::amqp::listener_connection_name("out", spec.queue.as_deref());
    let bench = checks::Bench::new(&case).await;
    let mut feed = bench.store.subscribe();
    let (listener, sink) = bench.listen(&case.listener).await;
    let producer = bench.producer(&case.producer).await;
    producer
        .send(checks::message("before", 1, None))
        .await
        .expect("send");
    let first = feed.recv().await.expect("feed");
    assert_eq!(first.correlation_id.as_deref(), Some("before"));

    // One line per connection: its pid, a tab, its client properties.
    let listed = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "-q"])
        .output()
        .expect("rabbitmqctl runs (it comes with the RabbitMQ server)");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let pid = listed
        .lines()
        .find(|line| line.contains(&name))
        .and_then(|line| line.split('\t').next())
        .unwrap_or_else(|| panic!("the listener's connection `{name}` in {listed}"))
        .trim()
        .to_owned();
    let closed = std::process::Command::new("rabbitmqctl")
        .args(["close_connection", &pid, "conformance test"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(closed.status.success(), "{closed:?}");

    producer
        .send(checks::message("during", 2, None))
        .await
        .expect("send");
    let next = tokio::time::timeout(checks::PATIENCE, feed.recv())
        .await
        .expect("the listener comes back")
        .expect("feed");
    assert_eq!(next.correlation_id.as_deref(), Some("during"));
    let gaps = sink.stats().gaps();
    assert!(
        gaps.iter()
            .any(|g| g.cause.starts_with("the AMQP connection was lost at ")),
        "{gaps:?}"
    );
    listener.stop().await;
}

/// A private broker process, for tests that kill and restart it.
#[cfg(any(feature = "nats", feature = "mqtt"))]
struct PrivateServer {
    program: &'static str,
    port: u16,
    child: tokio::process::Child,
}

#[cfg(any(feature = "nats", feature = "mqtt"))]
impl PrivateServer {
    /// Starts `program` on `port` (0: a free one) and returns once its log says it is
    /// ready (`nats-server`: "Server is ready"; `mosquitto`: "running").
    async fn start(program: &'static str, port: u16) -> PrivateServer {
        use tokio::io::AsyncBufReadExt as _;
        let port = if port == 0 {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        } else {
            port
        };
        let (args, ready_text): (Vec<String>, &str) = match program {
            "nats-server" => (
                vec![
                    "-a".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    port.to_string(),
                ],
                "Server is ready",
            ),
            _ => (vec!["-p".into(), port.to_string()], " running"),
        };
        let mut child = tokio::process::Command::new(program)
            .args(&args)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} (scripts/services.sh needs it too): {e}"));
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let ready = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains(ready_text) {
                    return true;
                }
            }
            false
        };
        assert!(
            tokio::time::timeout(checks::PATIENCE, ready).await == Ok(true),
            "{program} on port {port} did not become ready"
        );
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        PrivateServer {
            program,
            port,
            child,
        }
    }

    /// Kills the server and starts a new one on the same port.
    async fn restart(mut self) -> PrivateServer {
        self.child.kill().await.expect("kill the server");
        PrivateServer::start(self.program, self.port).await
    }
}

/// Sends until a message sent after the restart arrives (nothing was kept for the
/// absent subscriber, and sends fail while the producer itself reconnects).
#[cfg(any(feature = "nats", feature = "mqtt"))]
async fn send_until_one_arrives(
    producer: &std::sync::Arc<dyn roundtrip::transport::Producer>,
    feed: &mut tokio::sync::broadcast::Receiver<
        std::sync::Arc<roundtrip::core::observation::Observation>,
    >,
) -> String {
    let deadline = tokio::time::Instant::now() + checks::PATIENCE;
    let mut seq = 1;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener never came back"
        );
        let _ = producer
            .send(checks::message(&format!("after-{seq}"), seq, None))
            .await;
        seq += 1;
        if let Ok(Ok(o)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), feed.recv()).await
        {
            return o.correlation_id.clone().unwrap_or_default();
        }
    }
}

/// The server goes away and comes back: the listener reconnects and resubscribes by
/// itself, and the report shows how long it was gone.
#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restart_is_a_reported_gap() {
    let server = PrivateServer::start("nats-server", 0).await;
    let url = format!("nats://127.0.0.1:{}", server.port);
    let subject = unique("conf.restart");
    let case = Case {
        producer: nats(&subject, &url),
        listener: nats(&subject, &url),
        ..nats_case().await
    };
    let bench = checks::Bench::new(&case).await;
    let mut feed = bench.store.subscribe();
    let (listener, sink) = bench.listen(&case.listener).await;
    let producer = bench.producer(&case.producer).await;
    producer
        .send(checks::message("before", 0, None))
        .await
        .expect("send");
    assert_eq!(
        feed.recv().await.expect("feed").correlation_id.as_deref(),
        Some("before")
    );

    let _server = server.restart().await;
    let arrived = send_until_one_arrives(&producer, &mut feed).await;
    assert!(arrived.starts_with("after-"), "{arrived}");
    let gaps = sink.stats().gaps();
    assert!(
        gaps.iter().any(|g| g.cause.starts_with("disconnected at ")),
        "{gaps:?}"
    );
    listener.stop().await;
}

/// The MQTT broker goes away and comes back without the session (it keeps nothing on
/// disk): the listener reconnects, subscribes again, and the report says the session was
/// lost.
#[cfg(feature = "mqtt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_broker_restart_is_a_reported_gap() {
    let server = PrivateServer::start("mosquitto", 0).await;
    let url = format!("mqtt://127.0.0.1:{}", server.port);
    let topic = unique("conf/restart");
    let case = Case {
        producer: mqtt(&topic, MqttVersion::V5, 1, None, &url),
        listener: mqtt(&topic, MqttVersion::V5, 1, Some(unique("rt-restart")), &url),
        ..mqtt5_case().await
    };
    let bench = checks::Bench::new(&case).await;
    let mut feed = bench.store.subscribe();
    let (listener, sink) = bench.listen(&case.listener).await;
    let producer = bench.producer(&case.producer).await;
    producer
        .send(checks::message("before", 0, None))
        .await
        .expect("send");
    assert_eq!(
        feed.recv().await.expect("feed").correlation_id.as_deref(),
        Some("before")
    );

    let _server = server.restart().await;
    let arrived = send_until_one_arrives(&producer, &mut feed).await;
    assert!(arrived.starts_with("after-"), "{arrived}");
    let gaps = sink.stats().gaps();
    assert!(
        gaps.iter()
            .any(|g| g.cause.contains("the session was lost")),
        "{gaps:?}"
    );
    listener.stop().await;
}

/// An entry another tool wrote, without a `body` field, is recorded as a JSON object of
/// its fields, and correlated by one of them.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_entry_without_a_body_is_recorded_as_its_fields() {
    let stream = unique("conf:fields");
    let case = Case {
        producer: redis_stream(&stream, None, "redis://127.0.0.1:6379"),
        listener: redis_stream(&stream, Some("roundtrip"), "redis://127.0.0.1:6379"),
        ..redis_stream_case().await
    };
    let bench = checks::Bench::new(&case).await;
    let mut feed = bench.store.subscribe();
    let (listener, _) = bench.listen(&case.listener).await;
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("x-correlation-id")
        .arg("fields-1")
        .arg("status")
        .arg("shipped")
        .query_async(&mut connection)
        .await
        .expect("XADD");
    let observed = tokio::time::timeout(checks::PATIENCE, feed.recv())
        .await
        .expect("the entry arrives")
        .expect("feed");
    assert_eq!(observed.correlation_id.as_deref(), Some("fields-1"));
    assert_eq!(
        observed.payload.json,
        Some(serde_json::json!({ "x-correlation-id": "fields-1", "status": "shipped" }))
    );
    listener.stop().await;
}

/// A message no queue would take is a send error, not a silent loss (`mandatory` and
/// publisher confirms).
#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_amqp_message_is_a_send_error() {
    let spec = ChannelSpec::Amqp(AmqpChannel {
        exchange: Some("amq.topic".to_owned()),
        routing_key: Some(unique("nobody.listens")),
        connect_timeout: connect_timeout(),
        ..AmqpChannel::new("amqp://guest:guest@127.0.0.1:5672/%2f")
    });
    let producer =
        roundtrip::transport::registry::producer("in", &spec, &checks::ctx()).expect("plan");
    producer.connect().await.expect("connect");
    let err = producer
        .send(checks::message("unroutable-1", 1, None))
        .await
        .expect_err("no queue is bound for the key");
    assert!(err.to_string().contains("unroutable"), "{err}");
}

/// The JetStream message id is the correlation id: the server drops a retried send.
#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_jetstream_send_is_deduplicated_by_the_server() {
    let case = jetstream_case().await;
    let producer = roundtrip::transport::registry::producer("in", &case.producer, &checks::ctx())
        .expect("plan");
    producer.connect().await.expect("connect");
    let first = producer
        .send(checks::message("dedup-1", 1, None))
        .await
        .expect("send");
    let again = producer
        .send(checks::message("dedup-1", 1, None))
        .await
        .expect("send again");
    assert!(
        !first
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("duplicate"),
        "{first:?}"
    );
    assert!(
        again
            .detail
            .as_deref()
            .unwrap_or_default()
            .ends_with("(duplicate)"),
        "{again:?}"
    );
}

// -------------------------------------------------------------------------------------
// AWS (against the emulator: moto on 127.0.0.1:5055 unless ROUNDTRIP_AWS_ENDPOINT says
// otherwise; credentials from the standard chain, any values for moto)

/// Messages in the AWS volume test: moto answers about 100 sends a second, slower as a
/// queue fills.
#[cfg(feature = "aws")]
const AWS_MANY: u64 = 300;
/// Messages in the AWS restart test.
#[cfg(feature = "aws")]
const AWS_RESTART: u64 = 120;
/// SQS carries 256 KiB; a binary body travels base64 (4/3 larger).
#[cfg(feature = "aws")]
const SQS_PAYLOAD: usize = 150_000;

#[cfg(feature = "aws")]
pub fn aws_endpoint() -> String {
    std::env::var("ROUNDTRIP_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5055".to_owned())
}

#[cfg(feature = "aws")]
pub async fn aws_config() -> aws_config::SdkConfig {
    roundtrip::aws::load_config(Some("us-east-1"), Some(&aws_endpoint()))
        .await
        .expect("AWS configuration (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; any values for moto)")
}

#[cfg(feature = "aws")]
fn on_emulator<T>(mut spec: T) -> T
where
    T: AwsChannel,
{
    spec.set(Some("us-east-1".to_owned()), Some(aws_endpoint()));
    spec
}

/// Points a channel at the emulator.
#[cfg(feature = "aws")]
trait AwsChannel {
    fn set(&mut self, region: Option<String>, endpoint: Option<String>);
}

#[cfg(feature = "aws")]
macro_rules! aws_channel {
    ($($t:ty),*) => {$(
        impl AwsChannel for $t {
            fn set(&mut self, region: Option<String>, endpoint: Option<String>) {
                self.region = region;
                self.endpoint = endpoint;
            }
        }
    )*};
}

#[cfg(feature = "aws")]
aws_channel!(S3Channel, SqsChannel, SnsChannel, EventBridgeChannel);

#[cfg(feature = "aws")]
fn sqs(queue: &str) -> ChannelSpec {
    ChannelSpec::Sqs(on_emulator(SqsChannel {
        create: true,
        wait: Some(DurationSpec(std::time::Duration::from_secs(2))),
        // Short, so that what a killed listener held comes back within the test.
        visibility_timeout: Some(DurationSpec(std::time::Duration::from_secs(2))),
        ..SqsChannel::new(queue)
    }))
}

#[cfg(feature = "aws")]
async fn sqs_case() -> Case {
    let queue = unique("conf-sqs");
    Case {
        producer: sqs(&queue),
        listener: sqs(&queue),
        durable: true,
        ordered: false,
        headers: true,
        max_payload: SQS_PAYLOAD,
        restart_messages: AWS_RESTART,
        many: AWS_MANY,
        json_only: false,
        key_per_message: false,
    }
}

#[cfg(feature = "aws")]
fn aws_unreachable() -> ChannelSpec {
    ChannelSpec::Sqs(SqsChannel {
        region: Some("us-east-1".to_owned()),
        endpoint: Some("http://127.0.0.1:1".to_owned()),
        ..SqsChannel::new("x")
    })
}

conformance!(aws_sqs, "aws", sqs_case, unreachable: aws_unreachable, hint: "SQS at http://127.0.0.1:1", durable: true, ordered: false);

#[cfg(feature = "aws")]
async fn sqs_fifo_case() -> Case {
    let queue = format!("{}.fifo", unique("conf-fifo"));
    Case {
        ordered: true,
        ..sqs_case().await
    }
    .with_both(sqs(&queue))
}

#[cfg(feature = "aws")]
impl Case {
    fn with_both(self, spec: ChannelSpec) -> Case {
        Case {
            producer: spec.clone(),
            listener: spec,
            ..self
        }
    }
}

conformance!(aws_sqs_fifo, "aws", sqs_fifo_case, unreachable: aws_unreachable, hint: "SQS at http://127.0.0.1:1", durable: true, ordered: true);

#[cfg(feature = "aws")]
async fn sns_case() -> Case {
    let topic = ChannelSpec::Sns(on_emulator(SnsChannel {
        create: true,
        ..SnsChannel::new(unique("conf-sns"))
    }));
    Case {
        // The listener's queue is its own: a restarted listener gets a new one.
        durable: false,
        ..sqs_case().await
    }
    .with_both(topic)
}

#[cfg(feature = "aws")]
fn sns_unreachable() -> ChannelSpec {
    ChannelSpec::Sns(SnsChannel {
        region: Some("us-east-1".to_owned()),
        endpoint: Some("http://127.0.0.1:1".to_owned()),
        ..SnsChannel::new("x")
    })
}

conformance!(aws_sns, "aws", sns_case, unreachable: sns_unreachable, hint: "SNS at http://127.0.0.1:1", durable: false, ordered: false);

#[cfg(feature = "aws")]
async fn eventbridge_case() -> Case {
    let bus = ChannelSpec::EventBridge(on_emulator(EventBridgeChannel {
        bus: unique("conf-bus"),
        create: true,
        source: Some("roundtrip.conformance".to_owned()),
        ..EventBridgeChannel::new()
    }));
    Case {
        durable: false,
        headers: false,
        json_only: true,
        // EventBridge events are at most 256 KiB, envelope included.
        max_payload: 200_000,
        ..sqs_case().await
    }
    .with_both(bus)
}

#[cfg(feature = "aws")]
fn eventbridge_unreachable() -> ChannelSpec {
    ChannelSpec::EventBridge(EventBridgeChannel {
        region: Some("us-east-1".to_owned()),
        endpoint: Some("http://127.0.0.1:1".to_owned()),
        source: Some("x".to_owned()),
        ..EventBridgeChannel::new()
    })
}

conformance!(aws_eventbridge, "aws", eventbridge_case, unreachable: eventbridge_unreachable, hint: "EventBridge at http://127.0.0.1:1", durable: false, ordered: false);

/// An S3 client on the emulator, and a new bucket whose notifications go where
/// `notifications` says.
#[cfg(feature = "aws")]
async fn bucket_notifying(
    prefix: &str,
    notifications: aws_sdk_s3::types::NotificationConfiguration,
) -> String {
    let config = aws_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    let bucket = unique(prefix);
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create the bucket");
    s3.put_bucket_notification_configuration()
        .bucket(&bucket)
        .notification_configuration(notifications)
        .send()
        .await
        .expect("configure the bucket's notifications");
    bucket
}

/// A bucket whose `ObjectCreated` notifications go to a queue; returns (bucket, queue).
#[cfg(feature = "aws")]
pub async fn notifying_bucket() -> (String, String) {
    use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
    use aws_sdk_sqs::types::QueueAttributeName;
    let sqs = aws_sdk_sqs::Client::new(&aws_config().await);
    let queue = unique("conf-notify");
    let url = sqs
        .create_queue()
        .queue_name(&queue)
        .attributes(QueueAttributeName::VisibilityTimeout, "2")
        .send()
        .await
        .expect("create the queue")
        .queue_url
        .expect("a queue URL");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("the queue's ARN")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("an ARN");
    let to_queue = QueueConfiguration::builder()
        .queue_arn(arn)
        .events(Event::S3ObjectCreated)
        .build()
        .expect("a queue configuration");
    let notifications = NotificationConfiguration::builder()
        .queue_configurations(to_queue)
        .build();
    (bucket_notifying("conf-bucket", notifications).await, queue)
}

/// An S3 case: objects put by `producer`, observed by `listener`.
#[cfg(feature = "aws")]
fn s3_case(producer: S3Channel, listener: S3Channel, durable: bool) -> Case {
    Case {
        producer: ChannelSpec::S3(on_emulator(producer)),
        listener: ChannelSpec::S3(on_emulator(listener)),
        durable,
        ordered: false,
        headers: true,
        max_payload: 1 << 20,
        restart_messages: AWS_RESTART,
        many: AWS_MANY,
        json_only: false,
        key_per_message: true,
    }
}

#[cfg(feature = "aws")]
async fn s3_notifications_case() -> Case {
    let (bucket, queue) = notifying_bucket().await;
    let listener = S3Channel {
        notifications: Some(queue),
        ..S3Channel::new(&bucket)
    };
    s3_case(S3Channel::new(&bucket), listener, true)
}

#[cfg(feature = "aws")]
fn s3_unreachable() -> ChannelSpec {
    ChannelSpec::S3(S3Channel {
        region: Some("us-east-1".to_owned()),
        endpoint: Some("http://127.0.0.1:1".to_owned()),
        ..S3Channel::new("x")
    })
}

conformance!(aws_s3_notifications, "aws", s3_notifications_case, unreachable: s3_unreachable, hint: "S3 at http://127.0.0.1:1", durable: true, ordered: false);

/// A bucket whose `ObjectCreated` notifications go to an SNS topic; returns (bucket,
/// topic).
#[cfg(feature = "aws")]
pub async fn bucket_notifying_a_topic() -> (String, String) {
    use aws_sdk_s3::types::{Event, NotificationConfiguration, TopicConfiguration};
    let topic = aws_sdk_sns::Client::new(&aws_config().await)
        .create_topic()
        .name(unique("conf-s3-events"))
        .send()
        .await
        .expect("create the topic")
        .topic_arn
        .expect("an ARN");
    let to_topic = TopicConfiguration::builder()
        .topic_arn(&topic)
        .events(Event::S3ObjectCreated)
        .build()
        .expect("a topic configuration");
    let notifications = NotificationConfiguration::builder()
        .topic_configurations(to_topic)
        .build();
    (bucket_notifying("conf-fanout", notifications).await, topic)
}

#[cfg(feature = "aws")]
async fn s3_topic_case() -> Case {
    let (bucket, topic) = bucket_notifying_a_topic().await;
    let listener = S3Channel {
        notifications_topic: Some(topic),
        ..S3Channel::new(&bucket)
    };
    // The listener's queue is its own: a restarted listener gets a new one.
    s3_case(S3Channel::new(&bucket), listener, false)
}

conformance!(aws_s3_topic, "aws", s3_topic_case, unreachable: s3_unreachable, hint: "S3 at http://127.0.0.1:1", durable: false, ordered: false);

#[cfg(feature = "aws")]
async fn s3_eventbridge_case() -> Case {
    use aws_sdk_s3::types::{EventBridgeConfiguration, NotificationConfiguration};
    let notifications = NotificationConfiguration::builder()
        .event_bridge_configuration(EventBridgeConfiguration::builder().build())
        .build();
    let bucket = bucket_notifying("conf-bridged", notifications).await;
    let listener = S3Channel {
        notifications_bus: Some("default".to_owned()),
        // The keys `Case::message` gives: the rule matches them by prefix.
        prefix: Some("conformance/".to_owned()),
        ..S3Channel::new(&bucket)
    };
    s3_case(S3Channel::new(&bucket), listener, false)
}

conformance!(aws_s3_eventbridge, "aws", s3_eventbridge_case, unreachable: s3_unreachable, hint: "S3 at http://127.0.0.1:1", durable: false, ordered: false);

#[cfg(feature = "aws")]
async fn s3_listing_case() -> Case {
    let bucket = S3Channel {
        create: true,
        poll_max: Some(DurationSpec(std::time::Duration::from_millis(200))),
        ..S3Channel::new(unique("conf-listing"))
    };
    // A restarted lister starts from what is there: not durable.
    s3_case(bucket.clone(), bucket, false)
}

conformance!(aws_s3_listing, "aws", s3_listing_case, unreachable: s3_unreachable, hint: "S3 at http://127.0.0.1:1", durable: false, ordered: false);

/// The harness-owned queues, rules and subscriptions of one run, by name.
#[cfg(feature = "aws")]
async fn owned_by(run_id: &str) -> Vec<String> {
    let config = aws_config().await;
    let tag = format!("-{}-", roundtrip::aws::owned_run_tag(run_id));
    let mut found = Vec::new();
    let queues = aws_sdk_sqs::Client::new(&config)
        .list_queues()
        .queue_name_prefix(roundtrip::aws::OWNED_PREFIX)
        .send()
        .await
        .expect("list queues");
    found.extend(
        queues
            .queue_urls()
            .iter()
            .filter(|u| u.contains(&tag))
            .cloned(),
    );
    let events = aws_sdk_eventbridge::Client::new(&config);
    for bus in events
        .list_event_buses()
        .send()
        .await
        .expect("buses")
        .event_buses()
    {
        let rules = events
            .list_rules()
            .event_bus_name(bus.name().expect("a name"))
            .name_prefix(roundtrip::aws::OWNED_PREFIX)
            .send()
            .await
            .expect("list rules");
        found.extend(
            rules
                .rules()
                .iter()
                .filter_map(|r| r.name())
                .filter(|n| n.contains(&tag))
                .map(str::to_owned),
        );
    }
    let subscriptions = aws_sdk_sns::Client::new(&config)
        .list_subscriptions()
        .send()
        .await
        .expect("list subscriptions");
    found.extend(
        subscriptions
            .subscriptions()
            .iter()
            .filter(|s| s.endpoint().is_some_and(|e| e.contains(&tag)))
            .filter_map(|s| s.subscription_arn().map(str::to_owned)),
    );
    found.sort();
    found
}

/// An SNS and an EventBridge listener of one run.
#[cfg(feature = "aws")]
async fn owning_listeners() -> (checks::Bench, Vec<roundtrip::transport::RunningListener>) {
    let sns = sns_case().await;
    let bench = checks::Bench::new(&sns).await;
    let eventbridge = eventbridge_case().await;
    let (a, _) = bench.listen(&sns.listener).await;
    let (b, _) = bench.listen(&eventbridge.listener).await;
    (bench, vec![a, b])
}

#[cfg(feature = "aws")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_sns_and_eventbridge_listeners_remove_what_they_created_when_they_stop() {
    let (bench, listeners) = owning_listeners().await;
    let created = owned_by(&bench.run_id).await;
    // Two queues, one rule, one subscription.
    assert_eq!(created.len(), 4, "{created:?}");
    for listener in listeners {
        listener.stop().await;
    }
    assert_eq!(owned_by(&bench.run_id).await, Vec::<String>::new());
}

#[cfg(feature = "aws")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_sweep_removes_what_a_killed_listener_left_and_nothing_younger() {
    use roundtrip::transport::aws::cleanup::{SweepOptions, sweep};
    let (bench, listeners) = owning_listeners().await;
    for listener in listeners {
        // A crash: no cleanup.
        listener.abort().await;
    }
    let left = owned_by(&bench.run_id).await;
    assert_eq!(left.len(), 4, "{left:?}");
    let options = SweepOptions {
        region: Some("us-east-1".to_owned()),
        endpoint: Some(aws_endpoint()),
        older_than: std::time::Duration::from_secs(3600),
        run: Some(bench.run_id.clone()),
        dry_run: false,
    };
    let young = sweep(&options).await.expect("sweep");
    assert!(young.is_empty(), "an hour-old threshold took {young:?}");
    let dry = sweep(&SweepOptions {
        older_than: std::time::Duration::ZERO,
        dry_run: true,
        ..options.clone()
    })
    .await
    .expect("sweep");
    assert_eq!(dry.len(), 4, "{dry:?}");
    assert_eq!(
        owned_by(&bench.run_id).await,
        left,
        "a dry run removed something"
    );
    let swept = sweep(&SweepOptions {
        older_than: std::time::Duration::ZERO,
        ..options
    })
    .await
    .expect("sweep");
    let kinds: Vec<&str> = swept.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            "sns subscription",
            "eventbridge rule",
            "sqs queue",
            "sqs queue"
        ]
    );
    assert!(
        swept.iter().all(|s| s.outcome == Ok("removed")),
        "{swept:?}"
    );
    assert_eq!(owned_by(&bench.run_id).await, Vec::<String>::new());
}

#[cfg(feature = "aws")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_fifo_send_retried_with_its_dedup_id_is_delivered_once() {
    use roundtrip::transport::Fifo;
    let case = sqs_fifo_case().await;
    let bench = checks::Bench::new(&case).await;
    let mut feed = bench.store.subscribe();
    let producer = bench.producer(&case.producer).await;
    let fifo = |dedup: &str| {
        Some(Fifo {
            group_id: "g".to_owned(),
            dedup_id: dedup.to_owned(),
        })
    };
    // Both sends before the listener starts (the queue keeps them): moto deduplicates
    // only against messages still in the queue, where SQS remembers a deduplication id
    // for five minutes, so a first copy already received and deleted would let the
    // retry through on the emulator alone.
    for _ in 0..2 {
        let mut retry = checks::message("dup", 1, None);
        retry.fifo = fifo("dup-1");
        producer.send(retry).await.expect("send");
    }
    let mut marker = checks::message("marker", 2, None);
    marker.fifo = fifo("marker-2");
    producer.send(marker).await.expect("send");
    let (listener, _) = bench.listen(&case.listener).await;
    // One group is delivered in order: once the marker is in, the duplicate would be too.
    loop {
        let o = tokio::time::timeout(checks::PATIENCE, feed.recv())
            .await
            .expect("the marker arrives")
            .expect("feed open");
        if o.correlation_id.as_deref() == Some("marker") {
            break;
        }
    }
    listener.stop().await;
    // At-least-once: a message the listener held past the visibility timeout comes back
    // with the same message id. A second *send* would carry a new one.
    let sends: std::collections::BTreeSet<(Option<String>, Option<String>)> = bench
        .all()
        .await
        .into_iter()
        .map(|o| (o.correlation_id, o.message_id))
        .collect();
    let dups = sends
        .iter()
        .filter(|(c, _)| c.as_deref() == Some("dup"))
        .count();
    assert_eq!(
        dups, 1,
        "the retried send was delivered as a second message: {sends:?}"
    );
}

#[cfg(feature = "aws")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_eventbridge_s3_listener_receives_only_its_prefix() {
    let case = s3_eventbridge_case().await;
    let bench = checks::Bench::new(&case).await;
    let mut feed = bench.store.subscribe();
    let (listener, _) = bench.listen(&case.listener).await;
    let producer = bench.producer(&case.producer).await;
    // Another run's object first: were it routed here, it would arrive first.
    let mut other = checks::message("other", 1, None);
    other.key = Some("another-run/other".to_owned());
    producer.send(other).await.expect("send");
    producer
        .send(case.message("mine", 2, None))
        .await
        .expect("send");
    let first = tokio::time::timeout(checks::PATIENCE, feed.recv())
        .await
        .expect("the object under the prefix arrives")
        .expect("feed open");
    listener.stop().await;
    assert_eq!(first.key.as_deref(), Some("conformance/mine"));
    assert_eq!(bench.all().await.len(), 1);
}

#[cfg(feature = "aws")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_sns_filter_policy_lets_only_matching_messages_through() {
    let case = sns_case().await;
    let ChannelSpec::Sns(topic) = &case.listener else {
        unreachable!("an SNS case")
    };
    let listener = ChannelSpec::Sns(SnsChannel {
        filter_policy: Some(serde_json::json!({ "x-custom": ["seq-2"] })),
        ..topic.clone()
    });
    let bench = checks::Bench::new(&case).await;
    let mut feed = bench.store.subscribe();
    let (running, _) = bench.listen(&listener).await;
    let producer = bench.producer(&case.producer).await;
    // `x-custom` is `seq-<n>`: the first does not match the policy, the second does.
    for (id, seq) in [("filtered-out", 1), ("let-through", 2)] {
        producer
            .send(checks::message(id, seq, None))
            .await
            .expect("send");
    }
    let first = tokio::time::timeout(checks::PATIENCE, feed.recv())
        .await
        .expect("the matching message arrives")
        .expect("feed open");
    running.stop().await;
    assert_eq!(first.correlation_id.as_deref(), Some("let-through"));
    assert_eq!(bench.all().await.len(), 1);
}
