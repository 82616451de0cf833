//! Text bound for a terminal: control characters (ESC sequences among them) in labels, file
//! names and messages are shown escaped, never sent raw.

use std::borrow::Cow;

/// `text` with its control characters (but tab and newline) escaped as `\u{..}`.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("chest X-ray"), "chest X-ray");
        assert_eq!(printable("a\u{1b}[31mred"), "a\\u{1b}[31mred");
        assert_eq!(printable("bell\u{7}\nnext"), "bell\\u{7}\nnext");
    }
}
