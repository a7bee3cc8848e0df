//! `s3`: an S3 bucket, objects put (producer) or appearing (listener). The bucket,
//! prefix and notification sources are rendered once per run; the object `key` per event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::aws::{self, impl_aws_endpoint};
use super::{
    ByteSize, ChannelOptions, DurationSpec, EventTemplate, EventTemplates, Problem, RunTemplate,
    is_false, positive,
};

/// `s3` channel options: objects put into a bucket (producer) or appearing in one
/// (listener).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Channel {
    /// The bucket. A template.
    pub bucket: String,
    /// Producer: the object key, a template rendered per event (default
    /// `{{ correlation_id }}`). The correlation id also travels as object metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Listener: only objects under this prefix are observed. A template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Listener: only objects whose key ends with this suffix are observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Listener: an SQS queue (name or URL) that receives the bucket's `ObjectCreated`
    /// event notifications. The listener consumes it (push, at-least-once) instead of
    /// listing the bucket; a queue has one consumer, so runs sharing it in parallel
    /// would take each other's notifications (use `notifications_topic` for those).
    /// A template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<String>,
    /// Listener: an SNS topic (name or ARN) that receives the bucket's `ObjectCreated`
    /// event notifications. The listener subscribes a queue of its own to it for the
    /// run (removed afterwards), so any number of concurrent runs each see every
    /// notification. A template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications_topic: Option<String>,
    /// Listener: an EventBridge bus (usually `default`) that receives the bucket's events
    /// (the bucket's EventBridge notifications are on). The listener creates a rule of
    /// its own for the run, matching `Object Created` events of this bucket under
    /// `prefix`, that routes them to a queue of its own (both removed afterwards). With
    /// a per-run prefix (`{{ run_id }}/`), each run receives only its own objects. A
    /// template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications_bus: Option<String>,
    /// Listener without notifications: the longest wait between two listings; the
    /// listener lists again at once after finding objects and backs off (with jitter) up
    /// to this while nothing arrives. Default 1 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_max: Option<DurationSpec>,
    /// Create the bucket (and the `notifications_topic`) when it does not exist.
    #[serde(default, skip_serializing_if = "is_false")]
    pub create: bool,
    /// The AWS region (default: the standard configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The endpoint URL, for an emulator (default: the standard configuration, e.g.
    /// `AWS_ENDPOINT_URL`). Requests then use path-style addressing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Listener: payloads larger than this are recorded truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

impl S3Channel {
    /// An `s3` channel on `bucket`.
    pub fn new(bucket: impl Into<String>) -> S3Channel {
        S3Channel {
            bucket: bucket.into(),
            key: None,
            prefix: None,
            suffix: None,
            notifications: None,
            notifications_topic: None,
            notifications_bus: None,
            poll_max: None,
            create: false,
            region: None,
            endpoint: None,
            max_payload: None,
        }
    }
}

impl_aws_endpoint!(S3Channel);

impl ChannelOptions for S3Channel {
    fn transport(&self) -> &'static str {
        "s3"
    }

    fn max_payload(&self) -> Option<ByteSize> {
        self.max_payload
    }

    fn run_templates(&mut self) -> Vec<RunTemplate<'_>> {
        let mut out = vec![RunTemplate::new("bucket", "the bucket", &mut self.bucket)];
        RunTemplate::optional(&mut out, "prefix", "the prefix", &mut self.prefix);
        RunTemplate::optional(
            &mut out,
            "notifications",
            "the notifications queue",
            &mut self.notifications,
        );
        RunTemplate::optional(
            &mut out,
            "notifications_topic",
            "the notifications topic",
            &mut self.notifications_topic,
        );
        RunTemplate::optional(
            &mut out,
            "notifications_bus",
            "the notifications bus",
            &mut self.notifications_bus,
        );
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
        let mut out = aws::problems(self);
        let sources = [
            ("notifications", self.notifications.is_some()),
            ("notifications_topic", self.notifications_topic.is_some()),
            ("notifications_bus", self.notifications_bus.is_some()),
        ];
        if let Some((second, _)) = sources.iter().filter(|(_, set)| *set).nth(1) {
            out.push(Problem::key(
                &[second],
                "an `s3` channel takes its notifications from one place only",
                "keep one of `notifications` (a queue the bucket notifies), \
                 `notifications_topic` (a topic it notifies) and `notifications_bus` (an \
                 EventBridge bus it notifies)",
            ));
        }
        positive(&mut out, "poll_max", self.poll_max);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constructor_equals_what_the_required_options_parse_to() {
        let parsed: S3Channel = serde_saphyr::from_str("bucket: b").expect("parses");
        assert_eq!(parsed, S3Channel::new("b"));
    }
}
