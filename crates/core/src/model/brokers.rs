//! Channel options of the broker transports (NATS, JetStream, Redis, AMQP, MQTT, Kafka).
//!
//! Every broker channel has a `url` (or `brokers` for Kafka), optional `tls` and `auth`
//! blocks and a `connect_timeout`. Secrets are never written in a suite file: `auth`
//! names the environment variables that hold them, and reports show only the names.
//! Subject, topic, stream, queue, group and routing-key options are templates rendered
//! once per run (`{{ run_id }}` isolates concurrent runs on a shared broker); a Kafka
//! record `key` is rendered per event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ByteSize, DurationSpec};

/// TLS for a broker connection. Paths are relative to the suite file's directory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// A PEM file with the CA certificate(s) to trust instead of the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// A PEM client certificate (mutual TLS); needs `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// The PEM private key of `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Credentials, by the names of the environment variables that hold them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthOptions {
    /// The variable holding the user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_env: Option<String>,
    /// The variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// The variable holding a token (NATS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

/// `nats` channel options (NATS core: at-most-once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsChannel {
    /// The server, `nats://host:port` (`tls://` for TLS).
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// Producer: the subject published to. Listener: the subject subscribed to;
    /// wildcards (`*`, `>`) allowed. A template.
    pub subject: String,
    /// Producer: send a request and wait for the reply (the reply is the receipt).
    #[serde(default, skip_serializing_if = "is_false")]
    pub request: bool,
    /// Listener: subscribe in this queue group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_group: Option<String>,
    /// Listener: messages buffered between the client and the store (default 1,048,576).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer: Option<u32>,
    /// TLS options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
    /// Credentials (user/password or token) from environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOptions>,
    /// How long connecting (and a request) may take; default 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<DurationSpec>,
    /// Listener: payloads larger than this are recorded truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

/// `jetstream` channel options (NATS JetStream: at-least-once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JetStreamChannel {
    /// The server, `nats://host:port`.
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// The stream. The listener consumes from it; with `create: true` it is created
    /// (file storage) over `subject` when missing.
    pub stream: String,
    /// Producer: the subject published to. Listener: the consumer's filter subject.
    pub subject: String,
    /// Create the stream when it does not exist.
    #[serde(default, skip_serializing_if = "is_false")]
    pub create: bool,
    /// Listener: a durable consumer name; its position survives a listener restart.
    /// Without it the consumer is ephemeral and starts at the stream's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<String>,
    /// Listener: how long the server waits for an ack before redelivering; default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_wait: Option<DurationSpec>,
    /// TLS options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
    /// Credentials from environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOptions>,
    /// How long connecting (and a publish ack) may take; default 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<DurationSpec>,
    /// Listener: payloads larger than this are recorded truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

/// `redis_stream` channel options (Redis Streams).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisStreamChannel {
    /// The server, `redis://host:port/db` (`rediss://` for TLS).
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// The stream key. A template.
    pub stream: String,
    /// Listener: read in this consumer group (created at the stream's end when missing)
    /// and XACK after the store committed: at-least-once. Without it the listener reads
    /// with plain XREAD from the stream's end at start: at-most-once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Listener: the consumer name within `group` (default `roundtrip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// TLS options (`rediss://` URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
    /// Credentials from environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOptions>,
    /// How long connecting may take; default 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<DurationSpec>,
    /// Listener: payloads larger than this are recorded truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

/// `redis_pubsub` channel options (Redis Pub/Sub: at-most-once, payload only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisPubSubChannel {
    /// The server, `redis://host:port`.
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// The channel published to or subscribed to. A template. Exactly one of `channel`
    /// and `pattern`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Listener: a glob pattern subscribed to with PSUBSCRIBE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// TLS options (`rediss://` URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
    /// Credentials from environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOptions>,
    /// How long connecting may take; default 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<DurationSpec>,
    /// Listener: payloads larger than this are recorded truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

