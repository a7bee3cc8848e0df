//! One problem in a suite file, rendered like a compiler error.
//!
//! ```text
//! error: unknown key `withn` in an expectation
//!   --> suites/orders.yaml:14:9
//!    |
//! 14 |         withn: 2s
//!    |         ^^^^^
//!    = help: did you mean `within`?
//! ```
//!
//! The rendering has no colour codes, so it reads the same in a terminal, a CI log and a
//! snapshot.

use std::fmt;

use super::locate::{Loc, Seg, YamlPath};

/// One problem in a suite file, with its location and a hint on what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the user named it (or a name such as `<in-code suite>`).
    pub file: String,
    /// The 1-based line; 0 when the problem has no place in the text (the file could not
    /// be read).
    pub line: u64,
    /// The 1-based column, in characters; 0 when `line` is 0.
    pub column: u64,
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
    /// The text of the offending line, for the snippet; `None` renders no snippet.
    pub source_line: Option<String>,
    /// How many characters from `column` to underline (at least one is shown).
    pub underline: u64,
}

impl Diagnostic {
    /// A diagnostic at `loc` in `text`, underlining the node (clipped to its line).
    pub(crate) fn at(
        file: &str,
        text: &str,
        loc: Loc,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Diagnostic {
        let source_line = text
            .lines()
            .nth(usize::try_from(loc.line.saturating_sub(1)).unwrap_or(usize::MAX))
            .map(|l| l.trim_end_matches('\r').to_owned());
        let underline = source_line.as_deref().map_or(1, |l| {
            let col = usize::try_from(loc.column.saturating_sub(1)).unwrap_or(usize::MAX);
            let rest: String = l.chars().skip(col).collect();
            let rest_len = rest.trim_end().chars().count() as u64;
            match loc.len {
                0 => rest_len,
                n => n.min(rest_len),
            }
            .max(1)
        });
        Diagnostic {
            file: file.to_owned(),
            line: loc.line,
            column: loc.column,
            message: message.into(),
            help,
            source_line,
            underline,
        }
    }

    /// A diagnostic about the whole file, with no place in its text.
    pub(crate) fn whole_file(
        file: &str,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            line: 0,
            column: 0,
            message: message.into(),
            help,
            source_line: None,
            underline: 0,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let number = self.line.to_string();
        let gutter = " ".repeat(number.len());
        // Messages and help quote the file (names, values): control characters in them
        // are shown escaped, like the source line.
        let message = crate::escape::escape_lines(&self.message);
        writeln!(f, "error: {}", clip(&message, MESSAGE_SHOWN))?;
        let file = crate::escape::escape(&self.file);
        if self.line == 0 {
            writeln!(f, "{gutter}--> {file}")?;
        } else {
            writeln!(f, "{gutter}--> {file}:{}:{}", self.line, self.column)?;
        }
        if let Some(line) = &self.source_line {
            let column = usize::try_from(self.column.saturating_sub(1)).unwrap_or(0);
            let (chars, column) = shown_line(line, column);
            // A long line is shown as a window around the column.
            let (start, lead) = if chars.len() > LINE_SHOWN && column > LINE_SHOWN / 3 {
                (column - LINE_SHOWN / 3, "…")
            } else {
                (0, "")
            };
            let end = (start + LINE_SHOWN).min(chars.len());
            let trail = if end < chars.len() { "…" } else { "" };
            let shown: String = chars[start.min(end)..end].iter().collect();
            writeln!(f, "{gutter} |")?;
            writeln!(f, "{number} | {lead}{shown}{trail}")?;
            // Keep tabs as tabs so the carets line up under them.
            let pad: String = lead
                .chars()
                .map(|_| ' ')
                .chain(
                    chars[start.min(end)..column.min(end)]
                        .iter()
                        .map(|&c| if c == '\t' { '\t' } else { ' ' }),
                )
                .collect();
            let width = usize::try_from(self.underline.max(1)).unwrap_or(1);
            let carets = "^".repeat(width.min(end.saturating_sub(column).max(1)));
            writeln!(f, "{gutter} | {pad}{carets}")?;
        }
        if let Some(help) = &self.help {
            let help = crate::escape::escape_lines(help);
            writeln!(f, "{gutter} = help: {}", clip(&help, MESSAGE_SHOWN))?;
        }
        Ok(())
    }
}

/// A source line as a snippet shows it, and the 0-based column in it: passwords in URLs
/// masked (the column moved to match), and each control character or bidirectional
/// override shown as `�`, one for one, so the carets still line up (tabs are kept).
fn shown_line(line: &str, column: usize) -> (Vec<char>, usize) {
    let redacted = crate::redact::text(line);
    let column = if redacted == line {
        column
    } else {
        let was: Vec<char> = line.chars().collect();
        let now: Vec<char> = redacted.chars().collect();
        let prefix = was.iter().zip(&now).take_while(|(a, b)| a == b).count();
        let suffix = was[prefix..]
            .iter()
            .rev()
            .zip(now[prefix..].iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        if column >= was.len() - suffix {
            (column + now.len()).saturating_sub(was.len())
        } else {
            column.min(prefix)
        }
    };
    let chars = redacted
        .chars()
        .map(|c| {
            if c != '\t' && crate::escape::needs_escape(c) {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect();
    (chars, column)
}

/// How many characters of a source line a diagnostic shows.
const LINE_SHOWN: usize = 120;
/// How many characters of a message (which may quote the file) a diagnostic shows.
const MESSAGE_SHOWN: usize = 400;

/// The first `max` characters of `text`, with `…` when there was more.
fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => text.into(),
        Some((at, _)) => format!("{}…", &text[..at]).into(),
    }
}

// The wording every message shares.

/// The candidate closest to `word` (ignoring case), if one is close enough to suggest.
pub(crate) fn closest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|cand| {
            let cand_lower = cand.to_lowercase();
            let score = strsim::jaro_winkler(&lower, &cand_lower)
                .max(strsim::normalized_damerau_levenshtein(&lower, &cand_lower));
            (score, cand)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, cand)| cand)
}

/// "did you mean `x`?" for the candidate closest to `word`, if one is close enough.
pub fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<String> {
    closest(word, candidates).map(|cand| format!("did you mean `{cand}`?"))
}

/// "`a`, `b` and `c`" (or "nothing").
pub fn list<'i>(items: impl IntoIterator<Item = &'i str>) -> String {
    ticked(items, "and")
}

