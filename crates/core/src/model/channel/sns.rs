//! `sns`: an SNS topic; the listener subscribes a queue of its own to it for the run.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use serde_json::Value;

use super::aws::{self, impl_aws_endpoint};
use super::{
    ByteSize, ChannelOptions, EventTemplate, EventTemplates, FIFO_DEDUP_DEFAULT,
    FIFO_GROUP_DEFAULT, Problem, RunTemplate, is_false, json_object,
};

/// `sns` channel options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnsChannel {
    /// The topic: a name or a topic ARN. A template.
    pub topic: String,
    /// Create the topic when it does not exist.
    #[serde(default, skip_serializing_if = "is_false")]
    pub create: bool,
    /// Listener: an SNS filter policy (a JSON object) for the run's subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_policy: Option<Value>,
    /// The AWS region (default: the standard configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The endpoint URL, for an emulator (default: the standard configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Listener: payloads larger than this are recorded truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

impl SnsChannel {
    /// An `sns` channel on `topic` (a name or ARN).
    pub fn new(topic: impl Into<String>) -> SnsChannel {
        SnsChannel {
            topic: topic.into(),
            create: false,
            filter_policy: None,
            region: None,
            endpoint: None,
            max_payload: None,
        }
    }
}

impl_aws_endpoint!(SnsChannel);

impl ChannelOptions for SnsChannel {
    fn transport(&self) -> &'static str {
        "sns"
    }

    fn max_payload(&self) -> Option<ByteSize> {
        self.max_payload
    }

    fn run_templates(&mut self) -> Vec<RunTemplate<'_>> {
        vec![RunTemplate::new("topic", "the topic", &mut self.topic)]
    }

    fn event_templates(&self) -> EventTemplates<'_> {
        // A FIFO topic takes the FIFO ids of a queue, at their defaults.
        let fifo = self.topic.ends_with(".fifo").then_some([
            EventTemplate {
                key: "group_id",
                written: None,
                default: FIFO_GROUP_DEFAULT,
            },
            EventTemplate {
                key: "dedup_id",
                written: None,
                default: FIFO_DEDUP_DEFAULT,
            },
        ]);
        EventTemplates { key: None, fifo }
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out = aws::problems(self);
        json_object(
            &mut out,
            "filter_policy",
            self.filter_policy.as_ref(),
            ("an SNS filter policy", "{ kind: [order] }"),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constructor_equals_what_the_required_options_parse_to() {
        let parsed: SnsChannel = serde_saphyr::from_str("topic: t").expect("parses");
        assert_eq!(parsed, SnsChannel::new("t"));
    }
}
