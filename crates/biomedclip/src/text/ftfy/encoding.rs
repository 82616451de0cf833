//! ftfy's `fix_encoding`: decide whether text is mojibake ("badness") and undo it by
//! re-encoding in the single-byte codec that produced it and decoding as UTF-8.

use std::sync::OnceLock;

use regex::bytes::Regex as BytesRegex;
use regex::Regex;

use super::tables;

/// `ftfy.badness.is_bad`: the text holds a sequence that is much likelier mojibake than
/// intended.
pub fn is_bad(text: &str) -> bool {
    static BADNESS: OnceLock<Regex> = OnceLock::new();
    BADNESS
        .get_or_init(|| Regex::new(tables::BADNESS).expect("generated BADNESS pattern compiles"))
        .is_match(text)
}

/// `ftfy.fix_encoding(text)`: one re-decoding step at a time until nothing changes.
pub fn fix_encoding(text: &str) -> String {
    let mut text = text.to_string();
    while let Some(fixed) = fix_encoding_step(&text) {
        if fixed == text {
            break;
        }
        text = fixed;
    }
    text
}

/// Index of `latin-1` and `sloppy-windows-1252` in [`tables::CHARMAPS`].
const LATIN_1: usize = 0;
pub(super) const SLOPPY_WINDOWS_1252: usize = 1;

/// `_fix_encoding_one_step_and_explain`; `None` when the text is left as it is.
fn fix_encoding_step(text: &str) -> Option<String> {
    if text.is_empty() || text.is_ascii() || !is_bad(text) {
        return None;
    }
    let mut encodable = [false; 10];
    for (i, (name, _)) in tables::CHARMAPS.iter().enumerate() {
        let Some(mut bytes) = encode(text, i) else {
            continue;
        };
        encodable[i] = true;
        if *name != "macroman" && altered_utf8().is_match(&bytes) {
            bytes = restore_byte_a0(&bytes);
        }
        if name.starts_with("sloppy") {
            bytes = lossy_utf8()
                .replace_all(&bytes, "\u{fffd}".as_bytes())
                .into_owned();
        }
        let decoded = if bytes.contains(&0xed) || bytes.contains(&0xc0) {
            decode_utf8_variants(&bytes)
        } else {
            String::from_utf8(bytes).ok()
        };
        if decoded.is_some() {
            return decoded;
        }
    }
    if has_utf8_mojibake(text) {
        let fixed = decode_inconsistent_utf8(text);
        if fixed != text {
            return Some(fixed);
        }
    }
    // ftfy checks `"windows-1252" in possible_1byte_encodings`, a list that only ever holds
    // "sloppy-windows-1252", so text that encodes as Latin-1 always gets this re-decoding.
    if encodable[LATIN_1] {
        let bytes = encode(text, LATIN_1).expect("encodable as latin-1");
        let strict: Option<String> = bytes
            .iter()
            .map(|&b| tables::WINDOWS_1252[b as usize])
            .collect();
        if let Some(fixed) = strict.filter(|fixed| fixed != text) {
            return Some(fixed);
        }
    }
    if text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)) {
        return Some(super::fixes::fix_c1_controls(text));
    }
    None
}

/// The character -> byte map of each charmap codec, sorted by character, for the bytes that
/// are not identical to ASCII.
fn encoders() -> &'static [Vec<(char, u8)>] {
    static ENCODERS: OnceLock<Vec<Vec<(char, u8)>>> = OnceLock::new();
    ENCODERS.get_or_init(|| {
        tables::CHARMAPS
            .iter()
            .map(|(_, table)| {
                let mut pairs: Vec<(char, u8)> = table
                    .iter()
                    .enumerate()
                    .filter(|&(b, _)| b >= 0x80 || b == 0x1a)
                    .map(|(b, &c)| (c, b as u8))
                    .collect();
                pairs.sort_unstable();
                pairs
            })
            .collect()
    })
}

/// `text.encode(codec)`, or `None` where a character has no byte (ftfy's
/// `possible_encoding` is false).
pub(super) fn encode(text: &str, codec: usize) -> Option<Vec<u8>> {
    let pairs = &encoders()[codec];
    text.chars()
        .map(|c| {
            if c.is_ascii() && c != '\u{1a}' {
                Some(c as u8)
            } else {
                pairs
                    .binary_search_by_key(&c, |&(k, _)| k)
                    .ok()
                    .map(|i| pairs[i].1)
            }
        })
        .collect()
}

