//! `redis_pubsub`: a Redis Pub/Sub channel or pattern (at-most-once, payload only).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::connection::{self, AuthOptions, TlsOptions, impl_connection};
use super::{ByteSize, Capabilities, ChannelOptions, DurationSpec, Problem, RunTemplate};

/// `redis_pubsub` channel options (Redis Pub/Sub: at-most-once, payload only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisPubSubChannel {
    /// The server, `redis://host:port`.
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// The channel published to or subscribed to. A template. Exactly one of `channel`
    /// and `pattern`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Listener: a glob pattern subscribed to with PSUBSCRIBE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
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

impl RedisPubSubChannel {
    /// A `redis_pubsub` channel on the Pub/Sub channel `channel` at `url`.
    pub fn new(url: impl Into<String>, channel: impl Into<String>) -> RedisPubSubChannel {
        RedisPubSubChannel {
            url: url.into(),
            channel: Some(channel.into()),
            pattern: None,
            tls: None,
            auth: None,
            connect_timeout: None,
            max_payload: None,
        }
    }
}

/// The Redis server when a channel names none.
fn default_redis_url() -> String {
    super::redis_stream::DEFAULT_URL.to_owned()
}

impl_connection!(RedisPubSubChannel => url);

impl ChannelOptions for RedisPubSubChannel {
    fn transport(&self) -> &'static str {
        "redis_pubsub"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            headers: false,
            ..Capabilities::BOTH_WAYS
        }
    }

    fn max_payload(&self) -> Option<ByteSize> {
        self.max_payload
    }

    fn run_templates(&mut self) -> Vec<RunTemplate<'_>> {
        let mut out = Vec::new();
        RunTemplate::optional(&mut out, "channel", "the channel", &mut self.channel);
        RunTemplate::optional(&mut out, "pattern", "the pattern", &mut self.pattern);
        out
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out = connection::problems(self, true);
        let help = "give `channel: NAME` (PUBLISH / SUBSCRIBE) or, for a listener, \
                    `pattern: GLOB` (PSUBSCRIBE)";
        match (&self.channel, &self.pattern) {
            (None, None) => out.push(Problem::key(
                &[],
                "a `redis_pubsub` channel needs `channel` or `pattern`",
                help,
            )),
            (Some(_), Some(_)) => out.push(Problem::at_most_one(&["channel", "pattern"], help)),
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constructor_equals_a_suite_that_names_only_the_required_options() {
        let parsed: RedisPubSubChannel =
            serde_json::from_value(serde_json::json!({ "channel": "c" })).expect("valid");
        assert_eq!(RedisPubSubChannel::new(default_redis_url(), "c"), parsed);
    }
}
