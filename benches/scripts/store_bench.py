#!/usr/bin/env python3
"""Collector + sink benchmark: sustained ingest into one sink, the database's raw
bulk-load rate for the same rows, and query latency through the HTTP API.

For each run it
  1. starts a throwaway database when the sink needs one (PostgreSQL: initdb +
     postgres; ClickHouse: clickhouse-server with a generated config), in a temp
     dir on free loopback ports, stopped and deleted at the end;
  2. starts the release `ferrotrace-collector` with that sink and a fresh data dir;
  3. drives it with the release `loadgen` (OTLP/gRPC, max rate) for --duration s,
     then waits until the sink has committed every acknowledged span
     (`ferrotrace_sink_spans_written_total`): sustained sink rate = acked spans /
     (time from first request to last commit);
  4. PostgreSQL / ClickHouse: dumps the stored rows in the database's own binary
     format (COPY ... BINARY / FORMAT RowBinary) and times loading them into an
     empty table of the same definition: the database's raw bulk-load limit;
  5. times queries through the Jaeger and native HTTP APIs: trace by id (p50/p99
     over --lookups ids), search by service over the whole window (p50/p95), and
     latency percentiles from the rollups and exactly from stored spans.

It prints one JSON object per run. Besides the rates it holds, for the load
window, each collector thread group's CPU and run-queue wait, the collector's
context switches per acknowledged request, the acknowledgement's parts (decode,
WAL group wait, write, fsync) from the collector's histograms, and with
--sample-queue the queue's peak and its bytes per queued span. Nothing here is
a pass/fail test; the numbers go to docs/benchmarks.md with the command that
produced them.

Usage (release binaries built first):
  cargo build --release -p ferrotrace-collector --bins
  python3 benches/scripts/store_bench.py --sink sqlite --duration 30
  python3 benches/scripts/store_bench.py --sink postgres --duration 30
  python3 benches/scripts/store_bench.py --sink clickhouse --duration 30
  python3 benches/scripts/store_bench.py --sink null --duration 20

Several collectors on one database (PostgreSQL or ClickHouse; issue 13):
  python3 benches/scripts/store_bench.py --sink postgres --writers 2 --duration 30 --skip-queries
  starts N collectors on the same database, each driven by its own loadgen
  (--connections each, distinct trace ids); the sustained rate is every
  acknowledged span over the time until every collector has committed its own.

Loading and querying can run as separate invocations (each short enough for
/work/freeze.sh, and the same data can be queried by two collector builds):
  store_bench.py --sink clickhouse --duration 15 --replicate 17 --keep-db /tmp/ch.json
      loads (and replicates), stops the collector, leaves the database and the
      data directory in place and writes their location to the state file;
  store_bench.py --resume /tmp/ch.json --target-dir DIR
      starts DIR's collector on that data and runs only the queries;
  store_bench.py --resume /tmp/ch.json --stop-db
      ... and then stops the database and deletes the data.
"""

import argparse
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def http(url, data=None, timeout=120, headers=None):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def unprivileged(cmd):
    if os.geteuid() == 0:
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"] + cmd
    return cmd


