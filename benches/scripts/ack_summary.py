#!/usr/bin/env python3
"""One line per store_bench.py run for ack-latency comparisons (issue 19):
client ack p50/p99/p99.9/max, accepted and sink spans/s, the server-side
parts (mean / p99 ms of ack, decode, append, group wait, write, fsync, and
rotation with the rotation count, where the collector reports them),
appends per fsync, and the collector's thread groups (CPU s / run-queue s).

    store_bench.py ... | tail -n 1 | ack_summary.py LABEL RATE LOADAVG
"""
import json
import sys

label, rate, load = sys.argv[1], sys.argv[2], sys.argv[3]
line = sys.stdin.read().strip()
try:
    r = json.loads(line)
except ValueError:
    print(f"{label:10s} rate {rate}: no result: {line[-300:]}")
    sys.exit(0)
lg = r.get("loadgen", {})
parts = r.get("ack_parts", {})


def part(k):
    h = parts.get(k)
    return f"{h['mean_ms']:.2f}/{h['p99_ms']:.2f}" if h else "-"


names = [("ack", "receiver_ack"), ("dec", "receiver_decode"), ("app", "wal_append"),
         ("gw", "wal_group_wait"), ("wr", "wal_write"), ("fs", "wal_fsync"),
         ("rot", "wal_rotate")]
threads = " ".join(f"{k}={v['cpu_s']}/{v['runq_wait_s']}"
                   for k, v in r.get("threads_during_load", {}).items())
print(f"{label:10s} rate {rate} load {load} | client ack p50 {lg.get('ack_p50_ms')} "
      f"p99 {lg.get('ack_p99_ms')} p99.9 {lg.get('ack_p999_ms')} max {lg.get('ack_max_ms')} ms"
      f" | accepted {round(lg.get('accepted_spans_per_sec') or 0)}/s sink {r.get('sink_spans_per_s')}/s"
      f" refused {lg.get('refused_requests')} failed {lg.get('failed_requests')}"
      f" | server mean/p99 ms: " + " ".join(f"{n} {part(k)}" for n, k in names) +
      f" | rotations {(parts.get('wal_rotate') or {}).get('count', '-')}"
      f" (unprepared {r.get('wal_rotations_unprepared', '-')})"
      f" | appends/fsync {r.get('wal_appends_per_fsync')}"
      f" | cpu-s/1M {r.get('collector_cpu_s_per_million_committed')}"
      f" | threads cpu/runq s: {threads}", flush=True)
