//! The suite file model: what a user writes, as typed Rust.
//!
//! These types are deserialized from YAML by [`crate::suite::load`] (which adds
//! file:line:col diagnostics and semantic validation) and describe the JSON Schema
//! committed at `schema/suite.schema.json`. They are plain data: no IO, no clients.
//!
//! Design rules (see ARCHITECTURE.md): no `#[serde(untagged)]`, no `flatten`, unknown
//! keys are denied, alternatives are externally tagged enums or mutually exclusive
//! optional fields checked in [`crate::suite::validate`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod aws;
mod brokers;

pub use aws::{AwsEndpoint, EventBridgeChannel, S3Channel, SnsChannel, SqsChannel};
pub use brokers::{
    AmqpChannel, AuthOptions, Connection, JetStreamChannel, KafkaChannel, MqttChannel, MqttVersion,
    NatsChannel, RedisPubSubChannel, RedisStreamChannel, TlsOptions,
};

/// The version of the suite file format that this crate reads.
pub const SUITE_FORMAT_VERSION: u32 = 1;

/// One suite file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// A human name for the suite, used in reports.
    pub name: String,
    /// How to start and probe the system under test. Leave it out when the SUT is already
    /// running (a deployed environment, or a process your CI starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sut: Option<SutSpec>,
    /// How an observation is tied back to the event that caused it.
    #[serde(default)]
    pub correlate: CorrelationRule,
    /// Named endpoints: the SUT's inputs (produced to) and outputs (listened on).
    pub channels: BTreeMap<String, ChannelSpec>,
    /// The scenarios; they run concurrently, isolated from each other by correlation id.
    pub scenarios: Vec<Scenario>,
}

/// How to start the system under test and know when it is ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SutSpec {
    /// The program and its arguments. Each element is a template (`{{ env("PORT") }}`).
    pub start: Vec<String>,
    /// Extra environment variables for the SUT process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the suite file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The readiness probe; the SUT must pass it before anything is sent.
    pub ready: ReadyProbe,
    /// How long the SUT gets to exit after SIGTERM before it is killed.
    #[serde(
        default = "default_stop_grace",
        skip_serializing_if = "is_default_stop_grace"
    )]
    pub stop_grace: DurationSpec,
}

fn default_stop_grace() -> DurationSpec {
    DurationSpec(Duration::from_secs(5))
}

fn is_default_stop_grace(d: &DurationSpec) -> bool {
    *d == default_stop_grace()
}

/// A readiness probe: exactly one of `http`, `tcp` or `log`, and a deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadyProbe {
    /// Ready when a GET to this URL answers 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Ready when a TCP connection to `host:port` succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// Ready when a line of the SUT's stdout or stderr contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Deadline for readiness, from the moment the process was spawned.
    pub within: DurationSpec,
}

/// The readiness probe, resolved: exactly one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// GET the URL until it answers 2xx.
    Http(String),
    /// Connect to the address until it accepts.
    Tcp(String),
    /// Wait for a line of output containing the text.
    Log(String),
}

impl ReadyProbe {
    /// The probe kind, if exactly one is set (validation guarantees it after loading).
    pub fn readiness(&self) -> Option<Readiness> {
        match (&self.http, &self.tcp, &self.log) {
            (Some(u), None, None) => Some(Readiness::Http(u.clone())),
            (None, Some(a), None) => Some(Readiness::Tcp(a.clone())),
            (None, None, Some(l)) => Some(Readiness::Log(l.clone())),
            _ => None,
        }
    }
}

/// How observations are correlated with produced events. Exactly one field is set.
///
/// Whatever the rule, every produced event also carries a W3C `traceparent` whose trace
/// id is the correlation id, and observations whose `traceparent` names a known
/// correlation id are correlated through it when the rule finds nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrelationRule {
    /// A header (or message attribute) carrying the correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A JSONPath into the payload, e.g. `$.correlationId`. The producer injects the id
    /// there when the body is a JSON object and the path is a plain member path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<String>,
    /// Correlate by the trace id of the W3C `traceparent` header only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<bool>,
}

/// The header that carries the correlation id unless the suite says otherwise.
pub const DEFAULT_CORRELATION_HEADER: &str = "x-correlation-id";
/// The header that carries the run id on every produced event.
pub const RUN_ID_HEADER: &str = "x-roundtrip-run";

