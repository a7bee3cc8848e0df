//! Correlation: tying an observation back to the event that caused it.
//!
//! Every produced event carries its correlation id (a UUIDv7) where the suite's
//! [`CorrelationRule`] says (a header, or a JSON member), and always as the trace id of
//! a W3C `traceparent` header: a UUID is 128 bits, exactly like a trace id, so a SUT that
//! only propagates trace context is still correlated. [`Correlator::extract`] looks, in
//! order, at
//!
//! 1. the rule: the header's value, or the string (or number) at the JSONPath;
//! 2. the trace id of a `traceparent` header, formatted back as a hyphenated UUID;
//! 3. the transport key (a file or object name), when it, or its file stem
//!    (`0190….json`), parses as a UUID.
//!
//! ```
//! use roundtrip_core::correlate::{Correlator, traceparent, trace_id_to_uuid};
//! use roundtrip_core::model::CorrelationRule;
//!
//! let id = "01901234-5678-7abc-8def-0123456789ab";
//! let tp = traceparent(id, 0x42);
//! assert_eq!(tp, "00-0190123456787abc8def0123456789ab-0000000000000042-01");
//!
//! let c = Correlator::new(&CorrelationRule::default()).expect("default rule");
//! let headers = vec![("traceparent".to_owned(), tp)];
//! assert_eq!(c.extract(&headers, None, None).as_deref(), Some(id));
//! ```

use serde_json::{Map, Value};
use serde_json_path::JsonPath;
use uuid::Uuid;

use crate::model::CorrelationRule;

/// The W3C trace-context header name.
pub const TRACEPARENT: &str = "traceparent";

/// Why a correlation rule could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CorrelateError {
    /// The rule's JSONPath does not parse.
    #[error("parse the correlation JSONPath `{path}`: {source}")]
    Path {
        /// The path as written.
        path: String,
        /// The parser's complaint.
        #[source]
        source: serde_json_path::ParseError,
    },
}

/// Extracts correlation ids from received messages, following one [`CorrelationRule`].
#[derive(Debug, Clone)]
pub struct Correlator {
    header: Option<String>,
    json: Option<JsonPath>,
}

