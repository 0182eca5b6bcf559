# syntax=docker/dockerfile:1
#
# linkgate container image: a static binary on distroless, running as a
# non-root user, with no shell. Build with
#   docker build --build-arg VERSION=$(git describe --tags --always) -t linkgate .
# go test ./deploy/ checks this file (no Docker engine runs in CI): the Go
# version matches go.mod, the binary builds with these flags and is static,
# and `linkgate probe` behaves as HEALTHCHECK expects.

ARG GO_VERSION=1.26

# ---- build: compile once for the target platform --------------------------
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
# Dependencies first, so that source edits reuse the module download layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/linkgate ./cmd/linkgate
# An empty data directory for the SQLite default (sqlite://linkgate.db in the
# working directory) when the image runs without LINKGATE_DATABASE_URL.
RUN mkdir -p /out/data

# ---- nginx-exporter: the upstream exporter plus a probe for its health check
# The upstream image is FROM scratch (no shell, no wget), so docker-compose.yml
# builds this stage to give the exporter a health check: `linkgate probe URL`
# GETs URL and exits 0 only on a 2xx answer.
FROM nginx/nginx-prometheus-exporter:1.4.2 AS nginx-exporter
COPY --from=build /out/linkgate /usr/local/bin/linkgate
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/linkgate", "probe", "http://127.0.0.1:9113/metrics"]

# ---- runtime: the default (last) stage ------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/linkgate /linkgate
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
# nonroot is uid 65532 in distroless; numeric so that runAsNonRoot can verify it.
USER 65532:65532
ENV LINKGATE_ADDR=:8080
EXPOSE 8080
# /ready answers 503 while starting, draining or when the store is down.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/linkgate", "probe", "http://127.0.0.1:8080/ready"]
# SIGTERM: /ready turns 503, serving goes on for LINKGATE_SHUTDOWN_DELAY (5s),
# then in-flight requests drain for up to LINKGATE_DRAIN_TIMEOUT (20s). Give
# the container a stop timeout above 25s (docker stop -t 30, compose
# stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/linkgate"]
