# syntax=docker/dockerfile:1
# meshgate sds-agent image. Build from the repository root:
#   docker build -f manifests/docker/sds-agent.Dockerfile -t meshgate/sds-agent:dev .
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sds-agent \
 && install -D -m 0755 target/release/sds-agent /out/sds-agent

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/sds-agent /usr/local/bin/sds-agent
# Same uid as the gateway: the SDS socket it creates is owner-only.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sds-agent"]
