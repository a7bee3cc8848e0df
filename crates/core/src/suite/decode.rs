//! Turning a YAML or serde error into a [`Diagnostic`] that speaks the suite's language.
//!
//! serde-saphyr reports structured errors (unknown field with the expected ones, missing
//! field, invalid type, syntax error) with a location. The location is looked up in the
//! [`SpanIndex`] to name the key and the part of the suite it belongs to, so a message
//! says "unknown key `withn` in an expectation" rather than "unknown field".

use serde_saphyr::{Error, MessageFormatter, UserMessageFormatter};

use super::Document;
use super::diagnostic::{Diagnostic, container_name_in, did_you_mean, list, list_or};
use super::locate::{Kind, Loc, Seg, SpanIndex, YamlPath};

/// The diagnostic for a failed deserialization. `index` is `None` when the text is not
/// even valid YAML.
pub(crate) fn diagnostic(
    doc: Document,
    file: &str,
    text: &str,
    err: &Error,
    index: Option<&SpanIndex>,
) -> Diagnostic {
    let err = innermost(err);
    let mut loc = err
        .location()
        .and_then(Loc::from_saphyr)
        .unwrap_or(Loc::START);
    let node = index.and_then(|i| i.path_at(loc.line, loc.column));
    let kind = match (&node, index) {
        (Some((p, false)), Some(i)) => i.get(p).map(|s| s.kind),
        _ => None,
    };
    if matches!(kind, Some(Kind::Map | Kind::Seq)) {
        // Underline the container's first line, not just its first token.
        loc.len = 0;
    }
    let at = At {
        doc,
        kind,
        node,
        written: written_at(text, loc),
    };
    // A missing key is reported where the mapping ends; point at the mapping itself.
    if let (Error::SerdeMissingField { .. }, Some(i), Some(mapping)) = (err, index, at.mapping()) {
        loc = i.key(&mapping);
    }
    let (message, help) = describe(err, &at);
    Diagnostic::at(file, text, loc, message, help)
}

fn innermost(mut err: &Error) -> &Error {
    loop {
        match err {
            Error::WithSnippet { error, .. } | Error::AliasError { error, .. } => err = error,
            other => return other,
        }
    }
}

/// What the error location points at.
struct At {
    /// What kind of file it is.
    doc: Document,
    /// The node there, and whether the location is its key (rather than its value).
    node: Option<(YamlPath, bool)>,
    /// The kind of the value there, when the location is a value.
    kind: Option<Kind>,
    /// The scalar text there, when it fits on the line.
    written: Option<String>,
}

impl At {
    fn path(&self) -> Option<&YamlPath> {
        self.node.as_ref().map(|(p, _)| p)
    }

    /// The mapping the location is in: the parent of a key, or the value itself.
    fn mapping(&self) -> Option<YamlPath> {
        match &self.node {
            Some((p, true)) => Some(parent(p)),
            Some((p, false)) => Some(p.clone()),
            None => None,
        }
    }

    /// "in an expectation", "in channel `x`", or nothing when unknown.
    fn container(&self) -> String {
        self.mapping()
            .map(|m| format!(" in {}", container_name_in(self.doc, &m)))
            .unwrap_or_default()
    }

    /// A value of the wrong type, phrased for what is there.
    fn wrong_type(&self, expected: &str, fallback_found: Option<&str>) -> (String, Option<String>) {
        let help = Some(type_help(expected));
        match &self.node {
            // The parser stopped at the next key: the value before it was missing or of
            // another kind (e.g. `in: http` where a mapping belongs).
            Some((p, true)) => (
                format!("expected {expected} before `{}`", last_key(p)),
                Some(format!(
                    "the value just above this line is not {expected}; {}",
                    type_help(expected)
                )),
            ),
            Some((p, false)) => {
                let found = match (self.kind, &self.written) {
                    (Some(Kind::Scalar), Some(w)) => format!("`{w}`"),
                    (Some(k), _) => k.describe().to_owned(),
                    (None, _) => fallback_found.unwrap_or("something else").to_owned(),
                };
                (
                    format!(
                        "wrong type for `{}`: expected {expected}, found {found}",
                        value_name(p)
                    ),
                    help,
                )
            }
            None => (
                format!(
                    "wrong type: expected {expected}, found {}",
                    fallback_found.unwrap_or("something else")
                ),
                help,
            ),
        }
    }
}

/// The scalar text written at `loc`, when the node is on one line.
fn written_at(text: &str, loc: Loc) -> Option<String> {
    let line = text
        .lines()
        .nth(usize::try_from(loc.line).ok()?.checked_sub(1)?)?;
    let start = usize::try_from(loc.column).ok()?.checked_sub(1)?;
    let len = usize::try_from(loc.len).ok().filter(|l| *l > 0)?;
    let rest: Vec<char> = line.chars().skip(start).collect();
    (rest.len() >= len).then(|| rest[..len].iter().collect())
}

