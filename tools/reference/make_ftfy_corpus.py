"""Writes the differential corpus for the text clean: crates/biomedclip/tests/fixtures/text/
ftfy_corpus.jsonl.gz, one JSON object per line:

    {"input": ..., "ftfy": ftfy.fix_text(input), "clean": open_clip's clean, "ids": [...]}

`clean` is `whitespace_clean(basic_clean(input))` from open_clip 2.23.0's tokenizer module
(ftfy.fix_text, html.unescape twice, strip, whitespace collapsed) and `ids` the token ids
`HFTokenizer` gives for it with the tiny fixture model's vocabulary, unpadded.

The strings are built, with a fixed seed, from real words of many scripts and from the
characters ftfy's heuristics look at: text mis-decoded through every codec ftfy knows (once
and twice, whole or in part, with bytes lost the ways copy-paste loses them), mixed with
ligatures, full-width forms, curly quotes, CJK, emoji, control characters, HTML entities,
terminal escapes and odd whitespace, plus valid text that only looks odd and must stay as it
is. Random strings over those character sets probe the badness heuristic where no
hand-made case reaches.

    python tools/reference/make_ftfy_corpus.py   # from the repository root, in the reference venv
"""

import gzip
import io
import json
import random
from pathlib import Path

import ftfy
from open_clip.tokenizer import basic_clean, whitespace_clean
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates/biomedclip/tests/fixtures/text/ftfy_corpus.jsonl.gz"
TOKENIZER = ROOT / "crates/biomedclip/tests/fixtures/tiny-model"
assert ftfy.__version__ == "6.3.1", ftfy.__version__

