//! Loading suite files: YAML → [`Suite`], with compiler-style diagnostics.
//!
//! [`load`] reads a file, [`parse`] takes text. Both deserialize the YAML into the typed
//! model ([`crate::model`]), then run the semantic checks of [`validate`] (channels that
//! exist and point the right way, exactly-one-of rules, JSONPaths, regexes, JSON Schemas
//! and templates that compile, …). Every problem becomes a [`Diagnostic`] that points
//! at `file:line:column` and says what to do; a [`SuiteError`] carries all of them,
//! sorted by location, and renders them like a compiler:
//!
//! ```
//! let err = roundtrip_core::suite::parse("suite.yaml", "name: demo\nchanels: {}\n")
//!     .expect_err("a misspelt key");
//! assert_eq!(
//!     err.to_string(),
//!     "\
//! error: unknown key `chanels` in the suite
//!  --> suite.yaml:2:1
//!   |
//! 2 | chanels: {}
//!   | ^^^^^^^
//!   = help: did you mean `channels`?
//! "
//! );
//! ```
//!
//! A syntax error stops at the first one (the YAML parser cannot go on). Type errors are
//! reported one per independent entry: after the first, the channel, scenario, `sut` or
//! `correlate` that holds it is set aside and the rest is read again, so a file with
//! mistakes in three scenarios gets three errors (a second mistake inside the same entry
//! shows once the first is fixed). Semantic problems are all reported at once.
//!
//! [`json_schema`] gives the JSON Schema of the format, committed at
//! `schema/suite.schema.json` for editors.

mod decode;
pub(crate) mod diagnostic;
pub(crate) mod env;
mod locate;
pub mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, did_you_mean, list};

use crate::model::Suite;
use crate::vars::Vars;
pub(crate) use locate::SpanIndex;
use locate::{Kind, Loc, YamlPath};

/// A loaded, validated suite and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedSuite {
    /// The suite.
    pub suite: Suite,
    /// The file it was read from, as given.
    pub path: PathBuf,
    /// The directory that relative paths in the suite (`dir` channels, `sut.cwd`) are
    /// resolved against: the file's directory.
    pub base_dir: PathBuf,
}

/// Why a suite could not be loaded: one or more problems, sorted by location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SuiteError {
    /// The problems, sorted by file, line and column.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for SuiteError {
    /// Every diagnostic, each ending with a newline, separated by blank lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl SuiteError {
    /// The error of these problems, sorted by location.
    pub(crate) fn from_diagnostics(diagnostics: Vec<Diagnostic>) -> SuiteError {
        SuiteError::new(diagnostics)
    }

    fn new(mut diagnostics: Vec<Diagnostic>) -> SuiteError {
        diagnostics.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        SuiteError { diagnostics }
    }
}

/// Which kind of file is being read: the words its diagnostics use, and its
/// independent entries (each set aside after a type error, so the next one is found).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Document {
    /// A suite file.
    Suite,
    /// A listener service's configuration (`roundtrip listen CONFIG`).
    ListenConfig,
}

impl Document {
    /// "the suite", as a container in messages.
    pub(crate) fn the(self) -> &'static str {
        match self {
            Document::Suite => "the suite",
            Document::ListenConfig => "the listener config",
        }
    }

    /// "suite file", as in "the suite file is empty".
    pub(crate) fn file(self) -> &'static str {
        match self {
            Document::Suite => "suite file",
            Document::ListenConfig => "listener config file",
        }
    }

    /// What a minimal file holds, for the help of an empty or mis-shaped one.
    fn needs(self) -> &'static str {
        match self {
            Document::Suite => {
                "a suite needs at least `name`, `channels` and `scenarios`; see \
                 schema/suite.schema.json"
            }
            Document::ListenConfig => {
                "a listener config needs at least `name`, `api` and `channels`; see \
                 schema/listen.schema.json"
            }
        }
    }

    /// How a file of this kind starts, for the help of one that is not a mapping.
    fn starts(self) -> &'static str {
        match self {
            Document::Suite => {
                "start with `name: …`, then `channels:` and `scenarios:`, one key per line"
            }
            Document::ListenConfig => {
                "start with `name: …`, then `api:` and `channels:`, one key per line"
            }
        }
    }

    /// The top-level keys whose value is one independent entry.
    fn units(self) -> &'static [&'static str] {
        match self {
            Document::Suite => &["sut", "correlate"],
            Document::ListenConfig => &["api", "correlate", "run", "record", "store", "retention"],
        }
    }
}

