#!/usr/bin/env python3
"""Prints criterion results as a markdown table for docs/benchmarks.md: one row
per benchmark group, ferrotrace beside opentelemetry_sdk (median time per
iteration with criterion's 95% confidence interval, and the ratio).

Usage: python3 benches/scripts/criterion_table.py [CRITERION_DIR] [GROUP_PREFIX...]
(CRITERION_DIR defaults to $CARGO_TARGET_DIR/criterion or ~/.cache/ferrotrace/target/criterion)
"""

import json
import os
import sys


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def load(path):
    with open(path) as f:
        e = json.load(f)["median"]
    return e["point_estimate"], e["confidence_interval"]["lower_bound"], \
        e["confidence_interval"]["upper_bound"]


def main():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/ferrotrace/target"))
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(target, "criterion")
    prefixes = sys.argv[2:]
    rows = {}
    for dirpath, _dirs, files in os.walk(root):
        if "benchmark.json" not in files or os.path.basename(dirpath) != "new":
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            b = json.load(f)
        group, func = b["group_id"], b["function_id"] or ""
        if prefixes and not any(group.startswith(p) for p in prefixes):
            continue
        rows.setdefault(group, {})[func] = load(os.path.join(dirpath, "estimates.json"))
    print("| benchmark | ferrotrace | opentelemetry_sdk 0.33 | ferrotrace / otel |")
    print("|---|---|---|---|")
    for group in sorted(rows):
        r = rows[group]
        ft, ot = r.get("ferrotrace"), r.get("opentelemetry_sdk")
        cell = lambda v: f"{fmt(v[0])} ({fmt(v[1])} – {fmt(v[2])})" if v else "–"
        ratio = f"{ft[0] / ot[0]:.2f}" if ft and ot else "–"
        print(f"| `{group}` | {cell(ft)} | {cell(ot)} | {ratio} |")
        for func in sorted(set(r) - {"ferrotrace", "opentelemetry_sdk"}):
            print(f"| `{group}` ({func}) | {cell(r[func])} | | |")


if __name__ == "__main__":
    main()
