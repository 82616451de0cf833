"""`index build` throughput against the model alone, on the same images and machine.

    python tools/bench/index.py MODEL_DIR [--images 240] [--precision f32]

Makes a folder of distinct JPEGs (the fixture photographs, each copy with a different trailing
byte so every file has its own content hash), then measures, alternating:
- the model alone: `biomedclip.Model.encode_pixels` on already preprocessed pixels (the Python
  package runs the same engine);
- `biomedclip embed --image DIR` (decode, then encode, batch after batch);
- `biomedclip index build` (decoding overlapped with the model), into a fresh folder each time.
Prints images/s and the ratios. Needs the Python package (`pip install ./python`) and
`cargo build --release`.
"""

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import biomedclip

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "target/release/biomedclip"
PHOTOS = ["rgb_photo.jpg", "gray_cells.jpg", "ihc.jpg", "tall.jpg", "flat_photo.jpg"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--images", type=int, default=240)
    p.add_argument("--precision", default="f32")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="biomedclip-index-bench-"))
    folder = work / "images"
    folder.mkdir()
    for i in range(a.images):
        src = ROOT / "crates/biomedclip/tests/fixtures/images" / PHOTOS[i % len(PHOTOS)]
        (folder / f"{i:05d}.jpg").write_bytes(src.read_bytes() + i.to_bytes(4, "little"))
    files = sorted(folder.iterdir())

    model = biomedclip.load(a.model, precision=a.precision)
    pixels = model.preprocess([str(f) for f in files])
    model.encode_pixels(pixels[:8])
    common = ["--model", a.model, "--precision", a.precision]
    rates = {"model": [], "embed": [], "index": []}
    for r in range(a.rounds):
        t = time.perf_counter()
        model.encode_pixels(pixels)
        rates["model"].append(len(files) / (time.perf_counter() - t))
        t = time.perf_counter()
        subprocess.run([str(CLI), "embed", *common, "--image", str(folder)], check=True, stdout=subprocess.DEVNULL)
        rates["embed"].append(len(files) / (time.perf_counter() - t))
        out = work / f"col{r}"
        t = time.perf_counter()
        subprocess.run([str(CLI), "index", "build", *common, "--out", str(out), str(folder)], check=True, stderr=subprocess.DEVNULL)
        rates["index"].append(len(files) / (time.perf_counter() - t))
    cpu = open("/proc/cpuinfo").read()
    model_name = cpu.split("model name\t: ")[1].split("\n")[0]
    flags = [f for f in cpu.split("flags\t\t: ")[1].split("\n")[0].split() if f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16")]
    print(f"CPU: {model_name}, flags {' '.join(flags)}; {len(files)} JPEGs, precision {a.precision}")
    for k, v in rates.items():
        print(f"{k}: " + ", ".join(f"{x:.2f}" for x in v) + " images/s")
    best = {k: max(v) for k, v in rates.items()}
    print(f"index build / model alone: {best['index'] / best['model']:.3f}; index build / embed: {best['index'] / best['embed']:.3f}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
