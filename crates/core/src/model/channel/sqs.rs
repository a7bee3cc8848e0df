//! `sqs`: an SQS queue (deleted after commit: at-least-once). The queue is rendered once
//! per run; a FIFO queue's `group_id` and `dedup_id` per event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::time::Duration;

use super::aws::{self, impl_aws_endpoint};
use super::{
    ByteSize, ChannelOptions, DurationSpec, EventTemplate, EventTemplates, FIFO_DEDUP_DEFAULT,
    FIFO_GROUP_DEFAULT, Problem, RunTemplate, is_false, positive,
};

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

impl_aws_endpoint!(SqsChannel);

impl ChannelOptions for SqsChannel {
    fn transport(&self) -> &'static str {
        "sqs"
    }

    fn max_payload(&self) -> Option<ByteSize> {
        self.max_payload
    }

    fn run_templates(&mut self) -> Vec<RunTemplate<'_>> {
        vec![RunTemplate::new("queue", "the queue", &mut self.queue)]
    }

    fn event_templates(&self) -> EventTemplates<'_> {
        let fifo = self.is_fifo().then_some([
            EventTemplate {
                key: "group_id",
                written: self.group_id.as_deref(),
                default: FIFO_GROUP_DEFAULT,
            },
            EventTemplate {
                key: "dedup_id",
                written: self.dedup_id.as_deref(),
                default: FIFO_DEDUP_DEFAULT,
            },
        ]);
        EventTemplates { key: None, fifo }
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out = aws::problems(self);
        for (key, v) in [("group_id", &self.group_id), ("dedup_id", &self.dedup_id)] {
            if v.is_some() && !self.is_fifo() {
                out.push(Problem::key(
                    &[key],
                    format!(
                        "`{key}` is only for FIFO queues, and `{}` is not one",
                        self.queue
                    ),
                    "remove it, or name a FIFO queue (its name ends in `.fifo`)",
                ));
            }
        }
        if let Some(w) = self.wait
            && !(Duration::from_secs(1)..=Duration::from_secs(20)).contains(&w.0)
        {
            out.push(Problem::value(
                &["wait"],
                format!("SQS long polling waits 1 s to 20 s per receive, not {w}"),
                "write `wait: 20s` or less, and at least `1s` (a message is returned as soon \
                 as it arrives, so a longer wait costs nothing)",
            ));
        }
        positive(&mut out, "visibility_timeout", self.visibility_timeout);
        if let Some(v) = self.visibility_timeout
            && v.0 > Duration::from_secs(12 * 3600)
        {
            out.push(Problem::value(
                &["visibility_timeout"],
                format!("SQS allows a visibility timeout of at most 12 h, not {v}"),
                "write `visibility_timeout: 30s` or leave it out",
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constructor_equals_what_the_required_options_parse_to() {
        let parsed: SqsChannel = serde_saphyr::from_str("queue: q").expect("parses");
        assert_eq!(parsed, SqsChannel::new("q"));
    }

    #[test]
    fn fifo_queues_are_named_so() {
        assert!(SqsChannel::new("orders.fifo").is_fifo());
        assert!(SqsChannel::new("https://sqs.eu-west-1.amazonaws.com/1/orders.fifo").is_fifo());
        assert!(!SqsChannel::new("orders").is_fifo());
    }
}
