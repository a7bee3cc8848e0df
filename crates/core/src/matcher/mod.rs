//! Matchers: does an observation's payload satisfy an expectation's `match`, `where` and
//! `schema`? And if not, where exactly does it differ?
//!
//! A [`Matcher`] is compiled once from an [`Expectation`] and then applied to many
//! payloads. [`Matcher::matches`] is the fast yes/no; [`Matcher::diff`] lists every
//! failing field and is empty exactly when `matches` is true. The diff is what a
//! near-miss report shows.
//!
//! # Semantics
//!
//! - **JSON subset** (`match`): an expected object matches an actual object when every
//!   expected key is present with a matching value (extra actual keys are fine). An
//!   expected array matches an actual array *position-wise*: expected element `i` must
//!   match actual element `i`, so the actual array may be longer but not shorter (a
//!   prefix match; write the whole array to pin its length). Scalars must be equal, with
//!   numbers compared as `f64` (`2` equals `2.0`).
//! - **Predicates** (`where`): each JSONPath (RFC 9535) is evaluated and the predicate is
//!   tested on the **first** selected node (in document order); a path selecting nothing
//!   means "missing". `equals` (numbers as `f64`, recursively), `not_equals` (the node
//!   must exist *and* differ), `gt`/`gte`/`lt`/`lte` (the node must be a number),
//!   `exists: true|false`, `regex` (the node must be a string; the regex is *searched*,
//!   not anchored: write `^…$` for a full match). A predicate with several comparisons
//!   needs all of them.
//! - **Schema**: the payload must validate against the JSON Schema (draft detected from
//!   `$schema`, 2020-12 by default). Remote `$ref`s are not fetched.
//! - **Text, bytes, headers, metadata** (`text`, `bytes`, `headers`, `meta`): checks that
//!   need no JSON. `text` reads the payload as UTF-8 (`equals`, `contains`, `regex`,
//!   `not_contains`; a payload that is not UTF-8, or was recorded truncated, fails with
//!   that said); `bytes` compares the exact bytes (`base64`, `hex`) or the full size
//!   (`len`); `headers` and `meta` compare one value each (`equals`, `regex`, `exists`,
//!   `absent`), header names case-insensitive.
//! - A matcher with none of these matches anything, binary payloads included. `match`,
//!   `where` and `schema` need a JSON payload; the others do not.
//!
//! ```
//! use roundtrip_core::matcher::Matcher;
//! use roundtrip_core::model::{Expectation, Predicate};
//! use roundtrip_core::observation::{Observation, Payload};
//!
//! let e: Expectation = serde_json::from_value(serde_json::json!({
//!     "on": "orders_out",
//!     "match": {"item": "WIDGET"},
//!     "where": [{"path": "$.qty", "gte": 2}],
//!     "within": "2s",
//! })).expect("valid expectation");
//! let m = Matcher::compile(&e).expect("valid matcher");
//! assert_eq!(m.describe(), r#"{"item":"WIDGET"} and $.qty >= 2"#);
//!
//! let p = Observation::of_payload(Payload::from_bytes(br#"{"item":"WIDGET","qty":1}"#.to_vec(), 1024));
//! assert!(!m.matches(&p));
//! let diff = m.diff(&p);
//! assert_eq!((diff[0].path.as_str(), diff[0].expected.as_str()), ("$.qty", ">= 2"));
//! assert_eq!(diff[0].actual.as_deref(), Some("1"));
//! ```

use std::fmt::Write as _;
use std::sync::Arc;

use jsonschema::Validator;
use jsonschema::paths::LocationSegment;
use regex::Regex;
use serde_json::Value;
use serde_json_path::JsonPath;

use crate::model::{Expectation, Predicate};
use crate::observation::{Observation, Payload};
use crate::verdict::FieldDiff;

mod fields;

/// How many characters of a JSON value a diff or description shows.
const MAX_VALUE_CHARS: usize = 120;

