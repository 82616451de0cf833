"""Side-by-side benchmark: this engine, PyTorch open_clip and ONNX Runtime on one checkpoint.

Runs everything in one invocation on the same machine and prints a Markdown table of
throughputs, latencies, cold-start times and peak memory with our ratio to each peer.
See BENCHMARKS.md. Usage:

    python tools/bench/bench.py --model /tmp/biomedclip-full [--seconds 8] [--threads 2]

The model directory is a full-size checkpoint made by
`tools/reference/make_fixtures.py --full DIR` (random weights: speed does not depend on them).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "reference"))

LABELS = [
    "adenocarcinoma histopathology", "brain MRI", "covid line chart",
    "squamous cell carcinoma histopathology", "immunohistochemistry histopathology", "bone X-ray",
    "chest X-ray", "pie chart", "hematoxylin and eosin histopathology",
]
IMAGE = ROOT / "crates" / "biomedclip" / "tests" / "fixtures" / "images" / "ihc.jpg"


def captions(n):
    """Deterministic figure captions of realistic length (8 to 60 words)."""
    subjects = ["Axial CT of the chest", "H&E stained section", "Immunohistochemistry for Ki-67",
                "Coronal T2-weighted MRI", "Fundus photograph", "Kaplan-Meier survival curve",
                "Western blot of lysates", "Confocal microscopy image", "Chest radiograph",
                "Bar chart of expression levels"]
    findings = ["showing a spiculated mass in the right upper lobe", "with diffuse lymphocytic infiltration",
                "demonstrating strong nuclear staining in tumour cells", "revealing a hyperintense lesion",
                "with microaneurysms and hard exudates", "comparing treated and control groups",
                "after 48 hours of treatment with the inhibitor", "of HeLa cells labelled with DAPI"]
    extra = ("Scale bar 50 um. Arrows indicate the region of interest; asterisks mark necrosis. "
             "Data are mean and standard deviation of three independent experiments.").split()
    out = []
    for i in range(n):
        words = f"{subjects[i % len(subjects)]} {findings[(i * 7) % len(findings)]}".split()
        words += extra[: (i * 13) % len(extra)]
        words += extra[: (i * 5) % 20]
        out.append(" ".join(words))
    return out


def rate(seconds, items, fn):
    fn()
    start = time.perf_counter()
    n = 0
    while n == 0 or time.perf_counter() - start < seconds:
        fn()
        n += items
    return n / (time.perf_counter() - start)


def run_measured(cmd, env=None):
    """Runs a command; returns (wall seconds, peak RSS in MB, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err.decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, out.decode()


COLD_PYTORCH = r'''
import json, sys, torch
from PIL import Image
import open_clip
from open_clip.factory import _MODEL_CONFIGS
from open_clip.tokenizer import HFTokenizer
d, image, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
cfg = json.load(open(d + "/open_clip_config.json"))
m = cfg["model_cfg"]
m["text_cfg"]["hf_model_name"] = d
m["text_cfg"]["hf_tokenizer_name"] = d
_MODEL_CONFIGS["bench_local"] = m
model, _, preprocess = open_clip.create_model_and_transforms(
    "bench_local", pretrained=d + "/open_clip_pytorch_model.bin", pretrained_hf=False,
    **{f"image_{k}": v for k, v in cfg["preprocess_cfg"].items()})
model.eval()
tokenizer = HFTokenizer(d, context_length=256)
labels = sys.argv[4:]
with torch.no_grad():
    img = preprocess(Image.open(image)).unsqueeze(0)
    texts = tokenizer(["this is a photo of " + l for l in labels])
    f_img, f_txt, scale = model(img, texts)
    probs = (scale * f_img @ f_txt.t()).softmax(dim=-1)
print(labels[int(probs.argmax())])
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--captions", type=int, default=1000)
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--skip-onnx", action="store_true")
    args = ap.parse_args()
    d = args.model.resolve()
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1")
    results = {}  # work -> {engine: value}

    def put(work, engine, value):
        results.setdefault(work, {})[engine] = value

    print("building the engine ...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "biomedclip-cli"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "biomedclip", "--example", "bench"],
                   cwd=ROOT, check=True)
    cap_file = Path(tempfile.mkdtemp()) / "captions.txt"
    caps = captions(args.captions)
    cap_file.write_text("\n".join(caps) + "\n")

    print("ours ...", file=sys.stderr)
    _, _, out = run_measured([str(ROOT / "target/release/examples/bench"), str(d), "--seconds",
                              str(args.seconds), "--batches", "1,8,32", "--texts", str(cap_file)], env)
    for line in out.splitlines():
        r = json.loads(line)
        put(r["work"], "ours", r["per_second"])
    print("ours, int8 image tower ...", file=sys.stderr)
    _, _, out = run_measured([str(ROOT / "target/release/examples/bench"), str(d), "--seconds",
                              str(args.seconds), "--batches", "1,8,32", "--precision", "int8",
                              "--no-text"], env)
    int8 = {json.loads(line)["work"]: json.loads(line)["per_second"] for line in out.splitlines()}

    # Cold starts first: a child forked from a process that already holds PyTorch and a model
    # would report the parent's memory as its own peak.
    print("cold start ...", file=sys.stderr)
    labels = [a for l in LABELS for a in ("--label", l)]
    ours_cold = [run_measured([str(ROOT / "target/release/biomedclip"), "classify", "--model", str(d),
                               *labels, str(IMAGE)], env) for _ in range(args.cold_runs)]
    py_cold = [run_measured([sys.executable, "-c", COLD_PYTORCH, str(d), str(IMAGE), str(args.threads), *LABELS],
                            env) for _ in range(args.cold_runs)]
    put("cold_start_seconds", "ours", statistics.median(r[0] for r in ours_cold))
    put("cold_start_seconds", "pytorch", statistics.median(r[0] for r in py_cold))
    put("cold_start_peak_rss_mb", "ours", max(r[1] for r in ours_cold))
    put("cold_start_peak_rss_mb", "pytorch", max(r[1] for r in py_cold))
    top_ours, top_py = ours_cold[0][2].splitlines()[1].split(":")[0], py_cold[0][2].strip()
    if top_ours != top_py:
        print(f"warning: top label differs: ours {top_ours!r}, PyTorch {top_py!r}", file=sys.stderr)

    print("PyTorch ...", file=sys.stderr)
    import torch
    import make_fixtures as mf
    from open_clip.tokenizer import HFTokenizer
    torch.set_num_threads(args.threads)
    cfg = json.loads((d / "open_clip_config.json").read_text())
    model = mf.build_model(d, cfg, json.loads((d / "config.json").read_text()), None)
    sd = torch.load(d / "open_clip_pytorch_model.bin", map_location="cpu")
    sd.pop("text.transformer.embeddings.position_ids", None)
    model.load_state_dict(sd)
    model.eval()
    tok = HFTokenizer(str(d), context_length=256)
    images = {b: torch.randn(b, 3, 224, 224) for b in (1, 8, 32)}
    with torch.no_grad():
        for b, x in images.items():
            put(f"image_batch_{b}", "pytorch", rate(args.seconds, b, lambda: model.encode_image(x)))
        prompts = tok(["this is a photo of " + l for l in LABELS])
        put("text_prompts", "pytorch", rate(args.seconds, len(LABELS), lambda: model.encode_text(prompts)))
        # The reference pads every caption to 256 tokens, so its cost per caption does not
        # depend on the caption: 64 of them measure its rate without minutes of waiting.
        cap_ids = tok(caps[:64])

        def some_captions():
            for i in range(0, len(cap_ids), 32):
                model.encode_text(cap_ids[i:i + 32])
        put("text_captions", "pytorch", rate(args.seconds, len(cap_ids), some_captions))

    if not args.skip_onnx:
        print("ONNX Runtime ...", file=sys.stderr)
        import onnxruntime as ort
        onnx_path = Path(tempfile.mkdtemp()) / "visual.onnx"

        class Visual(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m.encode_image(x)

        torch.onnx.export(Visual(model), images[1], str(onnx_path), input_names=["pixels"],
                          output_names=["features"], dynamic_axes={"pixels": {0: "batch"}},
                          opset_version=17, dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        for b, x in images.items():
            xn = x.numpy()
            put(f"image_batch_{b}", "onnxruntime", rate(args.seconds, b, lambda: sess.run(None, {"pixels": xn})))
    # Our int8 image tower against the peers' fp32 (the target compares it with PyTorch fp32).
    for work, value in int8.items():
        results[f"{work} (ours int8)"] = {**results.get(work, {}), "ours": value}
    print_table(results, args)


def print_table(results, args):
    flags = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "avx_vnni")
                flags = " ".join(f for f in line.split(":")[1].split() if f in wanted)
                break
        model = next(l.split(":")[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    print(f"\nMachine: {model}, {os.cpu_count()} cores, flags: {flags}; threads {args.threads}; "
          f"{args.seconds:.0f} s per measurement\n")
    print("| work | ours | PyTorch | ONNX Runtime | ours / PyTorch | ours / ORT |")
    print("|---|---|---|---|---|---|")
    units = {"cold_start_seconds": "s", "cold_start_peak_rss_mb": "MB"}
    lower_is_better = {"cold_start_seconds", "cold_start_peak_rss_mb"}
    for work, r in results.items():
        unit = units.get(work, "/s")
        cell = lambda e: f"{r[e]:.2f} {unit}" if e in r else "-"
        def ratio(peer):
            if peer not in r or "ours" not in r:
                return "-"
            x = r[peer] / r["ours"] if work in lower_is_better else r["ours"] / r[peer]
            return f"{x:.2f}x"
        print(f"| {work} | {cell('ours')} | {cell('pytorch')} | {cell('onnxruntime')} | "
              f"{ratio('pytorch')} | {ratio('onnxruntime')} |")
    if "image_batch_1" in results:
        r = results["image_batch_1"]
        lat = " / ".join(f"{e} {1000 / v:.0f} ms" for e, v in r.items())
        print(f"\nImage latency at batch 1: {lat}.")
    print("\nRatios are speed-ups (for cold start and memory: how many times less). Rows marked "
          "'ours int8' run our image tower with --precision int8 against the peers in fp32.")


if __name__ == "__main__":
    main()
