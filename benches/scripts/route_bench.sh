#!/bin/sh
# Router CPU per forwarded span beside a backend's CPU per stored span, in one
# run (issue 13): one backend collector (SQLite, defaults) and one router in
# front of it (--route-to), on loopback; `loadgen` sends OTLP/gRPC to the
# router at a fixed rate; every span the router forwards is stored by that
# backend. CPU seconds of both processes come from /proc over the same
# window, which ends when the backend has written everything the router
# forwarded; idle CPU is measured first and reported.
#
#   cargo build --release -p ferrotrace-collector --bins
#   benches/scripts/route_bench.sh [target/release] [rate spans/s] [seconds] [router [route] TOML]
#
# The fourth argument adds keys to the router's [route] section, e.g.
# "reslice = false" (decode and re-encode instead of forwarding bytes).
set -eu
BIN=${1:-target/release}
RATE=${2:-4000}
SECS=${3:-30}
ROUTE_TOML=${4:-}
DIR=$(mktemp -d)
printf '[route]\n%s\n' "$ROUTE_TOML" > "$DIR/router.toml"
B_GRPC=127.0.0.1:24317 B_HTTP=127.0.0.1:26686
R_GRPC=127.0.0.1:25317 R_HTTP=127.0.0.1:27686
"$BIN/ferrotrace-collector" --data-dir "$DIR/b" --otlp-grpc-addr $B_GRPC --otlp-http-addr "" \
    --zipkin-addr "" --http-addr $B_HTTP --log warn 2>"$DIR/b.log" &
BP=$!
sleep 2
"$BIN/ferrotrace-collector" --data-dir "$DIR/r" --otlp-grpc-addr $R_GRPC --otlp-http-addr "" \
    --zipkin-addr "" --http-addr $R_HTTP --config "$DIR/router.toml" --route-to "$B_GRPC@${B_HTTP#*:}" --log warn 2>"$DIR/r.log" &
RP=$!
trap 'kill $RP $BP 2>/dev/null; rm -rf "$DIR"' EXIT
sleep 3
curl -sf "http://$R_HTTP/readyz" >/dev/null || { echo "router not ready"; cat "$DIR/r.log"; exit 1; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
written() { curl -s "http://$B_HTTP/metrics" | awk '/^ferrotrace_sink_spans_written_total /{print $2}'; }
forwarded() { curl -s "http://$R_HTTP/metrics" | awk '/^ferrotrace_route_forwarded_spans_total/{s+=$2} END{print s+0}'; }
TCK=$(getconf CLK_TCK)
bi=$(cpu $BP); ri=$(cpu $RP); sleep 10
echo "idle 10 s: backend $(( $(cpu $BP) - bi )) ticks, router $(( $(cpu $RP) - ri )) ticks (1 tick = 1/$TCK s)"
b0=$(cpu $BP); r0=$(cpu $RP); w0=$(written); f0=$(forwarded)
"$BIN/loadgen" --protocol grpc --endpoint $R_GRPC --connections 4 --rate "$RATE" --duration "$SECS"
f1=$(forwarded)
while [ $(( $(written) - w0 )) -lt $(( f1 - f0 )) ]; do sleep 0.5; f1=$(forwarded); done
b1=$(cpu $BP); r1=$(cpu $RP); w1=$(written)
awk -v r=$((r1 - r0)) -v b=$((b1 - b0)) -v f=$((f1 - f0)) -v w=$((w1 - w0)) -v t="$TCK" 'BEGIN {
    rs = r / t / f * 1e6; bs = b / t / w * 1e6
    printf "router:  %.2f CPU s for %d forwarded spans = %.1f s per million\n", r / t, f, rs
    printf "backend: %.2f CPU s for %d stored spans = %.1f s per million\n", b / t, w, bs
    printf "router / backend = %.2f (goal <= 0.33)\n", rs / bs
}'
