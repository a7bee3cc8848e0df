//! Channels: one file per transport, each holding the transport's options and all that
//! the transport knows about itself ([`ChannelOptions`]): its name, what it can do, its
//! payload limit, which options are templates (rendered once per run, or per event) and
//! the rules its options must follow beyond their shape.
//!
//! [`ChannelSpec`] is the closed list of transports, as the suite format, its JSON
//! Schema and its diagnostics need; it is written once, below, and everything it says
//! about a channel is delegated to the channel's own [`ChannelOptions`]. Adding a
//! transport adds a file here, a row there, and a driver row in `roundtrip`'s
//! `transport/registry.rs`; ARCHITECTURE.md ("Adding a transport") lists the steps.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::units::{ByteSize, DurationSpec};

mod amqp;
mod aws;
mod connection;
mod dir;
mod eventbridge;
mod http;
mod jetstream;
mod kafka;
mod mqtt;
mod nats;
mod redis_pubsub;
mod redis_stream;
mod s3;
mod sns;
mod sqs;
mod webhook;

pub use amqp::AmqpChannel;
pub use aws::AwsEndpoint;
pub use connection::{AuthOptions, Connection, TlsOptions};
pub use dir::DirChannel;
pub use eventbridge::EventBridgeChannel;
pub use http::HttpChannel;
pub use jetstream::JetStreamChannel;
pub use kafka::KafkaChannel;
pub use mqtt::{MqttChannel, MqttVersion};
pub use nats::NatsChannel;
pub use redis_pubsub::RedisPubSubChannel;
pub use redis_stream::RedisStreamChannel;
pub use s3::S3Channel;
pub use sns::SnsChannel;
pub use sqs::SqsChannel;
pub use webhook::WebhookChannel;

/// Writes the closed [`ChannelSpec`] enum from one row per transport, and its delegation
/// to each transport's [`ChannelOptions`].
macro_rules! channel_spec {
    ($( $(#[$meta:meta])* $variant:ident($options:ty), )*) => {
        /// A channel: one endpoint on one transport. Externally tagged by transport name.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        pub enum ChannelSpec {
            $( $(#[$meta])* $variant($options), )*
        }

        impl ChannelSpec {
            /// What the channel's transport knows about it.
            pub fn options(&self) -> &dyn ChannelOptions {
                match self {
                    $( ChannelSpec::$variant(c) => c, )*
                }
            }

            /// The same, to render its templates in place.
            pub fn options_mut(&mut self) -> &mut dyn ChannelOptions {
                match self {
                    $( ChannelSpec::$variant(c) => c, )*
                }
            }
        }
    };
}

channel_spec! {
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

impl ChannelSpec {
    /// The transport name, as written in suite files.
    pub fn transport(&self) -> &'static str {
        self.options().transport()
    }

    /// What this channel's transport supports.
    pub fn capabilities(&self) -> Capabilities {
        self.options().capabilities()
    }

    /// The channel's `max_payload`, if it sets one.
    pub fn max_payload(&self) -> Option<ByteSize> {
        self.options().max_payload()
    }
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

impl Capabilities {
    /// Sent to and listened on, with headers: what most brokers do.
    pub const BOTH_WAYS: Capabilities = Capabilities {
        produce: true,
        listen: true,
        headers: true,
    };
}

/// What one channel type knows about itself. Each transport implements it once, beside
/// its options; [`ChannelSpec`] delegates to it.
pub trait ChannelOptions {
    /// The transport name, as written in suite files (`nats`, `redis_stream`, …).
    fn transport(&self) -> &'static str;

    /// What the transport can do with these options; most go both ways, with headers.
    fn capabilities(&self) -> Capabilities {
        Capabilities::BOTH_WAYS
    }

    /// The channel's `max_payload`, if it sets one.
    fn max_payload(&self) -> Option<ByteSize>;

    /// The options that are templates rendered once per run, before anything starts
    /// (subjects, topics, queues, buckets: `{{ run_id }}` isolates concurrent runs).
    fn run_templates(&mut self) -> Vec<RunTemplate<'_>> {
        Vec::new()
    }

    /// The options that are templates rendered for each event (a record key, a file
    /// name, FIFO ids), with the defaults used when a suite leaves them out.
    fn event_templates(&self) -> EventTemplates<'_> {
        EventTemplates::default()
    }

    /// Whether its listener binds an address of its own, which the SUT delivers to and
    /// templates name as `{{ channel.NAME.url }}` (a webhook's `listen`).
    fn binds_address(&self) -> bool {
        false
    }

    /// What is wrong with the options beyond their YAML shape. Templates are checked by
    /// the loader, from [`ChannelOptions::run_templates`] and
    /// [`ChannelOptions::event_templates`].
    fn problems(&self) -> Vec<Problem> {
        Vec::new()
    }
}

/// An option rendered once per run, in place.
#[derive(Debug)]
pub struct RunTemplate<'a> {
    /// Where it is written, as keys below the channel's options (`["headers", "x-a"]`).
    pub at: Vec<String>,
    /// What it is, for an error message: ``the subject``, ``header `x-a` ``.
    pub what: String,
    /// The template; replaced by its rendering.
    pub value: &'a mut String,
}

impl<'a> RunTemplate<'a> {
    /// The option `key`, described as `what`.
    pub fn new(key: &str, what: &str, value: &'a mut String) -> RunTemplate<'a> {
        RunTemplate {
            at: vec![key.to_owned()],
            what: what.to_owned(),
            value,
        }
    }

    /// Adds the option `key` to `out` when it is set.
    pub fn optional(
        out: &mut Vec<RunTemplate<'a>>,
        key: &str,
        what: &str,
        value: &'a mut Option<String>,
    ) {
        if let Some(value) = value {
            out.push(RunTemplate::new(key, what, value));
        }
    }
}

/// An option rendered for each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTemplate<'a> {
    /// The option's key in the channel's options.
    pub key: &'static str,
    /// The template as written, if the suite sets the option.
    pub written: Option<&'a str>,
    /// The template used when it does not.
    pub default: &'static str,
}

impl EventTemplate<'_> {
    /// The template to render: the one written, or the default.
    pub fn template(&self) -> &str {
        self.written.unwrap_or(self.default)
    }
}

