//! The text clean open_clip 2.23.0 applies before tokenizing (`HFTokenizer` with
//! `clean="whitespace"`, `src/open_clip/tokenizer.py`): `ftfy.fix_text`, `html.unescape`
//! twice, strip, and every run of whitespace collapsed to one space.
//!
//! Written by hand because no Rust crate implements ftfy. Reproduced here are the ftfy 6
//! fixes that change BERT tokens (`ftfy/__init__.py` `fix_text`/`fix_and_explain`,
//! `ftfy/fixes.py`, `ftfy/chardata.py`): its conservative HTML unescape, mojibake of UTF-8
//! read as Latin-1 or Windows-1252, C1 controls, Latin ligatures, full-width forms, curly
//! quotes, line breaks, terminal escapes, control characters and NFC, iterated to a fixed
//! point per line. ftfy's statistical "badness" test is replaced by the stricter rule that
//! the whole line must re-encode to valid multi-byte UTF-8, which agrees on ordinary text and
//! on the common mojibake (`Ã©`, `â€™`, ...). `html.unescape` follows Python's `html` module.

use std::collections::HashMap;
use std::sync::OnceLock;

use unicode_normalization::UnicodeNormalization;

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

/// Windows-1252 bytes 0x80..=0x9F; the five undefined ones map to the same C1 code point,
/// as ftfy's "sloppy-windows-1252" does.
const CP1252_HIGH: [char; 32] = [
    '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}', '\u{8f}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}', '\u{178}',
];

fn cp1252_decode(b: u8) -> char {
    if (0x80..0xa0).contains(&b) {
        CP1252_HIGH[(b - 0x80) as usize]
    } else {
        b as char
    }
}

fn cp1252_encode(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 0x80 || (0xa0..0x100).contains(&cp) {
        return Some(cp as u8);
    }
    CP1252_HIGH
        .iter()
        .position(|&x| x == c)
        .map(|i| 0x80 + i as u8)
}

fn latin1_encode(c: char) -> Option<u8> {
    u8::try_from(c as u32).ok()
}

/// ftfy's `fix_encoding` for the common case: text that is UTF-8 decoded as Latin-1 or
/// Windows-1252 re-encodes to valid UTF-8.
fn fix_mojibake(text: &str) -> String {
    let mut text = text.to_string();
    loop {
        if text.is_ascii() {
            return text;
        }
        let mut changed = false;
        for encode in [latin1_encode as fn(char) -> Option<u8>, cp1252_encode] {
            let bytes: Option<Vec<u8>> = text.chars().map(encode).collect();
            if let Some(bytes) = bytes {
                if let Ok(decoded) = String::from_utf8(bytes) {
                    if decoded != text {
                        text = decoded;
                        changed = true;
                        break;
                    }
                }
            }
        }
        if !changed {
            return text;
        }
    }
}

fn fix_c1_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if ('\u{80}'..='\u{9f}').contains(&c) {
                cp1252_decode(c as u8)
            } else {
                c
            }
        })
        .collect()
}

fn ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

/// Ligatures, half/full-width forms and curly quotes, one character at a time.
fn fix_characters(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if let Some(s) = ligature(c) {
            out.push_str(s);
        } else if c == '\u{3000}' {
            out.push(' ');
        } else if ('\u{ff01}'..'\u{fff0}').contains(&c) {
            out.extend(std::iter::once(c).nfkc());
        } else {
            out.push(c);
        }
    }
    // uncurl_quotes runs after the width fix.
    out.chars()
        .map(|c| match c {
            '\u{201c}'..='\u{201f}' => '"',
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
            other => other,
        })
        .collect()
}

fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// Removes `ESC [ digits-or-semicolons letter` sequences.
fn remove_terminal_escapes(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\u{1b}' && chars.get(i + 1) == Some(&'[') {
            let mut j = i + 2;
            while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == ';') {
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

fn is_removed_control(c: char) -> bool {
    matches!(c as u32,
        0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC)
}

fn fix_segment(segment: &str, unescape: bool) -> String {
    let mut text = segment.to_string();
    loop {
        let orig = text.clone();
        if unescape {
            text = ftfy_unescape_html(&text);
        }
        text = fix_mojibake(&text);
        text = fix_c1_controls(&text);
        text = fix_characters(&text);
        text = fix_line_breaks(&text);
        text = remove_terminal_escapes(&text);
        text.retain(|c| !is_removed_control(c));
        text = text.nfc().collect();
        if text == orig {
            return text;
        }
    }
}

/// `ftfy.fix_text` with its default configuration (see the module notes).
pub fn ftfy_fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // ftfy turns HTML unescaping off for good once a line contains '<'.
    let mut unescape = true;
    for segment in text.split_inclusive('\n') {
        if segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
    }
    out
}

/// Python's `html.entities.html5` without the leading '&', e.g. `"amp;"` and `"amp"`.
fn html5(name: &str) -> Option<&'static str> {
    let key = format!("&{name}");
    htmlize::ENTITIES
        .get(key.as_bytes())
        .map(|v| std::str::from_utf8(v).expect("entity table is UTF-8"))
}

