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
#
# SINK=clickhouse stores into a throwaway ClickHouse server started here
# (clickhouse-server on loopback ports, store_bench.py's settings) instead of
# SQLite; its CPU over the window is reported too (not part of the ratio:
# the goal compares the router with the backend collector).
#
# Besides the totals it prints the router's user and system ticks and
# context switches over the window, and CPU ticks (user, system) per thread
# name of both processes (idle and loaded), from /proc/PID/task/*/stat.
# PROF=stat|strace|record attaches `perf stat`, `strace -c -f` (syscall
# counts; strace slows the router, use it for counts only) or `perf record
# -g` (to $PERF_DATA, default ./perf.data) to the router for the window.
set -eu
BIN=${1:-target/release}
RATE=${2:-4000}
SECS=${3:-30}
ROUTE_TOML=${4:-}
DIR=$(mktemp -d)
printf '[route]\n%s\n' "$ROUTE_TOML" > "$DIR/router.toml"
B_GRPC=127.0.0.1:24317 B_HTTP=127.0.0.1:26686
R_GRPC=127.0.0.1:25317 R_HTTP=127.0.0.1:27686
SINK=${SINK:-sqlite}
CP=
STORAGE="--storage sqlite"
if [ "$SINK" = clickhouse ]; then
    CH_HTTP=28123 CH_TCP=29000 C="$DIR/ch"
    mkdir -p "$C"
    cat >"$C/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$C/server.log</log><errorlog>$C/err.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$CH_HTTP</http_port><tcp_port>$CH_TCP</tcp_port>
  <path>$C/data/</path><tmp_path>$C/data/tmp/</tmp_path>
  <user_files_path>$C/data/user_files/</user_files_path>
  <format_schema_path>$C/data/format_schemas/</format_schema_path>
  <mark_cache_size>268435456</mark_cache_size>
  <users_config>$C/users.xml</users_config>
  <default_profile>default</default_profile><default_database>default</default_database>
  <timezone>UTC</timezone><mlock_executable>false</mlock_executable>
</yandex>
XML
    cat >"$C/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>8000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
XML
    (cd "$C" && exec clickhouse-server --config-file="$C/config.xml") >/dev/null 2>&1 &
    CP=$!
    i=0
    until [ "$(curl -s http://127.0.0.1:$CH_HTTP/ping)" = "Ok." ]; do
        i=$((i + 1)); [ $i -lt 120 ] || { echo "clickhouse did not start"; kill $CP; exit 1; }
        sleep 0.5
    done
    curl -sf -X POST "http://127.0.0.1:$CH_HTTP/" --data-binary "CREATE DATABASE bench" >/dev/null
    STORAGE="--storage clickhouse --storage-url http://127.0.0.1:$CH_HTTP/bench"
fi
# shellcheck disable=SC2086
"$BIN/ferrotrace-collector" --data-dir "$DIR/b" $STORAGE --otlp-grpc-addr $B_GRPC --otlp-http-addr "" \
    --zipkin-addr "" --http-addr $B_HTTP --log warn 2>"$DIR/b.log" &
BP=$!
sleep 2
"$BIN/ferrotrace-collector" --data-dir "$DIR/r" --otlp-grpc-addr $R_GRPC --otlp-http-addr "" \
    --zipkin-addr "" --http-addr $R_HTTP --config "$DIR/router.toml" --route-to "$B_GRPC@${B_HTTP#*:}" --log warn 2>"$DIR/r.log" &
