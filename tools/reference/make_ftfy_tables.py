"""Writes crates/biomedclip/src/text/ftfy/tables.rs from the pinned ftfy and CPython.

The Rust text clean reproduces `ftfy.fix_text` (ftfy 6.3.1, the version open_clip 2.23.0
installs) and Python's `html.unescape`. Their behaviour rests on data: ftfy's regular
expressions, its character classes, the single-byte codecs it tries, its HTML entity table,
the width and ligature maps, and Python's own Unicode definitions of `\\s` and `\\w`. This
script reads all of that from the installed packages, so the Rust tables are what the
reference runs, not a transcription.

Regular expressions are translated from CPython's parse tree (`re._parser`) into the syntax of
Rust's `regex` crate, with every character written as an escape and Python's `\\s`/`\\w`
expanded to the exact code point ranges CPython matches. Patterns with look-around have no
`regex` equivalent; the Rust code implements those two by hand and this script checks that
their source is still what that code assumes.

    python tools/reference/make_ftfy_tables.py   # from the repository root, in the reference venv
"""

import html
import html.entities
import re
import sys
import unicodedata
from pathlib import Path
from re import _constants as C
from re import _parser as P

import ftfy
import ftfy.badness
import ftfy.chardata as chardata
import ftfy.fixes as fixes

OUT = Path(__file__).resolve().parents[2] / "crates/biomedclip/src/text/ftfy/tables.rs"
assert ftfy.__version__ == "6.3.1", ftfy.__version__
MAX_CHAR = sys.maxunicode


def ranges_of(pred):
    """Sorted inclusive code point ranges where `pred(chr(cp))` holds (surrogates skipped)."""
    out = []
    start = None
    for cp in range(MAX_CHAR + 2):
        ok = cp <= MAX_CHAR and not 0xD800 <= cp <= 0xDFFF and pred(chr(cp))
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            out.append((start, cp - 1))
            start = None
    return out


SPACE_RE = re.compile(r"\s")
WORD_RE = re.compile(r"\w")
DIGIT_RE = re.compile(r"\d")
CATEGORY_RANGES = {
    C.CATEGORY_SPACE: ranges_of(lambda ch: SPACE_RE.match(ch) is not None),
    C.CATEGORY_WORD: ranges_of(lambda ch: WORD_RE.match(ch) is not None),
}


def esc(cp, is_bytes):
    return f"\\x{cp:02X}" if is_bytes else f"\\x{{{cp:X}}}"


def emit_class(items, is_bytes):
    parts = []
    negate = False
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            parts.append(esc(av, is_bytes))
        elif op is C.RANGE:
            parts.append(f"{esc(av[0], is_bytes)}-{esc(av[1], is_bytes)}")
        elif op is C.CATEGORY and not is_bytes and av in CATEGORY_RANGES:
            parts.extend(
                esc(a, False) if a == b else f"{esc(a, False)}-{esc(b, False)}"
                for a, b in CATEGORY_RANGES[av]
            )
        else:
            raise ValueError(f"unsupported class item {op} {av}")
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def emit(subpattern, is_bytes):
    out = []
    for op, av in subpattern:
        if op is C.LITERAL:
            out.append(esc(av, is_bytes))
        elif op is C.IN:
            out.append(emit_class(av, is_bytes))
        elif op is C.ANY:
            out.append(r"[^\n]")
        elif op is C.BRANCH:
            out.append("(?:" + "|".join(emit(s, is_bytes) for s in av[1]) + ")")
        elif op is C.SUBPATTERN:
            out.append("(?:" + emit(av[3], is_bytes) + ")")
        elif op is C.MAX_REPEAT:
            lo, hi, sub = av
            hi_s = "" if hi is C.MAXREPEAT else str(hi)
            out.append("(?:" + emit(sub, is_bytes) + f"){{{lo},{hi_s}}}")
        elif op is C.AT and av is C.AT_BEGINNING:
            out.append(r"\A")
        else:
            raise ValueError(f"unsupported regex operation {op} {av}")
    return "".join(out)


