#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/ (stdlib only).

Seeds are the library's small test fixtures plus tiny hand-made files, one per format
feature. Rerunning it only adds files; libFuzzer's -merge=1 (see run.sh --merge) keeps the
committed corpus minimal.
"""
import base64
import io
import json
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

FUZZ = Path(__file__).resolve().parent.parent
FIX = FUZZ.parent / "crates/biomedclip/tests/fixtures"
CORPUS = FUZZ / "corpus"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def copy(target, src, name=None):
    put(target, name or src.name, src.read_bytes())


# --- images -----------------------------------------------------------------------------

def png(width, height, color_type, depth, raw_rows, extra_chunks=()):
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    data = b"".join(b"\x00" + r for r in raw_rows)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    for kind, body in extra_chunks:
        out += chunk(kind, body)
    return out + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


def bmp(width, height):
    row = bytes([0, 0, 255, 0, 255, 0]) * width
    row += b"\x00" * ((-len(row)) % 4)
    pixels = row * height
    header = b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def tiff_rgb(width, height):
    pixels = bytes(range(width * height * 3))
    entries = [
        (256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, 8 + 12 * 12 + 4 + 8 - 8),
        (259, 3, 1, 1), (262, 3, 1, 2), (273, 4, 1, 0), (277, 3, 1, 3),
        (278, 3, 1, height), (279, 4, 1, len(pixels)), (284, 3, 1, 1),
    ]
    n = len(entries)
    ifd_at = 8
    bps_at = ifd_at + 2 + 12 * n + 4
    data_at = bps_at + 6
    out = b"II*\x00" + struct.pack("<I", ifd_at) + struct.pack("<H", n)
    for tag, typ, count, value in entries:
        if tag == 258:
            value = bps_at
        if tag == 273:
            value = data_at
        if typ == 3 and count == 1:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    out += struct.pack("<I", 0) + struct.pack("<HHH", 8, 8, 8)
    return out + pixels


GIF_1X1 = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")
WEBP_LOSSLESS = base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")
WEBP_LOSSY = base64.b64decode("UklGRiIAAABXRUJQVlA4IBYAAAAwAQCdASoBAAEADsD+JaQAA3AAAAAA")


def images():
    t = "image_decode"
    ds = FIX / "dataset/images"
    copy(t, ds / "retina/0.jpg", "retina.jpg")
    copy(t, ds / "histology/0.jpg", "histology.jpg")
    copy(t, ds / "microscopy/4.png", "microscopy.png")
    copy(t, FIX / "images/gray_cells.jpg")
    copy(t, FIX / "images/not_an_image.png")
    copy(t, FIX / "dicom/rtdose_1frame.dcm")
    copy(t, FIX / "dicom/SC_rgb_rle_2frame.dcm")
    put(t, "gray8.png", png(3, 2, 0, 8, [b"\x00\x80\xff", b"\x10\x20\x30"]))
    put(t, "gray1.png", png(9, 2, 0, 1, [b"\xa5\x80", b"\x5a\x00"]))
    put(t, "gray4.png", png(3, 1, 0, 4, [b"\x1f\xa0"]))
    put(t, "gray16.png", png(2, 2, 0, 16, [b"\x00\x01\x05\xdc", b"\xff\xff\x12\x34"]))
    put(t, "rgb.png", png(2, 1, 2, 8, [b"\xff\x00\x00\x00\xff\x00"]))
    put(t, "rgb16.png", png(1, 1, 2, 16, [b"\xff\x00\x80\x00\x00\x01"]))
    put(t, "la.png", png(2, 1, 4, 8, [b"\x80\x40\xff\x00"]))
    put(t, "rgba.png", png(1, 2, 6, 8, [b"\x10\x20\x30\x80", b"\xff\xff\xff\x00"]))
    put(t, "palette_trns.png", png(4, 1, 3, 2, [b"\x1b"],
                                   [(b"PLTE", b"\xff\x00\x00\x00\xff\x00"), (b"tRNS", b"\x00")]))
    put(t, "palette8.png", png(2, 2, 3, 8, [b"\x00\x01", b"\x02\x00"],
                               [(b"PLTE", b"\x00\x00\x00\xff\xff\xff")]))
    put(t, "tiny.bmp", bmp(2, 2))
    put(t, "tiny.tif", tiff_rgb(2, 2))
    put(t, "tiny.gif", GIF_1X1)
    put(t, "lossless.webp", WEBP_LOSSLESS)
    put(t, "lossy.webp", WEBP_LOSSY)


# --- DICOM (the target adds the preamble and "DICM" itself) ---------------------------

def dicom():
    t = "dicom"
    for name in ["rtdose_1frame", "SC_rgb_rle_2frame", "SC_rgb_jpeg_dcmtk", "SC_rgb_jpeg_gdcm",
                 "MR_small_jp2klossless", "MR_small_jpeg_ls_lossless", "MR_small_RLE",
                 "MR_small", "MR_small_monochrome1", "MR_small_no_window", "JPGExtended"]:
        data = (FIX / f"dicom/{name}.dcm").read_bytes()
        assert data[128:132] == b"DICM"
        put(t, name, data[132:])
    put(t, "mri0", (FIX / "dataset/images/mri/0.dcm").read_bytes()[132:])
    put(t, "ct0", (FIX / "dataset/images/ct/0.dcm").read_bytes()[132:])


# --- checkpoints ------------------------------------------------------------------------

def rezip(src, compression, rename=None, pkl=None):
    out = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", compression) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if pkl is not None and info.filename.endswith("data.pkl"):
                data = pkl(data)
            name = info.filename if rename is None else rename(info.filename)
            zout.writestr(name, data)
    return out.getvalue()


def checkpoints():
    t = "checkpoint"
    src = FIX / "weights/f32_tensors.bin"
    copy(t, src)
    put(t, "deflated.bin", rezip(src, zipfile.ZIP_DEFLATED))
    # {"state_dict": {...}}
    put(t, "state_dict.bin", rezip(src, zipfile.ZIP_STORED, pkl=lambda p: (
        b"\x80\x02}X\x0a\x00\x00\x00state_dict" + p[2:-1] + b"s.")))

    def module(p):
        for k in [b"plain", b"offset_view", b"transposed", b"half"]:
            old = b"X" + struct.pack("<I", len(k)) + k
            new = b"X" + struct.pack("<I", len(k) + 7) + b"module." + k
            p = p.replace(old, new)
        return p
    put(t, "module_prefix.bin", rezip(src, zipfile.ZIP_STORED, pkl=module))
    put(t, "long_storage.bin", rezip(src, zipfile.ZIP_STORED, pkl=lambda p: p.replace(
        b"ctorch\nHalfStorage\n", b"ctorch\nLongStorage\n")))
    put(t, "renamed_archive.bin", rezip(src, zipfile.ZIP_STORED,
                                        rename=lambda n: n.replace("f32_tensors/", "archive/")))

    # safetensors
    s = "safetensors"

    def st(tensors, meta=None):
        header, blob = {}, b""
        for name, (dtype, shape, data) in tensors.items():
            header[name] = {"dtype": dtype, "shape": shape,
                            "data_offsets": [len(blob), len(blob) + len(data)]}
            blob += data
        if meta:
            header["__metadata__"] = meta
        h = json.dumps(header).encode()
        h += b" " * ((-len(h)) % 8)
        return struct.pack("<Q", len(h)) + h + blob

    f32 = lambda *v: struct.pack(f"<{len(v)}f", *v)
    put(s, "f32.safetensors", st({"logit_scale": ("F32", [], f32(4.6)),
                                  "w": ("F32", [2, 3], f32(1, 2, 3, 4, 5, 6))}))
    put(s, "mixed.safetensors", st({
        "a": ("F16", [2], struct.pack("<2e", 1.0, -2.0)),
        "b": ("BF16", [1, 2], b"\x80\x3f\x00\x40"),
        "c": ("F64", [1], struct.pack("<d", 3.0)),
        "d": ("I64", [2], struct.pack("<2q", 1, 2)),
        "e": ("U8", [3], b"\x01\x02\x03"),
        "f": ("BOOL", [1], b"\x01"),
    }, meta={"format": "pt"}))
    put(s, "module_prefix.safetensors", st({"module.logit_scale": ("F32", [1], f32(1.0)),
                                            "module.x": ("F16", [0], b"")}))
    # The tensor names ModelDims::infer looks at, with tiny shapes.
    put(s, "tiny_vit.safetensors", st({
        "visual.trunk.patch_embed.proj.weight": ("F32", [2, 3, 1, 1], f32(*range(6))),
        "visual.trunk.pos_embed": ("F32", [1, 2, 2], f32(*range(4))),
        "visual.trunk.cls_token": ("F32", [1, 1, 2], f32(0, 1)),
        "visual.trunk.blocks.0.mlp.fc1.weight": ("F32", [4, 2], f32(*range(8))),
        "visual.head.proj.weight": ("F32", [2, 2], f32(*range(4))),
        "text.transformer.embeddings.word_embeddings.weight": ("F32", [3, 2], f32(*range(6))),
        "text.transformer.embeddings.position_embeddings.weight": ("F32", [2, 2], f32(*range(4))),
        "text.transformer.encoder.layer.0.intermediate.dense.weight": ("F32", [4, 2], f32(*range(8))),
        "text.proj.0.weight": ("F32", [3, 2], f32(*range(6))),
        "text.proj.2.weight": ("F32", [2, 3], f32(*range(6))),
        "logit_scale": ("F32", [], f32(1.0)),
    }))


# --- configs ------------------------------------------------------------------------------

def configs():
    t = "config"
    copy(t, FIX / "tiny-model/open_clip_config.json")
    copy(t, FIX / "tiny-model/config.json")
    cfg = json.loads((FIX / "tiny-model/open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"]["hf_proj_type"] = "linear"
    cfg["model_cfg"]["text_cfg"]["hf_pooler_type"] = "mean_pooler"
    cfg["model_cfg"]["vision_cfg"]["timm_proj"] = "none"
    cfg["model_cfg"]["vision_cfg"]["timm_pool"] = "token"
    cfg["preprocess_cfg"]["interpolation"] = "bilinear"
    cfg["preprocess_cfg"]["resize_mode"] = "shortest"
    put(t, "variant.json", json.dumps(cfg).encode())
    put(t, "minimal.json", b'{"model_cfg":{"embed_dim":1,"vision_cfg":{},"text_cfg":{}},'
                           b'"preprocess_cfg":{"mean":[0,0,0],"std":[1e-30,1,1e38]}}')
    put(t, "bert.json", b'{"hidden_act":"gelu","num_attention_heads":0,"layer_norm_eps":-1,'
                        b'"pad_token_id":4294967295}')


# --- text ---------------------------------------------------------------------------------

def texts():
    t = "text"
    for i, s in enumerate([
        "a photo of a chest x-ray showing pneumonia",
        "H&amp;E stained tissue &lt;b&gt;&#233;&#x20AC;&nbsp;&notit; &amp;amp;",
        "caf\u00c3\u00a9 \u00e2\u20ac\u0153quoted\u00e2\u20ac\u009d \u00c3\u0192\u00c2\u00a9",
        "\ufb01ne \uff21\uff22\uff23 \u201ccurly\u201d \u2018q\u2019 \u0085\u2028\r\n\t\x1b[31mred\x1b[0m",
        "\u4e2d\u6587 \U0001F600 e\u0301 \u0000\u0007 \ud7ff",
        "x" * 120 + " " + "##ing [CLS] [SEP] [PAD] [MASK] [UNK]",
        " \u3000\u00a0\u1680 ",
    ]):
        put(t, f"seed{i}", s.encode("utf-8", "surrogatepass"))


if __name__ == "__main__":
    images()
    dicom()
    checkpoints()
    configs()
    texts()
    for d in sorted(CORPUS.iterdir()):
        files = list(d.iterdir())
        print(f"{d.name}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes")
