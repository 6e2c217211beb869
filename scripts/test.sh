#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need when missing
# (Debian packages postgresql, clickhouse-server, chromium, openssl; the Python
# OpenTelemetry SDK for interop), then checks formatting and lints, then runs
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
command -v chromium >/dev/null || missing_pkgs+=(chromium)
[ -x /usr/bin/openssl ] || missing_pkgs+=(openssl)
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

# cargo-deb, for the Debian packaging test (otlp-collector/tests/packaging.rs);
# the version is pinned because the test relies on its command line.
if ! cargo deb --version 2>/dev/null | grep -q '3\.8\.0'; then
  log "installing cargo-deb 3.8.0 (packaging test; about 2 minutes on 2 cores)"
  cargo install cargo-deb --version 3.8.0 --locked
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p ferrotrace --all-targets --features tls --locked -- -D warnings

log "cargo test --workspace"
cargo test --workspace --locked
