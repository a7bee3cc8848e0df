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

mod channel;
pub mod listen;
mod load;
mod units;

pub use channel::*;
pub use load::{Limit, LoadSpec, LoadThresholds, parse_limit};
pub use units::{ByteSize, DurationSpec, MAX_DURATION};

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
    /// The program and its arguments. Each element is a template (`{{ port.in }}`,
    /// `{{ channel.out.url }}`), rendered once the listeners are up.
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
    /// Ready when a GET to this URL answers 2xx. A template (`{{ port.in }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Ready when a TCP connection to `host:port` succeeds. A template.
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

/// One scenario: events to send and what must (not) come out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The scenario's name, unique within the suite.
    pub name: String,
    /// Labels to select scenarios by: the pytest plugin makes each one a mark
    /// (`pytest -m TAG`). Each is a word of letters, digits and `_` that does not start
    /// with a digit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Send steps, run in order.
    pub send: Vec<SendStep>,
    /// Expectations, all evaluated concurrently from the first send on.
    pub expect: Vec<Expectation>,
    /// How `roundtrip load` runs this scenario and the aggregate SLAs it must meet
    /// (functional runs ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadSpec>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
