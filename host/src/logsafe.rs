//! Text from outside (Okta event fields, a plugin's log lines and results, file names) made
//! safe to put in a log line.
//!
//! The service log is line-oriented and often read in a terminal: a raw `\n` in an event's
//! `uuid` would let whoever can post to the Okta endpoint (or a plugin) forge a whole log
//! line, and an ANSI escape could rewrite what an operator's terminal shows. tracing's
//! formatter escapes some of this in the message only, and nothing in `%`-formatted
//! fields. So every outside value goes through [`Clean`], which writes control characters
//! (C0, DEL, C1), the Unicode line and paragraph separators and the bidirectional
//! overrides as `\u{…}` escapes and everything else as it is.

use std::fmt;

/// Displays a string with every character that could break or disguise a log line
/// escaped; `\` itself is doubled so an escape in the output is always ours.
pub struct Clean<'a>(pub &'a str);

impl fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Runs of characters that need nothing are written whole; most values are one run.
        let mut clean_from = 0;
        for (i, c) in self.0.char_indices() {
            let escaped = match c {
                '\\' => Some("\\\\"),
                '\n' => Some("\\n"),
                '\r' => Some("\\r"),
                '\t' => Some("\\t"),
                c if needs_escape(c) => None,
                _ => continue,
            };
            f.write_str(&self.0[clean_from..i])?;
            match escaped {
                Some(e) => f.write_str(e)?,
                None => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            clean_from = i + c.len_utf8();
        }
        f.write_str(&self.0[clean_from..])
    }
}

impl fmt::Debug for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::Clean;

    #[test]
    fn nothing_that_breaks_a_line_or_drives_a_terminal_survives() {
        let nasty = "a\nINFO forged line\r\0\x1b[31mred\x07\u{85}\u{2028}\u{202e}z\\n";
        let out = Clean(nasty).to_string();
        assert!(!out.chars().any(|c| c.is_control()), "{out:?}");
        assert!(!out.contains('\u{2028}') && !out.contains('\u{202e}'), "{out:?}");
        assert_eq!(out, "a\\nINFO forged line\\r\\u{0}\\u{1b}[31mred\\u{7}\\u{85}\\u{2028}\\u{202e}z\\\\n");
        assert_eq!(Clean("plain text, ünïcode ✓").to_string(), "plain text, ünïcode ✓");
    }
}