impl Default for CorrelationRule {
    fn default() -> Self {
        Self {
            header: Some(DEFAULT_CORRELATION_HEADER.to_owned()),
            json: None,
            traceparent: None,
        }
    }
}

/// A channel: one endpoint on one transport. Externally tagged by transport name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelSpec {
    /// An HTTP endpoint of the SUT that events are sent to (producer only).
    Http(HttpChannel),
    /// An HTTP server that roundtrip runs and the SUT calls (listener only).
    Webhook(WebhookChannel),
    /// A directory: files written into it (producer) or appearing in it (listener).
    /// The local stand-in for an object store.
    Dir(DirChannel),
    /// A NATS subject (core NATS: at-most-once).
    Nats(NatsChannel),
    /// A NATS JetStream stream and subject (at-least-once, acked after commit).
    #[serde(rename = "jetstream")]
    JetStream(JetStreamChannel),
    /// A Redis stream (XADD; XREADGROUP + XACK after commit, or XREAD).
    RedisStream(RedisStreamChannel),
    /// A Redis Pub/Sub channel or pattern (at-most-once, payload only).
    #[serde(rename = "redis_pubsub")]
    RedisPubSub(RedisPubSubChannel),
    /// An AMQP 0.9.1 exchange (producer) or queue (listener), e.g. RabbitMQ.
    Amqp(AmqpChannel),
    /// An MQTT 3.1.1 or 5 topic.
    Mqtt(MqttChannel),
    /// A Kafka-API topic.
    Kafka(KafkaChannel),
    /// An S3 bucket: objects put (producer) or appearing (listener).
    S3(S3Channel),
    /// An SQS queue (deleted after commit: at-least-once).
    Sqs(SqsChannel),
    /// An SNS topic; the listener subscribes a queue of its own for the run.
    Sns(SnsChannel),
    /// An EventBridge bus; the listener routes the run's events to a queue of its own.
    #[serde(rename = "eventbridge")]
    EventBridge(EventBridgeChannel),
}

/// What a transport can do, for validation, planning and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Events can be sent to it.
    pub produce: bool,
    /// Outputs can be listened on.
    pub listen: bool,
    /// Messages carry headers (so the correlation can travel outside the payload).
    pub headers: bool,
}

impl ChannelSpec {
    /// The transport name, as written in suite files.
    pub fn transport(&self) -> &'static str {
        match self {
            ChannelSpec::Http(_) => "http",
            ChannelSpec::Webhook(_) => "webhook",
            ChannelSpec::Dir(_) => "dir",
            ChannelSpec::Nats(_) => "nats",
            ChannelSpec::JetStream(_) => "jetstream",
            ChannelSpec::RedisStream(_) => "redis_stream",
            ChannelSpec::RedisPubSub(_) => "redis_pubsub",
            ChannelSpec::Amqp(_) => "amqp",
            ChannelSpec::Mqtt(_) => "mqtt",
            ChannelSpec::Kafka(_) => "kafka",
            ChannelSpec::S3(_) => "s3",
            ChannelSpec::Sqs(_) => "sqs",
            ChannelSpec::Sns(_) => "sns",
            ChannelSpec::EventBridge(_) => "eventbridge",
        }
    }

    /// What this channel's transport supports.
    pub fn capabilities(&self) -> Capabilities {
        let (produce, listen, headers) = match self {
            ChannelSpec::Http(_) => (true, false, true),
            ChannelSpec::Webhook(_) => (false, true, true),
            ChannelSpec::Dir(_) => (true, true, false),
            ChannelSpec::RedisPubSub(_) | ChannelSpec::EventBridge(_) => (true, true, false),
            ChannelSpec::Mqtt(m) => (true, true, m.version == MqttVersion::V5),
            ChannelSpec::Nats(_)
            | ChannelSpec::JetStream(_)
            | ChannelSpec::RedisStream(_)
            | ChannelSpec::Amqp(_)
            | ChannelSpec::Kafka(_)
            | ChannelSpec::S3(_)
            | ChannelSpec::Sqs(_)
            | ChannelSpec::Sns(_) => (true, true, true),
        };
        Capabilities {
            produce,
            listen,
            headers,
        }
    }

    /// The channel's `max_payload`, if it sets one.
    pub fn max_payload(&self) -> Option<ByteSize> {
        match self {
            ChannelSpec::Http(_) => None,
            ChannelSpec::Webhook(c) => c.max_payload,
            ChannelSpec::Dir(c) => c.max_payload,
            ChannelSpec::Nats(c) => c.max_payload,
            ChannelSpec::JetStream(c) => c.max_payload,
            ChannelSpec::RedisStream(c) => c.max_payload,
            ChannelSpec::RedisPubSub(c) => c.max_payload,
            ChannelSpec::Amqp(c) => c.max_payload,
            ChannelSpec::Mqtt(c) => c.max_payload,
            ChannelSpec::Kafka(c) => c.max_payload,
            ChannelSpec::S3(c) => c.max_payload,
            ChannelSpec::Sqs(c) => c.max_payload,
            ChannelSpec::Sns(c) => c.max_payload,
            ChannelSpec::EventBridge(c) => c.max_payload,
        }
    }
}

