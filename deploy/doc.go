// Package deploy holds no code: its tests check the deployment and
// observability files, since no container engine or cluster runs where the
// tests do.
//
// The files checked are docker-compose.yml, Dockerfile, .dockerignore and
// prometheus.yml at the repository root, and deploy/prometheus (alert and
// recording rules with promtool unit tests), deploy/grafana (provisioning and
// the linkgate dashboard) and deploy/k8s (kustomize base and overlays). The
// tests use the real tools where they exist: promtool from Debian's prometheus
// package, kubectl's built-in kustomize and the Go toolchain; a missing tool
// skips loudly, or fails under CI=true (internal/testenv).
//
// The tests only read the repository and write to their own temporary
// directories, so they may run in parallel with each other and with any other
// package's tests.
package deploy
