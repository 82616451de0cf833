"""Side-by-side benchmark: this engine, PyTorch open_clip and ONNX Runtime on one checkpoint.

Runs everything in one invocation on the same machine and prints a Markdown table of
throughputs, latencies, cold-start times and peak memory with our ratio to each peer.
See BENCHMARKS.md. Usage:

    python tools/bench/bench.py --model /tmp/biomedclip-full [--seconds 4] [--rounds 3] [--threads 2]

Throughputs are measured in rounds, each engine once per round (ours first in odd rounds, the
peers first in even ones), so that the machine's drift from minute to minute falls on every
engine alike; the table gives each engine's median over the rounds and the median of the
per-round ratios.

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


EXPORT_ONNX = r'''
import sys, torch
from pathlib import Path
from bench import load_reference
d, out = Path(sys.argv[1]), sys.argv[2]
model = load_reference(d)


class Visual(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m.encode_image(x)


with torch.no_grad():
    torch.onnx.export(Visual(model), torch.randn(1, 3, 224, 224), out, input_names=["pixels"],
                      output_names=["features"], dynamic_axes={"pixels": {0: "batch"}},
                      opset_version=17, dynamo=False)
'''


# Our reduced precisions, each measured on the image tower against the peers' fp32.
REDUCED = ("int8", "bf16")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=4.0, help="per measurement and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--captions", type=int, default=1000)
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--skip-onnx", action="store_true")
    args = ap.parse_args()
    d = args.model.resolve()
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1")
    cold = {}  # work -> {engine: value}

    print("building the engine ...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "biomedclip-cli"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "biomedclip", "--example", "bench"],
                   cwd=ROOT, check=True)
    cap_file = Path(tempfile.mkdtemp()) / "captions.txt"
    caps = captions(args.captions)
    cap_file.write_text("\n".join(caps) + "\n")

    # Cold starts first: a child forked from a process that already holds PyTorch and a model
    # would report the parent's memory as its own peak.
    print("cold start ...", file=sys.stderr)
    labels = [a for l in LABELS for a in ("--label", l)]
    ours_cold = [run_measured([str(ROOT / "target/release/biomedclip"), "classify", "--model", str(d),
                               *labels, str(IMAGE)], env) for _ in range(args.cold_runs)]
    py_cold = [run_measured([sys.executable, "-c", COLD_PYTORCH, str(d), str(IMAGE), str(args.threads), *LABELS],
                            env) for _ in range(args.cold_runs)]
    cold["cold_start_seconds"] = {"ours": statistics.median(r[0] for r in ours_cold),
                                  "pytorch": statistics.median(r[0] for r in py_cold)}
    cold["cold_start_peak_rss_mb"] = {"ours": max(r[1] for r in ours_cold),
                                      "pytorch": max(r[1] for r in py_cold)}
    # The same job at each reduced precision (the CLI loads the image tower straight at it).
    for precision in REDUCED:
        runs = [run_measured([str(ROOT / "target/release/biomedclip"), "classify", "--model", str(d),
                              "--precision", precision, *labels, str(IMAGE)], env)
                for _ in range(args.cold_runs)]
        cold[f"cold_start_seconds (ours {precision})"] = {
            "ours": statistics.median(r[0] for r in runs), "pytorch": cold["cold_start_seconds"]["pytorch"]}
        cold[f"cold_start_peak_rss_mb (ours {precision})"] = {
            "ours": max(r[1] for r in runs), "pytorch": cold["cold_start_peak_rss_mb"]["pytorch"]}
    top_ours, top_py = ours_cold[0][2].splitlines()[1].split(":")[0], py_cold[0][2].strip()
    if top_ours != top_py:
        print(f"warning: top label differs: ours {top_ours!r}, PyTorch {top_py!r}", file=sys.stderr)

    print("loading PyTorch and ONNX Runtime ...", file=sys.stderr)
    peers = load_peers(d, args, caps)

    def ours(got):
        bench = [str(ROOT / "target/release/examples/bench"), str(d), "--seconds", str(args.seconds),
                 "--batches", "1,8,32"]
        _, _, out = run_measured([*bench, "--texts", str(cap_file)], env)
        for line in out.splitlines():
            r = json.loads(line)
            got.setdefault(r["work"], {})["ours"] = r["per_second"]
        # Our reduced-precision image towers against the peers' fp32 (the target compares them
        # with PyTorch fp32).
        for precision in REDUCED:
            _, _, out = run_measured([*bench, "--precision", precision, "--no-text"], env)
            for line in out.splitlines():
                r = json.loads(line)
                got.setdefault(f"{r['work']} (ours {precision})", {})["ours"] = r["per_second"]

    rounds = []
    for n in range(args.rounds):
        print(f"round {n + 1} of {args.rounds} ...", file=sys.stderr)
        got = {}
        steps = [ours, peers] if n % 2 == 0 else [peers, ours]
        for step in steps:
            step(got)
        for work in list(got):
            for precision in REDUCED:
                if work.endswith(f" (ours {precision})"):
                    fp32 = got.get(work.removesuffix(f" (ours {precision})"), {})
                    got[work].update({e: v for e, v in fp32.items() if e != "ours"})
        rounds.append(got)
    print_table(rounds, cold, args)


def load_reference(d):
    """The PyTorch open_clip model of the checkpoint in `d`, in eval mode."""
    import torch
    import make_fixtures as mf
    cfg = json.loads((d / "open_clip_config.json").read_text())
    model = mf.build_model(d, cfg, json.loads((d / "config.json").read_text()), None)
    sd = torch.load(d / "open_clip_pytorch_model.bin", map_location="cpu")
    sd.pop("text.transformer.embeddings.position_ids", None)
    model.load_state_dict(sd)
    model.eval()
    return model


def load_peers(d, args, caps):
    """PyTorch open_clip and ONNX Runtime on the checkpoint in `d`: a function that measures
    both and records their throughputs in the dict it is given."""
    import torch
    from open_clip.tokenizer import HFTokenizer
    torch.set_num_threads(args.threads)
    model = load_reference(d)
    tok = HFTokenizer(str(d), context_length=256)
    images = {b: torch.randn(b, 3, 224, 224) for b in (1, 8, 32)}
    prompts = tok(["this is a photo of " + l for l in LABELS])
    # The reference pads every caption to 256 tokens, so its cost per caption does not
    # depend on the caption: 64 of them measure its rate without minutes of waiting.
    cap_ids = tok(caps[:64])

    def some_captions():
        for i in range(0, len(cap_ids), 32):
            model.encode_text(cap_ids[i:i + 32])

    sess = None
    if not args.skip_onnx:
        import onnxruntime as ort
        onnx_path = Path(tempfile.mkdtemp()) / "visual.onnx"
        # Exported by a child process: exporting here left this process's PyTorch a third
        # slower on the text tower (prompts 1.96 -> 1.29 and 1.75 -> 1.20 per second in two
        # runs), which would flatter our ratios.
        subprocess.run([sys.executable, "-c", EXPORT_ONNX, str(d), str(onnx_path)], check=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT / "tools" / "bench")))
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])

    def measure(got):
        def put(work, engine, value):
            got.setdefault(work, {})[engine] = value
        with torch.no_grad():
            for b, x in images.items():
                put(f"image_batch_{b}", "pytorch", rate(args.seconds, b, lambda: model.encode_image(x)))
            put("text_prompts", "pytorch", rate(args.seconds, len(LABELS), lambda: model.encode_text(prompts)))
            put("text_captions", "pytorch", rate(args.seconds, len(cap_ids), some_captions))
        if sess is not None:
            for b, x in images.items():
                xn = x.numpy()
                put(f"image_batch_{b}", "onnxruntime", rate(args.seconds, b, lambda: sess.run(None, {"pixels": xn})))

    return measure


def print_table(rounds, cold, args):
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
          f"{len(rounds)} rounds of {args.seconds:g} s per measurement\n")
    print("| work | ours | PyTorch | ONNX Runtime | ours / PyTorch | ours / ORT |")
    print("|---|---|---|---|---|---|")
    engines = ("ours", "pytorch", "onnxruntime")
    for work in rounds[0]:
        per_round = [r.get(work, {}) for r in rounds]
        cells, ratios = [], []
        for e in engines:
            values = [r[e] for r in per_round if e in r]
            cells.append(f"{statistics.median(values):.2f} /s" if values else "-")
        for peer in engines[1:]:
            x = [r["ours"] / r[peer] for r in per_round if "ours" in r and peer in r]
            ratios.append(f"{statistics.median(x):.2f}x" if x else "-")
        print(f"| {work} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    for work, r in cold.items():
        fmt = "{:.2f} s" if work.startswith("cold_start_seconds") else "{:,.0f} MB"
        print(f"| {work} | {fmt.format(r['ours'])} | {fmt.format(r['pytorch'])} | - | "
              f"{r['pytorch'] / r['ours']:.2f}x | - |")
    print("\nPer-round ratios to PyTorch (ours / PyTorch, round by round):")
    for work in rounds[0]:
        x = [r[work]["ours"] / r[work]["pytorch"] for r in rounds
             if "ours" in r.get(work, {}) and "pytorch" in r.get(work, {})]
        print(f"- {work}: " + ", ".join(f"{v:.2f}x" for v in x))
    lat = []
    for e in engines:
        values = [r["image_batch_1"][e] for r in rounds if e in r.get("image_batch_1", {})]
        if values:
            lat.append(f"{e} {1000 / statistics.median(values):.0f} ms")
    if lat:
        print(f"\nImage latency at batch 1 (median): {' / '.join(lat)}.")
    print("\nRatios are speed-ups (for cold start and memory: how many times less); for throughputs "
          "the median of the per-round ratios. Rows marked 'ours int8' or 'ours bf16' run our image "
          "tower with that --precision against the peers in fp32.")


if __name__ == "__main__":
    main()