/// The largest suite file read, in bytes.
pub const MAX_SUITE_BYTES: u64 = 16 << 20;

/// Reads, parses and validates the suite file at `path`, with `env(…)` read from the
/// process environment.
pub fn load(path: &Path) -> Result<LoadedSuite, SuiteError> {
    load_with(path, &Vars::from_process())
}

/// Reads the file, at most [`MAX_SUITE_BYTES`] (so `/dev/zero` is refused, not read
/// until memory runs out).
fn read_capped(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_SUITE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SUITE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("it is larger than {} MiB", MAX_SUITE_BYTES >> 20),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8"))
}

/// [`load`], with `env(…)` read from `vars` (`--var`, the environment, `--env-file`).
pub fn load_with(path: &Path, vars: &Vars) -> Result<LoadedSuite, SuiteError> {
    let name = path.display().to_string();
    let text = read_document(path, Document::Suite)?;
    let suite = parse_with(&name, &text, vars)?;
    let base_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(LoadedSuite {
        suite,
        path: path.to_path_buf(),
        base_dir,
    })
}

/// Reads a file of kind `doc`, or the located error that says why it cannot be.
pub(crate) fn read_document(path: &Path, doc: Document) -> Result<String, SuiteError> {
    let name = path.display().to_string();
    read_capped(path).map_err(|e| {
        SuiteError::new(vec![Diagnostic::whole_file(
            &name,
            format!("read the {}: {e}", doc.file()),
            Some(match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "check the path; it is relative to the current directory".to_owned()
                }
                std::io::ErrorKind::InvalidData => format!("a {} must be UTF-8 text", doc.file()),
                std::io::ErrorKind::FileTooLarge => {
                    format!("a {} is a short YAML file: check the path", doc.file())
                }
                _ => "check that the file exists and is readable".to_owned(),
            }),
        )])
    })
}

/// Parses and validates suite text; `source_name` names it in diagnostics. `env(…)` is
/// read from the process environment.
pub fn parse(source_name: &str, text: &str) -> Result<Suite, SuiteError> {
    parse_with(source_name, text, &Vars::from_process())
}

/// [`parse`], with `env(…)` read from `vars`.
pub fn parse_with(source_name: &str, text: &str, vars: &Vars) -> Result<Suite, SuiteError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (mut suite, index) = decode_document::<Suite>(Document::Suite, source_name, text)?;
    let locator = validate::Locator::new(source_name, text, &index);
    let mut diagnostics = env::render(&mut suite, vars, &locator);
    diagnostics.extend(validate::validate(&suite, &locator));
    if diagnostics.is_empty() {
        Ok(suite)
    } else {
        Err(SuiteError::new(diagnostics))
    }
}

/// Deserializes a document of kind `doc` (without its byte order mark), with its
/// location index: an empty file, a file that is not a mapping, and type errors (the
/// first, then one per further independent entry) become diagnostics.
pub(crate) fn decode_document<T: serde::de::DeserializeOwned>(
    doc: Document,
    source_name: &str,
    text: &str,
) -> Result<(T, SpanIndex), SuiteError> {
    let fail = |d: Diagnostic| SuiteError::new(vec![d]);

    // The generic pass first: it tells syntax errors, empty files and non-mappings apart
    // before the typed pass would phrase them in terms of Rust types.
    let index = match SpanIndex::build(text) {
        Ok(index) => index,
        Err(e) => return Err(fail(decode::diagnostic(doc, source_name, text, &e, None))),
    };
    let root = index.get(&YamlPath::root());
    match root.map(|r| r.kind) {
        None | Some(Kind::Null) => {
            let mut d = Diagnostic::at(
                source_name,
                text,
                Loc::START,
                format!("the {} is empty", doc.file()),
                Some(doc.needs().to_owned()),
            );
            // Whatever line 1 holds (a comment, `---`), it is not the problem.
            d.source_line = None;
            return Err(fail(d));
        }
        Some(Kind::Map) => {}
        Some(kind) => {
            return Err(fail(Diagnostic::at(
                source_name,
                text,
                index.value(&YamlPath::root()),
                format!(
                    "a {} must be a mapping, found {}",
                    doc.file(),
                    kind.describe()
                ),
                Some(doc.starts().to_owned()),
            )));
        }
    }

    match serde_saphyr::from_str_with_options::<T>(text, yaml_options()) {
        Ok(value) => Ok((value, index)),
        Err(e) => {
            let first = decode::diagnostic(doc, source_name, text, &e, Some(&index));
            let mut all = vec![first];
            all.extend(more_type_errors::<T>(doc, source_name, text, &index, &e));
            Err(SuiteError::new(all))
        }
    }
}