def rust_pattern(pattern):
    is_bytes = isinstance(pattern.pattern, bytes)
    tree = P.parse(pattern.pattern, pattern.flags & ~re.UNICODE)
    body = emit(tree, is_bytes)
    return ("(?-u)" if is_bytes else "") + body


def rust_str(s):
    out = []
    for ch in s:
        cp = ord(ch)
        if ch in "\\\"":
            out.append("\\" + ch)
        elif 0x20 <= cp < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\u{{{cp:x}}}")
    return '"' + "".join(out) + '"'


def rust_char(ch):
    return "'" + rust_str(ch)[1:-1].replace("'", "\\'") + "'"


def char_ranges(chars):
    cps = sorted(set(ord(c) for c in chars))
    out = []
    for cp in cps:
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def class_chars(cls):
    """Every character in the Python character class body `cls`."""
    rx = re.compile("[" + cls + "]")
    return [chr(cp) for cp in range(0x30000) if not 0xD800 <= cp <= 0xDFFF and rx.match(chr(cp))]


def ranges_table(name, doc, ranges):
    body = ", ".join(f"('\\u{{{a:x}}}', '\\u{{{b:x}}}')" for a, b in ranges)
    return f"/// {doc}\npub static {name}: &[(char, char)] = &[{body}];\n"


def codec_tables():
    """The encodings `fix_encoding` tries, in its order: a 256-entry decode table each."""
    out = ["/// `chardata.CHARMAP_ENCODINGS`, in the order ftfy tries them: the name and the\n"
           "/// character each byte decodes to. Every one decodes 0x00-0x7F as ASCII and its\n"
           "/// encoder is the inverse of this table (checked when this file was made).\n"
           "pub static CHARMAPS: &[(&str, [char; 256])] = &["]
    for enc in chardata.CHARMAP_ENCODINGS:
        table = bytes(range(256)).decode(enc)
        assert len(table) == 256
        assert all(table[i] == chr(i) for i in range(128) if i != 26), enc
        allowed = [ch for i, ch in enumerate(table) if i >= 128 or i == 26]
        assert len(set(allowed)) == len(allowed), enc
        for i, ch in enumerate(table):
            if i >= 128 or i == 26:
                assert ch.encode(enc) == bytes([i]), (enc, i)
        # possible_encoding's regex is exactly ASCII-without-0x1A plus these characters.
        rx = chardata.ENCODING_REGEXES[enc]
        assert rx.match("".join(allowed) + "".join(chr(c) for c in range(128) if c != 26))
        chars = ", ".join(rust_char(ch) for ch in table)
        out.append(f"    ({rust_str(enc)}, [{chars}]),")
    out.append("];\n")
    strict = []
    for b in range(256):
        try:
            strict.append("Some(" + rust_char(bytes([b]).decode("windows-1252")) + ")")
        except UnicodeDecodeError:
            strict.append("None")
    out.append("/// Python's strict `windows-1252` decoder (five bytes are undefined).\n"
               f"pub static WINDOWS_1252: [Option<char>; 256] = [{', '.join(strict)}];\n")
    return "\n".join(out)


def map_table(name, doc, mapping):
    items = sorted(mapping.items())
    body = ",\n    ".join(f"({rust_str(k)}, {rust_str(v)})" for k, v in items)
    return f"/// {doc}\npub static {name}: &[(&str, &str)] = &[\n    {body},\n];\n"


def char_map_table(name, doc, mapping):
    items = sorted((chr(k), v) for k, v in mapping.items())
    body = ", ".join(f"({rust_char(k)}, {rust_str(v)})" for k, v in items)
    return f"/// {doc}\npub static {name}: &[(char, &str)] = &[{body}];\n"