/// The options a channel renders for each event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventTemplates<'a> {
    /// The message's key where the transport has one: the `dir` file name, the Kafka
    /// record key, the S3 object key.
    pub key: Option<EventTemplate<'a>>,
    /// The FIFO message group and deduplication id (SQS FIFO queues, SNS FIFO topics).
    pub fifo: Option<[EventTemplate<'a>; 2]>,
}

/// The default FIFO ids: one group per run (so a run's events keep their order), and a
/// deduplication id per event.
pub(crate) const FIFO_GROUP_DEFAULT: &str = "{{ run_id }}";
/// See [`FIFO_GROUP_DEFAULT`].
pub(crate) const FIFO_DEDUP_DEFAULT: &str = "{{ correlation_id }}-{{ seq }}";

/// A rule a channel's options break, found by the channel itself; the loader locates it
/// in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The option, as keys below the channel's options (`["tls", "cert"]`).
    pub at: Vec<String>,
    /// What is wrong.
    pub kind: ProblemKind,
    /// What to do.
    pub help: String,
}

/// What a [`Problem`] is, and so where the loader points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// The option's value is wrong: points at the value.
    Value(String),
    /// The option as a whole is wrong (or missing, at the options themselves): points at
    /// its key.
    Key(String),
    /// More than one of these options (below `at`) is set: points at the second one
    /// written, and names them all.
    AtMostOne(Vec<&'static str>),
}

impl Problem {
    /// A problem with the value at `at`.
    pub fn value(at: &[&str], message: impl Into<String>, help: impl Into<String>) -> Problem {
        Problem::new(at, ProblemKind::Value(message.into()), help)
    }

    /// A problem with the entry at `at` as a whole.
    pub fn key(at: &[&str], message: impl Into<String>, help: impl Into<String>) -> Problem {
        Problem::new(at, ProblemKind::Key(message.into()), help)
    }

