#!/bin/bash
# Ingest while the SQLite store evicts (issue 18, docs/benchmarks.md):
#   benches/scripts/size_retention_bench.sh "default budget" ""
#   benches/scripts/size_retention_bench.sh "16 MiB budget" "[retention]\nmax_disk_bytes = 16777216\n"
# Runs the collector (debug build unless BUILD=release) on a fresh data dir in /tmp with
# the extra TOML, loadgen (grpc, 4 connections, 30 s, maximal rate) against it, then prints
# loadgen's summary, the storage metrics and the eviction times from the collector's log.
set -u
B=${CARGO_TARGET_DIR:-target}/${BUILD:-debug}
D=$(mktemp -d /tmp/size-bench-XXXX)
printf '[batcher]\nmax_delay_ms = 20\n%b' "$2" > "$D/c.toml"
"$B/ferrotrace-collector" --config "$D/c.toml" --data-dir "$D/data" --otlp-grpc-addr 127.0.0.1:24317 \
    --otlp-http-addr 127.0.0.1:24318 --zipkin-addr "" --http-addr 127.0.0.1:26686 --log info 2> "$D/log" &
PID=$!
sleep 2
"$B/loadgen" --protocol grpc --endpoint 127.0.0.1:24317 --connections 4 --duration 30 \
    --collector-pid $PID > "$D/lg.txt" 2>&1
curl -s 127.0.0.1:26686/metrics > "$D/metrics.txt"
kill -TERM $PID; wait $PID
echo "== $1"; tail -8 "$D/lg.txt"
grep -E "^ferrotrace_(storage|sink_spans_written|retention_spans)" "$D/metrics.txt"
echo "evictions: $(grep -c 'deleted the oldest' "$D/log")"
grep -o 'took_ms=[0-9]*' "$D/log" | sort -t= -k2 -n |
    awk -F= '{a[NR]=$2} END {if (NR) print "took_ms median", a[int((NR+1)/2)], "max", a[NR]}'
rm -rf "$D"