/// Why an expectation's matcher (or its other paths) could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    /// A JSONPath does not parse.
    #[error("parse the {what} JSONPath `{path}`: {source}")]
    Path {
        /// Which path: "`where`", "`ordered_by`".
        what: &'static str,
        /// The path as written.
        path: String,
        /// The parser's complaint.
        #[source]
        source: serde_json_path::ParseError,
    },
    /// A `regex` predicate does not compile.
    #[error("compile the regex `{pattern}` of the predicate on `{path}`: {source}")]
    Regex {
        /// The predicate's path.
        path: String,
        /// The pattern as written.
        pattern: String,
        /// The regex compiler's complaint.
        #[source]
        source: regex::Error,
    },
    /// The JSON Schema is invalid.
    #[error("compile the JSON Schema: {message}")]
    Schema {
        /// The schema compiler's complaint.
        message: String,
    },
    /// A predicate has no comparison.
    #[error(
        "build the predicate on `{path}`: it has no comparison (equals, not_equals, gt, gte, lt, lte, exists or regex)"
    )]
    EmptyPredicate {
        /// The predicate's path.
        path: String,
    },
    /// A `text`, `bytes`, `headers` or `meta` check is invalid.
    #[error("build the {what} check: {reason}")]
    Field {
        /// Which check, e.g. "`text.regex`", "`headers.content-type`".
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The expectation's timing fields do not make sense together.
    #[error("build the expectation: {reason}")]
    Expectation {
        /// What is wrong.
        reason: String,
    },
}

/// A compiled matcher: JSON subset, JSONPath predicates and JSON Schema, all required.
#[derive(Debug, Clone)]
pub struct Matcher {
    subset: Option<Value>,
    predicates: Vec<CompiledPredicate>,
    schema: Option<Arc<Validator>>,
    fields: fields::Fields,
    description: String,
}

#[derive(Debug, Clone)]
struct CompiledPredicate {
    text: String,
    path: JsonPath,
    tests: Vec<Test>,
}

#[derive(Debug, Clone)]
enum Test {
    Equals(Value),
    NotEquals(Value),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    Exists(bool),
    Regex(Regex),
}

impl Test {
    fn holds(&self, node: Option<&Value>) -> bool {
        let number = || node.and_then(Value::as_f64);
        match self {
            Test::Equals(v) => node.is_some_and(|n| json_eq(n, v)),
            Test::NotEquals(v) => node.is_some_and(|n| !json_eq(n, v)),
            Test::Gt(x) => number().is_some_and(|n| n > *x),
            Test::Gte(x) => number().is_some_and(|n| n >= *x),
            Test::Lt(x) => number().is_some_and(|n| n < *x),
            Test::Lte(x) => number().is_some_and(|n| n <= *x),
            Test::Exists(want) => node.is_some() == *want,
            Test::Regex(re) => node.and_then(Value::as_str).is_some_and(|s| re.is_match(s)),
        }
    }

    /// What the test wants, e.g. `>= 2`, `exists`, `matches /^a/`.
    fn expected(&self) -> String {
        match self {
            Test::Equals(v) => format!("== {}", short_json(v)),
            Test::NotEquals(v) => format!("!= {}", short_json(v)),
            Test::Gt(x) => format!("> {x}"),
            Test::Gte(x) => format!(">= {x}"),
            Test::Lt(x) => format!("< {x}"),
            Test::Lte(x) => format!("<= {x}"),
            Test::Exists(true) => "exists".to_owned(),
            Test::Exists(false) => "does not exist".to_owned(),
            Test::Regex(re) => format!("matches /{}/", re.as_str()),
        }
    }
}

