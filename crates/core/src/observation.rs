//! What the harness records: produced events and observations.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Nanoseconds since the Unix epoch (wall clock).
pub type UnixNanos = i64;

/// Nanoseconds since the recording process's monotonic anchor. Only comparable with
/// other values taken in the same process (the same run).
pub type MonoNanos = u64;

/// A message body as received: the bytes (possibly truncated), the original size, and
/// the parsed JSON when the bytes are valid JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Payload {
    /// The recorded bytes; at most the channel's payload limit.
    #[serde(with = "b64")]
    #[schemars(with = "String")]
    pub bytes: Vec<u8>,
    /// The size of the message before any truncation.
    pub size: u64,
    /// True when `bytes` holds only the first part of the message.
    pub truncated: bool,
    /// The payload parsed as JSON, when it is complete, valid JSON.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub json: Option<Value>,
}

impl Payload {
    /// Builds a payload from received bytes, truncating to `limit` bytes.
    pub fn from_bytes(mut bytes: Vec<u8>, limit: usize) -> Payload {
        let size = bytes.len() as u64;
        let truncated = bytes.len() > limit;
        if truncated {
            bytes.truncate(limit);
        }
        let json = if truncated || bytes.is_empty() {
            None
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        Payload {
            bytes,
            size,
            truncated,
            json,
        }
    }

    /// A short, printable excerpt: the JSON, the text, or a note that it is binary.
    /// Control characters are escaped ([`crate::escape`]), so it is safe to print.
    pub fn excerpt(&self, max_chars: usize) -> String {
        let text = match (&self.json, std::str::from_utf8(&self.bytes)) {
            (Some(v), _) => v.to_string(),
            (None, Ok("")) => "(empty)".to_owned(),
            (None, Ok(s)) => s.to_owned(),
            (None, Err(_)) => format!("({} bytes, not UTF-8)", self.size),
        };
        let shown: String = text.chars().take(max_chars).collect();
        let mut out = crate::escape::escape_text(&shown);
        if text.chars().count() > max_chars || self.truncated {
            out.push('…');
        }
        out
    }
}

/// One received message on an output channel, as committed to the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Observation {
    /// Assigned by the store on commit: strictly increasing within a store.
    pub seq: u64,
    /// The run this observation belongs to.
    pub run_id: String,
    /// The channel it was received on.
    pub channel: String,
    /// The correlation id found in it, if any.
    pub correlation_id: Option<String>,
    /// The message body.
    pub payload: Payload,
    /// Headers or attributes, names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The broker's message id, when the transport has one.
    pub message_id: Option<String>,
    /// A transport key: a file or object name, a partition key.
    pub key: Option<String>,
    /// The transport's metadata: where the message arrived and how (`subject`, `topic`,
    /// `routing_key`, `partition`, `object_key`, …; docs/report-format.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meta: Vec<(String, String)>,
    /// When the listener received it (wall clock).
    pub received_at: UnixNanos,
    /// When the listener received it (monotonic, same-process only).
    pub received_mono: Option<MonoNanos>,
}

impl Observation {
    /// An observation that is only a payload: no run, channel, headers or metadata
    /// (examples and tests of matchers).
    pub fn of_payload(payload: Payload) -> Observation {
        Observation {
            seq: 0,
            run_id: String::new(),
            channel: String::new(),
            correlation_id: None,
            payload,
            headers: Vec::new(),
            message_id: None,
            key: None,
            meta: Vec::new(),
            received_at: 0,
            received_mono: None,
        }
    }

    /// The first header with this (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A metadata value: recorded under `name`, or, for `key` and `message_id`, the
    /// observation's own fields.
    pub fn meta(&self, name: &str) -> Option<&str> {
        self.meta
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .or(match name {
                "key" => self.key.as_deref(),
                "message_id" => self.message_id.as_deref(),
                _ => None,
            })
    }
}

/// An observation before the store gave it a sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewObservation {
    /// The run it was recorded for.
    pub run_id: String,
    /// The channel it was received on.
    pub channel: String,
    /// The correlation id found in it, if any.
    pub correlation_id: Option<String>,
    /// The message body.
    pub payload: Payload,
    /// Headers or attributes, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The broker's message id.
    pub message_id: Option<String>,
    /// A transport key (file or object name, partition key).
    pub key: Option<String>,
    /// The transport's metadata.
    pub meta: Vec<(String, String)>,
    /// Wall-clock receive time.
    pub received_at: UnixNanos,
    /// Monotonic receive time.
    pub received_mono: Option<MonoNanos>,
}

impl NewObservation {
    /// The committed observation with its store sequence number.
    pub fn committed(self, seq: u64) -> Observation {
        Observation {
            seq,
            run_id: self.run_id,
            channel: self.channel,
            correlation_id: self.correlation_id,
            payload: self.payload,
            headers: self.headers,
            message_id: self.message_id,
            key: self.key,
            meta: self.meta,
            received_at: self.received_at,
            received_mono: self.received_mono,
        }
    }
}

/// One event produced into an input channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentEvent {
    /// The run.
    pub run_id: String,
    /// The scenario that sent it.
    pub scenario: String,
    /// Its position among the scenario's sent events (0-based, in send order).
    pub index: u64,
    /// The channel it was produced to.
    pub channel: String,
    /// The correlation id stamped on it.
    pub correlation_id: String,
    /// Wall-clock time the send started.
    pub sent_at: UnixNanos,
    /// Monotonic time the send started.
    pub sent_mono: MonoNanos,
    /// The body size in bytes.
    pub size: u64,
    /// `None` when the transport accepted it; otherwise why not.
    pub error: Option<String>,
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_parses_json_and_marks_truncation() {
        let p = Payload::from_bytes(br#"{"a":1}"#.to_vec(), 1024);
        assert_eq!(p.json, Some(serde_json::json!({"a": 1})));
        assert!(!p.truncated);

        let p = Payload::from_bytes(vec![b'x'; 10], 4);
        assert_eq!((p.bytes.len(), p.size, p.truncated), (4, 10, true));
        assert_eq!(p.excerpt(80), "xxxx…");

        let p = Payload::from_bytes(vec![0xff, 0xfe], 16);
        assert_eq!(p.json, None);
        assert_eq!(p.excerpt(80), "(2 bytes, not UTF-8)");
        assert_eq!(Payload::from_bytes(vec![], 16).excerpt(80), "(empty)");
    }
}
