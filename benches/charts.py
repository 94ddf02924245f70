#!/usr/bin/env python3
"""Draws the charts of BENCHMARKS.md as SVG, from the benchmarks' own output.

    cargo bench --bench token_cache     # writes target/criterion/...
    benches/cli.sh                      # writes target/cli-bench.json
    benches/charts.py                   # writes benches/charts/*.svg

Reads criterion's estimates (mean per benchmark) and hyperfine's JSON; uses only the standard
library, so it runs wherever Python 3 does.
"""

import json
import os
import sys
from html import escape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
OUT = os.path.join(ROOT, "benches", "charts")

OURS = "#1f6feb"
THEIRS = "#d1242f"
FLOOR = "#8c959f"


def criterion_mean(group, bench):
    """Mean time in ns of one criterion benchmark, or None when it has not been run."""
    path = os.path.join(TARGET, "criterion", group, bench, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["mean"]["point_estimate"]
    except FileNotFoundError:
        return None


def bar_chart(title, unit, groups, path, note):
    """Horizontal bars: `groups` is [(group label, [(bar label, value, colour)])]."""
    width, left, right, bar, gap, top = 760, 290, 90, 22, 8, 56
    rows = sum(len(bars) for _, bars in groups) + len(groups)
    height = top + rows * (bar + gap) + 40
    peak = max(value for _, bars in groups for _, value, _ in bars)
    scale = (width - left - right) / peak
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="16" y="26" font-size="16" font-weight="bold">{escape(title)}</text>',
    ]
    y = top
    for group, bars in groups:
        svg.append(f'<text x="16" y="{y + 14}" font-weight="bold">{escape(group)}</text>')
        y += bar + gap
        for label, value, colour in bars:
            length = max(1.0, value * scale)
            svg.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
            svg.append(
                f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{bar}" fill="{colour}"/>'
            )
            svg.append(f'<text x="{left + length + 6:.1f}" y="{y + 15}">{value:.1f} {unit}</text>')
            y += bar + gap
    svg.append(f'<text x="16" y="{height - 14}" fill="#57606a">{escape(note)}</text>')
    svg.append("</svg>")
    os.makedirs(OUT, exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(svg) + "\n")
    print(f"wrote {os.path.relpath(path, ROOT)}")


def hit_chart():
    group = "2_cache_hits_per_thread"
    names = [
        ("floor_plus_boxed_future", "floor (clock, token clone, boxed future)", FLOOR),
        ("azure_pipelines_credential", "azure_pipelines_credential", OURS),
        ("azure_identity_1x", "azure_identity 1.x", THEIRS),
    ]
    groups = []
    for threads, label in [(1, "1 thread"), (2, "2 threads at once")]:
        bars = []
        for bench, name, colour in names:
            value = criterion_mean(group, f"{bench}_{threads}_threads")
            if value is None:
                print("no criterion results: run `cargo bench --bench token_cache` first",
                      file=sys.stderr)
                return
            bars.append((name, value, colour))
        groups.append((label, bars))
    bar_chart(
        "Cache hit: time per hit on each thread",
        "ns",
        groups,
        os.path.join(OUT, "hit_cost.svg"),
        "cargo bench --bench token_cache (group 2_cache_hits_per_thread)",
    )


def cli_chart():
    path = os.path.join(TARGET, "cli-bench.json")
    try:
        with open(path) as f:
            results = {r["command"]: r["mean"] * 1000 for r in json.load(f)["results"]}
    except FileNotFoundError:
        print("no CLI results: run benches/cli.sh first", file=sys.stderr)
        return
    start = results["starting the binary (--version)"]
    cached = results["from the cache file"]
    network = results["to the network (--no-persistent-cache)"]
    calls = 20
    bar_chart(
        "azure-pipelines-token in a pipeline job",
        "ms",
        [
            (
                "one call",
                [
                    ("starting the binary (--version)", start, FLOOR),
                    ("a call served from the cache file", cached, OURS),
                    ("a call without the cache file", network, THEIRS),
                ],
            ),
            (
                f"{calls} calls in one job",
                [
                    ("with the cache file", network + (calls - 1) * cached, OURS),
                    ("without it", calls * network, THEIRS),
                ],
            ),
        ],
        os.path.join(OUT, "cli_calls.svg"),
        "benches/cli.sh (hyperfine, emulator on loopback); 20 calls: the first fills the file",
    )


if __name__ == "__main__":
    hit_chart()
    cli_chart()
