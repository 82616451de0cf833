//! The text clean open_clip 2.23.0 applies before tokenizing (`HFTokenizer` with
//! `clean="whitespace"`, `src/open_clip/tokenizer.py`): `ftfy.fix_text` ([`super::ftfy`]),
//! `html.unescape` twice, strip, and every run of whitespace collapsed to one space.

pub use super::ftfy::fix_text as ftfy_fix_text;
pub use super::ftfy::html::html_unescape;

/// open_clip's `whitespace_clean(basic_clean(text))`.
pub fn clean_text(text: &str) -> String {
    let fixed = ftfy_fix_text(text);
    let unescaped = html_unescape(&html_unescape(&fixed));
    collapse_whitespace(&unescaped)
}

/// Python's `str.isspace` (Rust's `char::is_whitespace` plus the information separators).
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `re.sub(r"\s+", " ", text).strip()`.
fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if py_isspace(c) {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_collapsed_and_stripped() {
        assert_eq!(clean_text("  a \t\n b  "), "a b");
        assert_eq!(clean_text(" \u{3000} "), "");
        assert_eq!(clean_text("a\u{2003}\u{2029}b"), "a b");
        // ftfy's C1 fix runs before its line-break fix: NEL is Windows-1252's ellipsis.
        assert_eq!(clean_text("a\u{1c}\u{85}b"), "a\u{2026}b");
    }

    #[test]
    fn entities_are_unescaped_three_times() {
        // ftfy once (terminated references only), then html.unescape twice.
        assert_eq!(clean_text("&amp;amp;lt;"), "<");
        assert_eq!(clean_text("&ampamp;"), "&");
    }
}
