//! `ftfy.fix_text` as ftfy 6.3.1 (the version open_clip 2.23.0 installs) runs it with its
//! default configuration.
//!
//! Written by hand because no Rust crate reproduces ftfy; the data it rests on (its regular
//! expressions, character classes, codecs, entity and width tables, and CPython's Unicode
//! definitions) is generated from the pinned Python packages by
//! `tools/reference/make_ftfy_tables.py` into `tables.rs`. The steps and their order follow
//! `ftfy/__init__.py` (`fix_text`, `fix_and_explain`, `fix_encoding_and_explain`),
//! `ftfy/fixes.py` and `ftfy/bad_codecs/`; a differential corpus generated with the reference
//! (`tests/ftfy.rs`) holds the two to the same output on every string.
//!
//! Two of ftfy's steps have nothing to do on Rust text: `fix_surrogates` (a `&str` holds no
//! surrogate code points, and no step here creates one: ftfy's `utf-8-variants` decoder
//! refuses lone surrogates too) and `remove_bom` (not in `fix_text`'s default steps).

mod encoding;
mod fixes;
pub(crate) mod html;
#[rustfmt::skip]
#[allow(clippy::all)]
mod tables;

pub use encoding::{fix_encoding, is_bad};

/// ftfy's `max_decode_length`: longer lines are fixed in pieces of this many characters.
const MAX_DECODE_LENGTH: usize = 1_000_000;

/// `ftfy.fix_text(text)` with the default configuration.
pub fn fix_text(text: &str) -> String {
    if is_plain(text) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    // `unescape_html="auto"` turns HTML unescaping off for the rest of the text once a
    // segment contains '<' (the text is taken to be HTML whose entities are meant).
    let mut unescape_html = true;
    for segment in segments(text) {
        if segment.contains('<') {
            unescape_html = false;
        }
        out.push_str(&fix_segment(segment, unescape_html));
    }
    out
}

/// ASCII text that no step changes: no entity, no escape, no control character, no '\r'.
fn is_plain(text: &str) -> bool {
    text.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'&' || b == b'\n' || b == b'\t' || b == b'\x0c')
}

/// `fix_text`'s segments: each line with its '\n', cut every `MAX_DECODE_LENGTH` characters.
fn segments(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n').flat_map(|line| {
        let mut rest = line;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let cut = rest
                .char_indices()
                .nth(MAX_DECODE_LENGTH)
                .map_or(rest.len(), |(i, _)| i);
            let (head, tail) = rest.split_at(cut);
            rest = tail;
            Some(head)
        })
    })
}

/// `fix_and_explain`: every step in ftfy's order, repeated until the text stops changing.
fn fix_segment(segment: &str, unescape_html: bool) -> String {
    let mut text = segment.to_string();
    loop {
        let before = text.clone();
        if unescape_html {
            text = html::ftfy_unescape_html(&text);
        }
        text = fix_encoding(&text);
        text = fixes::fix_c1_controls(&text);
        text = fixes::fix_latin_ligatures(&text);
        text = fixes::fix_character_width(&text);
        text = fixes::uncurl_quotes(&text);
        text = fixes::fix_line_breaks(&text);
        text = fixes::remove_terminal_escapes(&text);
        text = fixes::remove_control_chars(&text);
        text = fixes::nfc(&text);
        if text == before {
            return text;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn character_fixes() {
        assert_eq!(fix_text("\u{201c}here\u{2019}s\u{201d}"), "\"here's\"");
        assert_eq!(fix_text("ﬂuﬃeﬆ"), "fluffiest");
        assert_eq!(fix_text("ＬＯＵＤ　ＮＯＩＳＥＳ"), "LOUD NOISES");
        assert_eq!(fix_text("a\r\nb\rc\u{2028}d"), "a\nb\nc\nd");
        assert_eq!(fix_text("\u{1b}[36;44mcolor\u{1b}[0m"), "color");
        assert_eq!(fix_text("a\u{0}b\u{feff}c"), "abc");
    }

    #[test]
    fn mojibake() {
        assert_eq!(fix_text("cafÃ©"), "café");
        assert_eq!(fix_text("cafÃ© ﬁlm"), "café film");
        assert_eq!(fix_text("â€œquotedâ€\u{9d}"), "\"quoted\"");
        // Windows-1251 read as Windows-1252 (Cyrillic).
        assert_eq!(fix_text("ÐŸÑ€Ð¸Ð²ÐµÑ‚"), "Привет");
        // Mojibake inside otherwise-good text that no single codec explains.
        assert_eq!(fix_text("Ünicode â€” ok ✓"), "Ünicode — ok ✓");
    }

    #[test]
    fn leaves_valid_text_alone() {
        for text in ["Ã", "Ελληνικά", "Привет", "Dvořák", "naïve café", "中文 😀"]
        {
            assert_eq!(fix_text(text), text);
        }
    }

    #[test]
    fn html_entities() {
        assert_eq!(fix_text("P&EACUTE;REZ"), "PÉREZ");
        assert_eq!(fix_text("&lt;b&gt;"), "<b>");
        assert_eq!(fix_text("<b>&amp;</b>"), "<b>&amp;</b>");
        // Once a line holds '<', later lines keep their entities too.
        assert_eq!(fix_text("<p>\n&amp;"), "<p>\n&amp;");
    }

    #[test]
    fn long_lines_are_fixed_in_pieces() {
        let line = "x".repeat(MAX_DECODE_LENGTH + 3);
        let pieces: Vec<usize> = segments(&line).map(str::len).collect();
        assert_eq!(pieces, vec![MAX_DECODE_LENGTH, 3]);
    }
}
