//! The `http` producer: one request per event, 2xx meaning accepted.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use roundtrip_core::model::HttpChannel;

use crate::transport::{Outgoing, PlanError, ProduceError, Producer, Receipt};

/// The per-request timeout when the channel sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a refusal's body is quoted in the error, in characters.
const EXCERPT_CHARS: usize = 200;

/// How many bytes of an answer's body are read: enough for the excerpt, and small answers
/// are drained so their connection can be reused.
const READ_AT_MOST: usize = 64 * 1024;

/// Sends each event as one HTTP request.
#[derive(Debug)]
pub struct HttpProducer {
    channel: String,
    client: reqwest::Client,
    method: Method,
    url: Url,
    headers: HeaderMap,
    timeout: Duration,
}

impl HttpProducer {
    /// A producer for `channel`; checks the URL, method and headers.
    pub fn new(channel: &str, spec: &HttpChannel) -> Result<HttpProducer, PlanError> {
        let invalid = |message: String| PlanError::Invalid {
            channel: channel.to_owned(),
            message,
        };
        let url = Url::parse(&spec.url)
            .map_err(|e| invalid(format!("`{}` is not a valid URL ({e})", spec.url)))?;
        match url.scheme() {
            "http" => {}
            "https" if cfg!(feature = "tls") => {}
            "https" => {
                return Err(PlanError::FeatureDisabled {
                    channel: channel.to_owned(),
                    needs: format!("has an https URL (`{url}`)"),
                    feature: "tls",
                });
            }
            other => {
                return Err(invalid(format!(
                    "`{url}` has the scheme `{other}`; an `http` channel needs an `http://` or \
                     `https://` URL"
                )));
            }
        }
        let method = Method::from_bytes(spec.method.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| invalid(format!("`{}` is not an HTTP method", spec.method)))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &spec.headers {
            let (name, value) = parse_header(name, value).map_err(invalid)?;
            headers.append(name, value);
        }
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| invalid(format!("cannot build an HTTP client: {e}")))?;
        Ok(HttpProducer {
            channel: channel.to_owned(),
            client,
            method,
            url,
            headers,
            timeout: spec.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0),
        })
    }

    fn unreachable(&self, what: String, source: Option<reqwest::Error>) -> ProduceError {
        ProduceError::Unreachable {
            channel: self.channel.clone(),
            source: Box::new(RequestFailed {
                method: self.method.clone(),
                url: self.url.to_string(),
                what,
                source: source.map(reqwest::Error::without_url),
            }),
        }
    }
}

/// A request that got no HTTP answer. Names the method and URL.
#[derive(Debug, thiserror::Error)]
#[error("{method} {url}: {what}")]
struct RequestFailed {
    method: Method,
    url: String,
    what: String,
    #[source]
    source: Option<reqwest::Error>,
}

fn parse_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let header_name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
    let header_value = HeaderValue::from_str(value).map_err(|_| {
        format!("the value of header `{name}` is not a valid HTTP header value (control characters or non-ASCII?)")
    })?;
    Ok((header_name, header_value))
}

#[async_trait]
impl Producer for HttpProducer {
    async fn send(&self, message: Outgoing) -> Result<Receipt, ProduceError> {
        let mut headers = self.headers.clone();
        for (name, value) in &message.headers {
            let (name, value) = parse_header(name, value).map_err(|m| ProduceError::Rejected {
                channel: self.channel.clone(),
                message: m,
            })?;
            headers.append(name, value);
        }
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(message.content_type));
        }
        let request = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(headers)
            .timeout(self.timeout)
            .body(message.body);
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let what = if e.is_timeout() {
                    format!(
                        "no answer within {}",
                        humantime::format_duration(self.timeout)
                    )
                } else if e.is_connect() {
                    "cannot connect".to_owned()
                } else {
                    "the request failed".to_owned()
                };
                return Err(self.unreachable(what, Some(e)));
            }
        };
        let status = response.status();
        // Drain (a bounded part of) the body: a fully read answer frees its connection for
        // the next send; a refusal's body explains it.
        let mut body = Vec::new();
        while body.len() < READ_AT_MOST {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        if status.is_success() {
            return Ok(Receipt {
                detail: Some(format!("HTTP {}", status.as_u16())),
            });
        }
        Err(ProduceError::Rejected {
            channel: self.channel.clone(),
            message: format!(
                "{} {}: HTTP {status}{}",
                self.method,
                self.url,
                excerpt(&body)
            ),
        })
    }
}

/// `: <the first 200 characters>` of a body, or ` (empty body)`.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return " (empty body)".to_owned();
    }
    let shown: String = text.chars().take(EXCERPT_CHARS).collect();
    let mut out = roundtrip_core::escape::escape_text(&shown);
    if text.chars().nth(EXCERPT_CHARS).is_some() {
        out.push('…');
    }
    format!(": {out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_say_when_empty() {
        assert_eq!(excerpt(b"  \n"), " (empty body)");
        assert_eq!(excerpt(br#"{"error":"full"}"#), r#": {"error":"full"}"#);
        let long = "é".repeat(300);
        let e = excerpt(long.as_bytes());
        assert_eq!(e.chars().count(), 2 + EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
    }

    #[test]
    fn methods_and_headers_are_checked_when_planning() {
        let mut spec = HttpChannel {
            url: "http://127.0.0.1:1/orders".to_owned(),
            method: "post".to_owned(),
            headers: Default::default(),
            timeout: None,
        };
        let p = HttpProducer::new("in", &spec).expect("valid channel");
        assert_eq!(p.method, Method::POST);
        assert_eq!(p.timeout, DEFAULT_TIMEOUT);

        spec.method = "NOT A METHOD".to_owned();
        let err = HttpProducer::new("in", &spec).expect_err("bad method");
        assert!(err.to_string().contains("is not an HTTP method"), "{err}");

        spec.method = "PUT".to_owned();
        spec.headers.insert("bad header".to_owned(), "x".to_owned());
        let err = HttpProducer::new("in", &spec).expect_err("bad header");
        assert!(
            err.to_string().contains("not a valid HTTP header name"),
            "{err}"
        );
    }
}
