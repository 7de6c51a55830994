//! Text from outside (an agent's error, a caller's refused name) on its way to a terminal
//! or a log line: what a terminal would act on is taken out where the text enters, and
//! shown escaped where it leaves.

use std::{borrow::Cow, fmt::Write};

/// Whether a terminal would act on `c` rather than show it: C0 and C1 controls (escape
/// sequences, bell, newline), the characters that reorder text (bidi embeddings,
/// overrides, isolates and marks, which can make `exe.txt` read as `txt.exe`), and the
/// line and paragraph separators some terminals break lines at.
pub fn acts_on_terminals(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `text` with every character a terminal would act on replaced by a space, cut to at
/// most `max` bytes on a character boundary: for text stored where it enters.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars().map(|c| if acts_on_terminals(c) { ' ' } else { c }) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// `text` with every character a terminal would act on written as `\u{..}`, and nothing
/// else changed: for showing text that may not have been cleaned.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts_on_terminals) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if acts_on_terminals(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "\u{1b}]0;x\u{7}\u{1b}[31mred\u{202e}txt.exe\nline\r\u{2066}\u{9b}2J\u{2028}";

    #[test]
    fn printable_text_keeps_what_is_shown_and_drops_what_acts() {
        assert_eq!(printable("a\x1b[2Jb\nc", 100), "a [2Jb c");
        assert_eq!(printable(HOSTILE, 1000), " ]0;x  [31mred txt.exe line   2J ");
        assert!(!printable(HOSTILE, 1000).chars().any(acts_on_terminals));
        assert_eq!(printable("ééé", 5), "éé");
        assert_eq!(printable(&"x".repeat(5000), 1024).len(), 1024);
        assert_eq!(printable("plain, ünïcode and emoji 🚀", 100), "plain, ünïcode and emoji 🚀");
    }

    #[test]
    fn escaped_text_shows_what_would_act() {
        assert!(matches!(escaped("plain ü"), Cow::Borrowed("plain ü")));
        assert_eq!(escaped("a\u{1b}[31m\nb\u{202e}"), "a\\u{1b}[31m\\u{a}b\\u{202e}");
        assert!(!escaped(HOSTILE).chars().any(acts_on_terminals));
    }
}