    /// Several of the options `keys`, of which one at most may be set, are set.
    pub fn at_most_one(keys: &[&'static str], help: impl Into<String>) -> Problem {
        Problem::new(&[], ProblemKind::AtMostOne(keys.to_vec()), help)
    }

    /// What is wrong, as one line.
    pub fn message(&self) -> String {
        match &self.kind {
            ProblemKind::Value(m) | ProblemKind::Key(m) => m.clone(),
            ProblemKind::AtMostOne(keys) => {
                let keys: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
                format!("only one of {} may be given", keys.join(", "))
            }
        }
    }

    fn new(at: &[&str], kind: ProblemKind, help: impl Into<String>) -> Problem {
        Problem {
            at: at.iter().map(|s| (*s).to_owned()).collect(),
            kind,
            help: help.into(),
        }
    }
}

/// A duration option that must be longer than zero.
pub(crate) fn positive(out: &mut Vec<Problem>, key: &str, d: Option<DurationSpec>) {
    if d.is_some_and(|d| d.0.is_zero()) {
        out.push(Problem::value(
            &[key],
            format!("`{key}` must be longer than zero"),
            "write a positive duration such as `500ms` or `2s`",
        ));
    }
}

/// A JSON option that must be an object; `what`: its description and an example.
pub(crate) fn json_object(
    out: &mut Vec<Problem>,
    key: &str,
    v: Option<&serde_json::Value>,
    what: (&str, &str),
) {
    if v.is_some_and(|v| !v.is_object()) {
        out.push(Problem::value(
            &[key],
            format!("{} must be a JSON object", what.0),
            format!("write it as a mapping, e.g. `{}`", what.1),
        ));
    }
}

/// `text` with every `{{ … }}` replaced by `with` (a `{{ port.NAME }}` by a port
/// number): the shape a template renders to.
pub(crate) fn without_templates(text: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        match rest[open..].find("}}") {
            Some(close) => {
                let inner = rest[open + 2..open + close].trim();
                out.push_str(if inner.starts_with("port.") {
                    "1"
                } else {
                    with
                });
                rest = &rest[open + close + 2..];
            }
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

/// For `#[serde(skip_serializing_if = "is_false")]`.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One channel of every transport, as the smallest suite file writes it.
    fn one_of_each() -> Vec<(&'static str, ChannelSpec)> {
        let yaml = r#"
http: { http: { url: "http://127.0.0.1:1/x" } }
webhook: { webhook: { listen: "127.0.0.1:0" } }
dir: { dir: { path: out } }
nats: { nats: { subject: s } }
jetstream: { jetstream: { stream: S, subject: s } }
redis_stream: { redis_stream: { stream: k } }
redis_pubsub: { redis_pubsub: { channel: c } }
amqp: { amqp: { queue: q } }
mqtt: { mqtt: { topic: t } }
kafka: { kafka: { topic: t } }
s3: { s3: { bucket: b } }
sqs: { sqs: { queue: q } }
sns: { sns: { topic: t } }
eventbridge: { eventbridge: {} }
"#;
        let map: std::collections::BTreeMap<String, ChannelSpec> =
            serde_saphyr::from_str(yaml).expect("every transport parses");
        map.into_iter()
            .map(|(k, v)| (&*Box::leak(k.into_boxed_str()), v))
            .collect()
    }

    /// The position of a channel's transport in [`ChannelSpec`]: a new transport does
    /// not compile here until it has a row, and then not pass until
    /// [`one_of_each`] has its channel.
    fn position(spec: &ChannelSpec) -> usize {
        match spec {
            ChannelSpec::Http(_) => 0,
            ChannelSpec::Webhook(_) => 1,
            ChannelSpec::Dir(_) => 2,
            ChannelSpec::Nats(_) => 3,
            ChannelSpec::JetStream(_) => 4,
            ChannelSpec::RedisStream(_) => 5,
            ChannelSpec::RedisPubSub(_) => 6,
            ChannelSpec::Amqp(_) => 7,
            ChannelSpec::Mqtt(_) => 8,
            ChannelSpec::Kafka(_) => 9,
            ChannelSpec::S3(_) => 10,
            ChannelSpec::Sqs(_) => 11,
            ChannelSpec::Sns(_) => 12,
            ChannelSpec::EventBridge(_) => 13,
        }
    }

    #[test]
    fn each_transport_names_itself_as_the_suite_format_does() {
        let all = one_of_each();
        let mut positions: Vec<usize> = all.iter().map(|(_, spec)| position(spec)).collect();
        positions.sort_unstable();
        assert_eq!(
            positions,
            (0..=13).collect::<Vec<_>>(),
            "one channel per transport"
        );
        for (tag, spec) in all {
            assert_eq!(spec.transport(), tag);
        }
    }

    #[test]
    fn capabilities_say_which_way_a_channel_goes() {
        for (tag, spec) in one_of_each() {
            let c = spec.capabilities();
            assert_eq!(c.produce, tag != "webhook", "{tag}");
            assert_eq!(c.listen, tag != "http", "{tag}");
            let headerless = matches!(tag, "dir" | "redis_pubsub" | "eventbridge");
            assert_eq!(c.headers, !headerless, "{tag}");
        }
    }

    #[test]
    fn templates_are_rendered_per_run_or_per_event() {
        let mut per_run = Vec::new();
        let mut per_event = Vec::new();
        for (tag, mut spec) in one_of_each() {
            let events = spec.options().event_templates();
            let keys: Vec<_> = events
                .key
                .iter()
                .chain(events.fifo.iter().flatten())
                .map(|t| t.key)
                .collect();
            if !keys.is_empty() {
                per_event.push(format!("{tag}: {}", keys.join(" ")));
            }
            let run: Vec<_> = spec
                .options_mut()
                .run_templates()
                .into_iter()
                .map(|t| t.at.join("."))
                .collect();
            per_run.push(format!("{tag}: {}", run.join(" ")));
        }
        assert_eq!(
            per_run,
            [
                "amqp: queue",
                "dir: ",
                "eventbridge: bus",
                "http: url",
                "jetstream: stream subject",
                "kafka: topic",
                "mqtt: topic",
                "nats: subject",
                "redis_pubsub: channel",
                "redis_stream: stream",
                "s3: bucket",
                "sns: topic",
                "sqs: queue",
                "webhook: ",
            ]
        );
        assert_eq!(per_event, ["dir: file_name", "kafka: key", "s3: key"]);
    }

    #[test]
    fn template_shapes_replace_each_expression() {
        assert_eq!(without_templates("a{{ x }}b{{y}}", "_"), "a_b_");
        assert_eq!(without_templates("a{{ open", "_"), "a");
        assert_eq!(without_templates("h:{{ port.in }}/{{ seq }}", "x"), "h:1/x");
    }
}
