#!/usr/bin/env bash
# Builds the fuzz targets on stable Rust with libFuzzer (libfuzzer-sys) and the
# sanitizer-coverage instrumentation cargo-fuzz uses (minus the sanitizers, which need nightly).
set -euo pipefail
cd "$(dirname "$0")"
TRIPLE="${TRIPLE:-$(rustc -vV | sed -n 's/^host: //p')}"
# --target is passed so that RUSTFLAGS reach the fuzzed code but not build scripts or
# proc macros (as cargo-fuzz does).
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
 -Cllvm-args=-sanitizer-coverage-stack-depth \
 --cfg fuzzing \
 -Cdebug-assertions \
 -Coverflow-checks ${RUSTFLAGS:-}"
exec nice -n 19 cargo build --release --target "$TRIPLE" --target-dir target --bins "$@"
