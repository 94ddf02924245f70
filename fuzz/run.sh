#!/usr/bin/env bash
# Runs every fuzz target (fuzz_targets/*.rs) for a bounded time (default 60 s each) and prints,
# per target, the executions libFuzzer reports and whether it found a crash. Exits 1 when any
# target crashed or failed to build or run, 2 when cargo-fuzz is missing.
#
#   cargo install cargo-fuzz --locked      # once; needs a nightly toolchain
#   fuzz/run.sh [seconds-per-target]
#   FUZZ_ARGS="-jobs=2" fuzz/run.sh 20     # extra libFuzzer options, appended
#
# The seeds in corpus/<target>/ are read only; what libFuzzer discovers goes to
# generated/<target>/ (git-ignored), crash inputs to artifacts/<target>/ (git-ignored), the
# log of each run to generated/<target>.log. Builds with `cargo +nightly fuzz run` from scratch
# when needed (the build is not part of the time limit).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
# Each input gets at most 10 s: a hang is reported as a crash rather than eating the run.
read -r -a extra <<<"${FUZZ_ARGS:-}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed for the nightly toolchain: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

status=0
for source in fuzz_targets/*.rs; do
    target=$(basename "$source" .rs)
    mkdir -p "generated/$target" "artifacts/$target"
    log="generated/$target.log"
    crashes_before=$(find "artifacts/$target" -type f | wc -l)
    if cargo +nightly fuzz run "$target" "generated/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${extra[@]}" \
        >"$log" 2>&1; then
        result="no crash"
    else
        status=1
        crashes_after=$(find "artifacts/$target" -type f | wc -l)
        if [ "$crashes_after" -gt "$crashes_before" ]; then
            result="CRASH: input in artifacts/$target/, log in $log"
        else
            result="FAILED without a crash input (build or run error): see $log"
        fi
    fi
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
    corpus=$(find "generated/$target" -type f | wc -l)
    printf '%-18s %ss  executions: %-10s corpus grown to %-5s %s\n' \
        "$target" "$seconds" "$runs" "$corpus" "$result"
done
exit "$status"
