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

use super::locate::Loc;

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
        writeln!(f, "error: {}", self.message)?;
        if self.line == 0 {
            writeln!(f, "{gutter}--> {}", self.file)?;
        } else {
            writeln!(f, "{gutter}--> {}:{}:{}", self.file, self.line, self.column)?;
        }
        if let Some(line) = &self.source_line {
            writeln!(f, "{gutter} |")?;
            writeln!(f, "{number} | {line}")?;
            // Keep tabs as tabs so the carets line up under them.
            let pad: String = line
                .chars()
                .take(usize::try_from(self.column.saturating_sub(1)).unwrap_or(0))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let carets = "^".repeat(usize::try_from(self.underline.max(1)).unwrap_or(1));
            writeln!(f, "{gutter} | {pad}{carets}")?;
        }
        if let Some(help) = &self.help {
            writeln!(f, "{gutter} = help: {help}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
