#!/usr/bin/env python3
"""Instructions per span of the collector's ingest path with the null sink,
counted by callgrind: a cost measure that does not depend on the machine's load
(CPU seconds on a shared 2-core box move by 20-30% between runs; instruction
counts by well under 1%).

For each run it
  1. starts a release `ferrotrace-collector` (--storage null, fresh data dir)
     under `valgrind --tool=callgrind`, all threads counted together;
  2. sends --warmup spans with `loadgen --max-spans` (one-time costs: lazy
     statics, buffers and maps growing to size, the first WAL segment);
  3. zeroes the counters (`callgrind_control -z`), sends exactly --spans spans
     (`loadgen --max-spans`, distinct trace ids from the warm-up), waits until
     the sink task has handed every one of them to the null sink
     (`ferrotrace_sink_spans_written_total`), dumps the counters
     (`callgrind_control -d`): the whole process's instructions for those
     spans, receive -> decode -> WAL append + fsync -> ACK -> queue ->
     sampling -> rollups -> batcher -> sink task;
  4. with --idle-secs: zeroes again, waits that long with no load and dumps,
     to show what the timers (WAL disk-free check, memory guard, rollup
     flush) add per second of wall time, which the load window also contains;
  5. stops the collector (SIGTERM).

It prints one JSON object per run (instructions, per span, window seconds,
dump file). Compare versions with `callgrind_annotate --inclusive=yes FILE`.
Refused or failed requests would change the work done, so a run with any is
reported as invalid.

Usage (release binaries; the loadgen of any version can drive any collector):
  python3 benches/scripts/callgrind_ingest.py --collector DIR/ferrotrace-collector \
      --loadgen DIR/loadgen --batch 50 --spans 50000 --runs 3 --out /tmp/cg --label after

--route counts a router instead (issue 13): a backend collector (null sink, not
under callgrind) is started first and the collector under callgrind forwards
to it (`--route-to`, every [route] default); the window ends when the router
has forwarded every span (`ferrotrace_route_forwarded_spans_total`) and the
backend has received them all, plus one second for the router to release its
WAL segments. --route-toml adds keys to the router's [route] section.

--storage clickhouse counts a backend that stores into a throwaway
ClickHouse server (started here with store_bench.py's settings, not counted):
the collector's own instructions per stored span, the denominator of the
router's cost goal.
"""

import argparse
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def metric(text, name):
    total = None
    for line in text.splitlines():
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


def wait_until(pred, timeout, what, every=0.5):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def total_ir(path):
    """The `summary:` (or `totals:`) Ir of a callgrind dump."""
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise SystemExit(f"no summary line in {path}")


def dump(pid, out_prefix, already):
    """Asks callgrind to dump now; returns the new dump file."""
    subprocess.check_call(["callgrind_control", "-d", str(pid)], stdout=subprocess.DEVNULL)
    new = []
    wait_until(lambda: new.extend(set(glob.glob(out_prefix + "*")) - already - set(new)) or new,
               120, "the callgrind dump")
    # The file is complete once callgrind_control returned; wait for its size to settle anyway.
    time.sleep(0.5)
    return new[0]


def loadgen(args, port, spans, first_conn):
    cmd = [args.loadgen, "--protocol", "grpc", "--endpoint", f"127.0.0.1:{port}",
           "--connections", str(args.connections), "--batch", str(args.batch),
           "--max-spans", str(spans), "--duration", "600",
           "--first-connection", str(first_conn), "--json"]
    if args.unknown_field:
        cmd.append("--unknown-field")
    out = json.loads(subprocess.check_output(cmd, text=True).strip().splitlines()[-1])
    return out


