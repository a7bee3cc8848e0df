//! `http`: an HTTP endpoint of the SUT that events are sent to (producer only). The URL
//! and header values are templates rendered once per run.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ByteSize, Capabilities, ChannelOptions, DurationSpec, Problem, RunTemplate, positive,
    without_templates,
};

/// `http` channel options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpChannel {
    /// The URL events are sent to. A template.
    pub url: String,
    /// The HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Headers added to every request on this channel. Values are templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Per-request timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
}

fn default_method() -> String {
    "POST".to_owned()
}

impl ChannelOptions for HttpChannel {
    fn transport(&self) -> &'static str {
        "http"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            listen: false,
            ..Capabilities::BOTH_WAYS
        }
    }

    fn max_payload(&self) -> Option<ByteSize> {
        None
    }

    fn run_templates(&mut self) -> Vec<RunTemplate<'_>> {
        let mut out = vec![RunTemplate::new("url", "the url", &mut self.url)];
        for (name, value) in &mut self.headers {
            out.push(RunTemplate {
                at: vec!["headers".to_owned(), name.clone()],
                what: format!("header `{name}`"),
                value,
            });
        }
        out
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        url_problems(&mut out, &self.url);
        let method = self.method.trim();
        if method.is_empty() || !method.bytes().all(is_token_byte) {
            out.push(Problem::value(
                &["method"],
                format!("`{}` is not an HTTP method", self.method),
                "write a method such as `POST`, `PUT` or `GET`",
            ));
        }
        for (name, value) in &self.headers {
            header_problems(&mut out, name, value);
        }
        positive(&mut out, "timeout", self.timeout);
        out
    }
}

fn url_problems(out: &mut Vec<Problem>, raw: &str) {
    // A channel's address cannot be named here at all, and the loader says so; its shape
    // would only add a second, misleading error.
    if raw.contains("{{") && raw.contains("channel.") {
        return;
    }
    // Per-run templates (`{{ run_id }}`) are checked as if rendered to a plain word.
    let shaped = without_templates(raw, "x");
    // The URL as rendered may hold a secret from env(): shown masked.
    let raw = crate::redact::url(raw);
    match url::Url::parse(&shaped) {
        Err(e) => out.push(Problem::value(
            &["url"],
            format!("`{raw}` is not a valid URL: {e}"),
            "write an absolute URL such as `http://127.0.0.1:7001/orders`",
        )),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => out.push(Problem::value(
            &["url"],
            format!(
                "`{raw}` has the scheme `{}`; an `http` channel needs `http://` or `https://`",
                u.scheme()
            ),
            "for a broker, use its own channel type (see docs/transports/)",
        )),
        Ok(_) => {}
    }
}

/// RFC 9110 token characters (header names, methods).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_problems(out: &mut Vec<Problem>, name: &str, value: &str) {
    let at = ["headers", name];
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        out.push(Problem::key(
            &at,
            format!("`{name}` is not a valid header name"),
            "use letters, digits and `-`, e.g. `x-tenant`",
        ));
    }
    let shaped = without_templates(value, "x");
    if shaped.chars().any(|ch| ch.is_control() && ch != '\t') {
        out.push(Problem::value(
            &at,
            format!("the value of header `{name}` holds a control character (a line break?)"),
            "a header value is one line of text",
        ));
    }
}