fn last_key(p: &YamlPath) -> String {
    match p.0.last() {
        Some(Seg::Key(k)) => k.clone(),
        _ => p.to_string(),
    }
}

/// A channel as written in a suite, for help lines.
const EXAMPLE_CHANNEL: &str = "{ http: { url: http://127.0.0.1:7001/orders } }";

fn describe(err: &Error, at: &At) -> (String, Option<String>) {
    match err {
        Error::Budget { breach, .. } => {
            use serde_saphyr::budget::BudgetBreach as B;
            let what = match breach {
                B::Events { .. } | B::Nodes { .. } => "too many YAML nodes",
                B::Aliases { .. } => "too many aliases (`*name`)",
                B::Anchors { .. } => "too many anchors (`&name`)",
                B::Depth { .. } => "nesting too deep",
                B::Documents { .. } => "too many YAML documents",
                B::ScalarBytes { .. } => "too much text in values",
                B::MergeKeys { .. } => "too many merge keys (`<<`)",
                _ => "too large",
            };
            (
                format!(
                    "the {} is {what}: the YAML parser's safety limit was reached",
                    at.doc.file()
                ),
                Some(format!(
                    "a {} is a short file: check that this is the file you meant, and that \
                     aliases do not expand into something huge",
                    at.doc.file()
                )),
            )
        }
        Error::SerdeUnknownField {
            field, expected, ..
        } => (
            format!("unknown key `{field}`{}", at.container()),
            Some(
                did_you_mean(field, expected.iter().copied()).unwrap_or_else(|| {
                    format!(
                        "the keys allowed here are {}",
                        list(expected.iter().copied())
                    )
                }),
            ),
        ),
        Error::SerdeUnknownVariant { expected, .. }
            if is_transport_list(expected) && at.kind == Some(Kind::Null) =>
        {
            let channel = at
                .mapping()
                .map_or_else(|| "a channel".to_owned(), |m| container_name_in(at.doc, &m));
            (
                format!("{channel} names no transport"),
                Some(format!(
                    "write one of {}, e.g. `{EXAMPLE_CHANNEL}`",
                    list_or(expected.iter().copied())
                )),
            )
        }
        Error::SerdeUnknownVariant {
            variant, expected, ..
        } if is_transport_list(expected) => (
            format!("unknown channel transport `{variant}`"),
            Some(
                did_you_mean(variant, expected.iter().copied()).unwrap_or_else(|| {
                    format!(
                        "a channel is one of {}, e.g. `orders_in: {EXAMPLE_CHANNEL}`",
                        list_or(expected.iter().copied())
                    )
                }),
            ),
        ),
        Error::SerdeUnknownVariant {
            variant, expected, ..
        } => (
            format!("unknown value `{variant}`"),
            Some(
                did_you_mean(variant, expected.iter().copied()).unwrap_or_else(|| {
                    format!("write one of {}", list_or(expected.iter().copied()))
                }),
            ),
        ),
        Error::ExpectedMappingEndAfterEnumVariantValue { .. } => {
            let channel = at
                .path()
                .map(parent)
                .map_or_else(|| "a channel".to_owned(), |p| container_name_in(at.doc, &p));
            (
                format!("{channel} has more than one transport"),
                Some(
                    "a channel is exactly one of `http`, `webhook` or `dir`: declare another \
                     channel for the other"
                        .to_owned(),
                ),
            )
        }
        Error::SerdeMissingField { field, .. } => (
            format!("missing key `{field}`{}", at.container()),
            Some(missing_help(field)),
        ),
        Error::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | Error::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => at.wrong_type(&readable_type(expected), Some(unexpected)),
        Error::InvalidScalar { ty, .. } => at.wrong_type(&readable_type(ty), None),
        Error::InvalidBooleanStrict { .. } => at.wrong_type(&readable_type("a boolean"), None),
        Error::Unexpected { expected, .. } => at.wrong_type(&readable_type(expected), None),
        Error::SerdeInvalidLength { len, expected, .. } => (
            format!("wrong number of items ({len}): expected {expected}"),
            None,
        ),
        Error::NullIntoString { .. } => {
            let what = at.path().map_or_else(
                || "this value".to_owned(),
                |p| format!("`{}`", value_name(p)),
            );
            (
                format!("{what} is empty"),
                Some("write a value after the colon, or remove the key".to_owned()),
            )
        }
        Error::DuplicateMappingKey { key, .. } => (
            match key {
                Some(k) => format!("duplicate key `{k}`"),
                None => "duplicate key".to_owned(),
            },
            Some(
                "a key may appear only once in a mapping: remove or merge the other one".to_owned(),
            ),
        ),
        Error::Message { msg, .. } => split_help(msg),
        Error::Eof { .. } => (
            "unexpected end of file".to_owned(),
            Some("the file ends inside a value: check for an unclosed bracket or quote".to_owned()),
        ),
        Error::MultipleDocuments { .. } => (
            format!("the {} holds more than one YAML document", at.doc.file()),
            Some(format!(
                "remove the `---` separator: a {} is one document",
                at.doc.file()
            )),
        ),
        other => {
            let text = UserMessageFormatter.format_message(other);
            let text = text.replace(['\n', '\r'], " ");
            (
                format!("invalid YAML: {text}"),
                Some(
                    "check the indentation, colons, brackets and quotes here and on the line \
                     before"
                        .to_owned(),
                ),
            )
        }
    }
}

