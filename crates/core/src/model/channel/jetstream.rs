//! `jetstream`: a NATS JetStream stream and subject (at-least-once, acked after commit).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::connection::{self, AuthOptions, TlsOptions, impl_connection};
use super::{ByteSize, ChannelOptions, DurationSpec, Problem, RunTemplate, is_false, positive};

/// `jetstream` channel options (NATS JetStream: at-least-once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JetStreamChannel {
    /// The server, `nats://host:port`.
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// The stream. The listener consumes from it; with `create: true` it is created
    /// (file storage) over `subject` when missing.
    pub stream: String,
    /// Producer: the subject published to. Listener: the consumer's filter subject.
    pub subject: String,
    /// Create the stream when it does not exist.
    #[serde(default, skip_serializing_if = "is_false")]
    pub create: bool,
    /// Listener: a durable consumer name; its position survives a listener restart.
    /// Without it the consumer is ephemeral and starts at the stream's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<String>,
    /// Listener: how long the server waits for an ack before redelivering; default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_wait: Option<DurationSpec>,
    /// TLS options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
    /// Credentials from environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOptions>,
    /// How long connecting (and a publish ack) may take; default 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<DurationSpec>,
    /// Listener: payloads larger than this are recorded truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

impl JetStreamChannel {
    /// A `jetstream` channel on `subject` of `stream` at `url`.
    pub fn new(
        url: impl Into<String>,
        stream: impl Into<String>,
        subject: impl Into<String>,
    ) -> JetStreamChannel {
        JetStreamChannel {
            url: url.into(),
            stream: stream.into(),
            subject: subject.into(),
            create: false,
            durable: None,
            ack_wait: None,
            tls: None,
            auth: None,
            connect_timeout: None,
            max_payload: None,
        }
    }
}

/// The NATS server when a channel names none.
fn default_nats_url() -> String {
    super::nats::DEFAULT_URL.to_owned()
}

impl_connection!(JetStreamChannel => url);

impl ChannelOptions for JetStreamChannel {
    fn transport(&self) -> &'static str {
        "jetstream"
    }

    fn max_payload(&self) -> Option<ByteSize> {
        self.max_payload
    }

    fn run_templates(&mut self) -> Vec<RunTemplate<'_>> {
        let mut out = vec![
            RunTemplate::new("stream", "the stream", &mut self.stream),
            RunTemplate::new("subject", "the subject", &mut self.subject),
        ];
        RunTemplate::optional(
            &mut out,
            "durable",
            "the durable consumer",
            &mut self.durable,
        );
        out
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out = connection::problems(self, false);
        positive(&mut out, "ack_wait", self.ack_wait);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constructor_equals_a_suite_that_names_only_the_required_options() {
        let parsed: JetStreamChannel =
            serde_json::from_value(serde_json::json!({ "stream": "S", "subject": "s" }))
                .expect("valid");
        assert_eq!(JetStreamChannel::new(default_nats_url(), "S", "s"), parsed);
    }
}
