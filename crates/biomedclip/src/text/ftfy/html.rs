//! HTML character references: ftfy's conservative `unescape_html` and Python's
//! `html.unescape`, with the entity tables of the pinned Python (`tables::FTFY_ENTITIES`,
//! `tables::HTML5`).

use super::encoding::{decode, SLOPPY_WINDOWS_1252};
use super::tables;

fn lookup(table: &'static [(&'static str, &'static str)], key: &str) -> Option<&'static str> {
    table
        .binary_search_by_key(&key, |&(k, _)| k)
        .ok()
        .map(|i| table[i].1)
}

/// Python's `html.entities.html5`, e.g. `"amp;"` and `"amp"`.
fn html5(name: &str) -> Option<&'static str> {
    lookup(tables::HTML5, name)
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
        return decode(&[num as u8], SLOPPY_WINDOWS_1252);
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

/// ftfy's `unescape_html`: entities matching `&#?[0-9A-Za-z]{1,24};` only.
pub(crate) fn ftfy_unescape_html(text: &str) -> String {
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
                let replacement = if let Some(v) = lookup(tables::FTFY_ENTITIES, &entity) {
                    v.to_string()
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
    fn ftfy_unescapes_only_terminated_references() {
        assert_eq!(
            ftfy_unescape_html("&amp; &amp &EACUTE; &#65; &#abc;"),
            "& &amp É A &#abc;"
        );
    }
}