class Postgres:
    kind = "postgres"

    @classmethod
    def attach(cls, st):
        """The server a `--keep-db` run left running."""
        self = cls.__new__(cls)
        self.bin, self.dir, self.port, self.url = st["bin"], st["dir"], st["port"], st["url"]
        self.pid, self.proc = st["pid"], None
        return self

    def state(self):
        return {"bin": self.bin, "dir": self.dir, "port": self.port, "url": self.url,
                "pid": self.proc.pid}

    def __init__(self, root):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        self.bin = os.environ.get("FERROTRACE_PG_BIN") or (bins[-1] if bins else None)
        if not self.bin:
            raise SystemExit("PostgreSQL binaries not found (set FERROTRACE_PG_BIN)")
        self.dir = os.path.join(root, "pg")
        os.makedirs(os.path.join(self.dir, "sock"))
        if os.geteuid() == 0:
            subprocess.check_call(["chown", "-R", "nobody:nogroup", self.dir])
        subprocess.check_call(
            unprivileged([f"{self.bin}/initdb", "-D", f"{self.dir}/data", "-U", "postgres",
                          "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]),
            stdout=subprocess.DEVNULL)
        self.port = free_port()
        # Settings of a dedicated bulk-load box: durability off on both sides of the
        # comparison (sink and raw COPY), so the comparison is about the write path.
        self.proc = subprocess.Popen(
            unprivileged([f"{self.bin}/postgres", "-D", f"{self.dir}/data", "-p", str(self.port),
                          "-k", f"{self.dir}/sock", "-c", "listen_addresses=127.0.0.1",
                          "-c", "fsync=off", "-c", "synchronous_commit=off",
                          "-c", "full_page_writes=off", "-c", "shared_buffers=512MB",
                          "-c", "max_wal_size=4GB", "-c", "maintenance_work_mem=256MB"]),
            stdout=subprocess.DEVNULL, stderr=open(f"{root}/pg.log", "w"),
            start_new_session=True)
        wait_until(lambda: subprocess.call(
            [f"{self.bin}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U",
             "postgres"]) == 0, 60, "postgres")
        self.psql("CREATE DATABASE bench")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/bench"

    def psql(self, sql, db="postgres"):
        return subprocess.check_output(
            [f"{self.bin}/psql", "-X", "-q", "-t", "-A", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-d", db, "-c", sql], text=True).strip()

    def raw_bulk_load(self, root):
        """Dump the stored spans with COPY BINARY, load them into an empty table
        with the same columns and indexes, and time the load."""
        dump = os.path.join(self.dir, "spans.bin")
        self.psql(f"COPY (SELECT * FROM ft_spans) TO '{dump}' (FORMAT binary)", "bench")
        rows = int(self.psql("SELECT count(*) FROM ft_spans", "bench"))
        self.psql("CREATE TABLE raw_spans (LIKE ft_spans INCLUDING DEFAULTS INCLUDING INDEXES)",
                  "bench")
        t0 = time.time()
        self.psql(f"COPY raw_spans FROM '{dump}' (FORMAT binary)", "bench")
        secs = time.time() - t0
        return {"rows": rows, "seconds": round(secs, 2), "rows_per_s": round(rows / secs)}

    def replicate(self, copies):
        """Copies every stored span `copies - 1` more times with new trace ids."""
        for k in range(1, copies):
            self.psql("INSERT INTO ft_spans SELECT overlay(trace_id placing int4send(%d) from 1 for 4), "
                      "span_id, parent_span_id, service, name, kind, start_ns, end_ns, duration_ns, "
                      "status_code, attributes, payload FROM ft_spans "
                      "WHERE substring(trace_id from 1 for 4) = '\\x00000000'::bytea" % k, "bench")
        self.psql("ANALYZE ft_spans", "bench")
        return int(self.psql("SELECT count(*) FROM ft_spans", "bench"))

    def stop(self):
        stop_server(self, 30)


class ClickHouse:
    kind = "clickhouse"

    @classmethod
    def attach(cls, st):
        """The server a `--keep-db` run left running."""
        self = cls.__new__(cls)
        self.dir, self.http_port, self.tcp_port = st["dir"], st["http_port"], st["tcp_port"]
        self.url, self.pid, self.proc = st["url"], st["pid"], None
        return self

    def state(self):
        return {"dir": self.dir, "http_port": self.http_port, "tcp_port": self.tcp_port,
                "url": self.url, "pid": self.proc.pid}

    def __init__(self, root):
        exe = shutil.which("clickhouse-server") or "/usr/bin/clickhouse"
        cmd = [exe] if exe.endswith("clickhouse-server") else [exe, "server"]
        self.dir = os.path.join(root, "ch")
        os.makedirs(self.dir)
        self.http_port, self.tcp_port = free_port(), free_port()
        d = self.dir
        with open(f"{d}/config.xml", "w") as f:
            f.write(f"""<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/err.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{self.http_port}</http_port><tcp_port>{self.tcp_port}</tcp_port>
  <path>{d}/data/</path><tmp_path>{d}/data/tmp/</tmp_path>
  <user_files_path>{d}/data/user_files/</user_files_path>
  <format_schema_path>{d}/data/format_schemas/</format_schema_path>
  <mark_cache_size>268435456</mark_cache_size>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile><default_database>default</default_database>
  <timezone>UTC</timezone><mlock_executable>false</mlock_executable>
</yandex>
""")
        with open(f"{d}/users.xml", "w") as f:
            f.write("""<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>8000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
""")
        self.proc = subprocess.Popen(cmd + [f"--config-file={d}/config.xml"], cwd=d,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_until(lambda: http(f"http://127.0.0.1:{self.http_port}/ping") == b"Ok.\n", 60,
                   "clickhouse")
        self.sql("CREATE DATABASE bench")
        self.url = f"http://127.0.0.1:{self.http_port}/bench"

    def sql(self, q, data=None):
        url = f"http://127.0.0.1:{self.http_port}/?query=" + urllib.parse.quote(q)
        # POST even without a body: ClickHouse runs GET requests read-only.
        return http(url, data=b"" if data is None else data, timeout=600)

    def raw_bulk_load(self, root):
        """Dump the stored rows of both tables the sink writes (spans and the
        trace-id lookup table) as RowBinary, then time INSERT ... FORMAT RowBinary
        into empty tables of the same definition."""
        out = {"rows": 0, "seconds": 0.0}
        # Let the merges of the sink's own parts finish first, so they do not
        # slow the raw load down (up to 120 s).
        end = time.time() + 120
        while time.time() < end and int(self.sql("SELECT count() FROM system.merges").strip()):
            time.sleep(0.5)
        for table in ["ft_spans", "ft_traces"]:
            blob = self.sql(f"SELECT * FROM bench.{table} FORMAT RowBinary")
            rows = int(self.sql(f"SELECT count() FROM bench.{table}").strip())
            self.sql(f"CREATE TABLE bench.raw_{table} AS bench.{table}")
            t0 = time.time()
            self.sql(f"INSERT INTO bench.raw_{table} FORMAT RowBinary", data=blob)
            secs = time.time() - t0
            out["seconds"] += secs
            if table == "ft_spans":
                out["rows"] = rows
            out[f"{table}_bytes"] = len(blob)
        out["seconds"] = round(out["seconds"], 2)
        out["rows_per_s"] = round(out["rows"] / out["seconds"])
        return out

    def replicate(self, copies):
        """Copies every stored span `copies - 1` more times with new trace ids
        (both tables the sink writes), in one INSERT ... SELECT per table."""
        # 18.16 has no leftPad: pad hex(copy) to 8 digits by hand.
        new_id = ("toFixedString(concat(unhex(concat(substring('00000000', 1, 8 - length(hex(toUInt32(c)))), "
                  "hex(toUInt32(c)))), substring(trace_id, 5, 12)), 16)")
        cols = {
            "ft_spans": "span_id, service, name, kind, start_ns, duration_ns, status_code, "
                        "attr_keys, attr_types, attr_values",
            "ft_traces": "span_id, has_parent, service, name, start_ns, end_ns, status_code, payload",
        }
        for table, rest in cols.items():
            self.sql(f"INSERT INTO bench.{table} SELECT {new_id} AS trace_id, {rest} FROM "
                     f"(SELECT *, arrayJoin(range({copies - 1})) + 1 AS c FROM bench.{table} "
                     f"WHERE substring(trace_id, 1, 4) = unhex('00000000'))")
        return int(self.sql("SELECT count() FROM bench.ft_spans").strip())

    def stop(self):
        stop_server(self, 60)


def stop_server(db, timeout):
    """Stops a database server started here or by a `--keep-db` run."""
    if db.proc:
        os.killpg(db.proc.pid, signal.SIGTERM)
        db.proc.wait(timeout)
        return
    os.killpg(db.pid, signal.SIGTERM)
    end = time.time() + timeout
    while time.time() < end:
        try:
            os.kill(db.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def cpu_seconds(pid):
    """User + system CPU seconds of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def io_bytes(pid):
    """(read_bytes, write_bytes) a process made the block layer do so far
    (/proc/PID/io; the collector's WAL and the SQLite files both count)."""
    vals = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, v = line.split(":")
            vals[k] = int(v)
    return vals.get("read_bytes", 0), vals.get("write_bytes", 0)


def thread_times(pid):
    """Per thread of `pid`: (name, CPU ns, ns waited on a run queue) from
    /proc/PID/task/*/schedstat: what the threads did and how long they were
    runnable but not running (CPU contention)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run, wait, _ = (int(x) for x in f.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        out[tid] = (name, run, wait)
    return out


def context_switches(pid):
    """Voluntary + involuntary context switches of all of `pid`'s threads so
    far (/proc/PID/task/*/status): the thread hand-offs and wake-ups a
    request costs, which CPU seconds only show blurred by the machine's load."""
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        n += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return n


class QueueSampler(threading.Thread):
    """Polls the collector's queue gauges while the load runs: the most spans
    queued, and the estimated bytes the queue held per queued span (issue 19:
    "bytes held per queued span are reported"), with the process's RSS at
    the same moment."""

    def __init__(self, q, pid):
        super().__init__(daemon=True)
        self.q, self.pid, self.stop = q, pid, threading.Event()
        self.samples = []  # (queued spans, queued bytes, RSS bytes)

    def run(self):
        while not self.stop.wait(0.25):
            try:
                m = http(f"{self.q}/metrics", timeout=2).decode()
                with open(f"/proc/{self.pid}/statm") as f:
                    rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except Exception:
                continue
            spans = metric(m, "ferrotrace_queue_spans") or 0
            self.samples.append((spans, metric(m, "ferrotrace_queue_bytes") or 0, rss))

    def summary(self):
        busy = [s for s in self.samples if s[0] > 0]
        if not busy:
            return {"samples": len(self.samples), "max_queued_spans": 0}
        peak = max(busy, key=lambda s: s[0])
        return {"samples": len(self.samples), "max_queued_spans": int(peak[0]),
                "bytes_per_queued_span_at_peak": round(peak[1] / peak[0]),
                "bytes_per_queued_span_mean": round(sum(s[1] / s[0] for s in busy) / len(busy)),
                "rss_mib_at_peak": round(peak[2] / 2**20)}


def thread_groups(before, after):
    """CPU seconds and run-queue wait seconds between two `thread_times`,
    summed by thread name (digits dropped: tokio-runtime-w, wal-writer, ...)."""
    groups = {}
    for tid, (name, run, wait) in after.items():
        r0, w0 = before.get(tid, (name, 0, 0))[1:]
        key = name.rstrip("0123456789-_") or name
        g = groups.setdefault(key, {"threads": 0, "cpu_s": 0.0, "runq_wait_s": 0.0})
        g["threads"] += 1
        g["cpu_s"] += (run - r0) / 1e9
        g["runq_wait_s"] += (wait - w0) / 1e9
    return {k: {"threads": v["threads"], "cpu_s": round(v["cpu_s"], 2),
                "runq_wait_s": round(v["runq_wait_s"], 2)}
            for k, v in sorted(groups.items(), key=lambda kv: -kv[1]["cpu_s"]) if v["cpu_s"] > 0.005}


def histogram(text, name):
    """Count, mean and p50/p99/p99.9 (linear within a bucket) of a Prometheus
    histogram in the text exposition, in ms; None when it is not there."""
    buckets = []
    total = s = None
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le),
                            float(line.rsplit(" ", 1)[1])))
        elif line.startswith(name + "_count"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_sum"):
            s = float(line.rsplit(" ", 1)[1])
    if not total:
        return None

    def q(p):
        rank = p * total
        lo, prev = 0.0, 0.0
        for le, c in buckets:
            if c >= rank:
                if le == float("inf"):
                    return lo * 1e3
                frac = (rank - prev) / max(c - prev, 1e-9)
                return (lo + (le - lo) * frac) * 1e3
            lo, prev = le, c
        return lo * 1e3
    return {"count": int(total), "mean_ms": round(s / total * 1e3, 3),
            "p50_ms": round(q(0.5), 2), "p99_ms": round(q(0.99), 2), "p999_ms": round(q(0.999), 2)}


# The parts of an acknowledgement the collector measures (ACK_PART_BOUNDS).
ACK_PARTS = ["ferrotrace_receiver_ack_seconds", "ferrotrace_receiver_decode_seconds",
             "ferrotrace_wal_append_seconds", "ferrotrace_wal_group_wait_seconds",
             "ferrotrace_wal_write_seconds", "ferrotrace_wal_fsync_seconds",
             "ferrotrace_wal_rotate_seconds", "ferrotrace_sink_write_seconds"]


def metric(text, name):
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def pct(values, p):
    v = sorted(values)
    if not v:
        return None
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def run_queries(args, q, acked, copies):
    """Times the queries through the collector's HTTP API at `q`."""
    now_us = int(time.time() * 1e6)
    start_us = now_us - 3600 * 10**6
    services = json.loads(http(f"{q}/api/services"))["data"]
    ids, search_ms = [], []
    for i in range(args.searches):
        svc = services[i % len(services)]
        url = (f"{q}/api/traces?service={urllib.parse.quote(svc)}&start={start_us}"
               f"&end={now_us}&limit=20")
        t = time.perf_counter()
        body = json.loads(http(url))
        search_ms.append((time.perf_counter() - t) * 1000)
        ids += [tr["traceID"] for tr in body["data"]]
    # The store's search alone: the native API returns summaries, while the
    # Jaeger search above also reads each of the (up to 20) traces in full.
    native_ms = []
    for i in range(args.searches):
        svc = services[i % len(services)]
        url = (f"{q}/api/native/search?service={urllib.parse.quote(svc)}"
               f"&start={start_us * 1000}&end={now_us * 1000}&limit=20")
        t = time.perf_counter()
        http(url)
        native_ms.append((time.perf_counter() - t) * 1000)
    # Ids of traces anywhere in the window: loadgen's ids are (conn+1, seq).
    conns, per_conn = args.connections, max(1, acked // args.batch // args.connections)
    sample = [f"{random.randrange(copies):08x}{c + 1:08x}{random.randrange(per_conn):016x}"
              for c in [random.randrange(conns) for _ in range(args.lookups)]]
    lookup_ms, found = [], 0
    for tid in sample:
        t = time.perf_counter()
        try:
            body = json.loads(http(f"{q}/api/traces/{tid}"))
            found += 1 if body["data"] else 0
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise
        lookup_ms.append((time.perf_counter() - t) * 1000)
    lat = {}
    for name, extra in [("rollup", ""), ("exact", "&exact=true")]:
        ns_now = int(time.time() * 1e9)
        url = (f"{q}/api/native/latency?service={urllib.parse.quote(services[0])}"
               f"&start={ns_now - 3600 * 10**9}&end={ns_now}{extra}")
        t = time.perf_counter()
        try:
            http(url)
            lat[name] = round((time.perf_counter() - t) * 1000, 1)
        except urllib.error.HTTPError as e:
            lat[name] = f"HTTP {e.code}: {e.read()[:200]!r}"
    return {
        "trace_by_id_ms": {"n": len(lookup_ms), "found": found,
                           "p50": round(pct(lookup_ms, 50), 1),
                           "p99": round(pct(lookup_ms, 99), 1)},
        "search_ms": {"n": len(search_ms), "p50": round(pct(search_ms, 50), 1),
                      "p95": round(pct(search_ms, 95), 1)},
        "native_search_ms": {"n": len(native_ms), "p50": round(pct(native_ms, 50), 1),
                             "p95": round(pct(native_ms, 95), 1)},
        "percentiles_ms": lat,
    }


def start_collector(args, sink, root, db, data="data"):
    rel = os.path.join(args.target_dir, "release")
    ports = {k: free_port() for k in ["grpc", "http", "zipkin", "query"]}
    cmd = [f"{rel}/ferrotrace-collector", "--data-dir", f"{root}/{data}", "--storage", sink,
           "--otlp-grpc-addr", f"127.0.0.1:{ports['grpc']}",
           "--otlp-http-addr", f"127.0.0.1:{ports['http']}",
           "--zipkin-addr", f"127.0.0.1:{ports['zipkin']}",
           "--http-addr", f"127.0.0.1:{ports['query']}"]
    if db:
        cmd += ["--storage-url", db.url]
    collector = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                 stderr=open(f"{root}/collector.log", "a"))
    q = f"http://127.0.0.1:{ports['query']}"
    wait_until(lambda: http(f"{q}/readyz", timeout=2) is not None, 60, "collector")
    return collector, ports, q


def stop_collector(collector):
    collector.send_signal(signal.SIGTERM)
    try:
        collector.wait(60)
    except subprocess.TimeoutExpired:
        collector.kill()


def resume(args):
    """Queries the data a `--keep-db` run left, with this run's collector."""
    with open(args.resume) as f:
        st = json.load(f)
    for k in ["connections", "batch"]:
        setattr(args, k, st[k])
    db = None
    if st["sink"] == "postgres":
        db = Postgres.attach(st["db"])
    elif st["sink"] == "clickhouse":
        db = ClickHouse.attach(st["db"])
    result = {"sink": st["sink"], "resumed_from": args.resume,
              "collector": os.path.join(args.target_dir, "release", "ferrotrace-collector")}
    collector = None
    try:
        collector, _, q = start_collector(args, st["sink"], st["root"], db)
        queries = run_queries(args, q, st["acked"], st["copies"])
        result["queries"] = {"stored_spans": st["stored_spans"], **queries}
    finally:
        if collector:
            stop_collector(collector)
        if args.stop_db:
            if db:
                db.stop()
            shutil.rmtree(st["root"], ignore_errors=True)
            os.remove(args.resume)
    print(json.dumps(result))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sink", choices=["sqlite", "postgres", "clickhouse", "null"])
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--rate", type=int, default=0, help="spans/s; 0 = as fast as acked")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--max-spans", type=int, default=0, help="stop after this many spans")
    ap.add_argument("--writers", type=int, default=1,
                    help="collectors writing to the one database at once, each with its own "
                         "loadgen (PostgreSQL / ClickHouse)")
    ap.add_argument("--lookups", type=int, default=200)
    ap.add_argument("--searches", type=int, default=40)
    ap.add_argument("--skip-queries", action="store_true")
    ap.add_argument("--sample-queue", action="store_true",
                    help="poll /metrics 4 times a second during the load and print the most "
                         "spans queued and the queue's estimated bytes per queued span (with "
                         "the RSS); the scrapes cost the collector CPU, so not for CPU figures")
    ap.add_argument("--perf", metavar="FILE",
                    help="perf record -g the collector during the load into FILE "
                         "(299 samples/s; the PERF_FREQ environment variable sets another rate)")
    ap.add_argument("--replicate", type=int, default=1,
                    help="PostgreSQL/ClickHouse: before the queries, copy the stored spans "
                         "this many times in total inside the database, each copy with its "
                         "own trace ids (first 4 id bytes = copy number), to query a larger store")
    ap.add_argument("--keep-db", metavar="STATE",
                    help="load only: leave the database and data in place, describe them in "
                         "the STATE file for --resume")
    ap.add_argument("--resume", metavar="STATE",
                    help="query only, the data a --keep-db run left")
    ap.add_argument("--stop-db", action="store_true",
                    help="with --resume: afterwards stop the database and delete the data")
    ap.add_argument("--target-dir", default=os.environ.get(
        "CARGO_TARGET_DIR", os.path.expanduser("~/.cache/ferrotrace/target")))
    args = ap.parse_args()
    if args.resume:
        return resume(args)
    if not args.sink:
        ap.error("--sink is required (unless --resume)")

    rel = os.path.join(args.target_dir, "release")
    loadgen_bin = f"{rel}/loadgen"
    root = tempfile.mkdtemp(prefix="ferrotrace-bench-")
    os.chmod(root, 0o755)  # the database server runs as `nobody` when we are root
    db = None
    keep = False
    result = {"sink": args.sink, "duration_s": args.duration, "connections": args.connections}
    collector = None
    try:
        if args.sink == "postgres":
            db = Postgres(root)
        elif args.sink == "clickhouse":
            db = ClickHouse(root)
        collector, ports, q = start_collector(args, args.sink, root, db)
        if args.writers > 1 and not db:
            raise SystemExit("--writers needs a database sink (postgres or clickhouse)")
        # More writers on the same database (their migrations race at start).
        others = [start_collector(args, args.sink, root, db, f"data{w}")
                  for w in range(1, args.writers)]
        result["writers"] = args.writers

        def lg_cmd(p, pid, first):
            lg = [loadgen_bin, "--protocol", "grpc", "--endpoint", f"127.0.0.1:{p['grpc']}",
                  "--connections", str(args.connections), "--batch", str(args.batch),
                  "--duration", str(args.duration), "--collector-pid", str(pid), "--json",
                  "--first-connection", str(first)]
            if args.rate:
                lg += ["--rate", str(args.rate)]
            if args.max_spans:
                lg += ["--max-spans", str(args.max_spans)]
            return lg
        lg = lg_cmd(ports, collector.pid, 0)
        # PostgreSQL works in one process per connection: only ClickHouse is counted.
        db_pid = (db.proc.pid if db.proc else db.pid) if db and db.kind == "clickhouse" else None
        cpu0 = (cpu_seconds(collector.pid), cpu_seconds(db_pid) if db_pid else None)
        threads0 = thread_times(collector.pid)
        switches0 = context_switches(collector.pid)
        io0 = io_bytes(collector.pid)
        cpu0_others = [cpu_seconds(c.pid) for c, _, _ in others]
        perf = None
        if args.perf:
            # Call-graph samples of the collector while the load runs (and
            # the sink drains): what its CPU goes to (`perf report -i FILE`).
            perf = subprocess.Popen(["perf", "record", "-F", os.environ.get("PERF_FREQ", "299"),
                                     "-g", "-o", args.perf, "-p", str(collector.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Opt-in: four scrapes a second cost the collector CPU the other figures count.
        sampler = QueueSampler(q, collector.pid) if args.sample_queue else None
        if sampler:
            sampler.start()
        t0 = time.time()
        more = [subprocess.Popen(lg_cmd(p, c.pid, 100 * w), stdout=subprocess.PIPE, text=True)
                for w, (c, p, _) in enumerate(others, start=1)]
        out = subprocess.check_output(lg, text=True)
        result["loadgen"] = json.loads(out.strip().splitlines()[-1])
        acked = result["loadgen"]["accepted_spans"]
        # While the load ran: each thread group's CPU and run-queue wait.
        result["threads_during_load"] = thread_groups(threads0, thread_times(collector.pid))
        if sampler:
            sampler.stop.set()
            sampler.join()
            result["queue_during_load"] = sampler.summary()
        # Threads that exited during the load are not counted (none do).
        requests = max(result["loadgen"].get("ok_requests", 0) or acked / args.batch, 1)
        result["context_switches_per_request"] = round(
            (context_switches(collector.pid) - switches0) / requests, 2)
        m = http(f"{q}/metrics", timeout=5).decode()
        result["ack_parts"] = {k[len("ferrotrace_"):-len("_seconds")]: h for k in ACK_PARTS
                               if (h := histogram(m, k))}
        io1 = io_bytes(collector.pid)
        result["disk_write_kib_per_span_during_load"] = round(
            (io1[1] - io0[1]) / 1024 / max(acked, 1), 3)
        result["wal_appends_per_fsync"] = round(
            (metric(m, "ferrotrace_wal_appends_total") or 0) /
            max(metric(m, "ferrotrace_wal_fsyncs_total") or 0, 1), 2)
        # Absent from collectors older than session 10 (None then).
        result["wal_rotations_unprepared"] = metric(
            m, "ferrotrace_wal_rotations_unprepared_total")
        with open("/proc/loadavg") as f:
            result["loadavg_1m_after_load"] = float(f.read().split()[0])
        if more:
            result["loadgen_others"] = [json.loads(m.communicate()[0].strip().splitlines()[-1])
                                        for m in more]
            result["accepted_per_writer"] = [acked] + [o["accepted_spans"]
                                                       for o in result["loadgen_others"]]
            acked = sum(result["accepted_per_writer"])
        if args.sink != "null":
            def drained():
                n = 0
                for qq in [q] + [o[2] for o in others]:
                    m = http(f"{qq}/metrics", timeout=5).decode()
                    n += metric(m, "ferrotrace_sink_spans_written_total") or 0
                return n >= acked
            wait_until(drained, 1800, "the sink to commit every acked span")
            elapsed = time.time() - t0
            result["sink_committed_spans"] = acked
            result["sink_seconds"] = round(elapsed, 1)
            result["sink_spans_per_s"] = round(acked / elapsed)
            # CPU from the first request to the last commit (the load
            # generator's figure stops when it does, before the sink drains).
            per_m = 1e6 / max(acked, 1)
            result["collector_cpu_s_per_million_committed"] = round(
                (cpu_seconds(collector.pid) - cpu0[0]
                 + sum(cpu_seconds(c.pid) - c0
                       for (c, _, _), c0 in zip(others, cpu0_others))) * per_m, 2)
            if db_pid:
                result["db_cpu_s_per_million_committed"] = round(
                    (cpu_seconds(db_pid) - cpu0[1]) * per_m, 2)
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
        m = http(f"{q}/metrics", timeout=5).decode()
        # Spans that waited in the WAL only (queue full) and were read back.
        result["wal_only_read_back"] = metric(m, "ferrotrace_queue_wal_only_read_back_total")
        with open(f"/proc/{collector.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    result["collector_peak_rss_kib_final"] = int(line.split()[1])
        result["sink_write_errors"] = metric(m, "ferrotrace_sink_errors_total")
        # Refused requests by cause (queue_full, inflight_full, memory_limit, ...).
        prefix = 'ferrotrace_requests_failed_total{status="'
        result["requests_failed"] = {
            line[len(prefix):].split('"', 1)[0]: int(float(line.rsplit(" ", 1)[1]))
            for line in m.splitlines() if line.startswith(prefix)}
        result["memory_limit_bytes"] = metric(m, "ferrotrace_memory_limit_bytes")

        if db and args.replicate > 1:
            t = time.time()
            result["replicated_spans"] = db.replicate(args.replicate)
            result["replicate_seconds"] = round(time.time() - t, 1)
        copies = args.replicate if db else 1
        if args.keep_db:
            if args.sink == "null":
                raise SystemExit("--keep-db needs a sink that stores spans")
            stop_collector(collector)
            collector = None
            with open(args.keep_db, "w") as f:
                json.dump({"sink": args.sink, "root": root, "acked": acked, "copies": copies,
                           "stored_spans": result.get("replicated_spans", acked),
                           "connections": args.connections, "batch": args.batch,
                           "db": db.state() if db else None}, f)
            keep = True
            result["kept"] = args.keep_db
        elif not args.skip_queries and args.sink != "null":
            queries = run_queries(args, q, acked, copies)
            result["queries"] = {"stored_spans": result.get("replicated_spans", acked),
                                 **queries}
        if db and args.replicate == 1 and not keep:
            result["raw_bulk_load"] = db.raw_bulk_load(root)
            result["sink_vs_raw"] = round(result["sink_spans_per_s"] /
                                          result["raw_bulk_load"]["rows_per_s"], 3)
    finally:
        if collector:
            stop_collector(collector)
        for c, _, _ in locals().get("others") or []:
            stop_collector(c)
        if not keep:
            if db:
                db.stop()
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