impl CompiledPredicate {
    fn compile(p: &Predicate) -> Result<CompiledPredicate, MatcherError> {
        let path = JsonPath::parse(&p.path).map_err(|source| MatcherError::Path {
            what: "`where`",
            path: p.path.clone(),
            source,
        })?;
        let mut tests = Vec::new();
        tests.extend(p.equals.clone().map(Test::Equals));
        tests.extend(p.not_equals.clone().map(Test::NotEquals));
        tests.extend(p.gt.map(Test::Gt));
        tests.extend(p.gte.map(Test::Gte));
        tests.extend(p.lt.map(Test::Lt));
        tests.extend(p.lte.map(Test::Lte));
        tests.extend(p.exists.map(Test::Exists));
        if let Some(pattern) = &p.regex {
            let re = Regex::new(pattern).map_err(|source| MatcherError::Regex {
                path: p.path.clone(),
                pattern: pattern.clone(),
                source,
            })?;
            tests.push(Test::Regex(re));
        }
        if tests.is_empty() {
            return Err(MatcherError::EmptyPredicate {
                path: p.path.clone(),
            });
        }
        Ok(CompiledPredicate {
            text: p.path.clone(),
            path,
            tests,
        })
    }

    fn node<'v>(&self, json: &'v Value) -> Option<&'v Value> {
        self.path.query(json).first()
    }
}

impl Matcher {
    /// Compiles the `match`, `where` and `schema` of an expectation.
    pub fn compile(e: &Expectation) -> Result<Matcher, MatcherError> {
        let predicates = e
            .predicates
            .iter()
            .map(CompiledPredicate::compile)
            .collect::<Result<Vec<_>, _>>()?;
        let schema = match &e.schema {
            Some(s) => Some(Arc::new(jsonschema::validator_for(s).map_err(|err| {
                MatcherError::Schema {
                    message: err.to_string(),
                }
            })?)),
            None => None,
        };
        let subset = e.matches.clone();
        let fields = fields::Fields::compile(e)?;
        let mut parts = Vec::new();
        if let Some(v) = &subset {
            parts.push(short_json(v));
        }
        for p in &predicates {
            for t in &p.tests {
                parts.push(format!("{} {}", p.text, t.expected()));
            }
        }
        if schema.is_some() {
            parts.push("valid against the schema".to_owned());
        }
        fields.describe(&mut parts);
        let description = if parts.is_empty() {
            "anything".to_owned()
        } else {
            parts.join(" and ")
        };
        Ok(Matcher {
            subset,
            predicates,
            schema,
            fields,
            description,
        })
    }

    /// True when the matcher has no conditions and so matches every observation.
    pub fn is_empty(&self) -> bool {
        !self.needs_json() && self.fields.is_empty()
    }

    /// Whether any condition reads the payload as JSON.
    fn needs_json(&self) -> bool {
        self.subset.is_some() || !self.predicates.is_empty() || self.schema.is_some()
    }

    /// Whether the observation satisfies every condition.
    pub fn matches(&self, obs: &Observation) -> bool {
        self.fields.matches(obs) && self.json_matches(&obs.payload)
    }

    fn json_matches(&self, p: &Payload) -> bool {
        if !self.needs_json() {
            return true;
        }
        let Some(json) = &p.json else {
            return false;
        };
        self.subset.as_ref().is_none_or(|e| is_subset(e, json))
            && self
                .predicates
                .iter()
                .all(|pr| pr.tests.iter().all(|t| t.holds(pr.node(json))))
            && self.schema.as_ref().is_none_or(|s| s.is_valid(json))
    }

    /// Every way the observation differs from what is expected: one entry per failing
    /// field, predicate comparison, schema error, text, bytes, header or metadata check;
    /// empty exactly when [`Matcher::matches`].
    pub fn diff(&self, obs: &Observation) -> Vec<FieldDiff> {
        let mut out = Vec::new();
        self.fields.diff(obs, &mut out);
        self.json_diff(&obs.payload, &mut out);
        out
    }

