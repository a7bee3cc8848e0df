//! `webhook`: an HTTP server that roundtrip runs and the SUT calls (listener only).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ByteSize, Capabilities, ChannelOptions, Problem};

/// `webhook` channel options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannel {
    /// The address to listen on, `host:port`. Port 0 picks a free port.
    pub listen: String,
    /// The path the SUT posts to; other paths answer 404.
    #[serde(default = "default_webhook_path")]
    pub path: String,
    /// Payloads larger than this are recorded truncated and marked so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<ByteSize>,
}

fn default_webhook_path() -> String {
    "/".to_owned()
}

impl WebhookChannel {
    /// The address it binds when that is a fixed one (not port 0), which no other
    /// channel may bind too.
    pub fn fixed_address(&self) -> Option<&str> {
        let listen = self.listen.trim();
        (!listen.ends_with(":0") && host_port(listen).is_ok()).then_some(listen)
    }
}

impl ChannelOptions for WebhookChannel {
    fn transport(&self) -> &'static str {
        "webhook"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            produce: false,
            ..Capabilities::BOTH_WAYS
        }
    }

    fn max_payload(&self) -> Option<ByteSize> {
        self.max_payload
    }

    fn binds_address(&self) -> bool {
        true
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.listen.contains("{{") {
            out.push(Problem::value(
                &["listen"],
                format!("a webhook's `listen` is not a template: `{}`", self.listen),
                "listen on port 0 (`127.0.0.1:0`, a free port) and tell the SUT where with \
                 `{{ channel.NAME.url }}` in `sut.start`",
            ));
        } else if let Err(why) = host_port(&self.listen) {
            out.push(Problem::value(
                &["listen"],
                format!("`listen` must be `host:port`, not `{}`: {why}", self.listen),
                "write it like `127.0.0.1:7002` (port 0 picks a free port)",
            ));
        }
        if self.path.contains("{{") {
            out.push(Problem::value(
                &["path"],
                format!("a webhook path is not a template: `{}`", self.path),
                "write the path as it is, e.g. `path: /processed`",
            ));
        } else if self.path.contains("://") {
            out.push(Problem::value(
                &["path"],
                format!(
                    "a webhook path is only the path, not a URL: `{}`",
                    self.path
                ),
                "give the address in `listen` and the path here, e.g. `path: /processed`",
            ));
        } else if !self.path.starts_with('/') {
            out.push(Problem::value(
                &["path"],
                format!("a webhook path must start with `/`, not `{}`", self.path),
                format!("write `path: /{}`", self.path),
            ));
        } else if let Some(bad) = self
            .path
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
        {
            out.push(Problem::value(
                &["path"],
                format!(
                    "a webhook path cannot hold `{}`: `{}`",
                    bad.escape_default(),
                    self.path
                ),
                "a path has no spaces, query (`?`) or fragment (`#`); percent-encode what \
                 must be there",
            ));
        }
        out
    }
}

fn host_port(s: &str) -> Result<(), &'static str> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("there is no port");
    };
    if host.is_empty() {
        return Err("the host is missing");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("an IPv6 host must be in brackets");
    }
    port.parse::<u16>()
        .map(drop)
        .map_err(|_| "the port is not a number from 0 to 65535")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_need_host_and_port() {
        assert_eq!(host_port("127.0.0.1:7002"), Ok(()));
        assert_eq!(host_port("localhost:0"), Ok(()));
        assert_eq!(host_port("[::1]:80"), Ok(()));
        assert!(host_port("7002").is_err());
        assert!(host_port(":7002").is_err());
        assert!(host_port("::1:80").is_err());
        assert!(host_port("host:99999").is_err());
    }
}
