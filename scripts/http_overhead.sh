#!/usr/bin/env bash
# HTTP server layer overhead under load: an axum hello-world
# (benches/examples/hello_server.rs) pinned to CPU 0, wrk pinned to CPU 1,
# each tracing setup in turn, alternated over several rounds.
#
# Usage: scripts/http_overhead.sh [seconds per run, default 10] [rounds, default 3]
#
# For every run it prints requests/s (wrk) and the server's CPU time per
# request (utime + stime from /proc/PID/stat, divided by wrk's request count).
# Modes: none (no layer), noop (a do-nothing layer), ferrotrace, otel
# (tracing-opentelemetry + OtelAxumLayer); "sampled" requests carry a
# traceparent with flags 01, "unsampled" ones flags 00 (parent-based sampler).
# Needs 2 CPUs; runs only against 127.0.0.1; stops every process it started.
set -euo pipefail

DURATION=${1:-10}
ROUNDS=${2:-3}
PORT=${PORT:-18080}
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}

if ! command -v wrk >/dev/null 2>&1; then
    apt-get install -y wrk >/dev/null
fi
cargo build --release --locked -p ferrotrace-benches --example hello_server >&2
BIN="$TARGET/release/examples/hello_server"
TICKS=$(getconf CLK_TCK)

server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT

cpu_ticks() { # utime + stime of a pid
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

run() { # mode sampled|unsampled
    local mode=$1 flags=$2
    [ "$2" = sampled ] && flags=01 || flags=00
    taskset -c 0 "$BIN" "$mode" "127.0.0.1:$PORT" &
    server_pid=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$PORT/users/1" >/dev/null 2>&1 && break
        sleep 0.05
    done
    # Warm-up, not counted.
    taskset -c 1 wrk -t1 -c16 -d1s "http://127.0.0.1:$PORT/users/42" >/dev/null
    local before after out requests rps
    before=$(cpu_ticks "$server_pid")
    out=$(taskset -c 1 wrk -t1 -c16 -d"${DURATION}s" \
        -H "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-$flags" \
        -H "user-agent: wrk" "http://127.0.0.1:$PORT/users/42")
    after=$(cpu_ticks "$server_pid")
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    requests=$(echo "$out" | awk '/requests in/ { print $1 }')
    rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
    awk -v m="$mode" -v s="$2" -v r="$rps" -v n="$requests" -v c="$((after - before))" -v t="$TICKS" \
        'BEGIN { printf "| %s | %s | %.0f | %.2f |\n", m, s, r, c / t * 1e6 / n }'
}

echo "| mode | requests | requests/s | server CPU µs/request |"
echo "|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
    run none sampled
    run noop sampled
    run ferrotrace sampled
    run ferrotrace unsampled
    run otel sampled
    run otel unsampled
done
