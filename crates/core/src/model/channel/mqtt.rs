//! `mqtt`: an MQTT 3.1.1 or 5 topic.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::connection::{self, AuthOptions, TlsOptions, impl_connection};
use super::{ByteSize, Capabilities, ChannelOptions, DurationSpec, Problem, RunTemplate};

/// The MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum MqttVersion {
    /// MQTT 3.1.1: no user properties, so the correlation travels in the payload.
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5: headers travel as user properties.
    #[serde(rename = "5")]
    #[default]
    V5,
}

/// `mqtt` channel options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttChannel {
    /// The broker, `mqtt://host:port` (`mqtts://` for TLS).
    #[serde(default = "default_mqtt_url")]
    pub url: String,
    /// Producer: the topic published to. Listener: the topic filter (`+`, `#`). A template.
    pub topic: String,
    /// The QoS of publishes and of the subscription: 0, 1 or 2 (default 1).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// The protocol version, `"5"` (default) or `"3.1.1"`.
    #[serde(default)]
    pub version: MqttVersion,
    /// The client id; default `roundtrip-` and a unique suffix. A listener at QoS ≥ 1
    /// with a `client_id` uses a persistent session under it, so a restarted listener
    /// gets what it missed (at-least-once); without one its session is clean
    /// (at-most-once across reconnects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// TLS options (`mqtts://` URLs).
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

impl MqttChannel {
    /// An `mqtt` channel on `topic` at `url`: MQTT 5, QoS 1.
    pub fn new(url: impl Into<String>, topic: impl Into<String>) -> MqttChannel {
        MqttChannel {
            url: url.into(),
            topic: topic.into(),
            qos: default_qos(),
            version: MqttVersion::default(),
            client_id: None,
            tls: None,
            auth: None,
            connect_timeout: None,
            max_payload: None,
        }
    }
}

fn default_mqtt_url() -> String {
    "mqtt://127.0.0.1:1883".to_owned()
}

fn default_qos() -> u8 {
    1
}

impl_connection!(MqttChannel => url);

impl ChannelOptions for MqttChannel {
    fn transport(&self) -> &'static str {
        "mqtt"
    }

    fn capabilities(&self) -> Capabilities {
        // User properties, which carry headers, came with MQTT 5.
        Capabilities {
            headers: self.version == MqttVersion::V5,
            ..Capabilities::BOTH_WAYS
        }
    }

    fn max_payload(&self) -> Option<ByteSize> {
        self.max_payload
    }

    fn run_templates(&mut self) -> Vec<RunTemplate<'_>> {
        vec![RunTemplate::new("topic", "the topic", &mut self.topic)]
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out = connection::problems(self, false);
        if self.qos > 2 {
            out.push(Problem::value(
                &["qos"],
                format!("MQTT QoS must be 0, 1 or 2, not {}", self.qos),
                "use 1 (at least once) unless the SUT publishes with 0 or 2",
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
        let parsed: MqttChannel =
            serde_json::from_value(serde_json::json!({ "topic": "t" })).expect("valid");
        assert_eq!(MqttChannel::new(default_mqtt_url(), "t"), parsed);
    }
}