WORDS = {
    "en": "chest radiograph showing bilateral pleural effusion; axial CT of the abdomen with "
          "contrast; hematoxylin and eosin stain of lymph node; fundus photograph of the left "
          "eye; MRI brain T2-weighted FLAIR; ultrasound of the liver; don't worry, it's fine",
    "fr": "radiographie thoracique montrant un épanchement pleural; coupe axiale élargie; "
          "cœur, œsophage, à côté, déjà, très, garçon, hôpital, être, naïf, Noël, français",
    "de": "Röntgenaufnahme des Thorax mit Pleuraerguss; Gefäße, Größe, Übersicht, Ärztin, "
          "Schädel, Hüfte, über, Straße, Mädchen",
    "es": "radiografía de tórax con derrame pleural; corazón, pulmón, niño, señal, "
          "¿qué pasó?, ¡atención!, año, cirugía",
    "pt": "radiografia de tórax; coração, pulmões, ação, não, órgão, cérebro, "
          "à esquerda, àquele, àquela, àquilo, às vezes",
    "it": "radiografia del torace; perché, città, più, però, ecografia, fegato",
    "pl": "zdjęcie rentgenowskie klatki piersiowej; wątroba, żółć, serce, płuca, "
          "Łódź, źródło, gęś, ćma",
    "cs": "rentgenový snímek hrudníku; Dvořák, žlučník, srdce, plíce, řeč, ústí, ďábel",
    "tr": "göğüs röntgeni; karaciğer, böbrek, İstanbul, ışık, şeker, çocuk, ağrı",
    "ro": "radiografie toracică; inimă, plămâni, ficat, și, țesut, București",
    "lt": "krūtinės ląstos rentgenograma; širdis, plaučiai, kepenys, žmogus, ąžuolas",
    "lv": "krūškurvja rentgenogramma; sirds, plaušas, aknas, ķermenis, ūdens, ļoti",
    "hu": "mellkasröntgen; szív, tüdő, máj, őrült, ügyes, Győr",
    "is": "brjóstmynd; hjarta, lungu, þetta, Þórður, mæða, ég",
    "el": "ακτινογραφία θώρακος με πλευριτική συλλογή; καρδιά, πνεύμονας, ήπαρ, Ελληνικά, "
          "ΑΘΗΝΑ, ψυχή, ΰ, ΐ",
    "ru": "рентгенограмма грудной клетки; сердце, лёгкие, печень, Привет, МРТ головного "
          "мозга, ёж, щука, объём",
    "uk": "рентгенограма грудної клітки; серце, легені, їжак, ґанок, Київ, є",
    "bg": "рентгенография на гръден кош; сърце, бял дроб, черен дроб",
    "sr": "рендгенски снимак; срце, плућа, ђак, џеп, љубав, њива",
    "ar": "صورة شعاعية للصدر تظهر انصباب جنبي؛ القلب، الرئتين، الكبد",
    "fa": "رادیوگرافی قفسه سینه؛ قلب، ریه، کبد",
    "he": "צילום חזה המראה תפליט פלאורלי; לב, ריאות, כבד",
    "hi": "छाती का एक्स-रे; हृदय, फेफड़े, यकृत, चिकित्सा",
    "bn": "বুকের এক্স-রে; হৃদয়, ফুসফুস, যকৃত",
    "ta": "மார்பு எக்ஸ்-ரே; இதயம், நுரையீரல், கல்லீரல்",
    "th": "ภาพเอกซเรย์ทรวงอก; หัวใจ ปอด ตับ",
    "zh": "胸部X光片显示双侧胸腔积液；心脏，肺，肝脏，苏木精-伊红染色",
    "ja": "胸部X線写真で両側胸水を認める；心臓、肺、肝臓、ヘマトキシリン・エオジン染色、ｶﾀｶﾅ",
    "ko": "흉부 엑스레이에서 양측 흉막 삼출; 심장, 폐, 간",
    "vi": "phim X quang ngực cho thấy tràn dịch màng phổi; tim, phổi, gan, Nguyễn, Việt Nam",
    "names": "Dvořák, Müller, Ångström, Søren Kierkegaard, José Martí, Zoë, Chloé, Björk, "
             "François, Ñuñez, Đặng, Łukasiewicz, Erdoğan, Ilić, Jiří, Mărgărit, Šimić",
}
PHRASES = {lang: [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
           for lang, text in WORDS.items()}
ALL_PHRASES = [p for ps in PHRASES.values() for p in ps]
LATIN_LANGS = ["en", "fr", "de", "es", "pt", "it", "pl", "cs", "tr", "ro", "lt", "lv", "hu",
               "is", "vi", "names"]

# The codecs ftfy tries, plus the strict ones people decode with.
CODECS = ["latin-1", "sloppy-windows-1252", "sloppy-windows-1251", "sloppy-windows-1250",
          "sloppy-windows-1253", "sloppy-windows-1254", "sloppy-windows-1257", "iso-8859-2",
          "macroman", "cp437", "windows-1252", "cp850", "koi8-r", "iso-8859-15", "mac-cyrillic"]

LIGATURES = "ĲĳŉǱǲǳǄǅǆǇǈǉǊǋǌﬀﬁﬂﬃﬄﬅﬆ"
FULLWIDTH = "".join(chr(c) for c in range(0xFF01, 0xFF5F)) + "\u3000ｱｲｳｴｵｶｷｸｹｺﾞﾟ"
QUOTES = "\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u02bc\u00ab\u00bb\u2039\u203a"
EMOJI = "😀🩺🫁🧬🔬💉🏥❤️👍🏽🇫🇷✓✗★☢"
CJK = "中文漢字胸部心臓肺肝日本語한국어"
CONTROLS = "".join(chr(c) for c in list(range(0, 32)) + [127] + list(range(0x80, 0xA0))) + \
    "\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u206a\u206f\ufeff\ufff9\ufffc\ufffd"
SPACES = " \t\n\r\x0b\x0c\xa0\u1680\u2000\u2003\u2009\u200a\u202f\u205f\u3000\x85\x1c\x1f"
ENTITIES = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&nbsp;", "&eacute;", "&EACUTE;",
            "&Eacute;", "&ntilde;", "&NTILDE;", "&mu;", "&MU;", "&deg;", "&copy;", "&COPY;",
            "&hellip;", "&mdash;", "&rsquo;", "&ldquo;", "&#233;", "&#xe9;", "&#XE9;",
            "&#128;", "&#x80;", "&#0;", "&#x110000;", "&#xd800;", "&#65;", "&#abc;",
            "&amp", "&lt", "&eacute", "&ampx", "&notin;", "&notit;", "&nosuch;", "&;", "&#;",
            "&amp;amp;", "&amp;lt;", "&amp;amp;lt;", "&AMP;", "&LT;", "&alpha;", "&ALPHA;",
            "&szlig;", "&SZLIG;", "&frac12;", "&times;", "&#8217;", "&#x201c;", "& ", "&",
            "&#9;", "&#13;", "&#x1b;", "&thinsp;", "&zwnj;", "&NotEqualTilde;", "&fjlig;"]
