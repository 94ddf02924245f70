#!/usr/bin/env bash
# Instructions per cache hit, counted by callgrind: repeatable whatever else the machine does,
# so they back the timing ratios of benches/token_cache.rs.
#
#   benches/callgrind.sh [hits]        # default 20000 hits per subject
#
# Builds the `instructions` bench in release mode, runs it under valgrind once per subject
# (the floor, the floor in a boxed future, the floor as a TokenCredential, this crate,
# azure_identity 1.x), counts only the
# instructions executed inside `hit` (the exact name: a pattern would also match the closure
# inside it, and callgrind toggles collection on every match) and prints instructions per hit, with the ratio to the
# boxed floor. Prints a Markdown table; BENCHMARKS.md quotes it.
set -euo pipefail
cd "$(dirname "$0")/.."
hits="${1:-20000}"
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
binary=$(cargo bench --bench instructions --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*instructions[^"]*"' | head -n 1 | cut -d'"' -f4)
[ -x "$binary" ] || { echo "could not build the instructions bench" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
declare -A per_hit
for subject in floor floor_boxed floor_trait ours theirs; do
    valgrind --tool=callgrind --callgrind-out-file="$out/$subject" \
        --toggle-collect='instructions::hit' "$binary" "$subject" "$hits" >/dev/null 2>"$out/$subject.log"
    total=$(grep -E '^(summary|totals):' "$out/$subject" | head -n 1 | awk '{print $2}')
    per_hit[$subject]=$((total / hits))
done
floor_boxed=${per_hit[floor_boxed]}
floor_trait=${per_hit[floor_trait]}
echo "| subject | instructions per hit | vs floor + boxed future | vs floor as a TokenCredential |"
echo "|---|---|---|---|"
for subject in floor floor_boxed floor_trait ours theirs; do
    ratio=$(awk -v a="${per_hit[$subject]}" -v b="$floor_boxed" 'BEGIN { printf "%.2f", a / b }')
    ratio_trait=$(awk -v a="${per_hit[$subject]}" -v b="$floor_trait" 'BEGIN { printf "%.2f", a / b }')
    echo "| $subject | ${per_hit[$subject]} | ${ratio}× | ${ratio_trait}× |"
done