RP=$!
trap 'kill $RP $BP 2>/dev/null; [ -z "$CP" ] || { kill $CP; wait $CP; } 2>/dev/null; rm -rf "$DIR"' EXIT
sleep 3
curl -sf "http://$R_HTTP/readyz" >/dev/null || { echo "router not ready"; cat "$DIR/r.log"; exit 1; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
written() { curl -s "http://$B_HTTP/metrics" | awk '/^ferrotrace_sink_spans_written_total /{print $2}'; }
forwarded() { curl -s "http://$R_HTTP/metrics" | awk '/^ferrotrace_route_forwarded_spans_total/{s+=$2} END{print s+0}'; }
TCK=$(getconf CLK_TCK)
threads() { for t in /proc/$1/task/*; do printf '%s %s\n' "$(cat $t/comm | tr ' ' _)" "$(awk '{print $14, $15}' $t/stat)"; done | awk '{u[$1]+=$2; s[$1]+=$3} END{for (k in u) print k, u[k], s[k]}' | sort; }
threads $RP > "$DIR/ri0"
bi=$(cpu $BP); ri=$(cpu $RP); sleep 10
threads $RP > "$DIR/ri1"
echo "router idle threads:"; join "$DIR/ri0" "$DIR/ri1" | awk '{d=$4-$2+$5-$3; if (d>0) print "  ", $1, $4-$2, $5-$3}'
echo "idle 10 s: backend $(( $(cpu $BP) - bi )) ticks, router $(( $(cpu $RP) - ri )) ticks (1 tick = 1/$TCK s)"
b0=$(cpu $BP); r0=$(cpu $RP); w0=$(written); f0=$(forwarded)
c0=0; [ -z "$CP" ] || c0=$(cpu $CP)
threads $RP > "$DIR/rt0"; threads $BP > "$DIR/bt0"
ut0=$(awk '{print $14}' /proc/$RP/stat); st0=$(awk '{print $15}' /proc/$RP/stat)
cs0=$(awk '/ctxt_switches/{s+=$2} END{print s}' /proc/$RP/task/*/status)
PROF_PID=
if [ -n "${PROF:-}" ]; then
  case "$PROF" in
    stat) perf stat -e task-clock,context-switches,cpu-migrations,page-faults -p $RP -o "$DIR/perfstat" & PROF_PID=$! ;;
    strace) strace -c -f -p $RP -o "$DIR/strace" & PROF_PID=$! ;;
    record) perf record -g -p $RP -o "${PERF_DATA:-perf.data}" 2>/dev/null & PROF_PID=$! ;;
  esac
  sleep 0.5
fi
"$BIN/loadgen" --protocol grpc --endpoint $R_GRPC --connections 4 --rate "$RATE" --duration "$SECS" \
    | tee "$DIR/loadgen.out"
# The window ends when the router has forwarded every acknowledged span and
# the backend has written them (waiting only for the backend to catch up with
# what the router had forwarded when loadgen returned ended it early).
acc=$(awk '/^accepted:/{print $2}' "$DIR/loadgen.out")
i=0
until [ $(( $(forwarded) - f0 )) -ge "$acc" ] && [ $(( $(written) - w0 )) -ge "$acc" ]; do
    i=$((i + 1)); [ $i -lt 240 ] || { echo "not drained after 120 s"; break; }
    sleep 0.5
done
f1=$(forwarded)
[ -z "$PROF_PID" ] || { kill -INT $PROF_PID; wait $PROF_PID || true; }
threads $RP > "$DIR/rt1"; threads $BP > "$DIR/bt1"
ut1=$(awk '{print $14}' /proc/$RP/stat); st1=$(awk '{print $15}' /proc/$RP/stat)
cs1=$(awk '/ctxt_switches/{s+=$2} END{print s}' /proc/$RP/task/*/status)
echo "router user ticks $((ut1-ut0)) sys ticks $((st1-st0)) ctx switches $((cs1-cs0))"
echo "router threads (name user sys ticks):"; join "$DIR/rt0" "$DIR/rt1" | awk '{d=$4-$2+$5-$3; if (d>0) print "  ", $1, $4-$2, $5-$3}'
echo "backend threads:"; join "$DIR/bt0" "$DIR/bt1" | awk '{d=$4-$2+$5-$3; if (d>0) print "  ", $1, $4-$2, $5-$3}'
[ -z "${PROF:-}" ] || { [ "$PROF" = record ] || cat "$DIR/perfstat" "$DIR/strace" 2>/dev/null; }
b1=$(cpu $BP); r1=$(cpu $RP); w1=$(written)
c1=0; [ -z "$CP" ] || c1=$(cpu $CP)
awk -v r=$((r1 - r0)) -v b=$((b1 - b0)) -v c=$((c1 - c0)) -v f=$((f1 - f0)) -v w=$((w1 - w0)) \
    -v t="$TCK" -v sink="$SINK" 'BEGIN {
    rs = r / t / f * 1e6; bs = b / t / w * 1e6
    printf "router:  %.2f CPU s for %d forwarded spans = %.1f s per million\n", r / t, f, rs
    printf "backend: %.2f CPU s for %d stored spans = %.1f s per million\n", b / t, w, bs
    if (sink == "clickhouse")
        printf "clickhouse-server: %.2f CPU s = %.1f s per million stored (not in the ratio)\n", c / t, c / t / w * 1e6
    printf "router / backend (%s) = %.2f (goal <= 0.33)\n", sink, rs / bs
}'
