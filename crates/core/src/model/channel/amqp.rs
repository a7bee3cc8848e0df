//! `amqp`: an AMQP 0.9.1 exchange (producer) or queue (listener), e.g. RabbitMQ.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::connection::{self, AuthOptions, TlsOptions, impl_connection};
use super::{ByteSize, ChannelOptions, DurationSpec, Problem, RunTemplate, is_false};

/// `amqp` channel options (RabbitMQ and other AMQP 0.9.1 brokers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmqpChannel {
    /// The broker, `amqp://host:port/vhost` (`amqps://` for TLS); `%2f` is the `/` vhost.
    #[serde(default = "default_amqp_url")]
    pub url: String,
    /// Producer: the exchange published to (`""` is the default exchange, which routes
    /// by queue name). Listener with `routing_key`: the exchange a temporary queue is
    /// bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// Producer: the routing key (a template; for the default exchange, the queue).
    /// Listener: the binding key of the temporary queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// Listener: consume from this existing (or declared durable) queue. Producer without
    /// `routing_key`, on the default exchange: the queue published to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Listener: declare `queue` (durable) when it does not exist.
    #[serde(default, skip_serializing_if = "is_false")]
    pub declare: bool,
    /// Listener: unacknowledged deliveries in flight (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<u16>,
    /// TLS options (`amqps://` URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
    /// Credentials from environment variables (they replace any in the URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOptions>,
    /// How long connecting (and a publisher confirm) may take; default 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<DurationSpec>,
    /// Listener: payloads larger than this are recorded truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

impl AmqpChannel {
    /// An `amqp` channel at `url`, with no exchange, routing key or queue yet.
    pub fn new(url: impl Into<String>) -> AmqpChannel {
        AmqpChannel {
            url: url.into(),
            exchange: None,
            routing_key: None,
            queue: None,
            declare: false,
            prefetch: None,
            tls: None,
            auth: None,
            connect_timeout: None,
            max_payload: None,
        }
    }
}

fn default_amqp_url() -> String {
    "amqp://127.0.0.1:5672/%2f".to_owned()
}

impl_connection!(AmqpChannel => url);

impl ChannelOptions for AmqpChannel {
    fn transport(&self) -> &'static str {
        "amqp"
    }

    fn max_payload(&self) -> Option<ByteSize> {
        self.max_payload
    }

    fn run_templates(&mut self) -> Vec<RunTemplate<'_>> {
        let mut out = Vec::new();
        RunTemplate::optional(&mut out, "exchange", "the exchange", &mut self.exchange);
        RunTemplate::optional(
            &mut out,
            "routing_key",
            "the routing key",
            &mut self.routing_key,
        );
        RunTemplate::optional(&mut out, "queue", "the queue", &mut self.queue);
        out
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out = connection::problems(self, false);
        if self.prefetch == Some(0) {
            out.push(Problem::value(
                &["prefetch"],
                "`prefetch` must be at least 1",
                "leave it out for the default of 512 unacknowledged deliveries",
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
        let parsed: AmqpChannel = serde_json::from_value(serde_json::json!({})).expect("valid");
        assert_eq!(AmqpChannel::new(default_amqp_url()), parsed);
    }
}
