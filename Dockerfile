# syntax=docker/dockerfile:1
#
# prom-mtls-webhook: a static binary on distroless/static, non-root, no shell.
#
#   docker build -t prom-mtls-webhook:0.2.0 \
#     --build-arg VERSION=0.2.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# The build stage runs scripts/build-release.sh, the same release build that
# CI runs, so what CI checks is what the image ships. It builds for the
# platform the stage runs on (x86_64 or aarch64, rustc's host), so the image's
# architecture is the build machine's, or the one `--platform` asks for.
#
# Without a Docker engine, scripts/build-image.sh assembles the same image
# (same binary, user, entrypoint, ports and labels) from the release binary,
# and scripts/check-image.sh runs it: see docs/image.md.

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
# The lock file first: `--locked` refuses to build without it, and a missing
# Cargo.lock should fail here, not halfway through the build.
COPY Cargo.toml Cargo.lock ./
# The rest of the sources; .dockerignore keeps out target/, .git, .tools and certs/out.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    scripts/build-release.sh --out /out

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=0.2.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="prom-mtls-webhook" \
      org.opencontainers.image.description="Mutating admission webhook that wires Prometheus to Istio's workload certificates and scrapes over mTLS exactly where the mesh requires it" \
      org.opencontainers.image.source="https://github.com/prom-mtls-webhook/prom-mtls-webhook" \
      org.opencontainers.image.url="https://github.com/prom-mtls-webhook/prom-mtls-webhook" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /out/prom-mtls-webhook /usr/local/bin/prom-mtls-webhook
# distroless' "nonroot" user; the chart's securityContext runs as the same IDs.
USER 65532:65532
# 8443: TLS, POST /mutate; 8080: /healthz, /readyz, /metrics.
EXPOSE 8443 8080
# The other subcommands (mutate, certs) stay reachable: docker run IMAGE certs --out /tmp/x
ENTRYPOINT ["/usr/local/bin/prom-mtls-webhook"]
CMD ["serve"]