    fn json_diff(&self, p: &Payload, out: &mut Vec<FieldDiff>) {
        if !self.needs_json() {
            return;
        }
        let Some(json) = &p.json else {
            out.push(FieldDiff {
                path: "$".to_owned(),
                expected: "a JSON payload".to_owned(),
                actual: Some(format!("payload is not JSON: {}", p.excerpt(60))),
            });
            return;
        };
        if let Some(expected) = &self.subset {
            subset_diff(expected, json, &mut "$".to_owned(), out);
        }
        for pr in &self.predicates {
            let node = pr.node(json);
            for t in &pr.tests {
                if !t.holds(node) {
                    out.push(FieldDiff {
                        path: pr.text.clone(),
                        expected: t.expected(),
                        actual: node.map(short_json),
                    });
                }
            }
        }
        if let Some(schema) = &self.schema {
            for err in schema.iter_errors(json) {
                out.push(FieldDiff {
                    path: json_path_of(err.instance_path().segments()),
                    expected: format!("schema: {err}"),
                    actual: Some(short_json(err.instance())),
                });
            }
        }
    }

    /// A short description: `{"item":"WIDGET"} and $.qty >= 2`; `anything` when empty.
    pub fn describe(&self) -> String {
        self.description.clone()
    }
}

/// Whether `expected` is a JSON subset of `actual` (see the module docs).
fn is_subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, ev)| a.get(k).is_some_and(|av| is_subset(ev, av))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() <= a.len() && e.iter().zip(a).all(|(ev, av)| is_subset(ev, av))
        }
        (Value::Number(e), Value::Number(a)) => e.as_f64() == a.as_f64(),
        _ => expected == actual,
    }
}

/// Appends one [`FieldDiff`] per place where `expected` is not a subset of `actual`.
/// `path` is the current location; it is restored before returning.
fn subset_diff(expected: &Value, actual: &Value, path: &mut String, out: &mut Vec<FieldDiff>) {
    let len = path.len();
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                push_member(path, k);
                match a.get(k) {
                    Some(av) => subset_diff(ev, av, path, out),
                    None => out.push(FieldDiff {
                        path: path.clone(),
                        expected: short_json(ev),
                        actual: None,
                    }),
                }
                path.truncate(len);
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for (i, ev) in e.iter().enumerate() {
                let _ = write!(path, "[{i}]");
                match a.get(i) {
                    Some(av) => subset_diff(ev, av, path, out),
                    None => out.push(FieldDiff {
                        path: path.clone(),
                        expected: short_json(ev),
                        actual: None,
                    }),
                }
                path.truncate(len);
            }
        }
        _ if is_subset(expected, actual) => {}
        _ => out.push(FieldDiff {
            path: path.clone(),
            expected: short_json(expected),
            actual: Some(short_json(actual)),
        }),
    }
}

/// Deep equality with numbers compared as `f64`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, xv)| y.get(k).is_some_and(|yv| json_eq(xv, yv)))
        }
        _ => a == b,
    }
}

/// Appends `.name`, or `['name']` when the name is not a plain identifier.
fn push_member(path: &mut String, name: &str) {
    let plain = name
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
        && !name.is_empty();
    if plain {
        path.push('.');
        path.push_str(name);
    } else {
        path.push_str("['");
        for c in name.chars() {
            if c == '\'' || c == '\\' {
                path.push('\\');
            }
            path.push(c);
        }
        path.push_str("']");
    }
}

/// A JSON Pointer's segments as a JSONPath-like location: `$.lines[0].qty`.
fn json_path_of<'a>(segments: impl Iterator<Item = LocationSegment<'a>>) -> String {
    let mut path = "$".to_owned();
    for seg in segments {
        match seg {
            LocationSegment::Property(name) => push_member(&mut path, &name),
            LocationSegment::Index(i) => {
                let _ = write!(path, "[{i}]");
            }
        }
    }
    path
}

