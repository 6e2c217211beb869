#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need when missing
# (Debian packages postgresql, clickhouse-server, zookeeper, chromium, openssl; the Python
# OpenTelemetry SDK for interop; Jaeger and Zipkin clients in a virtualenv and
# an npm prefix), then checks formatting, import cycles and lints, then runs
# `cargo test --workspace`.
#
# Usage: ./scripts/test.sh            (from the repository root)
# Env:   CARGO_TARGET_DIR  build cache (default: ~/.cache/ferrotrace/target)
#        CI=true           a missing server binary fails the run instead of skipping
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferrotrace/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log() { printf '\n== %s\n' "$*"; }

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi
}

missing_pkgs=()
pg_bin_dir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return 0; }; done
  command -v initdb >/dev/null && { dirname "$(command -v initdb)"; return 0; }
  return 1
}
pg_bin_dir >/dev/null || missing_pkgs+=(postgresql)
command -v clickhouse-server >/dev/null || [ -x /usr/bin/clickhouse ] || missing_pkgs+=(clickhouse-server)
# ZooKeeper (Java) for the replicated ClickHouse cluster tests.
{ [ -f /usr/share/java/zookeeper.jar ] && [ -x /usr/bin/java ]; } || missing_pkgs+=(zookeeper)
command -v chromium >/dev/null || missing_pkgs+=(chromium)
[ -x /usr/bin/openssl ] || missing_pkgs+=(openssl)
command -v npm >/dev/null || missing_pkgs+=(npm)
if [ "${#missing_pkgs[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  sudo_if_needed apt-get update -qq
  sudo_if_needed apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
fi
if d=$(pg_bin_dir); then export FERROTRACE_PG_BIN="${FERROTRACE_PG_BIN:-$d}"; fi

# Official Python OpenTelemetry SDK, for the collector's interop tests.
if ! python3 -c 'import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http' 2>/dev/null; then
  log "installing the Python OpenTelemetry SDK (interop tests)"
  python3 -m pip install -q --disable-pip-version-check \
    opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc opentelemetry-exporter-otlp-proto-http
fi

# moto in server mode: the S3-compatible server the cold-tier tests start
# (otlp-collector/tests/cold_tier.rs).
if ! python3 -c 'import moto.server' 2>/dev/null; then
  log "installing moto[server] (cold tier S3 tests)"
  python3 -m pip install -q --disable-pip-version-check 'moto[server]'
fi
if [ "${CI:-}" = true ]; then python3 -c 'import moto.server'; fi

# Jaeger and Zipkin clients for the interop tests (otlp-collector/tests/
# interop_jaeger_zipkin.rs). They are retired and pin old libraries (protobuf
# 3), so they get a virtualenv of their own instead of the system Python, and
# Node's jaeger-client an npm prefix. The tests find them at these paths.
export FERROTRACE_PY_LEGACY="${FERROTRACE_PY_LEGACY:-$HOME/.cache/ferrotrace/py-legacy/bin/python}"
export FERROTRACE_NODE_JAEGER="${FERROTRACE_NODE_JAEGER:-$HOME/.cache/ferrotrace/node-jaeger/node_modules}"
# Each module is imported in its own interpreter: py_zipkin and the OTel Zipkin
# protobuf exporter both register a top-level `zipkin.proto`, so importing
# them together fails although each test only ever loads one of them.
legacy_modules=(jaeger_client py_zipkin opentelemetry.exporter.jaeger.thrift
  opentelemetry.exporter.jaeger.proto.grpc opentelemetry.exporter.zipkin.json
  opentelemetry.exporter.zipkin.proto.http)
legacy_ok() {
  local m
  for m in "${legacy_modules[@]}"; do
    "$FERROTRACE_PY_LEGACY" -c "import $m" 2>/dev/null || { [ "${1:-}" = loud ] && "$FERROTRACE_PY_LEGACY" -c "import $m"; return 1; }
  done
}
if ! legacy_ok; then
  log "installing the Python Jaeger/Zipkin clients in a virtualenv (interop tests)"
  venv="$(dirname "$(dirname "$FERROTRACE_PY_LEGACY")")"
  python3 -m venv "$venv"
  # six: jaeger-client's generated Thrift code imports it without declaring it.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    'jaeger-client==4.8.0' six 'py-zipkin==1.2.8' 'protobuf==3.20.3' \
    'opentelemetry-sdk==1.21.0' 'opentelemetry-exporter-jaeger-thrift==1.21.0' \
    'opentelemetry-exporter-jaeger-proto-grpc==1.21.0' \
    'opentelemetry-exporter-zipkin-json==1.21.0' 'opentelemetry-exporter-zipkin-proto-http==1.21.0'
fi
if [ "${CI:-}" = true ]; then legacy_ok loud; fi
if ! NODE_PATH="$FERROTRACE_NODE_JAEGER" node -e "require('jaeger-client')" 2>/dev/null; then
  log "installing Node's jaeger-client (interop tests)"
  npm install --silent --no-audit --no-fund --prefix "$(dirname "$FERROTRACE_NODE_JAEGER")" jaeger-client@3.19.0
fi
if [ "${CI:-}" = true ]; then NODE_PATH="$FERROTRACE_NODE_JAEGER" node -e "require('jaeger-client')"; fi

# cargo-deb, for the Debian packaging test (otlp-collector/tests/packaging.rs);
# the version is pinned because the test relies on its command line.
if ! cargo deb --version 2>/dev/null | grep -q '3\.8\.0'; then
  log "installing cargo-deb 3.8.0 (packaging test; about 2 minutes on 2 cores)"
  cargo install cargo-deb --version 3.8.0 --locked
fi

log "cargo fmt --check"
cargo fmt --all -- --check

# Layering: no import cycles between the collector's modules (the script
# follows every use and inline path through re-exports; its own test proves
# it sees each kind of path). A new cycle fails the run here.
log "import cycles (otlp-collector/scripts/import_cycles.py)"
python3 otlp-collector/scripts/import_cycles_test.py
python3 otlp-collector/scripts/import_cycles.py
# docs/architecture.md's module map names every file of the collector and
# no file that is gone; no production file passes 800 lines without a reason.
python3 otlp-collector/scripts/architecture_doc_check.py

log "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p ferrotrace --all-targets --features tls --locked -- -D warnings

log "cargo test --workspace"
cargo test --workspace --locked
