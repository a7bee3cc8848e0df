//! Header propagation: which request headers travel with an event to its output.
//!
//! Three headers are carried from the ingest request to the output, so a test harness can
//! tie an output back to its cause: `x-correlation-id`, `x-roundtrip-run` and the W3C
//! `traceparent`. The first two are copied verbatim. For `traceparent`
//! (`00-<trace id>-<parent span id>-<flags>`) the pipeline acts as a new span of the same
//! trace: the output keeps the trace id and flags and carries a fresh span id. A malformed
//! `traceparent` is not propagated.
//!
//! The headers are stored with the event (see [`crate::storage`]), so they survive a
//! restart of the pipeline.

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

/// The correlation id header.
pub const CORRELATION_HEADER: &str = "x-correlation-id";
/// The header naming the roundtrip run that sent the event.
pub const RUN_HEADER: &str = "x-roundtrip-run";
/// The W3C trace context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The propagated headers of one event, as received.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Propagated {
    /// `x-correlation-id`, if the request had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// `x-roundtrip-run`, if the request had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// `traceparent`, if the request had one, as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Propagated {
    /// Picks the propagated headers out of a request's headers. Empty values and values
    /// that are not visible ASCII count as absent.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
        };
        Self {
            correlation_id: get(CORRELATION_HEADER),
            run: get(RUN_HEADER),
            traceparent: get(TRACEPARENT_HEADER),
        }
    }

    /// The headers to send with an output: the correlation id and run as received, and a
    /// child `traceparent` with `span_id` as its span (dropped if the original is
    /// malformed).
    pub fn outgoing(&self, span_id: u64) -> Vec<(&'static str, String)> {
        let mut headers = Vec::with_capacity(3);
        if let Some(id) = &self.correlation_id {
            headers.push((CORRELATION_HEADER, id.clone()));
        }
        if let Some(run) = &self.run {
            headers.push((RUN_HEADER, run.clone()));
        }
        if let Some(child) = self
            .traceparent
            .as_deref()
            .and_then(|parent| child_traceparent(parent, span_id))
        {
            headers.push((TRACEPARENT_HEADER, child));
        }
        headers
    }
}

/// The `traceparent` of a child span: same trace id and flags, `span_id` as the parent
/// span id, version `00`. `None` if `parent` is malformed or `span_id` is zero (an
/// invalid span id in W3C trace context).
pub fn child_traceparent(parent: &str, span_id: u64) -> Option<String> {
    let mut parts = parent.split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent_id = parts.next()?;
    let flags = parts.next()?;
    // Version 00 has exactly four fields; later versions may append more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let valid = is_lower_hex(version, 2)
        && version != "ff"
        && is_lower_hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && is_lower_hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && is_lower_hex(flags, 2)
        && span_id != 0;
    valid.then(|| format!("00-{trace_id}-{span_id:016x}-{flags}"))
}

/// A random, non-zero span id.
pub fn fresh_span_id() -> u64 {
    loop {
        let (high, _) = uuid::Uuid::new_v4().as_u64_pair();
        if high != 0 {
            return high;
        }
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_child_traceparent_keeps_the_trace_and_flags_and_has_a_new_span() {
        let child = child_traceparent(PARENT, 0xabc).expect("a valid parent");
        assert_eq!(
            child,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000abc-01"
        );
    }

    #[test]
    fn malformed_traceparents_are_not_propagated() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(child_traceparent(bad, 1), None, "{bad:?}");
        }
        assert_eq!(child_traceparent(PARENT, 0), None);
    }

    #[test]
    fn a_later_version_with_extra_fields_is_continued_as_version_00() {
        let parent = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-next";
        assert_eq!(
            child_traceparent(parent, 1).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000001-01")
        );
    }

    #[test]
    fn request_headers_are_picked_and_sent_on() {
        let mut headers = HeaderMap::new();
        headers.insert(CORRELATION_HEADER, HeaderValue::from_static("order-17"));
        headers.insert(RUN_HEADER, HeaderValue::from_static("run-1"));
        headers.insert(TRACEPARENT_HEADER, HeaderValue::from_static(PARENT));
        headers.insert("x-other", HeaderValue::from_static("ignored"));
        let propagated = Propagated::from_headers(&headers);
        assert_eq!(propagated.correlation_id.as_deref(), Some("order-17"));
        assert_eq!(propagated.run.as_deref(), Some("run-1"));
        assert_eq!(propagated.traceparent.as_deref(), Some(PARENT));

        let out = propagated.outgoing(0x1234);
        assert_eq!(
            out,
            vec![
                (CORRELATION_HEADER, "order-17".to_owned()),
                (RUN_HEADER, "run-1".to_owned()),
                (
                    TRACEPARENT_HEADER,
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000001234-01".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn absent_or_empty_headers_are_not_sent() {
        let mut headers = HeaderMap::new();
        headers.insert(CORRELATION_HEADER, HeaderValue::from_static("  "));
        let propagated = Propagated::from_headers(&headers);
        assert_eq!(propagated, Propagated::default());
        assert!(propagated.outgoing(1).is_empty());
    }

    #[test]
    fn fresh_span_ids_differ() {
        let a = fresh_span_id();
        let b = fresh_span_id();
        assert_ne!(a, 0);
        assert_ne!(a, b);
    }
}