/// The replacement for a numeric character reference, as `html._replace_charref`.
fn numeric_charref(num: u64) -> String {
    if num == 0 {
        return "\u{fffd}".into();
    }
    if num == 0x0d {
        return "\r".into();
    }
    if (0x80..=0x9f).contains(&num) {
        return cp1252_decode(num as u8).to_string();
    }
    if (0xD800..=0xDFFF).contains(&num) || num > 0x10FFFF {
        return "\u{fffd}".into();
    }
    let invalid = matches!(num, 0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f..=0x9f | 0xfdd0..=0xfdef)
        || (num & 0xfffe) == 0xfffe;
    if invalid {
        return String::new();
    }
    char::from_u32(num as u32)
        .map(String::from)
        .unwrap_or_default()
}

/// Python's `html.unescape`.
pub fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '&' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        match match_charref(&chars, i + 1) {
            Some((end, replacement)) => {
                out.push_str(&replacement);
                i = end;
            }
            None => {
                out.push('&');
                i += 1;
            }
        }
    }
    out
}

/// Matches `#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?` at `start` and returns the
/// end index and the replacement.
fn match_charref(chars: &[char], start: usize) -> Option<(usize, String)> {
    let at = |i: usize| chars.get(i).copied();
    if at(start) == Some('#') {
        let (digits_start, radix) = match at(start + 1) {
            Some('x') | Some('X') => (start + 2, 16),
            _ => (start + 1, 10),
        };
        let mut j = digits_start;
        while at(j).is_some_and(|c| c.is_digit(radix)) {
            j += 1;
        }
        if j == digits_start {
            return None;
        }
        let num = chars[digits_start..j].iter().fold(0u64, |acc, c| {
            acc.saturating_mul(radix as u64)
                .saturating_add(c.to_digit(radix).unwrap_or(0) as u64)
        });
        if at(j) == Some(';') {
            j += 1;
        }
        return Some((j, numeric_charref(num)));
    }
    let mut j = start;
    while j - start < 32
        && at(j).is_some_and(|c| !matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';'))
    {
        j += 1;
    }
    if j == start {
        return None;
    }
    if at(j) == Some(';') {
        j += 1;
    }
    let name: String = chars[start..j].iter().collect();
    if let Some(v) = html5(&name) {
        return Some((j, v.to_string()));
    }
    let name_chars = &chars[start..j];
    for x in (2..name_chars.len()).rev() {
        let prefix: String = name_chars[..x].iter().collect();
        if let Some(v) = html5(&prefix) {
            let rest: String = name_chars[x..].iter().collect();
            return Some((j, format!("{v}{rest}")));
        }
    }
    Some((j, format!("&{name}")))
}

/// ftfy's `HTML_ENTITIES`: semicolon-terminated HTML5 names, plus upper-cased forms of the
/// lower-case ones that Python would not otherwise decode.
fn ftfy_entities() -> &'static HashMap<String, String> {
    static TABLE: OnceLock<HashMap<String, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut map = HashMap::new();
        for (key, value) in htmlize::ENTITIES.entries() {
            let (Ok(key), Ok(value)) = (std::str::from_utf8(key), std::str::from_utf8(value))
            else {
                continue;
            };
            if !key.ends_with(';') {
                continue;
            }
            map.insert(key.to_string(), value.to_string());
            let name = &key[1..];
            if name == name.to_lowercase() {
                let upper = format!("&{}", name.to_uppercase());
                if html_unescape(&upper) == upper {
                    map.entry(upper).or_insert_with(|| value.to_uppercase());
                }
            }
        }
        map
    })
}

/// ftfy's `unescape_html`: entities matching `&#?[0-9A-Za-z]{1,24};` only.
fn ftfy_unescape_html(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '&' {
            let mut j = i + 1;
            if chars.get(j) == Some(&'#') {
                j += 1;
            }
            let name_start = j;
            while j < chars.len() && j - name_start < 24 && chars[j].is_ascii_alphanumeric() {
                j += 1;
            }
            if j > name_start && chars.get(j) == Some(&';') {
                let entity: String = chars[i..=j].iter().collect();
                let replacement = if let Some(v) = ftfy_entities().get(&entity) {
                    v.clone()
                } else if entity.starts_with("&#") {
                    let u = html_unescape(&entity);
                    if u.contains(';') {
                        entity
                    } else {
                        u
                    }
                } else {
                    entity
                };
                out.push_str(&replacement);
                i = j + 1;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_html_unescape_semantics() {
        assert_eq!(html_unescape("a &amp; b"), "a & b");
        assert_eq!(html_unescape("&ampx &lt;"), "&x <");
        assert_eq!(html_unescape("&#233;&#xe9;&#x80;"), "éé€");
        assert_eq!(html_unescape("&nosuch; &"), "&nosuch; &");
        assert_eq!(html_unescape("&#0;&#1;"), "\u{fffd}");
    }

    #[test]
    fn ftfy_fixes() {
        assert_eq!(ftfy_fix_text("\u{201c}here\u{2019}s\u{201d}"), "\"here's\"");
        assert_eq!(ftfy_fix_text("ﬂuﬃeﬆ"), "fluffiest");
        assert_eq!(ftfy_fix_text("ＬＯＵＤ　ＮＯＩＳＥＳ"), "LOUD NOISES");
        assert_eq!(ftfy_fix_text("cafÃ©"), "café");
        assert_eq!(ftfy_fix_text("P&EACUTE;REZ"), "PÉREZ");
        assert_eq!(ftfy_fix_text("<b>&amp;</b>"), "<b>&amp;</b>");
    }

    #[test]
    fn whitespace_is_collapsed_and_stripped() {
        assert_eq!(clean_text("  a \t\n b  "), "a b");
        assert_eq!(clean_text(" \u{3000} "), "");
    }
}
