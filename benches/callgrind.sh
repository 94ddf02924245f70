#!/usr/bin/env bash
# Instructions per cache hit, counted by callgrind: repeatable whatever else the machine does,
# so they back the timing ratios of benches/token_cache.rs.
#
#   benches/callgrind.sh [hits]        # default 20000 hits per subject
#
# Then the cold starts: instructions of the whole process (client, emulator, runtime) per cold
# start of a new credential, with 1 and with 1,000 concurrent callers, less a run that makes
# none; the emulator's share is the same for both crates.
#
# Builds the `instructions` bench in release mode, runs it under valgrind once per subject
# (the floor, the floor in a boxed future, that one reading the token through arc-swap, the floor
# as a TokenCredential, this crate, azure_identity 1.x), counts only the
# instructions executed inside `hit` (the exact name: a pattern would also match the closure
# inside it, and callgrind toggles collection on every match) and prints instructions per hit,
# in all and outside glibc's allocator, with the ratios to the boxed floor. Prints Markdown
# tables; BENCHMARKS.md quotes them.
set -euo pipefail
cd "$(dirname "$0")/.."
hits="${1:-20000}"
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
binary=$(cargo bench --bench instructions --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*instructions[^"]*"' | head -n 1 | cut -d'"' -f4)
[ -x "$binary" ] || { echo "could not build the instructions bench" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
declare -A per_hit in_alloc
for subject in floor floor_boxed floor_swap floor_trait ours theirs; do
    valgrind --tool=callgrind --callgrind-out-file="$out/$subject" \
        --toggle-collect='instructions::hit' "$binary" "$subject" "$hits" >/dev/null 2>"$out/$subject.log"
    total=$(grep -E '^(summary|totals):' "$out/$subject" | head -n 1 | awk '{print $2}')
    per_hit[$subject]=$((total / hits))
    # glibc's malloc and free: the token's 1,044-byte chunk is past the thread cache, and what
    # the bins cost for it depends on the heap's history (98 to 348 instructions per hit between
    # runs of the same binary), so the allocator's share is counted apart.
    alloc=$(callgrind_annotate --threshold=100 "$out/$subject" 2>/dev/null \
        | grep -E '^ *[0-9,]+ .*malloc/(malloc|arena)\.c:' | awk '{gsub(",", "", $1); s += $1} END {print s + 0}')
    in_alloc[$subject]=$((alloc / hits))
done
own() { echo $(( per_hit[$1] - in_alloc[$1] )); }
floor_boxed=${per_hit[floor_boxed]}
floor_own=$(own floor_boxed)
echo "| subject | instructions per hit | of which glibc malloc/free | outside the allocator | vs floor + boxed future (total) | (outside the allocator) |"
echo "|---|---|---|---|---|---|"
for subject in floor floor_boxed floor_swap floor_trait ours theirs; do
    ratio=$(awk -v a="${per_hit[$subject]}" -v b="$floor_boxed" 'BEGIN { printf "%.2f", a / b }')
    ratio_own=$(awk -v a="$(own "$subject")" -v b="$floor_own" 'BEGIN { printf "%.2f", a / b }')
    echo "| $subject | ${per_hit[$subject]} | ${in_alloc[$subject]} | $(own "$subject") | ${ratio}× | ${ratio_own}× |"
done

cold_rounds=40
run_cold() { # subject callers rounds -> total instructions
    valgrind --tool=callgrind --callgrind-out-file="$out/cold" "$binary" cold "$1" "$2" "$3" \
        >/dev/null 2>"$out/cold.log"
    grep -E '^(summary|totals):' "$out/cold" | head -n 1 | awk '{print $2}'
}
base=$(run_cold ours 1 0)
echo
echo "| cold start (whole process, per round) | azure_pipelines_credential | azure_identity 1.x | ratio |"
echo "|---|---|---|---|"
for callers in 1 1000; do
    rounds=$cold_rounds
    [ "$callers" -gt 1 ] && rounds=$((cold_rounds / 4))
    ours=$(( ($(run_cold ours "$callers" "$rounds") - base) / rounds ))
    theirs=$(( ($(run_cold theirs "$callers" "$rounds") - base) / rounds ))
    ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')
    echo "| $callers caller(s) | $ours | $theirs | ${ratio}× |"
done
