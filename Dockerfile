# syntax=docker/dockerfile:1
#
# ferrotrace-collector as a container: see docs/operations.md ("Container image").
#
#   docker build -t ferrotrace-collector .
#   docker run -d -p 4317:4317 -p 4318:4318 -p 9411:9411 -p 16686:16686 \
#     -v ferrotrace-data:/var/lib/ferrotrace --stop-timeout 30 ferrotrace-collector
#
# Not built on the project's development machine, which has no Docker engine;
# the same binary, configuration and layout are built and installed as a .deb
# by the test suite (otlp-collector/tests/packaging.rs).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ferrotrace-collector --bin ferrotrace-collector \
 && strip target/release/ferrotrace-collector

FROM debian:bookworm-slim
# curl for the health check; CA certificates for TLS to PostgreSQL/ClickHouse.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ferrotrace \
 && useradd --system --uid 10001 --gid ferrotrace --home-dir /var/lib/ferrotrace \
      --no-create-home --shell /usr/sbin/nologin ferrotrace \
 && install -d -o ferrotrace -g ferrotrace -m 0750 /var/lib/ferrotrace
COPY --from=build /src/target/release/ferrotrace-collector /usr/bin/ferrotrace-collector
COPY otlp-collector/packaging/collector.toml /etc/ferrotrace/collector.toml
# Inside the container the listeners must accept connections from outside it.
ENV FERROTRACE_OTLP_GRPC_ADDR=0.0.0.0:4317 \
    FERROTRACE_OTLP_HTTP_ADDR=0.0.0.0:4318 \
    FERROTRACE_ZIPKIN_ADDR=0.0.0.0:9411 \
    FERROTRACE_HTTP_ADDR=0.0.0.0:16686 \
    FERROTRACE_LOG_FORMAT=json
VOLUME /var/lib/ferrotrace
EXPOSE 4317 4318 9411 16686
USER ferrotrace:ferrotrace
# SIGTERM drains the queue for up to shutdown.drain_timeout_ms (10 s): give
# `docker stop` more than that (--stop-timeout 30).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS http://127.0.0.1:16686/healthz || exit 1
ENTRYPOINT ["/usr/bin/ferrotrace-collector"]
CMD ["--config", "/etc/ferrotrace/collector.toml"]