/// "`a`, `b` or `c`" (or "nothing").
pub(crate) fn list_or<'i>(items: impl IntoIterator<Item = &'i str>) -> String {
    ticked(items, "or")
}

fn ticked<'i>(items: impl IntoIterator<Item = &'i str>, last_word: &str) -> String {
    let items: Vec<String> = items.into_iter().map(|i| format!("`{i}`")).collect();
    match items.as_slice() {
        [] => "nothing".to_owned(),
        _ => join(&items, last_word),
    }
}

/// "a, b and c" for `last_word` "and"; empty for no items.
pub(crate) fn join(items: &[String], last_word: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} {last_word} {last}", init.join(", ")),
    }
}

/// How a user would name the part of the suite at `p`.
pub(crate) fn container_name(p: &YamlPath) -> String {
    container_name_in(super::Document::Suite, p)
}

/// How a user would name the part of a document of kind `doc` at `p`.
pub(crate) fn container_name_in(doc: super::Document, p: &YamlPath) -> String {
    let keys: Vec<&str> =
        p.0.iter()
            .map(|s| match s {
                Seg::Key(k) => k.as_str(),
                Seg::Index(_) => "[]",
            })
            .collect();
    let channel = |i: usize| match p.0.get(i) {
        Some(Seg::Key(k)) => k.clone(),
        _ => String::new(),
    };
    match keys.as_slice() {
        [] => doc.the().to_owned(),
        ["api"] => "`api`".to_owned(),
        ["run"] => "`run`".to_owned(),
        ["sut"] => "`sut`".to_owned(),
        ["sut", "ready"] => "`sut.ready`".to_owned(),
        ["correlate"] => "`correlate`".to_owned(),
        ["channels", _] => format!("channel `{}`", channel(1)),
        ["channels", _, transport] => {
            format!("the `{transport}` options of channel `{}`", channel(1))
        }
        ["scenarios", "[]"] => "a scenario".to_owned(),
        ["scenarios", "[]", "send", "[]"] => "a send step".to_owned(),
        ["scenarios", "[]", "expect", "[]"] => "an expectation".to_owned(),
        ["scenarios", "[]", "expect", "[]", "where", "[]"] => "a `where` predicate".to_owned(),
        _ => format!("`{p}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_need_to_be_close() {
        assert_eq!(
            did_you_mean("withn", ["on", "within", "none_within"]),
            Some("did you mean `within`?".into())
        );
        assert_eq!(
            did_you_mean("htp", ["http", "webhook", "dir"]),
            Some("did you mean `http`?".into())
        );
        assert_eq!(
            did_you_mean("Orders_Out", ["orders_out"]),
            Some("did you mean `orders_out`?".into())
        );
        assert_eq!(did_you_mean("kafka", ["http", "webhook", "dir"]), None);
        assert_eq!(did_you_mean("x", Vec::<&str>::new()), None);
    }

    #[test]
    fn messages_and_help_show_control_characters_escaped() {
        let d = Diagnostic::whole_file(
            "f.yaml",
            "there is no `o\u{1b}[31mk`".to_owned(),
            Some("name one of `x\u{7}y`".to_owned()),
        );
        let shown = d.to_string();
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown:?}"
        );
        assert!(shown.contains("`o\\x1b[31mk`"), "{shown}");
        assert!(shown.contains("`x\\x07y`"), "{shown}");
    }

    #[test]
    fn lists_read_naturally() {
        assert_eq!(list(["a"]), "`a`");
        assert_eq!(list(["a", "b", "c"]), "`a`, `b` and `c`");
        assert_eq!(list(Vec::<&str>::new()), "nothing");
        assert_eq!(list_or(["a", "b"]), "`a` or `b`");
    }

    #[test]
    fn a_huge_line_is_shown_as_a_window_around_the_column() {
        let line = format!("key: {}bad{}", "a".repeat(500_000), "b".repeat(500_000));
        let d = Diagnostic {
            file: "f.yaml".into(),
            line: 1,
            column: 500_006,
            message: format!("unknown key `{}`", "k".repeat(1_000_000)),
            help: None,
            source_line: Some(line),
            underline: 3,
        };
        let text = d.to_string();
        assert!(text.len() < 2_000, "{} bytes", text.len());
        let lines: Vec<&str> = text.lines().collect();
        let shown = lines[3].trim_start_matches("1 | ");
        let carets = lines[4].trim_start_matches("  | ");
        let at = carets.find('^').expect("carets");
        assert_eq!(&shown.chars().skip(at).take(3).collect::<String>(), "bad");
        assert!(lines[0].ends_with('…'));
    }

    #[test]
    fn snippets_show_no_control_character_and_no_password() {
        let text = "name: \x1b]0;pwned\x07x\nstore: [\"postgres://rt:hunter2@db/x\"] junk\n";
        let at = |line, column, len| {
            Diagnostic::at(
                "su\x1b[31mite.yaml",
                text,
                Loc { line, column, len },
                "bad",
                None,
            )
            .to_string()
        };
        let shown = at(1, 7, 1);
        assert!(
            !shown.contains('\x1b') && !shown.contains('\x07'),
            "{shown:?}"
        );
        assert!(shown.contains("su\\x1b[31mite.yaml:1:7"), "{shown}");
        assert!(
            shown.contains("1 | name: \u{fffd}]0;pwned\u{fffd}x"),
            "{shown}"
        );
        // After the URL: the carets stay under `junk`, though the password was longer
        // than its mask.
        let shown = at(2, 39, 4);
        assert!(!shown.contains("hunter2"), "{shown}");
        let lines: Vec<&str> = shown.lines().collect();
        let code = lines[3].trim_start_matches("2 | ");
        let carets = lines[4].trim_start_matches("  | ");
        let from = carets.find('^').expect("carets");
        assert_eq!(&code[from..from + 4], "junk", "{shown}");
    }

    #[test]
    fn renders_like_a_compiler() {
        let text = "a: 1\n".repeat(13) + "        withn: 2s\n";
        let d = Diagnostic::at(
            "suites/orders.yaml",
            &text,
            Loc {
                line: 14,
                column: 9,
                len: 5,
            },
            "unknown key `withn` in an expectation",
            Some("did you mean `within`?".into()),
        );
        assert_eq!(
            d.to_string(),
            "\
error: unknown key `withn` in an expectation
  --> suites/orders.yaml:14:9
   |
14 |         withn: 2s
   |         ^^^^^
   = help: did you mean `within`?
"
        );
    }

    #[test]
    fn underlines_are_clipped_to_the_line_and_tabs_kept() {
        let d = Diagnostic::at(
            "f.yaml",
            "k:\t'x'  \n",
            Loc {
                line: 1,
                column: 4,
                len: 0,
            },
            "m",
            None,
        );
        assert_eq!(d.underline, 3);
        assert_eq!(
            d.to_string(),
            "error: m\n --> f.yaml:1:4\n  |\n1 | k:\t'x'  \n  |   \t^^^\n"
        );
    }

    #[test]
    fn whole_file_problems_have_no_snippet() {
        let d = Diagnostic::whole_file("x.yaml", "read the suite file: gone", None);
        assert_eq!(
            d.to_string(),
            "error: read the suite file: gone\n --> x.yaml\n"
        );
    }
}