/// The YAML parser's limits for suite and config files: its defaults, with room for
/// generated suites of tens of thousands of scenarios (the default 250,000 nodes held
/// about 10,000 one-event scenarios). The limits on aliases, anchors, nesting and text,
/// which are what stop a document that expands into something huge, stay the parser's.
pub(crate) fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = 2_000_000;
    budget.max_events = 4_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// How many further type errors [`more_type_errors`] looks for.
const MORE_TYPE_ERRORS: usize = 20;

/// The type errors in other, independent entries (channels, scenarios, `sut`,
/// `correlate`) after the first: the parser stops at the first, so the entry that holds
/// it is removed and the rest deserialized again, until none is left. Each error is
/// reported where it is in the original text.
fn more_type_errors<T: serde::de::DeserializeOwned>(
    kind: Document,
    file: &str,
    text: &str,
    index: &SpanIndex,
    first: &serde_saphyr::Error,
) -> Vec<Diagnostic> {
    use locate::Seg;
    let Ok(mut doc) =
        serde_saphyr::from_str_with_options::<serde_json::Value>(text, yaml_options())
    else {
        return Vec::new();
    };
    // The original index of each scenario still in `doc`.
    let mut scenarios: Vec<usize> = (0..doc
        .get("scenarios")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len))
        .collect();
    // The entry that holds an error, as a path in the original document.
    let unit_of = |path: &YamlPath| -> Option<YamlPath> {
        match path.0.as_slice() {
            [Seg::Key(k), Seg::Key(name), ..] if k == "channels" => {
                Some(YamlPath::root().key("channels").key(name))
            }
            [Seg::Key(k), Seg::Index(i), ..] if k == "scenarios" => {
                Some(YamlPath::root().key("scenarios").index(*i))
            }
            [Seg::Key(k), ..] if kind.units().contains(&k.as_str()) => {
                Some(YamlPath::root().key(k))
            }
            _ => None,
        }
    };
    let location = |e: &serde_saphyr::Error| {
        let mut e = e;
        while let serde_saphyr::Error::WithSnippet { error, .. } = e {
            e = error;
        }
        e.location().and_then(Loc::from_saphyr)
    };
    let Some(mut unit) = location(first)
        .and_then(|l| index.path_at(l.line, l.column))
        .and_then(|(p, _)| unit_of(&p))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for _ in 0..MORE_TYPE_ERRORS {
        // Remove the entry that failed.
        match unit.0.as_slice() {
            [Seg::Key(k), Seg::Key(name)] if k == "channels" => {
                if let Some(map) = doc.get_mut("channels").and_then(|c| c.as_object_mut()) {
                    map.shift_remove(name);
                }
            }
            [Seg::Key(k), Seg::Index(original)] if k == "scenarios" => {
                let Some(at) = scenarios.iter().position(|i| i == original) else {
                    break;
                };
                scenarios.remove(at);
                if let Some(list) = doc.get_mut("scenarios").and_then(|s| s.as_array_mut()) {
                    list.remove(at);
                }
            }
            [Seg::Key(k)] => {
                if let Some(map) = doc.as_object_mut() {
                    map.shift_remove(k);
                }
            }
            _ => break,
        }
        let Ok(again) = serde_saphyr::to_string(&doc) else {
            break;
        };
        let Err(e) = serde_saphyr::from_str_with_options::<T>(&again, yaml_options()) else {
            break;
        };
        let Ok(again_index) = SpanIndex::build(&again) else {
            break;
        };
        let Some((path, is_key)) = location(&e).and_then(|l| again_index.path_at(l.line, l.column))
        else {
            break;
        };
        // Back to the original document's indices.
        let mut original = path.clone();
        if let [Seg::Key(k), Seg::Index(i), ..] = original.0.as_mut_slice()
            && k == "scenarios"
        {
            let Some(&orig) = scenarios.get(*i) else {
                break;
            };
            *i = orig;
        }
        let Some(next) = unit_of(&original) else {
            break;
        };
        let d = decode::diagnostic(kind, file, &again, &e, Some(&again_index));
        let loc = if is_key {
            index.key(&original)
        } else {
            index.value(&original)
        };
        out.push(Diagnostic::at(file, text, loc, d.message, d.help));
        unit = next;
    }
    out
}

