//! The checks that do not need JSON: `text` (the payload as UTF-8), `bytes` (its exact
//! bytes), `headers` and `meta` (the transport's metadata). Each failing check is one
//! [`FieldDiff`] whose path names it: `text`, `bytes`, `headers.content-type`,
//! `meta.topic`.

use base64::Engine as _;
use regex::Regex;

use super::MatcherError;
use crate::escape::escape_text;
use crate::model::{BytesMatch, Expectation, TextMatch, ValueCheck};
use crate::observation::Observation;
use crate::verdict::FieldDiff;

/// How many characters of a text a diff shows.
const SHOWN: usize = 120;

#[derive(Debug, Clone)]
pub(super) struct Fields {
    text: Vec<TextTest>,
    bytes: Vec<BytesTest>,
    headers: Vec<(String, ValueTest)>,
    meta: Vec<(String, ValueTest)>,
}

#[derive(Debug, Clone)]
enum TextTest {
    Equals(String),
    Contains(String),
    NotContains(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
enum BytesTest {
    Exactly { bytes: Vec<u8>, written: String },
    Len(u64),
}

#[derive(Debug, Clone)]
enum ValueTest {
    Equals(String),
    Regex(Regex),
    Exists(bool),
}

fn invalid(what: String, reason: String) -> MatcherError {
    MatcherError::Field { what, reason }
}

fn regex(what: &str, pattern: &str) -> Result<Regex, MatcherError> {
    Regex::new(pattern)
        .map_err(|e| invalid(what.to_owned(), format!("the regex does not compile: {e}")))
}

impl Fields {
    pub(super) fn compile(e: &Expectation) -> Result<Fields, MatcherError> {
        Ok(Fields {
            text: e
                .text
                .as_ref()
                .map(compile_text)
                .transpose()?
                .unwrap_or_default(),
            bytes: e
                .bytes
                .as_ref()
                .map(compile_bytes)
                .transpose()?
                .unwrap_or_default(),
            headers: e
                .headers
                .iter()
                .map(|(name, check)| {
                    let what = format!("`headers.{name}`");
                    Ok((name.to_ascii_lowercase(), compile_value(&what, &check.0)?))
                })
                .collect::<Result<_, MatcherError>>()?,
            meta: e
                .meta
                .iter()
                .map(|(name, check)| {
                    let what = format!("`meta.{name}`");
                    Ok((name.clone(), compile_value(&what, &check.0)?))
                })
                .collect::<Result<_, MatcherError>>()?,
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.text.is_empty()
            && self.bytes.is_empty()
            && self.headers.is_empty()
            && self.meta.is_empty()
    }

    /// One part per check, for the matcher's description.
    pub(super) fn describe(&self, parts: &mut Vec<String>) {
        for t in &self.text {
            parts.push(format!("text {}", t.expected()));
        }
        for b in &self.bytes {
            parts.push(format!("bytes {}", b.expected()));
        }
        for (name, t) in &self.headers {
            let expected = match t {
                ValueTest::Equals(v) if is_secret_header(name) => {
                    format!("== {}", shown_header(name, v))
                }
                _ => t.expected(),
            };
            parts.push(format!("header {name} {expected}"));
        }
        for (name, t) in &self.meta {
            parts.push(format!("meta {name} {}", t.expected()));
        }
    }

    pub(super) fn matches(&self, obs: &Observation) -> bool {
        let mut out = Vec::new();
        self.diff(obs, &mut out);
        out.is_empty()
    }

    pub(super) fn diff(&self, obs: &Observation, out: &mut Vec<FieldDiff>) {
        let p = &obs.payload;
        if !self.text.is_empty() {
            let text = if p.truncated {
                Err(format!(
                    "(recorded truncated: {} of {} bytes)",
                    p.bytes.len(),
                    p.size
                ))
            } else {
                std::str::from_utf8(&p.bytes).map_err(|_| format!("(not UTF-8: {} bytes)", p.size))
            };
            for t in &self.text {
                match &text {
                    Ok(s) if t.holds(s) => {}
                    Ok(s) => out.push(FieldDiff {
                        path: "text".to_owned(),
                        expected: t.expected(),
                        actual: Some(shown(s)),
                    }),
                    Err(why) => out.push(FieldDiff {
                        path: "text".to_owned(),
                        expected: t.expected(),
                        actual: Some(why.clone()),
                    }),
                }
            }
        }
        for b in &self.bytes {
            let holds = match b {
                BytesTest::Exactly { bytes, .. } => !p.truncated && p.bytes == *bytes,
                BytesTest::Len(n) => p.size == *n,
            };
            if !holds {
                let actual = match b {
                    BytesTest::Len(_) => format!("{} bytes", p.size),
                    BytesTest::Exactly { .. } if p.truncated => {
                        format!(
                            "(recorded truncated: {} of {} bytes)",
                            p.bytes.len(),
                            p.size
                        )
                    }
                    BytesTest::Exactly { .. } => {
                        format!("{} bytes: {}", p.size, hex_shown(&p.bytes))
                    }
                };
                out.push(FieldDiff {
                    path: "bytes".to_owned(),
                    expected: b.expected(),
                    actual: Some(actual),
                });
            }
        }
        for (name, t) in &self.headers {
            let value = obs.header(name);
            if !t.holds(value) {
                let expected = match t {
                    ValueTest::Equals(v) if is_secret_header(name) => {
                        format!("== {}", shown_header(name, v))
                    }
                    _ => t.expected(),
                };
                out.push(FieldDiff {
                    path: format!("headers.{name}"),
                    expected,
                    actual: value.map(|v| shown_header(name, v)),
                });
            }
        }
        for (name, t) in &self.meta {
            let value = obs.meta(name);
            if !t.holds(value) {
                out.push(FieldDiff {
                    path: format!("meta.{name}"),
                    expected: t.expected(),
                    actual: value.map(shown),
                });
            }
        }
    }
}

fn compile_text(t: &TextMatch) -> Result<Vec<TextTest>, MatcherError> {
    let mut tests = Vec::new();
    tests.extend(t.equals.clone().map(TextTest::Equals));
    tests.extend(t.contains.clone().map(TextTest::Contains));
    tests.extend(t.not_contains.clone().map(TextTest::NotContains));
    if let Some(pattern) = &t.regex {
        tests.push(TextTest::Regex(regex("`text.regex`", pattern)?));
    }
    if tests.is_empty() {
        return Err(invalid(
            "`text`".to_owned(),
            "it has no check (equals, contains, regex or not_contains)".to_owned(),
        ));
    }
    Ok(tests)
}

fn compile_bytes(b: &BytesMatch) -> Result<Vec<BytesTest>, MatcherError> {
    let mut tests = Vec::new();
    if let Some(written) = &b.base64 {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(written.trim())
            .map_err(|e| {
                invalid(
                    "`bytes.base64`".to_owned(),
                    format!("it is not valid base64: {e}"),
                )
            })?;
        tests.push(BytesTest::Exactly {
            bytes,
            written: format!("base64 {written}"),
        });
    }
    if let Some(written) = &b.hex {
        let bytes = decode_hex(written).ok_or_else(|| {
            invalid(
                "`bytes.hex`".to_owned(),
                "it is not hexadecimal bytes (pairs of 0-9 and a-f)".to_owned(),
            )
        })?;
        tests.push(BytesTest::Exactly {
            bytes,
            written: format!("hex {written}"),
        });
    }
    tests.extend(b.len.map(BytesTest::Len));
    if tests.is_empty() {
        return Err(invalid(
            "`bytes`".to_owned(),
            "it has no check (base64, hex or len)".to_owned(),
        ));
    }
    Ok(tests)
}

fn compile_value(what: &str, c: &ValueCheck) -> Result<ValueTest, MatcherError> {
    let mut tests = Vec::new();
    tests.extend(c.equals.clone().map(ValueTest::Equals));
    if let Some(pattern) = &c.regex {
        tests.push(ValueTest::Regex(regex(what, pattern)?));
    }
    tests.extend(c.exists.map(ValueTest::Exists));
    tests.extend(c.absent.map(|absent| ValueTest::Exists(!absent)));
    match tests.len() {
        1 => Ok(tests.remove(0)),
        0 => Err(invalid(
            what.to_owned(),
            "it has no check (equals, regex, exists or absent)".to_owned(),
        )),
        _ => Err(invalid(
            what.to_owned(),
            "it has more than one check; keep one (write two expectations for both)".to_owned(),
        )),
    }
}

/// `deadbeef` (any case, optional spaces) → bytes.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

fn hex_shown(bytes: &[u8]) -> String {
    let mut out: String = bytes.iter().take(32).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 32 {
        out.push('…');
    }
    out
}

/// A value as a diff shows it: quoted, escaped, clipped.
fn shown(s: &str) -> String {
    let mut clipped: String = s.chars().take(SHOWN).collect();
    if s.chars().nth(SHOWN).is_some() {
        clipped.push('…');
    }
    format!("\"{}\"", escape_text(&clipped))
}

/// Header names whose values are credentials: shown masked in diffs.
fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || [
        "token",
        "secret",
        "api-key",
        "apikey",
        "password",
        "signature",
    ]
    .iter()
    .any(|s| name.contains(s))
}

/// A header value as a diff shows it: masked for credential headers.
fn shown_header(name: &str, value: &str) -> String {
    if is_secret_header(name) {
        format!("(hidden: {} characters)", value.chars().count())
    } else {
        shown(value)
    }
}

impl TextTest {
    fn holds(&self, s: &str) -> bool {
        match self {
            TextTest::Equals(v) => s == v,
            TextTest::Contains(v) => s.contains(v.as_str()),
            TextTest::NotContains(v) => !s.contains(v.as_str()),
            TextTest::Regex(re) => re.is_match(s),
        }
    }

    fn expected(&self) -> String {
        match self {
            TextTest::Equals(v) => format!("== {}", shown(v)),
            TextTest::Contains(v) => format!("contains {}", shown(v)),
            TextTest::NotContains(v) => format!("does not contain {}", shown(v)),
            TextTest::Regex(re) => format!("matches /{}/", re.as_str()),
        }
    }
}

impl BytesTest {
    fn expected(&self) -> String {
        match self {
            BytesTest::Exactly { written, .. } => format!("== {written}"),
            BytesTest::Len(n) => format!("{n} bytes long"),
        }
    }
}

impl ValueTest {
    fn holds(&self, value: Option<&str>) -> bool {
        match self {
            ValueTest::Equals(v) => value == Some(v.as_str()),
            ValueTest::Regex(re) => value.is_some_and(|v| re.is_match(v)),
            ValueTest::Exists(want) => value.is_some() == *want,
        }
    }

    fn expected(&self) -> String {
        match self {
            ValueTest::Equals(v) => format!("== {}", shown(v)),
            ValueTest::Regex(re) => format!("matches /{}/", re.as_str()),
            ValueTest::Exists(true) => "exists".to_owned(),
            ValueTest::Exists(false) => "is absent".to_owned(),
        }
    }
}
