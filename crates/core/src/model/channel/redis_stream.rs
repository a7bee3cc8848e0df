//! `redis_stream`: a Redis stream (XADD; XREADGROUP + XACK after commit, or XREAD).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::connection::{self, AuthOptions, TlsOptions, impl_connection};
use super::{ByteSize, ChannelOptions, DurationSpec, Problem, RunTemplate};

/// `redis_stream` channel options (Redis Streams).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisStreamChannel {
    /// The server, `redis://host:port/db` (`rediss://` for TLS).
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// The stream key. A template.
    pub stream: String,
    /// Listener: read in this consumer group (created at the stream's end when missing)
    /// and XACK after the store committed: at-least-once. Without it the listener reads
    /// with plain XREAD from the stream's end at start: at-most-once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Listener: the consumer name within `group` (default `roundtrip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// TLS options (`rediss://` URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
    /// Credentials from environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOptions>,
    /// How long connecting may take; default 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<DurationSpec>,
    /// Listener: payloads larger than this are recorded truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

impl RedisStreamChannel {
    /// A `redis_stream` channel on `stream` at `url`.
    pub fn new(url: impl Into<String>, stream: impl Into<String>) -> RedisStreamChannel {
        RedisStreamChannel {
            url: url.into(),
            stream: stream.into(),
            group: None,
            consumer: None,
            tls: None,
            auth: None,
            connect_timeout: None,
            max_payload: None,
        }
    }
}

/// The server when a channel names none.
pub(super) const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

fn default_redis_url() -> String {
    DEFAULT_URL.to_owned()
}

impl_connection!(RedisStreamChannel => url);

impl ChannelOptions for RedisStreamChannel {
    fn transport(&self) -> &'static str {
        "redis_stream"
    }

    fn max_payload(&self) -> Option<ByteSize> {
        self.max_payload
    }

    fn run_templates(&mut self) -> Vec<RunTemplate<'_>> {
        let mut out = vec![RunTemplate::new("stream", "the stream", &mut self.stream)];
        RunTemplate::optional(&mut out, "group", "the group", &mut self.group);
        out
    }

    fn problems(&self) -> Vec<Problem> {
        connection::problems(self, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constructor_equals_a_suite_that_names_only_the_required_options() {
        let parsed: RedisStreamChannel =
            serde_json::from_value(serde_json::json!({ "stream": "k" })).expect("valid");
        assert_eq!(RedisStreamChannel::new(default_redis_url(), "k"), parsed);
    }
}