/// `amqp` channel options (RabbitMQ and other AMQP 0.9.1 brokers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmqpChannel {
    /// The broker, `amqp://host:port/vhost` (`amqps://` for TLS); `%2f` is the `/` vhost.
    #[serde(default = "default_amqp_url")]
    pub url: String,
    /// Producer: the exchange published to (`""` is the default exchange, which routes
    /// by queue name). Listener with `routing_key`: the exchange a temporary queue is
    /// bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// Producer: the routing key (a template; for the default exchange, the queue).
    /// Listener: the binding key of the temporary queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// Listener: consume from this existing (or declared durable) queue. Producer without
    /// `routing_key`, on the default exchange: the queue published to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Listener: declare `queue` (durable) when it does not exist.
    #[serde(default, skip_serializing_if = "is_false")]
    pub declare: bool,
    /// Listener: unacknowledged deliveries in flight (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<u16>,
    /// TLS options (`amqps://` URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
    /// Credentials from environment variables (they replace any in the URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOptions>,
    /// How long connecting (and a publisher confirm) may take; default 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<DurationSpec>,
    /// Listener: payloads larger than this are recorded truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

/// The MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum MqttVersion {
    /// MQTT 3.1.1: no user properties, so the correlation travels in the payload.
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5: headers travel as user properties.
    #[serde(rename = "5")]
    #[default]
    V5,
}

/// `mqtt` channel options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttChannel {
    /// The broker, `mqtt://host:port` (`mqtts://` for TLS).
    #[serde(default = "default_mqtt_url")]
    pub url: String,
    /// Producer: the topic published to. Listener: the topic filter (`+`, `#`). A template.
    pub topic: String,
    /// The QoS of publishes and of the subscription: 0, 1 or 2 (default 1).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// The protocol version, `"5"` (default) or `"3.1.1"`.
    #[serde(default)]
    pub version: MqttVersion,
    /// The client id; default `roundtrip-` and a unique suffix. A listener at QoS ≥ 1
    /// with a `client_id` uses a persistent session under it, so a restarted listener
    /// gets what it missed (at-least-once); without one its session is clean
    /// (at-most-once across reconnects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// TLS options (`mqtts://` URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
    /// Credentials from environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOptions>,
    /// How long connecting may take; default 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<DurationSpec>,
    /// Listener: payloads larger than this are recorded truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

/// `kafka` channel options (any Kafka-API broker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaChannel {
    /// Bootstrap servers, `host:port[,host:port…]`.
    #[serde(default = "default_kafka_brokers")]
    pub brokers: String,
    /// The topic. A template.
    pub topic: String,
    /// Producer: the record key, a template (default: the correlation id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Create the topic when it does not exist (Kafka-API brokers do not always
    /// auto-create topics).
    #[serde(default, skip_serializing_if = "is_false")]
    pub create: bool,
    /// With `create`: the new topic's partitions (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    /// Listener: consume in this consumer group and commit offsets after the store
    /// committed; a restarted listener resumes where the group stopped. A new group
    /// starts at the earliest offset. Without it, the listener is assigned every
    /// partition at its current end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Use TLS (`SSL` / `SASL_SSL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
    /// SASL PLAIN credentials from environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOptions>,
    /// How long connecting (and a produce ack) may take; default 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<DurationSpec>,
    /// Listener: payloads larger than this are recorded truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

/// The connection options every broker channel has, whatever its transport.
pub trait Connection {
    /// The server's URL (for Kafka: the bootstrap servers).
    fn url(&self) -> &str;
    /// TLS options.
    fn tls(&self) -> Option<&TlsOptions>;
    /// Credentials, by environment variable.
    fn auth(&self) -> Option<&AuthOptions>;
    /// How long connecting may take.
    fn connect_timeout(&self) -> Option<DurationSpec>;
}

macro_rules! connection {
    ($($channel:ty => $url:ident),* $(,)?) => {$(
        impl Connection for $channel {
            fn url(&self) -> &str {
                &self.$url
            }
            fn tls(&self) -> Option<&TlsOptions> {
                self.tls.as_ref()
            }
            fn auth(&self) -> Option<&AuthOptions> {
                self.auth.as_ref()
            }
            fn connect_timeout(&self) -> Option<DurationSpec> {
                self.connect_timeout
            }
        }
    )*};
}

connection!(
    NatsChannel => url,
    JetStreamChannel => url,
    RedisStreamChannel => url,
    RedisPubSubChannel => url,
    AmqpChannel => url,
    MqttChannel => url,
    KafkaChannel => brokers,
);

// Constructors with every optional field at its default, as a suite file that names only
// the required ones would give (checked in the tests below). Code that builds channels
// (tests, benches, the example pipeline) sets what it needs with struct update syntax.

