//! `nats`: a NATS core subject (at-most-once).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::connection::{self, AuthOptions, TlsOptions, impl_connection};
use super::{ByteSize, ChannelOptions, DurationSpec, Problem, RunTemplate, is_false};

/// `nats` channel options (NATS core: at-most-once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsChannel {
    /// The server, `nats://host:port` (`tls://` for TLS).
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// Producer: the subject published to. Listener: the subject subscribed to;
    /// wildcards (`*`, `>`) allowed. A template.
    pub subject: String,
    /// Producer: send a request and wait for the reply (the reply is the receipt).
    #[serde(default, skip_serializing_if = "is_false")]
    pub request: bool,
    /// Listener: subscribe in this queue group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_group: Option<String>,
    /// Listener: messages buffered between the client and the store (default 1,048,576).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer: Option<u32>,
    /// TLS options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
    /// Credentials (user/password or token) from environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOptions>,
    /// How long connecting (and a request) may take; default 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<DurationSpec>,
    /// Listener: payloads larger than this are recorded truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

impl NatsChannel {
    /// A `nats` channel on `subject` at `url`.
    pub fn new(url: impl Into<String>, subject: impl Into<String>) -> NatsChannel {
        NatsChannel {
            url: url.into(),
            subject: subject.into(),
            request: false,
            queue_group: None,
            buffer: None,
            tls: None,
            auth: None,
            connect_timeout: None,
            max_payload: None,
        }
    }
}

/// The server when a channel names none.
pub(super) const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

fn default_nats_url() -> String {
    DEFAULT_URL.to_owned()
}

impl_connection!(NatsChannel => url);

impl ChannelOptions for NatsChannel {
    fn transport(&self) -> &'static str {
        "nats"
    }

    fn max_payload(&self) -> Option<ByteSize> {
        self.max_payload
    }

    fn run_templates(&mut self) -> Vec<RunTemplate<'_>> {
        vec![RunTemplate::new(
            "subject",
            "the subject",
            &mut self.subject,
        )]
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out = connection::problems(self, false);
        if self.buffer == Some(0) {
            out.push(Problem::value(
                &["buffer"],
                "`buffer` must be at least 1",
                "leave it out for the default of 1,048,576 messages",
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
        let parsed: NatsChannel =
            serde_json::from_value(serde_json::json!({ "subject": "s" })).expect("valid");
        assert_eq!(NatsChannel::new(default_nats_url(), "s"), parsed);
    }
}
