//! `kafka`: a Kafka-API topic. The record `key` is rendered per event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::connection::{self, AuthOptions, TlsOptions, impl_connection};
use super::{
    ByteSize, ChannelOptions, DurationSpec, EventTemplate, EventTemplates, Problem, RunTemplate,
    is_false,
};

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

fn default_kafka_brokers() -> String {
    "127.0.0.1:9092".to_owned()
}

impl_connection!(KafkaChannel => brokers);

impl ChannelOptions for KafkaChannel {
    fn transport(&self) -> &'static str {
        "kafka"
    }

    fn max_payload(&self) -> Option<ByteSize> {
        self.max_payload
    }

    fn run_templates(&mut self) -> Vec<RunTemplate<'_>> {
        let mut out = vec![RunTemplate::new("topic", "the topic", &mut self.topic)];
        RunTemplate::optional(&mut out, "group", "the group", &mut self.group);
        out
    }

    fn event_templates(&self) -> EventTemplates<'_> {
        EventTemplates {
            key: Some(EventTemplate {
                key: "key",
                written: self.key.as_deref(),
                default: "{{ correlation_id }}",
            }),
            fifo: None,
        }
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out = connection::problems(self, false);
        if self.brokers.trim().is_empty() {
            out.push(Problem::value(
                &["brokers"],
                "`brokers` is empty",
                "write the bootstrap servers, e.g. `127.0.0.1:9092`",
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constructor_equals_a_suite_that_names_only_the_required_options() {
        let parsed: KafkaChannel =
            serde_json::from_value(serde_json::json!({ "topic": "t" })).expect("valid");
        assert_eq!(KafkaChannel::new(default_kafka_brokers(), "t"), parsed);
    }
}
