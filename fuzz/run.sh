#!/bin/sh
# Runs every fuzz target (or the ones named) for SECONDS each (default 180), one at a time,
# on stable Rust: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly-only flags, and
# `-s none` skips the sanitizer (the parsers fuzzed here are safe Rust; a panic, an
# overflow, a timeout or running out of memory is what is looked for).
# `-a` turns debug assertions (and with them integer-overflow checks) on.
# Generated corpora go to fuzz/corpus/TARGET (ignored); the committed seeds are read from
# fuzz/seeds/TARGET. Logs: fuzz/logs/TARGET.log (ignored).
set -eu
cd "$(dirname "$0")/.."
secs=${SECONDS_PER_TARGET:-180}
targets=${*:-"rtsp_interleaved rtsp_response onvif_metadata vapix_catalog ws_frame config routed_delivery"}
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O -a -s none
mkdir -p fuzz/logs
for t in $targets; do
    mkdir -p "fuzz/corpus/$t"
    echo "== $t (${secs}s)"
    cargo fuzz run -O -a -s none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 >"fuzz/logs/$t.log" 2>&1 || {
        echo "$t: FAILED, see fuzz/logs/$t.log and fuzz/artifacts/$t/"
        continue
    }
    grep -E '^#[0-9]+' "fuzz/logs/$t.log" | tail -1
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "fuzz/logs/$t.log"
done