ANSI = ["\x1b[0m", "\x1b[1;31m", "\x1b[36;44m", "\x1b[K", "\x1b[", "\x1b[12", "\x1b[١٢m",
        "\x1b[;;H", "\x1b]0;title\x07", "\x1b[0;"]
# Characters the badness heuristic and the codecs care about.
INTERESTING = "".join(sorted(set(
    bytes(range(0x80, 0x100)).decode("latin-1")
    + "".join(bytes(range(0x80, 0x100)).decode(c) for c in CODECS[1:10])
    + "ĂĀĄĆČĎĐĘĚĒĖĞĢİĪĶĹĽŁĻŃŇŅŒŘŚŞŠŢŤŮŰŸŹŻŽҐăąāćčďđęěēėğģįīķĺľłļœŕśşšťźżžґ"
    + "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩάέήίΰαβγδεζηθικλμνξοπρστυφχψωΆΈΉΊΌΎΏΪΫ΄΅"
    + "АБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯабвгдежзийклмнопрстуфхцчшщъыьэюяЁЂЃЄЅІЇЈЉЊЋЌЎЏёђ"
    + "│┌┐┘├┤┬┼═║╒╓╔╕╖╗╘╙╚╛╜╝╞╟╠╡╢╣╤╥╦╧╨╩╪╫╬▀▄█▌▐░▒▓"
    + "–—―‘’‚“”„†‡•…‰‹›€™№⁄∂∆∏∑√∞∩∫≈≠≡≤≥◊\uf8ff\ufffd¤¦¨¬¯¸ƒˆˇ˘˛˜˝°µ·"
)))
ASCII = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"()-/<>"

# Valid text that only looks odd: ftfy must leave these as they are.
KEEP = ["Ã", "Ã alone", "Â", "Ð", "Ø", "Ù", "à", "×", "Ελληνικά", "Привет", "naïve café",
        "Dvořák", "Øresund", "Ünicode", "ÂNGELO", "ÃO", "Ã©", "à la carte", "às vezes",
        "AÇÃO", "São Paulo", "MÃE", "ĐÀ NẴNG", "ВГРС", "Åland", "I ♥ NY", "┌─┐", "£100",
        "€5", "25°C", "x² + y²", "µg/mL", "±2 SD", "¿Qué?", "«guillemets»", "Σ √ ∞",
        "dvě slova", "Łódź", "İstanbul", "Tōkyō", "Ωmega", "Æsir", "Œuvre", "œil",
        "Ð·", "ÄÖÜ äöü ß", "1½ cups", "№ 5", "™ ®", "→ ← ↑ ↓", "† died 1900"]


def mojibake(text, codec, rng):
    data = text.encode("utf-8")
    errors = rng.choice(["strict", "replace", "ignore"])
    try:
        return data.decode(codec, errors=errors)
    except UnicodeDecodeError:
        return None


def damage(text, rng):
    """What copy-paste does to mojibake: NBSP -> space, some characters -> ? or U+FFFD."""
    choice = rng.random()
    if choice < 0.3:
        return text.replace("\xa0", " ")
    if choice < 0.5:
        chars = list(text)
        for _ in range(rng.randint(1, 2)):
            if chars:
                chars[rng.randrange(len(chars))] = rng.choice("?\ufffd\x1a")
        return "".join(chars)
    return text


def phrase(rng, langs=None):
    lang = rng.choice(langs or list(PHRASES))
    return rng.choice(PHRASES[lang])


def sprinkle(text, rng):
    """Insert a few characters from the fixers' sets at random places."""
    pools = [LIGATURES, FULLWIDTH, QUOTES, EMOJI, CJK, CONTROLS, SPACES]
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        pool = rng.choice(pools)
        chars.insert(rng.randint(0, len(chars)), rng.choice(pool))
    return "".join(chars)


