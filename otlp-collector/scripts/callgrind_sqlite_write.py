#!/usr/bin/env python3
"""Instructions per stored span of the SQLite sink's write path, counted by
callgrind (a cost that does not move with the machine's load).

Runs the release `sqlite_write_bench` example (`SqliteStore::write_spans`,
load-generator-shaped 10-attribute spans) under
`valgrind --tool=callgrind --separate-threads=yes` twice, with N and 2N spans,
and reports the `sqlite-writer` thread's instructions: every write runs on
that thread (span encoding, SQLite, commit), and nothing else does. The
difference of the two runs divided by N is the cost of one more span at that
store size, without the one-time costs (opening, schema, first pages).

Usage:
  python3 otlp-collector/scripts/callgrind_sqlite_write.py \
      --bench TARGET/release/examples/sqlite_write_bench --spans 16384 --batch 8192 \
      --out /tmp/cg-sqlite --label after

Breakdown of one run: `callgrind_annotate --inclusive=yes FILE` on the file
printed as "writer_file" (the larger run).
"""

import argparse
import glob
import json
import os
import re
import subprocess
import tempfile


def writer_ir(outdir):
    """Instructions of the sqlite-writer thread in the callgrind files of
    `outdir` (one file per thread): the thread whose profile contains the
    span transaction."""
    best = None
    for f in glob.glob(os.path.join(outdir, "callgrind.out.*")):
        with open(f, errors="replace") as fh:
            text = fh.read()
        if "write_spans_tx" not in text:
            continue
        m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), f)
    if best is None:
        raise SystemExit(f"no sqlite-writer thread profile in {outdir}")
    return best


def run(bench, spans, batch, outdir, dbdir):
    os.makedirs(outdir, exist_ok=True)
    subprocess.run(
        ["valgrind", "--tool=callgrind", "--separate-threads=yes",
         f"--callgrind-out-file={outdir}/callgrind.out.%p",
         bench, "--spans", str(spans), "--batch", str(batch), "--window", str(spans),
         "--dir", dbdir],
        check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return writer_ir(outdir)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--spans", type=int, default=16384, help="N (the second run writes 2N)")
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--out", default="/tmp/cg-sqlite")
    ap.add_argument("--label", default="run")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the databases go")
    args = ap.parse_args()
    base = os.path.join(args.out, args.label)
    ir1, _ = run(args.bench, args.spans, args.batch, f"{base}-n", args.dir)
    ir2, f2 = run(args.bench, 2 * args.spans, args.batch, f"{base}-2n", args.dir)
    print(json.dumps({
        "label": args.label, "n": args.spans, "batch": args.batch,
        "writer_ir_n": ir1, "writer_ir_2n": ir2,
        "ir_per_span": round((ir2 - ir1) / args.spans),
        "writer_file": f2,
    }))


if __name__ == "__main__":
    main()
