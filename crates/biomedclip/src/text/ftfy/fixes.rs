//! ftfy's character-level fixers (`ftfy/fixes.py`), each as its Python counterpart.

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::encoding::SLOPPY_WINDOWS_1252;
use super::tables;

fn lookup(table: &'static [(char, &'static str)], c: char) -> Option<&'static str> {
    table
        .binary_search_by_key(&c, |&(k, _)| k)
        .ok()
        .map(|i| table[i].1)
}

/// Copies `text`, replacing each character `replace` has a string for; borrows the original
/// when nothing is replaced so the common case allocates once.
fn translate(text: &str, replace: impl Fn(char) -> Option<&'static str>) -> String {
    let Some(first) = text.char_indices().find(|&(_, c)| replace(c).is_some()) else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..first.0]);
    for c in text[first.0..].chars() {
        match replace(c) {
            Some(s) => out.push_str(s),
            None => out.push(c),
        }
    }
    out
}

/// `fix_c1_controls`: U+0080-U+009F decoded as (sloppy) Windows-1252, as HTML5 does.
pub(super) fn fix_c1_controls(text: &str) -> String {
    if !text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)) {
        return text.to_string();
    }
    // A C1 character's Latin-1 byte is its code point.
    let sloppy_1252 = &tables::CHARMAPS[SLOPPY_WINDOWS_1252].1;
    text.chars()
        .map(|c| match c {
            '\u{80}'..='\u{9f}' => sloppy_1252[c as usize],
            other => other,
        })
        .collect()
}

/// `fix_latin_ligatures` (`chardata.LIGATURES`).
pub(super) fn fix_latin_ligatures(text: &str) -> String {
    translate(text, |c| lookup(tables::LIGATURES, c))
}

/// `fix_character_width` (`chardata.WIDTH_MAP`: full-width forms and the ideographic space).
pub(super) fn fix_character_width(text: &str) -> String {
    translate(text, |c| lookup(tables::WIDTH_MAP, c))
}

/// `uncurl_quotes`: `[ʼ‘-‛]` -> `'` and `[“-‟]` -> `"`.
pub(super) fn uncurl_quotes(text: &str) -> String {
    translate(text, |c| match c {
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => Some("'"),
        '\u{201c}'..='\u{201f}' => Some("\""),
        _ => None,
    })
}

/// `fix_line_breaks`: CRLF, CR, U+2028, U+2029 and NEL become '\n'.
pub(super) fn fix_line_breaks(text: &str) -> String {
    if !text.contains(['\r', '\u{2028}', '\u{2029}', '\u{85}']) {
        return text.to_string();
    }
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

fn is_python_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && super::encoding::in_ranges(tables::DIGIT, c))
}

/// `remove_terminal_escapes`: `ANSI_RE = "\x1b\[((?:\d|;)*)([a-zA-Z])"` removed, with
/// Python's Unicode `\d`. Digits and letters are disjoint, so the greedy scan is the
/// regex's match.
pub(super) fn remove_terminal_escapes(text: &str) -> String {
    if !text.contains("\u{1b}[") {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\u{1b}' && chars.get(i + 1) == Some(&'[') {
            let mut j = i + 2;
            while j < chars.len() && (is_python_digit(chars[j]) || chars[j] == ';') {
                j += 1;
            }
            if j < chars.len() && chars[j].is_ascii_alphabetic() {
                i = j + 1;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// `chardata.CONTROL_CHARS`, which `remove_control_chars` deletes.
fn is_removed_control(c: char) -> bool {
    matches!(c as u32,
        0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC)
}

/// `remove_control_chars`.
pub(super) fn remove_control_chars(text: &str) -> String {
    text.chars().filter(|&c| !is_removed_control(c)).collect()
}

/// `unicodedata.normalize("NFC", text)`.
pub(super) fn nfc(text: &str) -> String {
    if is_nfc_quick(text.chars()) == IsNormalized::Yes {
        return text.to_string();
    }
    text.nfc().collect()
}
