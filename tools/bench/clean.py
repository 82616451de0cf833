"""Text-clean speed, ours next to Python's, on the same machine in one run.

Times `ftfy.fix_text` and open_clip 2.23.0's whole clean (`whitespace_clean(basic_clean(s))`)
over the differential corpus (crates/biomedclip/tests/fixtures/text/ftfy_corpus.jsonl.gz),
then runs `examples/clean_bench.rs` on the same strings; with --model, also the clean's
share of the text tower's time on bench.py's 1,000 figure captions.

    .venv-ref/bin/python tools/bench/clean.py [--model /tmp/biomedclip-full] [--seconds 3]
"""

import argparse
import gzip
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "crates/biomedclip/tests/fixtures/text/ftfy_corpus.jsonl.gz"
sys.path.insert(0, str(Path(__file__).parent))
from bench import captions  # noqa: E402


def rate(seconds, items, f):
    f()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        f()
        calls += 1
    return calls * items / (time.perf_counter() - start)


def cpu_flags():
    try:
        flags = open("/proc/cpuinfo").read().split("flags\t\t: ", 1)[1].split("\n", 1)[0].split()
        model = open("/proc/cpuinfo").read().split("model name\t: ", 1)[1].split("\n", 1)[0]
    except (OSError, IndexError):
        return platform.processor()
    keep = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]
    return f"{model}; " + " ".join(f for f in keep if f in flags)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--model", type=Path, help="full-size checkpoint, for the share of text time")
    args = ap.parse_args()

    import ftfy
    from open_clip.tokenizer import basic_clean, whitespace_clean

    inputs = [json.loads(line)["input"] for line in gzip.open(CORPUS, "rt", encoding="ascii")]
    caps = captions(1000)
    py = {
        "ftfy_corpus": rate(args.seconds, len(inputs), lambda: [ftfy.fix_text(s) for s in inputs]),
        "clean_corpus": rate(args.seconds, len(inputs),
                             lambda: [whitespace_clean(basic_clean(s)) for s in inputs]),
        "clean_captions": rate(args.seconds, len(caps),
                               lambda: [whitespace_clean(basic_clean(s)) for s in caps]),
    }
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "biomedclip",
                    "--example", "clean_bench"], cwd=ROOT, check=True)
    cap_file = Path(tempfile.mkdtemp()) / "captions.txt"
    cap_file.write_text("\n".join(caps) + "\n")
    cmd = [str(ROOT / "target/release/examples/clean_bench"), str(CORPUS),
           "--seconds", str(args.seconds), "--captions", str(cap_file)]
    if args.model:
        cmd += ["--model", str(args.model)]
    ours = {}
    for line in subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines():
        row = json.loads(line)
        ours[row["work"]] = row.get("per_second", row.get("fraction"))

    print(f"CPU: {cpu_flags()}")
    print(f"corpus: {len(inputs)} strings; captions: {len(caps)}")
    print("| work (strings/s) | ours | Python | ours / Python |")
    print("|---|---|---|---|")
    for work in ["ftfy_corpus", "clean_corpus", "clean_captions"]:
        print(f"| {work} | {ours[work]:,.0f} | {py[work]:,.0f} | {ours[work] / py[work]:.1f}x |")
    if "clean_share_of_text_time" in ours:
        print(f"text tower on the captions: {ours['text_captions']:.2f} captions/s; cleaning is "
              f"{100 * ours['clean_share_of_text_time']:.4f}% of the text time")


if __name__ == "__main__":
    main()