def start_backend(args, root):
    """A plain null-sink collector for a router to forward to (not counted)."""
    ports = {k: free_port() for k in ["grpc", "http", "zipkin", "query"]}
    cmd = [args.backend or args.collector, "--data-dir", f"{root}/backend", "--storage", "null",
           "--otlp-grpc-addr", f"127.0.0.1:{ports['grpc']}",
           "--otlp-http-addr", f"127.0.0.1:{ports['http']}",
           "--zipkin-addr", f"127.0.0.1:{ports['zipkin']}",
           "--http-addr", f"127.0.0.1:{ports['query']}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=open(f"{root}/backend.log", "w"))
    q = f"http://127.0.0.1:{ports['query']}"
    wait_until(lambda: http(f"{q}/readyz", timeout=5) is not None, 120, "backend")
    return proc, ports, q


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(300)
    except subprocess.TimeoutExpired:
        proc.kill()


def one_run(args, i):
    root = tempfile.mkdtemp(prefix="ferrotrace-cg-")
    ports = {k: free_port() for k in ["grpc", "http", "zipkin", "query"]}
    prefix = os.path.join(args.out, f"callgrind.{args.label}.b{args.batch}.r{i}")
    backend = db = None
    if args.route:
        backend, bports, bq = start_backend(args, root)
        with open(f"{root}/router.toml", "w") as f:
            f.write("[route]\n" + args.route_toml + "\n")
        role = ["--config", f"{root}/router.toml",
                "--route-to", f"127.0.0.1:{bports['grpc']}@{bports['query']}"]
    elif args.storage == "clickhouse":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from store_bench import ClickHouse
        db = ClickHouse(root)
        role = ["--storage", "clickhouse", "--storage-url", db.url]
    else:
        role = ["--storage", args.storage]
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={prefix}.%p",
           "--collect-atstart=yes", "--dump-instr=no",
           args.collector, "--data-dir", f"{root}/data"] + role + [
           "--otlp-grpc-addr", f"127.0.0.1:{ports['grpc']}",
           "--otlp-http-addr", f"127.0.0.1:{ports['http']}",
           "--zipkin-addr", f"127.0.0.1:{ports['zipkin']}",
           "--http-addr", f"127.0.0.1:{ports['query']}"]
    log = open(f"{prefix}.log", "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    q = f"http://127.0.0.1:{ports['query']}"
    res = {"label": args.label, "batch": args.batch, "spans": args.spans,
           "connections": args.connections, "run": i,
           "role": "router" if args.route else args.storage}
    try:
        wait_until(lambda: http(f"{q}/readyz", timeout=5) is not None, 600, "collector")

        def written():
            if args.route:
                # Forwarded by the router and received by the backend.
                f = metric(http(f"{q}/metrics").decode(),
                           "ferrotrace_route_forwarded_spans_total") or 0
                b = metric(http(f"{bq}/metrics").decode(),
                           "ferrotrace_sink_spans_written_total") or 0
                return min(f, b)
            return metric(http(f"{q}/metrics").decode(), "ferrotrace_sink_spans_written_total") or 0

        if args.warmup:
            w = loadgen(args, ports["grpc"], args.warmup, 1000)
            wait_until(lambda: written() >= w["accepted_spans"], 600, "warm-up drained", 1.0)
        base = written()
        existing = set(glob.glob(prefix + "*"))
        subprocess.check_call(["callgrind_control", "-z", str(proc.pid)],
                              stdout=subprocess.DEVNULL)
        t0 = time.time()
        lg = loadgen(args, ports["grpc"], args.spans, 0)
        # One scrape per second until the sink has every span: each scrape is
        # counted too (a few hundred thousand instructions, reported).
        scrapes = [0]

        def drained():
            scrapes[0] += 1
            return written() - base >= lg["accepted_spans"]
        wait_until(drained, 600, "the sink to receive every span", 1.0)
        if args.route:
            # The router releases a WAL segment after its forward is acknowledged.
            time.sleep(1.0)
        f = dump(proc.pid, prefix, existing)
        res["window_s"] = round(time.time() - t0, 1)
        res["scrapes"] = scrapes[0]
        res["accepted_spans"] = lg["accepted_spans"]
        res["refused_requests"] = lg["refused_requests"]
        res["failed_requests"] = lg["failed_requests"]
        res["valid"] = (lg["accepted_spans"] == args.spans and lg["refused_requests"] == 0
                        and lg["failed_requests"] == 0)
        res["ir"] = total_ir(f)
        res["ir_per_span"] = round(res["ir"] / max(1, lg["accepted_spans"]), 1)
        res["dump"] = f
        if args.idle_secs:
            existing = set(glob.glob(prefix + "*"))
            subprocess.check_call(["callgrind_control", "-z", str(proc.pid)],
                                  stdout=subprocess.DEVNULL)
            t1 = time.time()
            time.sleep(args.idle_secs)
            f2 = dump(proc.pid, prefix, existing)
            secs = time.time() - t1
            res["idle_ir_per_s"] = round(total_ir(f2) / secs)
    finally:
        stop(proc)
        if backend:
            stop(backend)
        if db:
            db.stop()
        subprocess.call(["rm", "-rf", root])
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--collector", required=True, help="release ferrotrace-collector binary")
    ap.add_argument("--loadgen", required=True, help="release loadgen binary")
    ap.add_argument("--label", default="collector", help="name in the dump files and output")
    ap.add_argument("--batch", type=int, default=50, help="spans per request")
    ap.add_argument("--spans", type=int, default=50000,
                    help="spans counted (a multiple of --batch * --connections)")
    ap.add_argument("--warmup", type=int, default=5000, help="spans sent before counting")
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle-secs", type=float, default=0,
                    help="after each run, also count this many seconds without load")
    ap.add_argument("--route", action="store_true",
                    help="count a router forwarding to a null-sink backend")
    ap.add_argument("--route-toml", default="", help="with --route: more [route] keys")
    ap.add_argument("--unknown-field", action="store_true",
                    help="loadgen appends an unknown field to every request (a newer sender's "
                         "shape: the router's fast scan skips it; before session 8 it fell back "
                         "to the careful walk)")
    ap.add_argument("--backend", help="with --route: the backend's binary (default --collector)")
    ap.add_argument("--storage", default="null", choices=["null", "sqlite", "clickhouse"],
                    help="the counted collector's sink (not with --route)")
    ap.add_argument("--out", required=True, help="directory for the callgrind dumps")
    args = ap.parse_args()
    if args.spans % (args.batch * args.connections):
        ap.error("--spans must be a multiple of --batch * --connections")
    os.makedirs(args.out, exist_ok=True)
    for i in range(args.runs):
        print(json.dumps(one_run(args, i)), flush=True)


if __name__ == "__main__":
    main()
