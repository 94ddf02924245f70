#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each) and prints, per target, the
# executions libFuzzer reports and whether it found a crash.
#
#   cargo install cargo-fuzz --locked      # once; needs a nightly toolchain
#   fuzz/run.sh [seconds-per-target]
#
# The seeds in corpus/<target>/ are read only; what libFuzzer discovers goes to
# generated/<target>/ (git-ignored), crashes to artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
status=0
for target in oidc_response entra_response claims_merge jwt_claims tenant_resolution; do
    mkdir -p "generated/$target"
    log="generated/$target.log"
    if cargo +nightly fuzz run "$target" "generated/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        result="no crash"
    else
        result="CRASH (see $log and artifacts/$target/)"
        status=1
    fi
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
    corpus=$(find "generated/$target" -type f | wc -l)
    printf '%-18s %ss  executions: %-10s corpus grown to %-5s %s\n' \
        "$target" "$seconds" "$runs" "$corpus" "$result"
done
exit "$status"
