# syntax=docker/dockerfile:1
# The fedauthz container image (docs/container-image.md). scripts/image-rootfs performs the same
# release build and the runtime stage's layout on a host without a container engine, and
# tests/container.rs checks this file's contract and runs that layout; keep the three in step.

# Builder: Debian 12, like the runtime image, so the binary links the glibc and OpenSSL 3 that
# distroless cc-debian12 carries. The toolchain is the one CI uses (Cargo.toml: edition 2024,
# rust-version 1.88 as the minimum).
FROM rust:1.95-bookworm AS builder

# josekit links OpenSSL: its headers and pkg-config. No protoc: build.rs compiles proto/ with
# protox (pure Rust).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Exactly what `cargo build` reads (.dockerignore admits nothing else): the manifest and lock
# file, build.rs and its protos, the sources, and benches/ (Cargo.toml declares a bench target
# whose file must exist for the manifest to load).
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY benches ./benches
COPY src ./src

# Dependency cache: BuildKit cache mounts (registry, git checkouts, target/) rather than
# cargo-chef planner/cook stages. One stage and no extra tool in the builder, the build script
# and the crate itself are cached too, and `--locked` applies to the one build there is. The
# cache stays with the builder (it is not exported with --cache-to): a CI runner without a
# persistent builder starts cold. target/ is a cache mount, so the binary is copied out in the
# same step. /out is what the runtime stage takes: the binary and the mount points.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
 && install -D -m 0755 target/release/fedauthz /out/usr/local/bin/fedauthz \
 && install -d -m 0755 /out/etc/fedauthz/config /out/etc/fedauthz/secrets

# Runtime: glibc, libssl3, ca-certificates and tzdata, no shell; runs as 65532:65532.
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG SOURCE_URL=
LABEL org.opencontainers.image.title="fedauthz" \
      org.opencontainers.image.description="Envoy ext_authz v3 service that verifies JWTs from many issuers" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      fedauthz.contract.secrets-dir="/etc/fedauthz/secrets" \
      fedauthz.contract.writable-paths="/tmp"

COPY --from=builder /out/usr/local/bin/fedauthz /usr/local/bin/fedauthz
COPY --from=builder /out/etc/fedauthz /etc/fedauthz

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# gRPC (ext_authz, grpc.health.v1) and admin (/healthz, /readyz, /metrics).
EXPOSE 50051 9191
# No HEALTHCHECK: there is no shell to run one, and Kubernetes ignores it; probes use the admin
# paths or native gRPC health.
ENTRYPOINT ["/usr/local/bin/fedauthz"]
CMD ["serve", "--config", "/etc/fedauthz/config/config.yaml"]
