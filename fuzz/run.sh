#!/usr/bin/env bash
# Builds the fuzz targets (stable Rust, libFuzzer through libfuzzer-sys) and runs each for
# the given number of seconds, one after the other.
#
#   fuzz/run.sh [seconds-per-target] [target...]
#
# Environment:
#   FORK=1      run in libFuzzer's -fork=1 mode with -ignore_crashes/-ignore_ooms/-ignore_timeouts,
#               so a target keeps going after a crash (each one is still written to artifacts/)
#   MERGE=1     afterwards, minimise the working corpus into corpus/<target> (-set_cover_merge=1)
#   NO_BUILD=1  skip the build
#   EXTRA="..." more libFuzzer flags
#   VMEM_MB=N   address-space limit (ulimit -v) of the fuzzer, default 2560: without a
#               sanitizer libFuzzer cannot see single huge allocations (-malloc_limit_mb needs
#               one), so they fail here instead, either as an Err through try_reserve or as an
#               abort naming the size ("memory allocation of N bytes failed"). 0 = no limit.
#   BIOMEDCLIP_FUZZ_SKIP=png8,...  known bugs the targets step around (README.md, Findings)
#
# Working corpora go to fuzz/work/<target> (seeded from fuzz/corpus/<target>), crash files to
# fuzz/artifacts/<target>/, logs to fuzz/logs/<target>.log. Everything runs under nice -n 19.
set -uo pipefail
cd "$(dirname "$0")"
SECS="${1:-60}"
shift || true
ALL=(image_decode dicom checkpoint safetensors config text)
TARGETS=("${@:-${ALL[@]}}")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
BIN="target/$TRIPLE/release"

max_len() {
    case "$1" in
        image_decode | dicom) echo 32768 ;;
        checkpoint) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

if [ -z "${NO_BUILD:-}" ]; then
    ./build.sh || { echo "build failed" >&2; exit 1; }
fi

# Scratch files (checkpoints and configs written per input) go to memory when possible.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    SCRATCH="/dev/shm/biomedclip-fuzz.$$"
else
    SCRATCH="$(mktemp -d)"
fi
mkdir -p "$SCRATCH" logs
trap 'rm -rf "$SCRATCH"' EXIT

# Runs a fuzzer binary niced, in the scratch directory, under the address-space limit.
limited() {
    (
        if [ "${VMEM_MB:-2560}" != 0 ]; then ulimit -v $(( ${VMEM_MB:-2560} * 1024 )); fi
        TMPDIR="$SCRATCH" exec nice -n 19 "$@"
    )
}

{ date -u; printf '%-13s %12s %8s %s\n' target executions seconds crashes; } >> logs/summary.txt
for t in "${TARGETS[@]}"; do
    mkdir -p "work/$t" "artifacts/$t" "corpus/$t"
    cp -n "corpus/$t"/* "work/$t"/ 2>/dev/null
    MODE=()
    if [ -n "${FORK:-}" ]; then
        MODE=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
    fi
    start=$(date +%s)
    # shellcheck disable=SC2086
    limited "$BIN/$t" "work/$t" \
        -artifact_prefix="artifacts/$t/" -max_total_time="$SECS" \
        -rss_limit_mb=1536 -malloc_limit_mb=1536 -timeout=10 -max_len="$(max_len "$t")" \
        -print_final_stats=1 "${MODE[@]}" ${EXTRA:-} > "logs/$t.log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1)
    if [ -n "${FORK:-}" ]; then
        execs=$(grep -o '^#[0-9]*: cov' "logs/$t.log" | tr -dc '0-9\n' | tail -1)
    fi
    crashes=$(find "artifacts/$t" -type f -newermt "@$start" | sort)
    printf '%-13s %12s %8s %s\n' "$t" "${execs:-?}" "$secs" "$(echo $crashes)" | tee -a logs/summary.txt
    if [ $rc -ne 0 ] && [ -z "${FORK:-}" ]; then
        echo "  $t exited with $rc; see logs/$t.log:" >&2
        grep -m3 -E 'panicked at|ERROR: libFuzzer|SUMMARY' "logs/$t.log" >&2
    fi
    if [ -n "${MERGE:-}" ]; then
        rm -rf "corpus/$t.new" && mkdir -p "corpus/$t.new"
        # Kept small for the repository: edges only (no hit counts, no comparisons), a greedy
        # set cover, inputs cut to 4 KiB. The full working corpus stays in work/<target>.
        limited "$BIN/$t" -set_cover_merge=1 -use_counters=0 -use_cmp=0 \
            "corpus/$t.new" "corpus/$t" "work/$t" \
            -rss_limit_mb=1536 -malloc_limit_mb=1536 -timeout=10 -max_len=4096 \
            > "logs/$t.merge.log" 2>&1 \
            && rm -rf "corpus/$t" && mv "corpus/$t.new" "corpus/$t"
        echo "  corpus/$t: $(ls "corpus/$t" | wc -l) files, $(du -sk "corpus/$t" | cut -f1) KiB"
    fi
done