def check_hand_written():
    """The look-around patterns and the fixed sequences the Rust code implements by hand."""
    assert fixes.A_GRAVE_WORD_RE.pattern == b"\xc3 (?! |quele|quela|quilo|s )"
    assert fixes.ANSI_RE.pattern == "\x1b\\[((?:\\d|;)*)([a-zA-Z])"
    assert chardata.HTML_ENTITY_RE.pattern == "&#?[0-9A-Za-z]{1,24};"
    assert chardata.C1_CONTROL_RE.pattern == "[\\x80-\\x9f]"
    assert chardata.SINGLE_QUOTE_RE.pattern == "[\u02bc\u2018-\u201b]"
    assert chardata.DOUBLE_QUOTE_RE.pattern == "[\u201c-\u201f]"
    expected = "\n    (?<! [{utf8_continuation_strict}])\n    (\n        [{utf8_first_of_2}] [{utf8_continuation}]\n        |\n        [{utf8_first_of_3}] [{utf8_continuation}]{{2}}\n        |\n        [{utf8_first_of_4}] [{utf8_continuation}]{{3}}\n    )+\n    ".format(**chardata.UTF8_CLUES)
    assert chardata.UTF8_DETECTOR_RE.pattern == expected
    assert sorted(chardata.CONTROL_CHARS) == sorted(
        list(range(0, 9)) + [11] + list(range(14, 32)) + [127] + list(range(0x206A, 0x2070))
        + [0xFEFF] + list(range(0xFFF9, 0xFFFD)))
    assert chardata.CHARMAP_ENCODINGS == [
        "latin-1", "sloppy-windows-1252", "sloppy-windows-1251", "sloppy-windows-1250",
        "sloppy-windows-1253", "sloppy-windows-1254", "sloppy-windows-1257", "iso-8859-2",
        "macroman", "cp437"]


def main():
    check_hand_written()
    parts = [
        "// @generated by tools/reference/make_ftfy_tables.py from ftfy "
        f"{ftfy.__version__} and CPython {sys.version.split()[0]} (Unicode "
        f"{unicodedata.unidata_version}). Do not edit.\n",
        "/// `ftfy.badness.BADNESS_RE` in `regex` syntax.\n"
        f"pub const BADNESS: &str = {rust_str(rust_pattern(ftfy.badness.BADNESS_RE))};\n",
        "/// `chardata.ALTERED_UTF8_RE` (bytes).\n"
        f"pub const ALTERED_UTF8: &str = {rust_str(rust_pattern(chardata.ALTERED_UTF8_RE))};\n",
        "/// `chardata.LOSSY_UTF8_RE` (bytes).\n"
        f"pub const LOSSY_UTF8: &str = {rust_str(rust_pattern(chardata.LOSSY_UTF8_RE))};\n",
    ]
    for key in ["utf8_first_of_2", "utf8_first_of_3", "utf8_first_of_4", "utf8_continuation",
                "utf8_continuation_strict"]:
        parts.append(ranges_table(key.upper(), f"`chardata.UTF8_CLUES[\"{key}\"]`.",
                                  char_ranges(class_chars(chardata.UTF8_CLUES[key]))))
    parts.append(ranges_table("DIGIT", "Python's `\\d` (`ANSI_RE` uses it).",
                              ranges_of(lambda ch: DIGIT_RE.match(ch) is not None)))
    parts.append(codec_tables())
    parts.append(char_map_table("LIGATURES", "`chardata.LIGATURES`.", chardata.LIGATURES))
    parts.append(char_map_table("WIDTH_MAP", "`chardata.WIDTH_MAP`.", chardata.WIDTH_MAP))
    parts.append(map_table("FTFY_ENTITIES", "`chardata.HTML_ENTITIES` (with the `&`), sorted.",
                           chardata.HTML_ENTITIES))
    parts.append(map_table("HTML5", "Python's `html.entities.html5` (without the `&`), sorted.",
                           html.entities.html5))
    OUT.write_text("\n".join(parts))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
