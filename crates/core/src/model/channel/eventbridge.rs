//! `eventbridge`: an EventBridge bus; the listener routes the run's events to a queue of
//! its own with a rule of its own.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use serde_json::Value;

use super::aws::{self, impl_aws_endpoint};
use super::{ByteSize, Capabilities, ChannelOptions, Problem, RunTemplate, is_false, json_object};

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

impl_aws_endpoint!(EventBridgeChannel);

impl ChannelOptions for EventBridgeChannel {
    fn transport(&self) -> &'static str {
        "eventbridge"
    }

    fn capabilities(&self) -> Capabilities {
        // An event's detail is its payload; it has no headers.
        Capabilities {
            headers: false,
            ..Capabilities::BOTH_WAYS
        }
    }

    fn max_payload(&self) -> Option<ByteSize> {
        self.max_payload
    }

    fn run_templates(&mut self) -> Vec<RunTemplate<'_>> {
        vec![RunTemplate::new("bus", "the bus", &mut self.bus)]
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out = aws::problems(self);
        json_object(
            &mut out,
            "pattern",
            self.pattern.as_ref(),
            ("an EventBridge event pattern", "{ source: [orders] }"),
        );
        if self.create && self.bus == "default" {
            out.push(Problem::key(
                &["create"],
                "`create` cannot create the `default` event bus: every account has it",
                "remove `create`, or name a bus of your own in `bus`",
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
        let parsed: EventBridgeChannel = serde_saphyr::from_str("{}").expect("parses");
        assert_eq!(parsed, EventBridgeChannel::new());
    }
}