impl Correlator {
    /// Builds a correlator for the rule. A `traceparent: true` rule (or an empty one)
    /// relies on the `traceparent` and key fallbacks alone.
    pub fn new(rule: &CorrelationRule) -> Result<Correlator, CorrelateError> {
        let json = match &rule.json {
            Some(path) => Some(
                JsonPath::parse(path).map_err(|source| CorrelateError::Path {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        Ok(Correlator {
            header: rule.header.as_ref().map(|h| h.to_ascii_lowercase()),
            json,
        })
    }

    /// The correlation id of a received message: the rule first, then the trace id of a
    /// `traceparent` header (as a hyphenated UUID), then `key` (or its file stem) if it
    /// is a UUID. Header names are compared case-insensitively; empty values are
    /// ignored.
    pub fn extract(
        &self,
        headers: &[(String, String)],
        json: Option<&Value>,
        key: Option<&str>,
    ) -> Option<String> {
        let by_rule = || {
            if let Some(name) = &self.header
                && let Some(v) = header(headers, name)
            {
                return Some(v.to_owned());
            }
            let node = self.json.as_ref()?.query(json?).first()?;
            match node {
                Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        by_rule()
            .or_else(|| header(headers, TRACEPARENT).and_then(trace_id_of))
            .or_else(|| key.and_then(uuid_in_key))
    }
}

/// The trimmed, non-empty value of the first header with this name (any case).
fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The trace id of a `traceparent` value (`version-traceid-spanid-flags`) as a UUID.
fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let version = parts.next()?;
    if version.len() != 2 || version.eq_ignore_ascii_case("ff") {
        return None;
    }
    trace_id_to_uuid(parts.next()?)
}

/// A key that is a UUID, or whose last path segment's stem (up to the first dot) is.
fn uuid_in_key(key: &str) -> Option<String> {
    let key = key.trim();
    if let Ok(u) = Uuid::try_parse(key) {
        return Some(u.hyphenated().to_string());
    }
    let name = key.rsplit(['/', '\\']).next()?;
    let stem = name.split('.').next()?;
    Uuid::try_parse(stem)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// A W3C `traceparent` value whose trace id is the correlation id:
/// `00-<32 hex>-<16 hex span>-01` (sampled).
///
/// A correlation id that is a UUID becomes the trace id bit for bit, so
/// [`trace_id_to_uuid`] recovers it. Any other id (or the nil UUID, whose all-zero trace
/// id is invalid) is hashed to 128 bits with FNV-1a, deterministically. A zero span id
/// (invalid) is replaced by 1.
pub fn traceparent(correlation_id: &str, span_id: u64) -> String {
    let trace_id = match Uuid::try_parse(correlation_id.trim()) {
        Ok(u) if !u.is_nil() => u.as_u128(),
        _ => fnv1a_128(correlation_id.as_bytes()),
    };
    format!("00-{trace_id:032x}-{:016x}-01", span_id.max(1))
}

/// The 128-bit FNV-1a hash; never zero (a zero hash becomes 1).
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let hash = bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME));
    hash.max(1)
}

/// A 32-hex-digit trace id as a hyphenated, lowercase UUID; `None` when it is not 32 hex
/// digits or is all zeros (an invalid trace id).
pub fn trace_id_to_uuid(trace_id_hex: &str) -> Option<String> {
    if trace_id_hex.len() != 32 || !trace_id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let n = u128::from_str_radix(trace_id_hex, 16).ok()?;
    (n != 0).then(|| Uuid::from_u128(n).hyphenated().to_string())
}

/// Sets the string `correlation_id` at `path` in `body`, for plain member paths
/// (`$.a.b`, `$['a'].b`) on a JSON object, creating missing intermediate objects.
///
/// Returns `false`, leaving `body` unchanged, when the path is not a plain member path,
/// the body is not an object, or an intermediate member exists but is not an object.
pub fn inject_json(body: &mut Value, path: &str, correlation_id: &str) -> bool {
    let Some(members) = member_path(path) else {
        return false;
    };
    let Some((last, parents)) = members.split_last() else {
        return false;
    };
    // Check first, so that a failed injection leaves the body untouched.
    let mut probe = &*body;
    for name in parents {
        match probe.get(name.as_str()) {
            Some(next @ Value::Object(_)) => probe = next,
            Some(_) => return false,
            None => break,
        }
    }
    if !probe.is_object() {
        return false;
    }
    let Some(mut cursor) = body.as_object_mut() else {
        return false;
    };
    for name in parents {
        let next = cursor
            .entry(name.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(map) = next.as_object_mut() else {
            return false;
        };
        cursor = map;
    }
    cursor.insert(last.clone(), Value::String(correlation_id.to_owned()));
    true
}

/// The member names of a plain member path: `$` followed by `.name` (RFC 9535 member
/// name shorthand) or `['name']` / `["name"]` (without escapes) segments.
fn member_path(path: &str) -> Option<Vec<String>> {
    let mut rest = path.trim().strip_prefix('$')?;
    let mut members = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after
                .char_indices()
                .find(|&(i, c)| !is_name_char(c, i == 0))
                .map_or(after.len(), |(i, _)| i);
            if end == 0 {
                return None;
            }
            members.push(after[..end].to_owned());
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let quote = after.chars().next().filter(|c| *c == '\'' || *c == '"')?;
            let body = &after[1..];
            let close = body.find(quote)?;
            let name = &body[..close];
            if name.contains('\\') {
                return None;
            }
            rest = body[close + 1..].strip_prefix(']')?;
            members.push(name.to_owned());
        } else {
            return None;
        }
    }
    Some(members)
}

/// RFC 9535 member-name shorthand: `ALPHA / "_" / non-ASCII`, then also digits.
fn is_name_char(c: char, first: bool) -> bool {
    c == '_' || !c.is_ascii() || c.is_ascii_alphabetic() || (!first && c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ID: &str = "01901234-5678-7abc-8def-0123456789ab";

    fn rule_header(h: &str) -> CorrelationRule {
        CorrelationRule {
            header: Some(h.into()),
            json: None,
            traceparent: None,
        }
    }

    fn rule_json(p: &str) -> CorrelationRule {
        CorrelationRule {
            header: None,
            json: Some(p.into()),
            traceparent: None,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_rule_header_comes_first_in_any_case() {
        let c = Correlator::new(&rule_header("X-Correlation-Id")).expect("rule");
        let tp = traceparent("other", 1);
        let hs = headers(&[("traceparent", &tp), ("x-correlation-id", " abc ")]);
        assert_eq!(c.extract(&hs, None, Some(ID)).as_deref(), Some("abc"));
    }

    #[test]
    fn an_empty_rule_header_falls_back_to_traceparent_then_key() {
        let c = Correlator::new(&CorrelationRule::default()).expect("rule");
        let tp = traceparent(ID, 7);
        let hs = headers(&[("x-correlation-id", ""), ("TraceParent", &tp)]);
        assert_eq!(c.extract(&hs, None, None).as_deref(), Some(ID));
        assert_eq!(c.extract(&[], None, Some(ID)).as_deref(), Some(ID));
        let file = format!("out/{ID}.json");
        assert_eq!(c.extract(&[], None, Some(&file)).as_deref(), Some(ID));
        assert_eq!(c.extract(&[], None, Some("out/report.json")), None);
        assert_eq!(c.extract(&[], None, None), None);
    }

    #[test]
    fn the_json_rule_reads_strings_and_numbers() {
        let c = Correlator::new(&rule_json("$.meta.correlationId")).expect("rule");
        let body = json!({"meta": {"correlationId": "abc"}});
        assert_eq!(c.extract(&[], Some(&body), None).as_deref(), Some("abc"));
        let body = json!({"meta": {"correlationId": 42}});
        assert_eq!(c.extract(&[], Some(&body), None).as_deref(), Some("42"));
        let body = json!({"meta": {"correlationId": {"nested": true}}});
        assert_eq!(c.extract(&[], Some(&body), None), None);
        assert_eq!(c.extract(&[], None, Some(ID)).as_deref(), Some(ID));
    }

    #[test]
    fn a_bad_json_path_is_an_error() {
        let err = Correlator::new(&rule_json("$..[")).expect_err("bad path");
        assert!(
            err.to_string()
                .starts_with("parse the correlation JSONPath `$..[`")
        );
    }

    #[test]
    fn traceparent_round_trips_uuids_and_hashes_other_ids() {
        let tp = traceparent(ID, 0xabc);
        assert_eq!(
            tp,
            "00-0190123456787abc8def0123456789ab-0000000000000abc-01"
        );
        assert_eq!(trace_id_of(&tp).as_deref(), Some(ID));

        let a = traceparent("order-17", 1);
        assert_eq!(a, traceparent("order-17", 1), "deterministic");
        assert_ne!(a, traceparent("order-18", 1));
        assert_eq!(a.len(), 55);
        assert!(!a.contains("00000000000000000000000000000000"));
        assert!(traceparent(&Uuid::nil().to_string(), 0).ends_with("-0000000000000001-01"));
        assert!(!traceparent(&Uuid::nil().to_string(), 1).starts_with("00-0000000000000000"));
    }

    #[test]
    fn trace_ids_are_validated() {
        assert_eq!(
            trace_id_to_uuid("0190123456787ABC8DEF0123456789AB").as_deref(),
            Some(ID)
        );
        assert_eq!(trace_id_to_uuid("00000000000000000000000000000000"), None);
        assert_eq!(trace_id_to_uuid("0190123456787abc8def0123456789a"), None);
        assert_eq!(trace_id_to_uuid("0190123456787abc8def0123456789ag"), None);
        assert_eq!(
            trace_id_of("ff-0190123456787abc8def0123456789ab-01-01"),
            None
        );
        assert_eq!(trace_id_of("garbage"), None);
    }

    #[test]
    fn inject_creates_intermediate_objects() {
        let mut body = json!({"item": "widget"});
        assert!(inject_json(&mut body, "$.meta.correlationId", ID));
        assert_eq!(
            body,
            json!({"item": "widget", "meta": {"correlationId": ID}})
        );

        let mut body = json!({"meta": {"keep": 1}});
        assert!(inject_json(&mut body, "$['meta'][\"id\"]", "x"));
        assert_eq!(body, json!({"meta": {"keep": 1, "id": "x"}}));

        let mut body = json!({"id": "old"});
        assert!(inject_json(&mut body, "$.id", "new"));
        assert_eq!(body, json!({"id": "new"}));
    }

    #[test]
    fn inject_refuses_what_it_cannot_do_and_leaves_the_body_alone() {
        for (body, path) in [
            (json!([1, 2]), "$.id"),
            (json!("text"), "$.id"),
            (json!({"meta": 3}), "$.meta.id"),
            (json!({"a": 1}), "$"),
            (json!({"a": 1}), "$.lines[0].id"),
            (json!({"a": 1}), "$..id"),
            (json!({"a": 1}), "$.1abc"),
            (json!({"a": 1}), "a.b"),
        ] {
            let mut changed = body.clone();
            assert!(!inject_json(&mut changed, path, ID), "{path} on {body}");
            assert_eq!(changed, body);
        }
    }

    #[test]
    fn injected_ids_are_extracted_by_the_same_rule() {
        let c = Correlator::new(&rule_json("$.meta.correlationId")).expect("rule");
        let mut body = json!({});
        assert!(inject_json(&mut body, "$.meta.correlationId", ID));
        assert_eq!(c.extract(&[], Some(&body), None).as_deref(), Some(ID));
    }
}