/// `http` channel options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpChannel {
    /// The URL events are sent to. A template.
    pub url: String,
    /// The HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Headers added to every request on this channel. Values are templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Per-request timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
}

fn default_method() -> String {
    "POST".to_owned()
}

/// `webhook` channel options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannel {
    /// The address to listen on, `host:port`. Port 0 picks a free port.
    pub listen: String,
    /// The path the SUT posts to; other paths answer 404.
    #[serde(default = "default_webhook_path")]
    pub path: String,
    /// Payloads larger than this are recorded truncated and marked so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

fn default_webhook_path() -> String {
    "/".to_owned()
}

/// `dir` channel options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirChannel {
    /// The directory, relative to the suite file's directory. Created if missing.
    pub path: String,
    /// Producer: the file name template; defaults to `{{ correlation_id }}.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Listener: only files whose name ends with this suffix are observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Listener: payloads larger than this are recorded truncated and marked so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

/// One scenario: events to send and what must (not) come out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The scenario's name, unique within the suite.
    pub name: String,
    /// Send steps, run in order.
    pub send: Vec<SendStep>,
    /// Expectations, all evaluated concurrently from the first send on.
    pub expect: Vec<Expectation>,
}

/// One send step: an event (or `repeat` events) produced to a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendStep {
    /// The channel to produce to.
    pub to: String,
    /// The body; strings anywhere inside are templates. Exactly one of `body` (JSON),
    /// `text` or `base64` may be given; none sends an empty body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// A text body (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A binary body, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// Extra headers; values are templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Send this many events, each with its own correlation id and sequence number.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub repeat: u32,
    /// How many of the repeated events may be in flight at once.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub concurrency: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// What must (or must not) be observed on a channel, for each event the scenario sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The channel to watch.
    pub on: String,
    /// A JSON subset the payload must contain (objects: these keys with matching values,
    /// recursively; arrays: element-wise; scalars: equal).
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<Value>,
    /// JSONPath predicates the payload must satisfy, all of them.
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub predicates: Vec<Predicate>,
    /// A JSON Schema the payload must validate against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Checks on the payload as UTF-8 text (for payloads that are not JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextMatch>,
    /// Checks on the payload's exact bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<BytesMatch>,
    /// Checks on headers or attributes, by name (case-insensitive).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, ValueMatch>,
    /// Checks on the transport's metadata (`subject`, `topic`, `routing_key`, `key`,
    /// `partition`, `object_key`, …; docs/report-format.md lists them per transport).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, ValueMatch>,
    /// Exactly this many matching observations per sent event, over the whole window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// At least this many matching observations per sent event (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<u32>,
    /// The SLA: matching observations must arrive within this time of their cause's send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<DurationSpec>,
    /// An absence check: nothing matching arrives for this whole window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub none_within: Option<DurationSpec>,
    /// After the SLA passed, keep listening this long so that a late arrival is reported
    /// as "SLA exceeded by X" rather than "lost". Defaults to the SLA, at most 10 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<DurationSpec>,
    /// Matching observations with equal values at this JSONPath must arrive in the order
    /// their causes were sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered_by: Option<String>,
}

/// Checks on a payload as UTF-8 text; every one given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextMatch {
    /// The whole text is exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// The text contains this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// The text matches this regex (searched, not anchored: write `^…$`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The text does not contain this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_contains: Option<String>,
}

/// Checks on a payload's exact bytes; every one given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BytesMatch {
    /// The bytes are exactly these, written as standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// The bytes are exactly these, written as hexadecimal (`deadbeef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
    /// The payload is this many bytes long (its full size, even when recorded truncated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
}

