# Multi-stage build: the service and the upstream simulator from one image, run as non-root.
#   docker build -t order-service .
#   docker run order-service                 # the API (HTTP_ADDR defaults to 0.0.0.0:8000 here)
#   docker run order-service upstream-sim    # the simulator
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src src
COPY simulator simulator
COPY migrations migrations
RUN cargo build --release --locked --workspace --bins \
 && strip target/release/order-service target/release/upstream-sim

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --create-home app
COPY --from=build /src/target/release/order-service /src/target/release/upstream-sim /usr/local/bin/
WORKDIR /app
USER app
ENV HTTP_ADDR=0.0.0.0:8000 \
    DATABASE_URL=sqlite:///app/orders.db \
    RUST_LOG=info
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/health/live || exit 1
CMD ["order-service"]