/// `bytes.decode(codec)` for a charmap codec (every byte is defined).
pub(super) fn decode(bytes: &[u8], codec: usize) -> String {
    let table = &tables::CHARMAPS[codec].1;
    bytes.iter().map(|&b| table[b as usize]).collect()
}

fn altered_utf8() -> &'static BytesRegex {
    static RE: OnceLock<BytesRegex> = OnceLock::new();
    RE.get_or_init(|| BytesRegex::new(tables::ALTERED_UTF8).expect("ALTERED_UTF8 compiles"))
}

fn lossy_utf8() -> &'static BytesRegex {
    static RE: OnceLock<BytesRegex> = OnceLock::new();
    RE.get_or_init(|| BytesRegex::new(tables::LOSSY_UTF8).expect("LOSSY_UTF8 compiles"))
}

/// `fixes.restore_byte_a0`: spaces that stand where a UTF-8 sequence needs byte 0xA0 (which
/// a copy-paste turned into a space) become 0xA0 again.
fn restore_byte_a0(bytes: &[u8]) -> Vec<u8> {
    // `A_GRAVE_WORD_RE = b'\xc3 (?! |quele|quela|quilo|s )'`: "à" before a space, except
    // before words where "Ã" is likelier. The look-ahead has no `regex` equivalent.
    let mut restored = Vec::with_capacity(bytes.len() + 4);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0xc3 && bytes.get(i + 1) == Some(&b' ') {
            let after = &bytes[i + 2..];
            let excluded = [&b" "[..], b"quele", b"quela", b"quilo", b"s "]
                .iter()
                .any(|word| after.starts_with(word));
            if !excluded {
                restored.extend_from_slice(b"\xc3\xa0 ");
                i += 2;
                continue;
            }
        }
        restored.push(bytes[i]);
        i += 1;
    }
    altered_utf8()
        .replace_all(&restored, |m: &regex::bytes::Captures| {
            m[0].iter()
                .map(|&b| if b == b' ' { 0xa0 } else { b })
                .collect::<Vec<u8>>()
        })
        .into_owned()
}

/// Python's `$` in a bytes pattern: at the end, or before a final '\n'.
fn at_end(bytes: &[u8], i: usize) -> bool {
    i == bytes.len() || (i + 1 == bytes.len() && bytes[i] == b'\n')
}

/// ftfy's `utf-8-variants` codec: UTF-8 that also accepts Java's `C0 80` for U+0000 and
/// CESU-8 surrogate pairs; `None` where Python raises `UnicodeDecodeError`.
///
/// Written after `bad_codecs/utf8_variants.py`, whose patterns end in `$` alternatives: a
/// `C0` or a pair's last byte can match a final '\n', which the codec then consumes.
fn decode_utf8_variants(bytes: &[u8]) -> Option<String> {
    let in_range = |i: usize, lo: u8, hi: u8| bytes.get(i).is_some_and(|&b| (lo..=hi).contains(&b));
    // `SPECIAL_BYTES_RE`: a null or a (possibly paired) surrogate starts at `i`.
    let special = |i: usize| match bytes[i] {
        0xc0 => bytes.get(i + 1) == Some(&0x80) || at_end(bytes, i + 1),
        0xed => {
            at_end(bytes, i + 1)
                || (in_range(i + 1, 0xa0, 0xbf)
                    && (in_range(i + 2, 0x80, 0xbf) || at_end(bytes, i + 2)))
        }
        _ => false,
    };
    let cesu_pair = |i: usize| {
        let part = |j: usize, ok: bool| ok || at_end(bytes, i + j);
        bytes.len() - i >= 6
            && bytes[i] == 0xed
            && part(1, in_range(i + 1, 0xa0, 0xaf))
            && part(2, in_range(i + 2, 0x80, 0xbf))
            && part(3, bytes.get(i + 3) == Some(&0xed))
            && part(4, in_range(i + 4, 0xb0, 0xbf))
            && part(5, in_range(i + 5, 0x80, 0xbf))
    };
    let mut out = String::with_capacity(bytes.len());
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !special(i) {
            i += 1;
            continue;
        }
        out.push_str(std::str::from_utf8(&bytes[start..i]).ok()?);
        if bytes[i] == 0xc0 {
            if bytes.len() - i < 2 {
                return None;
            }
            out.push('\0');
            i += 2;
        } else if cesu_pair(i) {
            let b = &bytes[i..i + 6];
            let cp = ((u32::from(b[1]) & 0x0f) << 16)
                + ((u32::from(b[2]) & 0x3f) << 10)
                + ((u32::from(b[4]) & 0x0f) << 6)
                + (u32::from(b[5]) & 0x3f)
                + 0x10000;
            out.push(char::from_u32(cp)?);
            i += 6;
        } else {
            // A lone surrogate, or one cut short: Python's UTF-8 decoder refuses it.
            return None;
        }
        start = i;
    }
    out.push_str(std::str::from_utf8(&bytes[start..]).ok()?);
    Some(out)
}