def cesu(text):
    """Astral characters written as CESU-8 surrogate pairs, plus Java's C0 80 null."""
    out = bytearray()
    for ch in text:
        cp = ord(ch)
        if cp >= 0x10000:
            hi, lo = 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)
            out += chr(hi).encode("utf-8", "surrogatepass") + chr(lo).encode("utf-8", "surrogatepass")
        elif cp == 0:
            out += b"\xc0\x80"
        else:
            out += ch.encode("utf-8")
    return bytes(out)


def generate(rng):
    out = []
    add = out.append
    # Valid text of every language, alone and mixed.
    for p in ALL_PHRASES:
        add(p)
    for _ in range(1500):
        add(" ".join(phrase(rng) for _ in range(rng.randint(1, 4))))
    for s in KEEP:
        add(s)
        add(s + " " + phrase(rng))
    # Mojibake once and twice, whole strings, through every codec.
    for _ in range(5000):
        text = " ".join(phrase(rng) for _ in range(rng.randint(1, 3)))
        codec = rng.choice(CODECS)
        once = mojibake(text, codec, rng)
        if once is None:
            continue
        if rng.random() < 0.35:
            twice = mojibake(once, rng.choice(CODECS), rng)
            if twice is not None:
                once = twice
        add(damage(once, rng) if rng.random() < 0.4 else once)
    # Mojibake inside text that no single codec explains (the case: "cafÃ©" + "ﬁ").
    for _ in range(4000):
        bad = mojibake(phrase(rng, LATIN_LANGS + ["el", "ru", "zh", "ja"]), rng.choice(CODECS[:10]), rng)
        if bad is None:
            continue
        good = phrase(rng)
        parts = [bad, good] if rng.random() < 0.5 else [good, bad]
        text = rng.choice([" ", " — ", "\n", ": ", ""]).join(parts)
        add(sprinkle(text, rng) if rng.random() < 0.7 else text)
    # CESU-8 and Java nulls read as single-byte text.
    for _ in range(600):
        text = phrase(rng) + rng.choice(EMOJI + "\0") + rng.choice(["", phrase(rng)])
        add(cesu(text).decode(rng.choice(["latin-1", "sloppy-windows-1252", "sloppy-windows-1251"])))
    # Fixer inputs in valid text.
    for _ in range(3000):
        add(sprinkle(phrase(rng), rng))
    for _ in range(1500):
        pieces = [phrase(rng) for _ in range(rng.randint(1, 3))]
        for _ in range(rng.randint(1, 3)):
            pieces.insert(rng.randint(0, len(pieces)), rng.choice(ENTITIES))
        sep = rng.choice(["", " ", "\n", " <br> ", "<", "\n<p>\n"])
        add(sep.join(pieces))
    for _ in range(600):
        add(rng.choice(ANSI) + phrase(rng) + rng.choice(ANSI + [""]))
    # Random strings over the characters the heuristics look at.
    for _ in range(6000):
        n = rng.randint(1, 12)
        pools = [INTERESTING] * 3 + [ASCII, SPACES, QUOTES, LIGATURES]
        add("".join(rng.choice(rng.choice(pools)) for _ in range(n)))
    # Random strings re-decoded: random text that is mojibake of random text.
    for _ in range(3000):
        n = rng.randint(1, 8)
        text = "".join(rng.choice(INTERESTING + ASCII) for _ in range(n))
        bad = mojibake(text, rng.choice(CODECS), rng)
        if bad is not None:
            add(bad if rng.random() < 0.7 else damage(bad, rng))
    return out


def main():
    rng = random.Random(20261202)
    inputs = list(dict.fromkeys(generate(rng)))
    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER))
    records = []
    for text in inputs:
        records.append({"input": text, "ftfy": ftfy.fix_text(text),
                        "clean": whitespace_clean(basic_clean(text))})
    ids = tokenizer([r["clean"] for r in records], max_length=256, truncation=True)["input_ids"]
    for record, row in zip(records, ids):
        record["ids"] = row
    OUT.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
        for record in records:
            gz.write((json.dumps(record, ensure_ascii=True) + "\n").encode("ascii"))
    OUT.write_bytes(buf.getvalue())
    changed = sum(r["input"] != r["ftfy"] for r in records)
    print(f"wrote {OUT}: {len(records)} strings, {changed} changed by ftfy, "
          f"{len(buf.getvalue())} bytes")


if __name__ == "__main__":
    main()