/// A check on one header or metadata value: a plain string means `equals`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueCheck {
    /// The value is exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// The value matches this regex (searched, not anchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `true`: it is present (any value); `false`: it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// `true`: it is absent (the same as `exists: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absent: Option<bool>,
}

/// A header or metadata check as written: `NAME: VALUE` or `NAME: { regex: … }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueMatch(pub ValueCheck);

impl Serialize for ValueMatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            ValueCheck {
                equals: Some(v),
                regex: None,
                exists: None,
                absent: None,
            } => s.serialize_str(v),
            check => check.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ValueMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ValueMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value, or a mapping with `equals`, `regex`, `exists` or `absent`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ValueMatch, E> {
                Ok(ValueMatch(ValueCheck {
                    equals: Some(v.to_owned()),
                    ..ValueCheck::default()
                }))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ValueMatch, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ValueMatch, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ValueMatch, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ValueMatch, A::Error> {
                ValueCheck::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ValueMatch)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ValueMatch {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ValueMatch".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let check = generator.subschema_for::<ValueCheck>();
        schemars::json_schema!({
            "description": "A value it must equal, or one check: `equals`, `regex`, `exists` or `absent`.",
            "anyOf": [ { "type": ["string", "number", "boolean"] }, check ]
        })
    }
}

/// One JSONPath predicate: a path and exactly one comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Predicate {
    /// An RFC 9535 JSONPath selecting one node, e.g. `$.order.qty`.
    pub path: String,
    /// The node equals this JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    /// The node exists and differs from this JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_equals: Option<Value>,
    /// The node is a number greater than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// The node is a number greater than or equal to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    /// The node is a number less than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// The node is a number less than or equal to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
    /// `true`: the node exists; `false`: it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// The node is a string matching this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A duration written as `250ms`, `2s`, `1m 30s` (humantime syntax).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationSpec(pub Duration);

impl fmt::Debug for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The longest duration a suite may write anywhere. Keys that bound a run (`within`,
/// `none_within`, `grace`) have a lower limit, checked by validation.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let d = humantime::parse_duration(s.trim()).map_err(|e| {
            serde::de::Error::custom(format_args!(
                "invalid duration `{s}`: {e}; write it like `500ms`, `2s` or `1m 30s`"
            ))
        })?;
        if d > MAX_DURATION {
            return Err(serde::de::Error::custom(format_args!(
                "the duration `{s}` is longer than 30 days, the longest a suite may write"
            )));
        }
        Ok(DurationSpec(d))
    }
}

impl JsonSchema for DurationSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration such as `500ms`, `2s` or `1m 30s`.",
            "pattern": "^\\s*[0-9]+\\s*[a-zµ]+(\\s*[0-9]+\\s*[a-zµ]+)*\\s*$"
        })
    }
}

/// A size in bytes, written as a number or with a unit: `512`, `64KiB`, `1MiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl ByteSize {
    /// Parses `512`, `64KiB`, `64KB` (1000-based), `1MiB`, `1 GiB`.
    pub fn parse(s: &str) -> Option<ByteSize> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().ok()?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return None,
        };
        n.checked_mul(mult).map(ByteSize)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as `65536`, `64KiB` or `1MiB`")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).ok_or_else(|| {
                    E::custom(format_args!(
                        "invalid size `{v}`; write it like `65536`, `64KiB` or `1MiB`"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size in bytes: a number, or a string such as `64KiB` or `1MiB`.",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+\\s*(B|KiB|MiB|GiB|KB|kB|MB|GB)?\\s*$" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_and_print() {
        assert_eq!(ByteSize::parse("64KiB"), Some(ByteSize(65_536)));
        assert_eq!(ByteSize::parse("1 MiB"), Some(ByteSize(1 << 20)));
        assert_eq!(ByteSize::parse("10KB"), Some(ByteSize(10_000)));
        assert_eq!(ByteSize::parse("12"), Some(ByteSize(12)));
        assert_eq!(ByteSize::parse("12 parsecs"), None);
        assert_eq!(ByteSize(1 << 20).to_string(), "1MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }

    #[test]
    fn readiness_needs_exactly_one_kind() {
        let mut p = ReadyProbe {
            http: Some("http://x/health".into()),
            tcp: None,
            log: None,
            within: DurationSpec(Duration::from_secs(1)),
        };
        assert_eq!(
            p.readiness(),
            Some(Readiness::Http("http://x/health".into()))
        );
        p.tcp = Some("127.0.0.1:1".into());
        assert_eq!(p.readiness(), None);
    }
}