/// The JSON Schema of the suite file format.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(Suite).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "\
name: s
channels:
  in: { http: { url: 'http://x' } }
  out: { webhook: { listen: '127.0.0.1:0' } }
scenarios:
  - name: a
    send: [ { to: in } ]
    expect: [ { on: out, within: 1s } ]
";

    fn first(text: &str) -> Diagnostic {
        parse("t.yaml", text)
            .expect_err("invalid")
            .diagnostics
            .remove(0)
    }

    #[test]
    fn a_valid_suite_parses() {
        let suite = parse("t.yaml", VALID).expect("valid");
        assert_eq!(suite.scenarios[0].expect[0].on, "out");
    }

    #[test]
    fn crlf_and_a_byte_order_mark_do_not_shift_locations() {
        let text = format!(
            "\u{feff}{}",
            VALID.replace("within", "withn").replace('\n', "\r\n")
        );
        let d = first(&text);
        assert_eq!((d.line, d.column), (8, 26));
        assert_eq!(
            d.source_line.as_deref(),
            Some("    expect: [ { on: out, withn: 1s } ]")
        );
    }

    #[test]
    fn columns_count_characters() {
        let d = first(
            &VALID
                .replace("name: a", "name: ä")
                .replace("to: in", "to: ïn"),
        );
        assert_eq!((d.line, d.column, d.underline), (7, 19, 2));
        assert_eq!(d.message, "unknown channel `ïn` in `send.to`");
    }

    #[test]
    fn aliases_are_located_where_they_are_used() {
        let text = VALID.replace(
            "scenarios:\n",
            "scenarios:\n  - name: b\n    send: &s [ { to: nowhere } ]\n    expect: []\n",
        ) + "  - name: c\n    send: *s\n    expect: []\n";
        let err = parse("t.yaml", &text).expect_err("unknown channel twice");
        let lines: Vec<u64> = err.diagnostics.iter().map(|d| d.line).collect();
        assert_eq!(lines, [7, 13]);
    }

    #[test]
    fn an_empty_correlate_names_no_rule() {
        let d = first(&VALID.replace("channels:", "correlate: {}\nchannels:"));
        assert_eq!(d.message, "`correlate` names no rule");
        assert_eq!((d.line, d.column), (2, 1));
    }

    #[test]
    fn a_channel_needs_a_transport() {
        let d = first(&VALID.replace("  in: { http: { url: 'http://x' } }", "  in:"));
        assert_eq!(d.message, "channel `in` names no transport");
        let d = first(&VALID.replace(
            "url: 'http://x' } }",
            "url: 'http://x' }, dir: { path: p } }",
        ));
        assert_eq!(d.message, "channel `in` has more than one transport");
    }

    #[test]
    fn parser_limits_read_as_sentences() {
        // An alias bomb's shape: one anchor, many aliases.
        let text = format!(
            "name: &a x\nchannels: {{}}\nscenarios: [{}]\n",
            "*a,".repeat(2_000)
        );
        let d = first(&text);
        assert!(d.message.contains("safety limit"), "{}", d.message);
        assert!(!d.to_string().contains('{'), "no Rust debug text: {d}");
    }

    #[test]
    fn a_generated_suite_of_twelve_thousand_scenarios_is_within_the_parser_limits() {
        let mut text = String::from(
            "name: big\nchannels:\n  in: { http: { url: 'http://x' } }\n  out: { webhook: { listen: '127.0.0.1:0' } }\nscenarios:\n",
        );
        for i in 0..12_000 {
            text.push_str(&format!(
                "  - name: event {i}\n    send:\n      - to: in\n        body: {{ item: widget, n: {i} }}\n    expect:\n      - on: out\n        match: {{ item: WIDGET }}\n        within: 5s\n"
            ));
        }
        assert!(
            serde_saphyr::from_str::<serde_json::Value>(&text).is_err(),
            "the parser's default budget (250,000 nodes) refuses it"
        );
        let suite = parse("big.yaml", &text).expect("parses");
        assert_eq!(suite.scenarios.len(), 12_000);
    }

    #[test]
    fn the_schema_describes_the_suite() {
        let schema = json_schema();
        assert_eq!(schema["title"], "Suite");
        let required = schema["required"].as_array().expect("required keys");
        assert!(required.iter().any(|k| k == "scenarios"));
        assert!(schema["$defs"]["Expectation"]["properties"]["none_within"].is_object());
    }
}
