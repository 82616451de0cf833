#!/usr/bin/env bash
# `biomedclip serve` under load against `biomedclip embed` offline, on one machine in one run:
#   offline batch throughput and batch-1 latency of the CLI (differential: the cost of more
#   images, start-up subtracted), then the server with the load tool at 16 clients x 1 image,
#   at 1 client, and past its request limit.
# Usage: tools/bench/serve.sh MODEL_DIR [PRECISION] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:?usage: serve.sh MODEL_DIR [PRECISION] [SECONDS]}
precision=${2:-f32}
seconds=${3:-30}
image=crates/biomedclip/tests/fixtures/images/rgb_photo.jpg

cargo build --release -q -p biomedclip-cli
cargo build --release -q -p biomedclip-server --example load
cargo build --release -q -p biomedclip --example bench
bin=target/release/biomedclip
load=target/release/examples/load

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "flags: $(grep -o -w -E 'fma|avx2|avx512f|avx512_vnni|avx512_bf16' /proc/cpuinfo | sort -u | xargs)"
echo "precision $precision, model $model"

work=$(mktemp -d)
trap 'rm -rf "$work"; kill $(jobs -p) 2>/dev/null || true' EXIT
mkdir "$work/few" "$work/many"
for i in $(seq 1 8); do cp "$image" "$work/few/$i.jpg"; done
for i in $(seq 1 72); do cp "$image" "$work/many/$i.jpg"; done

wall() { local s; s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc -l; }
embed() { "$bin" embed --model "$model" --precision "$precision" "$@"; }

embed --image "$work/few" >/dev/null   # warm the page cache
t_few=$(wall embed --image "$work/few")
t_many=$(wall embed --image "$work/many")
cli_rate=$(echo "64 / ($t_many - $t_few)" | bc -l)
# Batch-1 latency from whole processes is noisy (start-up varies by +-100 ms): the median of
# seven differences, and the engine's own batch-1 time from the bench example.
diffs=()
for _ in $(seq 1 7); do
    t_text=$(wall embed --text x)
    t_one=$(wall embed --text x --image "$image")
    diffs+=("$(echo "($t_one - $t_text) * 1000" | bc -l)")
done
cli_latency=$(printf '%s\n' "${diffs[@]}" | sort -g | sed -n 4p)
printf 'cli embed: %.2f images/s offline (72 vs 8 images), batch-1 image latency %.0f ms (median of 7 process pairs)\n' "$cli_rate" "$cli_latency"
target/release/examples/bench "$model" --precision "$precision" --batches 1,32 --no-text --seconds 10 |
    sed 's/^/engine (library, no decoding): /'

serve() {
    "$bin" serve --model "$model" --precision "$precision" --port 0 "$@" 2>"$work/serve.log" &
    for _ in $(seq 1 600); do
        url=$(grep -o 'http://[0-9.:]*' "$work/serve.log" | head -1 || true)
        if [ -n "$url" ] && curl -sf "$url/health" >/dev/null 2>&1; then return; fi
        sleep 0.1
    done
    echo "the server did not start"; cat "$work/serve.log"; exit 1
}

serve
echo "--- 16 clients, 1 image per request"
"$load" --url "$url" --concurrency 16 --seconds "$seconds" --image "$image"
echo "--- 1 client, 1 image per request"
"$load" --url "$url" --concurrency 1 --seconds "$seconds" --image "$image"
kill %1; wait %1 || true

serve --max-concurrent-requests 8
echo "--- 32 clients against --max-concurrent-requests 8"
"$load" --url "$url" --concurrency 32 --seconds "$seconds" --image "$image"
kill %1; wait %1 || true