pub(super) fn in_ranges(ranges: &[(char, char)], c: char) -> bool {
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// The length in characters of a `UTF8_DETECTOR_RE` match starting at `chars[i]`, if any:
/// `(?<![strict continuation])(first_of_2 cont | first_of_3 cont{2} | first_of_4 cont{3})+`.
/// Written by hand because `regex` has no look-behind; the alternatives are tried in order
/// and the repetition is greedy, as Python's backtracking engine would (nothing follows the
/// group, so it never backtracks into it).
fn utf8_mojibake_at(chars: &[char], i: usize) -> usize {
    if i > 0 && in_ranges(tables::UTF8_CONTINUATION_STRICT, chars[i - 1]) {
        return 0;
    }
    let continued = |from: usize, n: usize| {
        chars.len() >= from + n
            && chars[from..from + n]
                .iter()
                .all(|&c| in_ranges(tables::UTF8_CONTINUATION, c))
    };
    let mut j = i;
    while j < chars.len() {
        let c = chars[j];
        let step = [
            (tables::UTF8_FIRST_OF_2, 1),
            (tables::UTF8_FIRST_OF_3, 2),
            (tables::UTF8_FIRST_OF_4, 3),
        ]
        .into_iter()
        .find(|&(first, n)| in_ranges(first, c) && continued(j + 1, n));
        match step {
            Some((_, n)) => j += 1 + n,
            None => break,
        }
    }
    j - i
}

fn has_utf8_mojibake(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    (0..chars.len()).any(|i| utf8_mojibake_at(&chars, i) > 0)
}

/// `fixes.decode_inconsistent_utf8`: each mojibake-looking run inside text that no single
/// codec explains, fixed on its own when it is bad.
fn decode_inconsistent_utf8(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let n = utf8_mojibake_at(&chars, i);
        if n == 0 {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let run: String = chars[i..i + n].iter().collect();
        if n < chars.len() && is_bad(&run) {
            out.push_str(&fix_encoding(&run));
        } else {
            out.push_str(&run);
        }
        i += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charmaps_round_trip() {
        for (codec, (name, _)) in tables::CHARMAPS.iter().enumerate() {
            let all: Vec<u8> = (0..=255).collect();
            let text = decode(&all, codec);
            assert_eq!(encode(&text, codec).as_deref(), Some(&all[..]), "{name}");
        }
    }

    #[test]
    fn utf8_variants() {
        assert_eq!(decode_utf8_variants(b"a\xc0\x80b").as_deref(), Some("a\0b"));
        assert_eq!(
            decode_utf8_variants(b"\xed\xa0\xbd\xed\xb8\x80").as_deref(),
            Some("\u{1f600}")
        );
        assert_eq!(decode_utf8_variants(b"\xed\xa0\x80"), None);
        assert_eq!(
            decode_utf8_variants(b"\xed\x9f\xbf").as_deref(),
            Some("\u{d7ff}")
        );
        assert_eq!(decode_utf8_variants(b"\xc0\n").as_deref(), Some("\0"));
    }

    #[test]
    fn byte_a0_restored() {
        assert_eq!(restore_byte_a0(b"\xc3 la"), b"\xc3\xa0 la");
        // Not "à" before "quele", but the space itself stands for 0xA0 ("Ã\u{a0}").
        assert_eq!(restore_byte_a0(b"\xc3 quele"), b"\xc3\xa0quele");
        assert_eq!(restore_byte_a0(b"x\xc3  y"), b"x\xc3\xa0 y");
    }
}
