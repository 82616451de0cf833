#!/usr/bin/env bash
# Reproduces crash files and prints what happened: the panic message and the top frames, or
# for an out-of-memory input the stack of the first allocation over 200 MB (through gdb,
# since without a sanitizer libFuzzer cannot show where memory went).
#
#   fuzz/repro.sh <target> <file>...
set -uo pipefail
cd "$(dirname "$0")"
t="$1"; shift
BIN="target/$(rustc -vV | sed -n 's/^host: //p')/release/$t"
for f in "$@"; do
    echo "=== $t $f ($(stat -c %s "$f") bytes)"
    out=$(RUST_BACKTRACE=1 timeout 60 nice -n 19 "$BIN" -rss_limit_mb=1536 -timeout=10 "$f" 2>&1)
    echo "$out" | grep -m1 -A1 -E "panicked at|memory allocation of|ERROR: libFuzzer" | head -2
    echo "$out" | grep -E "^ +[0-9]+: " | grep -vE "std::|core::|panicking|rust_begin_unwind|__rustc|libfuzzer|fuzzer::" \
        | head -8
    echo "$out" | grep -E "^ +at /" | grep -v "/rustc/" | head -8
    if echo "$out" | grep -qE "out-of-memory|timeout"; then
        echo "--- first allocation over 200 MB:"
        timeout 120 nice -n 19 gdb -q -batch -ex "break main" -ex run -ex delete \
            -ex 'break __libc_malloc if $rdi > 200000000' \
            -ex 'break __libc_calloc if $rdi * $rsi > 200000000' \
            -ex 'break __libc_realloc if $rsi > 200000000' \
            -ex 'break posix_memalign if $rdx > 200000000' \
            -ex continue -ex 'info registers rdi rsi rdx' -ex 'bt 40' \
            --args "$BIN" -rss_limit_mb=0 "$f" 2>&1 \
            | grep -E "^#|^r(di|si|dx) " | sed -E 's/0x[0-9a-f]+ in //; s/ \(.*\) at / at /' \
            | grep -vE "^#[0-9]+ +(alloc|__GI|__libc|fuzzer::|main|try_|grow|finish_grow|reserve|do_reserve|with_capacity|from_elem|to_vec)" | head -14
    fi
done
