#!/usr/bin/env python3
"""fdatasync latency of a WAL-like writer: appending records to a growing file
versus overwriting a file zero-filled beforehand (what `wal.preallocate` does
for the collector's WAL segments). One record is written and fdatasync'ed at a
time, as a group commit with one request in the group would.

    python3 benches/scripts/fsync_bench.py DIR RECORDS RECORD_BYTES ROUNDS

Prints p50/p90/p99/max/mean per mode, the two modes alternated per round.
The zero-filling itself is outside the timed loop (the collector does it on
its own thread, off the acknowledgement path).
"""
import os, sys, time, statistics
d = sys.argv[1]; n = int(sys.argv[2]); rec = int(sys.argv[3])
buf = os.urandom(rec)
def run(mode):
    p = os.path.join(d, f"seg-{mode}")
    if os.path.exists(p): os.remove(p)
    fd = os.open(p, os.O_CREAT | os.O_WRONLY | (os.O_APPEND if mode == "append" else 0), 0o644)
    if mode == "prealloc":
        z = b"\0" * (1 << 20)
        for _ in range((n * rec) // len(z) + 1): os.write(fd, z)
        os.fsync(fd)
    lat = []
    off = 0
    for i in range(n):
        t = time.perf_counter()
        if mode == "append": os.write(fd, buf)
        else: os.pwrite(fd, buf, off)
        off += rec
        os.fdatasync(fd)
        lat.append((time.perf_counter() - t) * 1000)
    os.close(fd); os.remove(p)
    lat.sort()
    q = lambda x: lat[min(len(lat)-1, int(x*len(lat)))]
    return f"{mode:9s} p50 {q(.5):.2f} p90 {q(.9):.2f} p99 {q(.99):.2f} max {lat[-1]:.2f} ms mean {statistics.mean(lat):.2f}"
for r in range(int(sys.argv[4]) if len(sys.argv) > 4 else 2):
    for m in ("append", "prealloc"):
        print(run(m), flush=True)
