"""Search speed side by side: `biomedclip-collection` against faiss-cpu on the same vectors.

    python tools/bench/search.py [--rows 1000000] [--hnsw-rows 100000] [--queries 1000]

The Rust example `search_bench` writes a collection of unit vectors (512 dimensions, clustered
around 2,048 centres like real embeddings) and the queries; then each engine runs in its own
process on those files, so each one's peak memory is its own: exact top-10 at batch 1 and 64
(faiss `IndexFlatIP`), and HNSW (usearch, f32 storage, against faiss `IndexHNSWFlat` with the
same M and efConstruction) build time, QPS and recall@10 against exact at each ef. Prints a
Markdown table with the ratios and the CPU's flags. Needs `pip install -r
tools/bench/requirements-search.txt`.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "target/release/examples/search_bench"
K = 10


def rust(*args, quantization=None):
    env = dict(os.environ, QUANT=quantization) if quantization else None
    done = subprocess.run([str(EXAMPLE), *map(str, args)], check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout) if done.stdout.strip() else None


def load(folder):
    import numpy as np

    base = np.load(folder / "img_emb/img_emb_0.npy", mmap_mode="r")
    queries = np.load(folder / "queries.npy")
    return base, queries


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def faiss_exact(folder):
    import faiss
    import numpy as np

    base, queries = load(folder)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base))
    index.search(queries[:1], K)
    singles = min(100, len(queries))
    t = time.perf_counter()
    for i in range(singles):
        index.search(queries[i : i + 1], K)
    b1 = (time.perf_counter() - t) * 1000 / singles
    batches = min(10, len(queries) // 64)
    t = time.perf_counter()
    for b in range(batches):
        index.search(queries[b * 64 : (b + 1) * 64], K)
    b64 = (time.perf_counter() - t) * 1000 / batches
    return {"rows": base.shape[0], "b1_ms": b1, "b64_ms": b64, "peak_rss_mb": peak_rss_mb()}


def faiss_hnsw(folder, m, ef_construction, efs, storage):
    import faiss
    import numpy as np

    base, queries = load(folder)
    base = np.ascontiguousarray(base)
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(base)
    _, truth = flat.search(queries, K)
    del flat
    if storage == "f16":
        index = faiss.IndexHNSWSQ(base.shape[1], faiss.ScalarQuantizer.QT_fp16, m, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexHNSWFlat(base.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    t = time.perf_counter()
    index.add(base)
    build = time.perf_counter() - t
    runs = []
    for ef in efs:
        index.hnsw.efSearch = ef
        index.search(queries[:1], K)
        t = time.perf_counter()
        _, found = index.search(queries, K)
        secs = time.perf_counter() - t
        hits = sum(len(set(f) & set(g)) for f, g in zip(found.tolist(), truth.tolist()))
        runs.append({"ef": ef, "qps": len(queries) / secs, "recall_at_10": hits / (K * len(queries))})
    return {"rows": base.shape[0], "m": m, "ef_construction": ef_construction, "build_s": build, "runs": runs, "peak_rss_mb": peak_rss_mb()}


def child(mode, *args):
    done = subprocess.run([sys.executable, __file__, "--child", mode, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def first_at(runs, recall):
    return next((r for r in runs if r["recall_at_10"] >= recall), None)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--hnsw-rows", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=128)
    p.add_argument("--efs", default="16,32,64,128,256")
    p.add_argument("--work", type=Path, default=Path("/tmp/biomedclip-search-bench"))
    p.add_argument("--child", nargs="+")
    p.add_argument("--skip-exact", action="store_true", help="only the HNSW comparison")
    p.add_argument("--storages", default="f32,f16,i8", help="our graphs' vector types to compare")
    a = p.parse_args()
    if a.child:
        mode, *rest = a.child
        if mode == "exact":
            print(json.dumps(faiss_exact(Path(rest[0]))))
        else:
            print(json.dumps(faiss_hnsw(Path(rest[0]), int(rest[1]), int(rest[2]), [int(e) for e in rest[3].split(",")], rest[4])))
        return
    if not EXAMPLE.exists():
        sys.exit("build it first: cargo build --release -p biomedclip-collection --example search_bench")
    import faiss

    flat, hnsw = a.work / "flat", a.work / "hnsw"
    for folder, rows in [(flat, a.rows), (hnsw, a.hnsw_rows)]:
        if folder == flat and a.skip_exact:
            continue
        if not (folder / "queries.npy").exists():
            folder.mkdir(parents=True, exist_ok=True)
            rust("generate", folder, rows, a.queries)
    if not a.skip_exact:
        ours_exact = rust("exact", flat)
        theirs_exact = child("exact", flat)
    efs = [int(e) for e in a.efs.split(",")]
    hnsw_runs = {}
    theirs = {}
    # Ours with i8 vectors (candidates re-scored exactly) against faiss's f32 graph.
    for storage, peer in (("f32", "f32"), ("f16", "f16"), ("i8", "f32")):
        if storage not in a.storages.split(","):
            continue
        if peer not in theirs:
            theirs[peer] = child("hnsw", hnsw, a.m, a.ef_construction, a.efs, peer)
        hnsw_runs[storage] = (
            rust("hnsw", hnsw, a.m, a.ef_construction, *efs, quantization=storage),
            theirs[peer],
        )

    flags = [f for f in open("/proc/cpuinfo").read().split("flags\t\t: ")[1].split("\n")[0].split() if f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16")]
    model = open("/proc/cpuinfo").read().split("model name\t: ")[1].split("\n")[0]
    print(f"CPU: {model}, {len(os.sched_getaffinity(0))} cores, flags {' '.join(flags)}; faiss-cpu {faiss.__version__}")
    if not a.skip_exact:
        print()
        print(f"Exact top-{K}, {ours_exact['rows']:,} x 512 f32, {a.queries} queries")
        print()
        print("| | biomedclip | faiss IndexFlatIP | faiss / ours |")
        print("|---|---:|---:|---:|")
        for key, name in [("b1_ms", "latency, batch 1 (ms)"), ("b64_ms", "latency, batch 64 (ms)")]:
            print(f"| {name} | {ours_exact[key]:.1f} | {theirs_exact[key]:.1f} | {theirs_exact[key] / ours_exact[key]:.2f} |")
        print(f"| peak RSS (MB) | {ours_exact['peak_rss_mb']:.0f} | {theirs_exact['peak_rss_mb']:.0f} | |")
    for storage, (ours, theirs) in hnsw_runs.items():
        peer = "IndexHNSWSQ (QT_fp16)" if storage == "f16" else "IndexHNSWFlat (f32)"
        how = f"{storage} vectors"
        if storage != "f32":
            how += f", the {4 * K} best candidates re-scored exactly (ef below {4 * K} acts as {4 * K})"
        print()
        print(f"HNSW, {ours['rows']:,} x 512, M {a.m}, efConstruction {a.ef_construction}, {how}: usearch ({ours['simd']} kernels) against faiss {peer}")
        print()
        print("| ef | biomedclip QPS | recall@10 | faiss QPS | recall@10 |")
        print("|---:|---:|---:|---:|---:|")
        for o, t in zip(ours["runs"], theirs["runs"]):
            print(f"| {o['ef']} | {o['qps']:.0f} | {o['recall_at_10']:.4f} | {t['qps']:.0f} | {t['recall_at_10']:.4f} |")
        print()
        o95, t95 = first_at(ours["runs"], 0.95), first_at(theirs["runs"], 0.95)
        print(f"- build: biomedclip {ours['build_s']:.1f} s, faiss {theirs['build_s']:.1f} s (faiss / ours {theirs['build_s'] / ours['build_s']:.2f})")
        if o95 and t95:
            print(f"- QPS at the first ef reaching recall@10 >= 0.95: biomedclip {o95['qps']:.0f} (ef {o95['ef']}), faiss {t95['qps']:.0f} (ef {t95['ef']}), ours / faiss {o95['qps'] / t95['qps']:.2f}")
        print(f"- peak RSS: biomedclip {ours['peak_rss_mb']:.0f} MB, faiss {theirs['peak_rss_mb']:.0f} MB (faiss also held a flat index for the ground truth)")


if __name__ == "__main__":
    main()
