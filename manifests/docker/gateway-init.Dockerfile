# syntax=docker/dockerfile:1
# meshgate gateway-init image (the pod's init container). Build from the repository root:
#   docker build -f manifests/docker/gateway-init.Dockerfile -t meshgate/gateway-init:dev .
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gateway-init \
 && install -D -m 0755 target/release/gateway-init /out/gateway-init

# gateway-init drives iptables-restore/iptables-save; Debian's iptables package
# brings both backends (iptables-nft and iptables-legacy), and gateway-init picks
# the one that holds the node's rules. Same Debian release as the builder (glibc).
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/gateway-init /usr/local/bin/gateway-init
# Runs as root with only NET_ADMIN and NET_RAW (the chart's securityContext).
USER 0:0
ENTRYPOINT ["/usr/local/bin/gateway-init"]
