# shardsync container image: multi-stage build (Rust toolchain → Debian slim runtime).
#   docker build -t shardsync .
#   docker run --rm shardsync run --source redis://SRC:6379 --target redis://DST:6379 --metrics-addr 0.0.0.0:9108
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin shardsync

FROM debian:bookworm-slim
RUN useradd --system --create-home --home-dir /var/lib/shardsync shardsync
COPY --from=build /src/target/release/shardsync /usr/local/bin/shardsync
USER shardsync
WORKDIR /var/lib/shardsync
VOLUME /var/lib/shardsync
EXPOSE 9108
# `shardsync status` exits 0 while the run answers /status and is not failed.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s \
  CMD ["shardsync", "status", "--addr", "127.0.0.1:9108"]
ENTRYPOINT ["shardsync"]
CMD ["--help"]
