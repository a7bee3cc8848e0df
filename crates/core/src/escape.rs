//! Escaping text that roundtrip did not write (payloads, headers, SUT output, responses)
//! before it reaches a terminal, a report or a log line.
//!
//! A payload from the SUT, or from anyone who can reach a webhook, may hold terminal
//! control sequences: a screen clear, a cursor move that forges a `PASS` line, an OSC
//! code that sets the window title or the clipboard, a bare carriage return that hides
//! what came before it. Every control character (C0, DEL, C1) and the Unicode
//! bidirectional overrides are shown as visible escapes instead, so the text reads the
//! same on a terminal, in a JUnit file and in a JSON report.

use std::borrow::Cow;

/// `text` with every control character and bidirectional override escaped: `\n`, `\r`,
/// `\t`, `\\x1b`, `\u{202e}`. A backslash stays as it is; text without anything to
/// escape is returned borrowed.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`escape`], owned.
pub fn escape_text(text: &str) -> String {
    escape(text).into_owned()
}

/// Like [`escape`], but keeps line breaks (`\n`): for multi-line text such as an error
/// message that is printed line by line.
pub fn escape_lines(text: &str) -> String {
    text.split('\n')
        .map(|line| escape(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        assert!(matches!(escape("plain {\"a\": 1} ü"), Cow::Borrowed(_)));
        assert_eq!(escape("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape("ok\rPASS"), "ok\\rPASS");
        assert_eq!(escape("\x1b]52;c;aGk=\x07"), "\\x1b]52;c;aGk=\\x07");
        assert_eq!(escape("l1\nl2\tx\x7f"), "l1\\nl2\\tx\\x7f");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(escape_lines("a\x1b\nb\r"), "a\\x1b\nb\\r");
    }
}
