"""The Python package against the CLI and against open_clip, on one machine in one run.

    .venv-ref/bin/pip install ./python        # the package, in the reference's venv
    .venv-ref/bin/python tools/bench/python.py --model /tmp/biomedclip-full --threads 2

Measures, on the full-size checkpoint:
- images/s at batch 32 through Python (`encode_images` of 32 JPEG files per call, and
  `encode_pixels` of 32 preprocessed images) next to the CLI (`biomedclip embed` of 96
  against 32 files, so start-up cancels out) and the engine's own benchmark
  (`examples/bench.rs --batches 32`);
- `import biomedclip; biomedclip.load(...)` in a fresh process, wall time and peak RSS,
  next to open_clip's `create_model_and_transforms` of the same checkpoint in the same Python;
- texts/s on bench.py's 1,000 captions next to open_clip (which pads every caption to 256
  tokens, so 64 of them measure its rate).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tools/reference"))
from bench import captions, load_reference, rate, run_measured  # noqa: E402
from clean import cpu_flags  # noqa: E402

JPEG = ROOT / "crates/biomedclip/tests/fixtures/images/rgb_photo.jpg"

COLD_OURS = r'''
import sys, biomedclip
model = biomedclip.load(sys.argv[1], threads=int(sys.argv[2]))
print(model.embed_dim)
'''

COLD_OPEN_CLIP = r'''
import json, sys, torch
import open_clip
from open_clip.factory import _MODEL_CONFIGS
d = sys.argv[1]
torch.set_num_threads(int(sys.argv[2]))
cfg = json.load(open(d + "/open_clip_config.json"))
m = cfg["model_cfg"]
m["text_cfg"]["hf_model_name"] = d
m["text_cfg"]["hf_tokenizer_name"] = d
_MODEL_CONFIGS["bench_local"] = m
model, _, preprocess = open_clip.create_model_and_transforms(
    "bench_local", pretrained=d + "/open_clip_pytorch_model.bin", pretrained_hf=False,
    **{f"image_{k}": v for k, v in cfg["preprocess_cfg"].items()})
print(model.eval() is not None)
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    d = str(args.model)
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "biomedclip-cli"], cwd=ROOT,
                   check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "biomedclip", "--example",
                    "bench"], cwd=ROOT, check=True)
    cli = ROOT / "target/release/biomedclip"

    import numpy as np
    import biomedclip
    model = biomedclip.load(d, threads=args.threads)
    files = [str(JPEG)] * 32
    pixels = np.random.default_rng(0).standard_normal((32, 3, 224, 224), dtype=np.float32)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    rows = {"files": [], "pixels": []}
    for r in range(args.rounds):
        py_files = rate(args.seconds, 32, lambda: model.encode_images(files))
        py_pixels = rate(args.seconds, 32, lambda: model.encode_pixels(pixels))
        times = {}
        for n in (32, 96):
            cmd = [str(cli), "embed", "--model", d, "--threads", str(args.threads)]
            for _ in range(n):
                cmd += ["--image", str(JPEG)]
            times[n] = run_measured(cmd, env)[0]
        cli_files = 64 / (times[96] - times[32])
        out = run_measured([str(ROOT / "target/release/examples/bench"), d, "--batches", "32",
                            "--no-text", "--seconds", str(args.seconds)], env)[2]
        engine = json.loads(out.splitlines()[0])["per_second"]
        rows["files"].append((py_files, cli_files))
        rows["pixels"].append((py_pixels, engine))
        print(f"round {r + 1}: files {py_files:.2f} vs CLI {cli_files:.2f}; "
              f"pixels {py_pixels:.2f} vs engine {engine:.2f}", flush=True)

    cold = {}
    for name, code in [("biomedclip", COLD_OURS), ("open_clip", COLD_OPEN_CLIP)]:
        runs = [run_measured([sys.executable, "-c", code, d, str(args.threads)])
                for _ in range(3)]
        cold[name] = (sorted(r[0] for r in runs)[1], max(r[1] for r in runs))

    import torch
    from open_clip.tokenizer import HFTokenizer
    torch.set_num_threads(args.threads)
    caps = captions(1000)
    ours_texts = rate(args.seconds, len(caps), lambda: model.encode_texts(caps))
    reference = load_reference(args.model)
    ids = HFTokenizer(d, context_length=256)(caps[:64])

    def some():
        with torch.no_grad():
            for i in range(0, 64, 32):
                reference.encode_text(ids[i:i + 32])

    theirs_texts = rate(args.seconds, 64, some)

    print(f"\nCPU: {cpu_flags()}; threads {args.threads}")
    print("| images/s, batch 32 | Python package | CLI / engine | Python / CLI (per round) |")
    print("|---|---|---|---|")
    for what, label in [("files", "32 JPEG files per call (decode + preprocess + model)"),
                        ("pixels", "preprocessed pixels (`encode_pixels` / `examples/bench`)")]:
        ours = sorted(p for p, _ in rows[what])[len(rows[what]) // 2]
        peer = sorted(c for _, c in rows[what])[len(rows[what]) // 2]
        ratios = ", ".join(f"{p / c:.3f}" for p, c in rows[what])
        print(f"| {label} | {ours:.2f} | {peer:.2f} | {ratios} |")
    print("\n| cold start, fresh process | wall (median of 3) | peak RSS |")
    print("|---|---|---|")
    for name, (wall, rss) in cold.items():
        print(f"| {name} | {wall:.2f} s | {rss:.0f} MB |")
    print(f"\ntexts/s (1,000 captions): biomedclip {ours_texts:.1f}, open_clip {theirs_texts:.2f}, "
          f"ratio {ours_texts / theirs_texts:.1f}x")


if __name__ == "__main__":
    main()
