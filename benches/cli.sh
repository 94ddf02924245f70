#!/usr/bin/env bash
# The CLI inside a pipeline job, timed with hyperfine: a call served from the job's persistent
# token cache file against the same binary's `--version` (the cost of starting it at all), and a
# call that goes to the network each time (`--no-persistent-cache`).
#
#   benches/cli.sh [runs]        # default 200 runs per command; needs hyperfine (Debian package)
#
# Builds the release binaries, starts the emulator standalone (plain http on loopback, as an
# agent's job would reach Azure DevOps and Entra ID), points the pipeline's variables at it, and
# writes hyperfine's results to target/cli-bench.json (benches/charts.py reads them).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-200}"
command -v hyperfine >/dev/null || { echo "hyperfine is not installed (apt-get install hyperfine)" >&2; exit 1; }
cargo build --release -p azure_pipelines_token -p azure_pipelines_emulator --quiet
target="${CARGO_TARGET_DIR:-target}"
cli="$target/release/azure-pipelines-token"
emulator_out=$(mktemp)
"$target/release/azure-pipelines-emulator" --http >"$emulator_out" 2>&1 &
emulator=$!
agent_temp=$(mktemp -d)
trap 'kill "$emulator" 2>/dev/null; rm -rf "$agent_temp" "$emulator_out"' EXIT
for _ in $(seq 100); do grep -q '^# Serving' "$emulator_out" && break; sleep 0.05; done
# The exports of a pipeline step, as the emulator prints them.
eval "$(grep '^export ' "$emulator_out")"
export AGENT_TEMPDIRECTORY="$agent_temp"
"$cli" --output token >/dev/null   # the first call of the job fills the cache file
hyperfine --warmup 10 --runs "$runs" -N --export-json "$target/cli-bench.json" \
    --command-name "starting the binary (--version)" "$cli --version" \
    --command-name "from the cache file" "$cli --output token" \
    --command-name "to the network (--no-persistent-cache)" "$cli --output token --no-persistent-cache"
