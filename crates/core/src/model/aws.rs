//! Channel options of the AWS transports (S3, SQS, SNS, EventBridge).
//!
//! Every AWS channel has optional `region` and `endpoint`; left out, they come from the
//! standard AWS configuration (`AWS_REGION`, `AWS_ENDPOINT_URL`, profiles), so one suite
//! runs against an emulator on a laptop and against a real account. Credentials always
//! come from the standard chain and never appear in a suite file or a report.
//!
//! Bucket, prefix, queue, topic and bus options are templates rendered once per run; an
//! S3 object `key` and the SQS FIFO `group_id`/`dedup_id` are rendered per event.
//!
//! Listeners that need a queue of their own (SNS, EventBridge, and S3 with
//! `notifications_topic` or `notifications_bus`) create it, with the subscription or rule
//! that feeds it, for the run and remove them afterwards. Those harness-owned resources are named
//! `roundtrip-h-<unix seconds>-<run>-<salt>-<channel>` so that a leftover one (after a crash) is
//! recognisable, and `roundtrip aws-cleanup` removes it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ByteSize, DurationSpec};

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

/// `sqs` channel options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqsChannel {
    /// The queue: a name or a queue URL. A name ending in `.fifo` is a FIFO queue.
    /// A template.
    pub queue: String,
    /// Create the queue when it does not exist.
    #[serde(default, skip_serializing_if = "is_false")]
    pub create: bool,
    /// Producer on a FIFO queue: the message group, a template rendered per event
    /// (default `{{ run_id }}`: one ordered group per run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Producer on a FIFO queue: the deduplication id, a template rendered per event
    /// (default `{{ correlation_id }}-{{ seq }}`, so a retried send is not delivered
    /// twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_id: Option<String>,
    /// Listener: how long one receive call waits for messages (long polling, 1 s to
    /// 20 s; default 10 s). Not a poll interval: a message is returned the moment it
    /// arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<DurationSpec>,
    /// Listener: how long a received message stays invisible to other consumers before
    /// SQS redelivers it (default 30 s). Messages are deleted after the store commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility_timeout: Option<DurationSpec>,
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

/// `eventbridge` channel options. Events carry no headers: the body is the event's
/// `detail` (a JSON object), so correlation needs `correlate.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBridgeChannel {
    /// The event bus: a name or an ARN (default `default`). A template.
    #[serde(default = "default_bus")]
    pub bus: String,
    /// Producer: the events' `source` (default `roundtrip`). Listener: match events of
    /// this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Producer: the events' `detail-type` (default `roundtrip.event`). Listener: match
    /// events of this detail type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_type: Option<String>,
    /// Listener: an EventBridge event pattern (a JSON object); it replaces the one
    /// `source` and `detail_type` would give.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Value>,
    /// Create the bus when it does not exist (not for `default`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub create: bool,
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

fn default_bus() -> String {
    "default".to_owned()
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where every AWS channel's requests go.
pub trait AwsEndpoint {
    /// The region, when the channel sets one.
    fn region(&self) -> Option<&str>;
    /// The endpoint URL, when the channel sets one.
    fn endpoint(&self) -> Option<&str>;
}

macro_rules! aws_endpoint {
    ($($channel:ty),* $(,)?) => {$(
        impl AwsEndpoint for $channel {
            fn region(&self) -> Option<&str> {
                self.region.as_deref()
            }
            fn endpoint(&self) -> Option<&str> {
                self.endpoint.as_deref()
            }
        }
    )*};
}

aws_endpoint!(S3Channel, SqsChannel, SnsChannel, EventBridgeChannel);

// Constructors with every optional field at its default, as a suite file naming only the
// required options gives (checked in the tests below).

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

impl SqsChannel {
    /// An `sqs` channel on `queue` (a name or URL).
    pub fn new(queue: impl Into<String>) -> SqsChannel {
        SqsChannel {
            queue: queue.into(),
            create: false,
            group_id: None,
            dedup_id: None,
            wait: None,
            visibility_timeout: None,
            region: None,
            endpoint: None,
            max_payload: None,
        }
    }

    /// A FIFO queue (its name ends in `.fifo`).
    pub fn is_fifo(&self) -> bool {
        self.queue.ends_with(".fifo")
    }
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

impl EventBridgeChannel {
    /// An `eventbridge` channel on the default bus.
    pub fn new() -> EventBridgeChannel {
        EventBridgeChannel {
            bus: default_bus(),
            source: None,
            detail_type: None,
            pattern: None,
            create: false,
            region: None,
            endpoint: None,
            max_payload: None,
        }
    }
}

impl Default for EventBridgeChannel {
    fn default() -> Self {
        EventBridgeChannel::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_saphyr::from_str(yaml).expect("parses")
    }

    #[test]
    fn constructors_equal_what_the_required_options_parse_to() {
        assert_eq!(parse::<S3Channel>("bucket: b"), S3Channel::new("b"));
        assert_eq!(parse::<SqsChannel>("queue: q"), SqsChannel::new("q"));
        assert_eq!(parse::<SnsChannel>("topic: t"), SnsChannel::new("t"));
        assert_eq!(parse::<EventBridgeChannel>("{}"), EventBridgeChannel::new());
    }

    #[test]
    fn fifo_queues_are_named_so() {
        assert!(SqsChannel::new("orders.fifo").is_fifo());
        assert!(SqsChannel::new("https://sqs.eu-west-1.amazonaws.com/1/orders.fifo").is_fifo());
        assert!(!SqsChannel::new("orders").is_fifo());
    }
}