/// Compact JSON, cut at [`MAX_VALUE_CHARS`] characters with an ellipsis.
pub(crate) fn short_json(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= MAX_VALUE_CHARS {
        text
    } else {
        let mut cut: String = text.chars().take(MAX_VALUE_CHARS).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn expectation(v: Value) -> Expectation {
        let mut base = json!({"on": "out", "within": "1s"});
        if let (Some(b), Some(extra)) = (base.as_object_mut(), v.as_object()) {
            b.extend(extra.clone());
        }
        serde_json::from_value(base).expect("valid expectation")
    }

    fn matcher(v: Value) -> Matcher {
        Matcher::compile(&expectation(v)).expect("valid matcher")
    }

    fn subset_matcher(expected: Value) -> Matcher {
        Matcher::compile(&Expectation {
            matches: Some(expected),
            ..expectation(json!({}))
        })
        .expect("valid matcher")
    }

    fn payload(v: Value) -> Observation {
        Observation::of_payload(Payload::from_bytes(v.to_string().into_bytes(), usize::MAX))
    }

    fn diff_of(m: &Matcher, v: Value) -> Vec<(String, String, Option<String>)> {
        m.diff(&payload(v))
            .into_iter()
            .map(|d| (d.path, d.expected, d.actual))
            .collect()
    }

    fn d(path: &str, expected: &str, actual: Option<&str>) -> (String, String, Option<String>) {
        (path.into(), expected.into(), actual.map(Into::into))
    }

    #[test]
    fn an_empty_matcher_matches_anything_even_binary() {
        let m = matcher(json!({}));
        assert!(m.is_empty());
        assert_eq!(m.describe(), "anything");
        let binary = Observation::of_payload(Payload::from_bytes(vec![0xff, 0x00], 16));
        assert!(m.matches(&binary));
        assert!(m.diff(&binary).is_empty());
    }

    fn raw(bytes: &[u8], limit: usize) -> Observation {
        Observation::of_payload(Payload::from_bytes(bytes.to_vec(), limit))
    }

    fn diffs(m: &Matcher, o: &Observation) -> Vec<(String, String, Option<String>)> {
        m.diff(o)
            .into_iter()
            .map(|d| (d.path, d.expected, d.actual))
            .collect()
    }

    /// The seed guide's own check: the destination object's text.
    #[test]
    fn text_checks_read_the_payload_as_utf8() {
        let m = matcher(json!({"text": {
            "equals": "THIS MESSAGE WAS CREATED DURING AN INTEGRATION TEST"
        }}));
        assert!(!m.is_empty());
        assert!(m.matches(&raw(
            b"THIS MESSAGE WAS CREATED DURING AN INTEGRATION TEST",
            1024
        )));
        assert_eq!(
            diffs(
                &m,
                &raw(b"this message was created during an integration test", 1024)
            ),
            vec![d(
                "text",
                r#"== "THIS MESSAGE WAS CREATED DURING AN INTEGRATION TEST""#,
                Some(r#""this message was created during an integration test""#)
            )]
        );
        let m = matcher(
            json!({"text": {"contains": "ok", "not_contains": "error", "regex": "^a.*z$"}}),
        );
        assert_eq!(
            m.describe(),
            r#"text contains "ok" and text does not contain "error" and text matches /^a.*z$/"#
        );
        assert!(m.matches(&raw(b"a ok z", 1024)));
        let got = diffs(&m, &raw(b"b error", 1024));
        let paths: Vec<&str> = got.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(paths, ["text", "text", "text"]);
        // Not UTF-8, or truncated: said so.
        assert_eq!(
            diffs(
                &matcher(json!({"text": {"contains": "x"}})),
                &raw(&[0xff, 0xfe], 1024)
            ),
            vec![d("text", r#"contains "x""#, Some("(not UTF-8: 2 bytes)"))]
        );
        assert_eq!(
            diffs(
                &matcher(json!({"text": {"contains": "x"}})),
                &raw(b"xxxxxxxx", 4)
            ),
            vec![d(
                "text",
                r#"contains "x""#,
                Some("(recorded truncated: 4 of 8 bytes)")
            )]
        );
        // A JSON payload is text too.
        assert!(matcher(json!({"text": {"contains": "\"a\""}})).matches(&payload(json!({"a": 1}))));
    }

    #[test]
    fn bytes_checks_compare_exact_bytes_and_the_full_size() {
        let m = matcher(json!({"bytes": {"hex": "FF 00 0a"}}));
        assert!(m.matches(&raw(&[0xff, 0x00, 0x0a], 16)));
        assert_eq!(
            diffs(&m, &raw(&[0xff, 0x01], 16)),
            vec![d("bytes", "== hex FF 00 0a", Some("2 bytes: ff01"))]
        );
        let m = matcher(json!({"bytes": {"base64": "aGVsbG8=", "len": 5}}));
        assert!(m.matches(&raw(b"hello", 16)));
        assert!(
            !m.matches(&raw(b"hello", 3)),
            "a truncated payload is not the same bytes"
        );
        assert!(
            matcher(json!({"bytes": {"len": 10}})).matches(&raw(&[0u8; 10], 4)),
            "len is the full size"
        );
    }

    #[test]
    fn header_and_meta_checks_take_a_value_or_one_check() {
        let m = matcher(json!({
            "headers": {"Content-Type": "text/plain", "x-trace": {"exists": true}, "x-debug": {"absent": true}},
            "meta": {"topic": {"regex": "^out/"}, "key": "k1"},
        }));
        let mut o = raw(b"body", 16);
        o.headers = vec![
            ("content-type".into(), "text/plain".into()),
            ("x-trace".into(), "1".into()),
        ];
        o.meta = vec![("topic".into(), "out/devices/1".into())];
        o.key = Some("k1".into());
        assert!(m.matches(&o), "{:?}", m.diff(&o));
        o.headers.push(("x-debug".into(), "on".into()));
        o.meta = vec![("topic".into(), "in/devices/1".into())];
        o.key = None;
        assert_eq!(
            diffs(&m, &o),
            vec![
                d("headers.x-debug", "is absent", Some(r#""on""#)),
                d("meta.key", r#"== "k1""#, None),
                d("meta.topic", "matches /^out//", Some(r#""in/devices/1""#)),
            ]
        );
    }

    #[test]
    fn credential_headers_are_masked_in_diffs_and_descriptions() {
        let m = matcher(json!({"headers": {"Authorization": "Bearer mine"}}));
        assert!(!m.describe().contains("mine"), "{}", m.describe());
        let mut o = raw(b"x", 16);
        o.headers = vec![("authorization".into(), "Bearer theirs".into())];
        let shown = format!("{:?}", m.diff(&o));
        assert!(
            !shown.contains("theirs") && !shown.contains("mine"),
            "{shown}"
        );
        assert!(shown.contains("(hidden: 13 characters)"), "{shown}");
    }

    #[test]
    fn bad_text_bytes_and_value_checks_are_typed_errors() {
        for (e, text) in [
            (json!({"text": {}}), "`text` check: it has no check"),
            (
                json!({"text": {"regex": "("}}),
                "`text.regex` check: the regex does not compile",
            ),
            (
                json!({"bytes": {"hex": "abc"}}),
                "`bytes.hex` check: it is not hexadecimal bytes",
            ),
            (
                json!({"bytes": {"base64": "!!"}}),
                "`bytes.base64` check: it is not valid base64",
            ),
            (
                json!({"headers": {"a": {}}}),
                "`headers.a` check: it has no check",
            ),
            (
                json!({"meta": {"topic": {"equals": "a", "regex": "b"}}}),
                "more than one check",
            ),
        ] {
            let err = Matcher::compile(&expectation(e.clone())).expect_err("invalid");
            assert!(err.to_string().contains(text), "{e}: {err}");
        }
    }

    #[test]
    fn a_non_empty_matcher_needs_json() {
        let m = matcher(json!({"match": {}}));
        let text = Observation::of_payload(Payload::from_bytes(b"hello".to_vec(), 16));
        assert!(!m.matches(&text));
        assert_eq!(diff_of(&m, json!(null)), vec![d("$", "{}", Some("null"))]);
        let diff = m.diff(&text);
        assert_eq!(diff.len(), 1);
        assert_eq!(diff[0].expected, "a JSON payload");
        assert_eq!(
            diff[0].actual.as_deref(),
            Some("payload is not JSON: hello")
        );
    }

    #[test]
    fn subset_reports_mismatches_and_missing_fields_with_paths() {
        let m = subset_matcher(json!({
            "item": "WIDGET",
            "qty": 2,
            "lines": [{"sku": "a", "qty": 1}, {"sku": "b"}],
            "odd key": true,
        }));
        assert!(m.matches(&payload(json!({
            "item": "WIDGET", "qty": 2.0, "extra": 1,
            "lines": [{"sku": "a", "qty": 1, "x": 0}, {"sku": "b"}, {"sku": "c"}],
            "odd key": true,
        }))));
        assert_eq!(
            diff_of(
                &m,
                json!({"item": "widget", "qty": "2", "lines": [{"sku": "a", "qty": 3}]})
            ),
            vec![
                d("$.item", "\"WIDGET\"", Some("\"widget\"")),
                d("$.qty", "2", Some("\"2\"")),
                d("$.lines[0].qty", "1", Some("3")),
                d("$.lines[1]", "{\"sku\":\"b\"}", None),
                d("$['odd key']", "true", None),
            ]
        );
    }

    #[test]
    fn subset_type_mismatches_are_one_diff() {
        let m = subset_matcher(json!({"a": {"b": 1}, "c": [1]}));
        assert_eq!(
            diff_of(&m, json!({"a": [1], "c": {"0": 1}})),
            vec![
                d("$.a", "{\"b\":1}", Some("[1]")),
                d("$.c", "[1]", Some("{\"0\":1}"))
            ]
        );
        assert!(!subset_matcher(json!([1, 2])).matches(&payload(json!([1]))));
        assert!(subset_matcher(json!([1])).matches(&payload(json!([1, 2]))));
        assert!(!subset_matcher(json!(null)).matches(&payload(json!(0))));
        // `match: null` reads as "no subset" when it comes from a suite file.
        assert!(matcher(json!({"match": null})).is_empty());
    }

    #[test]
    fn predicates_compare_the_first_selected_node() {
        let m = matcher(json!({"where": [
            {"path": "$.qty", "gt": 3},
            {"path": "$.qty", "lte": 10},
            {"path": "$.status", "regex": "^proc"},
            {"path": "$.id", "exists": true},
            {"path": "$.error", "exists": false},
            {"path": "$.kind", "equals": 1},
            {"path": "$.kind", "not_equals": 2},
            {"path": "$.lines[*].qty", "gte": 5},
        ]}));
        assert_eq!(
            m.describe(),
            "$.qty > 3 and $.qty <= 10 and $.status matches /^proc/ and $.id exists and \
             $.error does not exist and $.kind == 1 and $.kind != 2 and $.lines[*].qty >= 5"
        );
        let ok = json!({"qty": 4, "status": "processed", "id": "x", "kind": 1.0,
            "lines": [{"qty": 5}, {"qty": 1}]});
        assert!(m.matches(&payload(ok.clone())));
        assert!(m.diff(&payload(ok)).is_empty());

        let bad = json!({"qty": "4", "status": "unprocessed", "error": null, "kind": 2,
            "lines": [{"qty": 1}, {"qty": 9}]});
        assert_eq!(
            diff_of(&m, bad),
            vec![
                d("$.qty", "> 3", Some("\"4\"")),
                d("$.qty", "<= 10", Some("\"4\"")),
                d("$.status", "matches /^proc/", Some("\"unprocessed\"")),
                d("$.id", "exists", None),
                d("$.error", "does not exist", Some("null")),
                d("$.kind", "== 1", Some("2")),
                d("$.kind", "!= 2", Some("2")),
                d("$.lines[*].qty", ">= 5", Some("1")),
            ]
        );
    }

    #[test]
    fn not_equals_and_regex_need_the_node() {
        let m = matcher(json!({"where": [
            {"path": "$.a", "not_equals": 1},
            {"path": "$.b", "regex": "x"},
        ]}));
        assert_eq!(
            diff_of(&m, json!({"b": 1})),
            vec![d("$.a", "!= 1", None), d("$.b", "matches /x/", Some("1"))]
        );
        assert!(m.matches(&payload(json!({"a": 2, "b": "..x.."}))));
    }

    #[test]
    fn schema_errors_point_at_the_instance() {
        let m = matcher(json!({"schema": {
            "type": "object",
            "required": ["id"],
            "properties": {"lines": {"type": "array", "items": {"properties":
                {"qty": {"type": "integer"}}}}},
        }}));
        assert_eq!(m.describe(), "valid against the schema");
        assert!(m.matches(&payload(json!({"id": 1, "lines": [{"qty": 2}]}))));
        let diff = m.diff(&payload(json!({"lines": [{"qty": "2"}]})));
        let paths: Vec<&str> = diff.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths.len(), 2, "{diff:?}");
        assert!(
            paths.contains(&"$") && paths.contains(&"$.lines[0].qty"),
            "{diff:?}"
        );
        assert!(diff.iter().all(|d| d.expected.starts_with("schema: ")));
        let qty = diff
            .iter()
            .find(|d| d.path == "$.lines[0].qty")
            .expect("qty diff");
        assert_eq!(qty.actual.as_deref(), Some("\"2\""));
    }

    #[test]
    fn compile_errors_are_typed() {
        let cases = [
            (
                json!({"where": [{"path": "$[", "exists": true}]}),
                "parse the `where` JSONPath `$[`",
            ),
            (
                json!({"where": [{"path": "$.a", "regex": "("}]}),
                "compile the regex `(`",
            ),
            (
                json!({"where": [{"path": "$.a"}]}),
                "build the predicate on `$.a`",
            ),
            (json!({"schema": {"type": 12}}), "compile the JSON Schema"),
        ];
        for (e, prefix) in cases {
            let err = Matcher::compile(&expectation(e.clone())).expect_err("invalid");
            assert!(err.to_string().starts_with(prefix), "{e}: {err}");
        }
    }

    #[test]
    fn describe_combines_all_parts() {
        let m = matcher(json!({
            "match": {"item": "WIDGET"},
            "where": [{"path": "$.qty", "gte": 2.5}],
            "schema": {"type": "object"},
        }));
        assert_eq!(
            m.describe(),
            r#"{"item":"WIDGET"} and $.qty >= 2.5 and valid against the schema"#
        );
        let long = subset_matcher(json!({"text": "x".repeat(300)}));
        assert!(long.describe().ends_with('…'));
        assert_eq!(long.describe().chars().count(), MAX_VALUE_CHARS + 1);
    }

    /// Small JSON values with a small key alphabet, so that random pairs overlap.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..4).prop_map(|n| json!(n)),
            (-3i64..4).prop_map(|n| json!(n as f64 + 0.5)),
            "[ab]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_value_always_matches_itself(v in arb_json()) {
            let m = subset_matcher(v.clone());
            prop_assert!(m.matches(&payload(v.clone())));
            prop_assert!(m.diff(&payload(v)).is_empty());
        }

        #[test]
        fn matches_iff_the_diff_is_empty(expected in arb_json(), actual in arb_json()) {
            let m = subset_matcher(expected);
            let p = payload(actual);
            prop_assert_eq!(m.matches(&p), m.diff(&p).is_empty());
        }

        #[test]
        fn adding_an_expected_key_never_turns_a_miss_into_a_match(
            expected in prop::collection::btree_map("[a-d]", arb_json(), 0..4),
            key in "[a-e]",
            value in arb_json(),
            actual in arb_json(),
        ) {
            let mut expected: serde_json::Map<String, Value> = expected.into_iter().collect();
            prop_assume!(!expected.contains_key(&key));
            let p = payload(actual);
            let before = subset_matcher(Value::Object(expected.clone())).matches(&p);
            expected.insert(key, value);
            let after = subset_matcher(Value::Object(expected)).matches(&p);
            prop_assert!(before || !after);
        }
    }
}