impl NatsChannel {
    /// A `nats` channel on `subject` at `url`.
    pub fn new(url: impl Into<String>, subject: impl Into<String>) -> NatsChannel {
        NatsChannel {
            url: url.into(),
            subject: subject.into(),
            request: false,
            queue_group: None,
            buffer: None,
            tls: None,
            auth: None,
            connect_timeout: None,
            max_payload: None,
        }
    }
}

impl JetStreamChannel {
    /// A `jetstream` channel on `subject` of `stream` at `url`.
    pub fn new(
        url: impl Into<String>,
        stream: impl Into<String>,
        subject: impl Into<String>,
    ) -> JetStreamChannel {
        JetStreamChannel {
            url: url.into(),
            stream: stream.into(),
            subject: subject.into(),
            create: false,
            durable: None,
            ack_wait: None,
            tls: None,
            auth: None,
            connect_timeout: None,
            max_payload: None,
        }
    }
}

impl RedisStreamChannel {
    /// A `redis_stream` channel on `stream` at `url`.
    pub fn new(url: impl Into<String>, stream: impl Into<String>) -> RedisStreamChannel {
        RedisStreamChannel {
            url: url.into(),
            stream: stream.into(),
            group: None,
            consumer: None,
            tls: None,
            auth: None,
            connect_timeout: None,
            max_payload: None,
        }
    }
}

impl RedisPubSubChannel {
    /// A `redis_pubsub` channel on the Pub/Sub channel `channel` at `url`.
    pub fn new(url: impl Into<String>, channel: impl Into<String>) -> RedisPubSubChannel {
        RedisPubSubChannel {
            url: url.into(),
            channel: Some(channel.into()),
            pattern: None,
            tls: None,
            auth: None,
            connect_timeout: None,
            max_payload: None,
        }
    }
}

impl AmqpChannel {
    /// An `amqp` channel at `url`, with no exchange, routing key or queue yet.
    pub fn new(url: impl Into<String>) -> AmqpChannel {
        AmqpChannel {
            url: url.into(),
            exchange: None,
            routing_key: None,
            queue: None,
            declare: false,
            prefetch: None,
            tls: None,
            auth: None,
            connect_timeout: None,
            max_payload: None,
        }
    }
}

impl MqttChannel {
    /// An `mqtt` channel on `topic` at `url`: MQTT 5, QoS 1.
    pub fn new(url: impl Into<String>, topic: impl Into<String>) -> MqttChannel {
        MqttChannel {
            url: url.into(),
            topic: topic.into(),
            qos: default_qos(),
            version: MqttVersion::default(),
            client_id: None,
            tls: None,
            auth: None,
            connect_timeout: None,
            max_payload: None,
        }
    }
}

impl KafkaChannel {
    /// A `kafka` channel on `topic` at `brokers`.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> KafkaChannel {
        KafkaChannel {
            brokers: brokers.into(),
            topic: topic.into(),
            key: None,
            create: false,
            partitions: None,
            group: None,
            tls: None,
            auth: None,
            connect_timeout: None,
            max_payload: None,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".to_owned()
}

fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".to_owned()
}

fn default_amqp_url() -> String {
    "amqp://127.0.0.1:5672/%2f".to_owned()
}

fn default_mqtt_url() -> String {
    "mqtt://127.0.0.1:1883".to_owned()
}

fn default_kafka_brokers() -> String {
    "127.0.0.1:9092".to_owned()
}

fn default_qos() -> u8 {
    1
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::json;

    use super::*;

    fn parsed<T: DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).expect("a valid channel")
    }

    #[test]
    fn constructors_equal_a_suite_that_names_only_the_required_options() {
        assert_eq!(
            NatsChannel::new(default_nats_url(), "s"),
            parsed(json!({ "subject": "s" }))
        );
        assert_eq!(
            JetStreamChannel::new(default_nats_url(), "S", "s"),
            parsed(json!({ "stream": "S", "subject": "s" }))
        );
        assert_eq!(
            RedisStreamChannel::new(default_redis_url(), "k"),
            parsed(json!({ "stream": "k" }))
        );
        assert_eq!(
            RedisPubSubChannel::new(default_redis_url(), "c"),
            parsed(json!({ "channel": "c" }))
        );
        assert_eq!(AmqpChannel::new(default_amqp_url()), parsed(json!({})));
        assert_eq!(
            MqttChannel::new(default_mqtt_url(), "t"),
            parsed(json!({ "topic": "t" }))
        );
        assert_eq!(
            KafkaChannel::new(default_kafka_brokers(), "t"),
            parsed(json!({ "topic": "t" }))
        );
    }
}