fn is_transport_list(expected: &[&str]) -> bool {
    expected.contains(&"http") && expected.contains(&"webhook") && expected.contains(&"dir")
}

/// A custom message like "invalid duration `x`: …; write it like `2s`" becomes a
/// message and a help line.
fn split_help(msg: &str) -> (String, Option<String>) {
    match msg.split_once("; ") {
        Some((m, h)) => (m.to_owned(), Some(h.to_owned())),
        None => (msg.to_owned(), None),
    }
}

fn parent(p: &YamlPath) -> YamlPath {
    let mut segs = p.0.clone();
    segs.pop();
    YamlPath(segs)
}

/// A short name for the value at `p`: its key, with enough context to be found.
fn value_name(p: &YamlPath) -> String {
    match p.0.as_slice() {
        [.., Seg::Key(k)] => {
            if p.0.len() <= 2 {
                p.to_string()
            } else {
                k.clone()
            }
        }
        _ => p.to_string(),
    }
}

fn readable_type(expected: &str) -> String {
    match expected {
        "u8" => "a whole number from 0 to 255".to_owned(),
        "u16" => "a whole number from 0 to 65535".to_owned(),
        "u32" => "a whole number from 0 to 4294967295".to_owned(),
        "u64" | "usize" => "a whole number (0 or more)".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" | "boolean" | "bool" => "`true` or `false`".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a map" => "a mapping".to_owned(),
        e if e.starts_with("struct ") || e.starts_with("enum ") => "a mapping".to_owned(),
        "a string" | "a borrowed string" | "string scalar" => "a string".to_owned(),
        "mapping start" => "a mapping".to_owned(),
        "sequence start" => "a list".to_owned(),
        e => e.to_owned(),
    }
}

fn type_help(expected: &str) -> String {
    match expected {
        "a list" => "write a list: `[a, b]`, or one `- item` per line".to_owned(),
        "a mapping" => {
            "write a mapping: `key: value` lines indented under the key, or `{ key: value }`"
                .to_owned()
        }
        "`true` or `false`" => "write `true` or `false`".to_owned(),
        "a string" => {
            "write text; quote it if it looks like a number or contains `: ` or `#`".to_owned()
        }
        other => format!("write {other}"),
    }
}

fn missing_help(field: &str) -> String {
    let example = match field {
        "name" => "`name: …`, a short name shown in reports",
        "channels" => {
            "`channels:` with the named endpoints, e.g. \
             `orders_in: { http: { url: http://127.0.0.1:7001/orders } }`"
        }
        "scenarios" => "`scenarios:`, a list of `- name: …` items with `send` and `expect`",
        "start" => "`start: [program, arg, …]`, the command that starts the SUT",
        "ready" => "`ready: { http: http://127.0.0.1:7001/health, within: 10s }`",
        "within" => "`within: 2s`, the deadline",
        "url" => "`url: http://127.0.0.1:7001/path`",
        "listen" => "`listen: 127.0.0.1:7002` (port 0 picks a free one)",
        "path" => "`path: …`",
        "send" => "`send:`, a list of `- to: CHANNEL` steps (`send: []` sends nothing)",
        "expect" => "`expect:`, a list of `- on: CHANNEL` expectations",
        "to" => "`to: CHANNEL`, the channel to send to",
        "on" => "`on: CHANNEL`, the channel to watch",
        _ => "",
    };
    if example.is_empty() {
        format!("add `{field}: …`")
    } else {
        format!("add {example}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::diagnostic::container_name;

    #[test]
    fn containers_are_named_for_humans() {
        let root = YamlPath::root();
        let exp = root.key("scenarios").index(1).key("expect").index(0);
        assert_eq!(container_name(&exp), "an expectation");
        assert_eq!(
            container_name(&exp.key("where").index(2)),
            "a `where` predicate"
        );
        assert_eq!(
            container_name(&root.key("channels").key("in").key("http")),
            "the `http` options of channel `in`"
        );
        assert_eq!(container_name(&root), "the suite");
        assert_eq!(
            container_name(&exp.key("match")),
            "`scenarios[1].expect[0].match`"
        );
    }

    #[test]
    fn custom_messages_split_into_help() {
        assert_eq!(
            split_help("invalid duration `x`: bad; write it like `2s`"),
            (
                "invalid duration `x`: bad".to_owned(),
                Some("write it like `2s`".to_owned())
            )
        );
    }
}
