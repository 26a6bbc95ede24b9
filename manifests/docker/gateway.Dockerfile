# syntax=docker/dockerfile:1
# meshgate gateway image. Build from the repository root:
#   docker build -f manifests/docker/gateway.Dockerfile -t meshgate/gateway:dev .
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gateway \
 && install -D -m 0755 target/release/gateway /out/gateway

# distroless/cc: glibc and libgcc of Debian 12 (the builder's), no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/gateway /usr/local/bin/gateway
# 65532 is distroless' "nonroot". Never 1337: that is Istio's proxy uid, which
# gateway-init exempts from capture in sidecar mode.
USER 65532:65532
EXPOSE 8080 8443
ENTRYPOINT ["/usr/local/bin/gateway"]
