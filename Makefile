# linkgate: `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

# Tests use the local PostgreSQL and Redis when they answer; otherwise each test
# starts its own servers on free ports (see internal/testenv).
LOCAL_PG := $(shell pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && echo 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable')
LOCAL_REDIS := $(shell redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && echo 'redis://127.0.0.1:6379/0')
export LINKGATE_TEST_POSTGRES_URL ?= $(LOCAL_PG)
export LINKGATE_TEST_REDIS_URL ?= $(LOCAL_REDIS)

.PHONY: help run build test test-unit vet lint audit clean bench

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

run: build ## Run linkgate in the embedded default (SQLite file linkgate.db, no Redis) on :8080
	./bin/linkgate

build: ## Build the static binary into bin/linkgate
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/linkgate ./cmd/linkgate

test: vet ## Run every test (unit, integration against real servers, end to end)
	CGO_ENABLED=1 $(GO) test -race -shuffle=on -count=1 -timeout 20m ./...

test-unit: ## Run the fast unit tests only (no servers)
	$(GO) test -count=1 ./internal/links/ ./internal/config/ ./internal/clicks/

vet: ## go vet and gofmt check
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet ./...

lint: vet ## golangci-lint with .golangci.yml
	$(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.6.2 run ./...

audit: ## go mod verify and govulncheck
	$(GO) mod verify
	$(GO) run golang.org/x/vuln/cmd/govulncheck@v1.1.4 ./...

bench: ## Benchmarks on loopback (needs wrk, nginx, redis-server, PostgreSQL): bench/results.md, bench/go-bench.txt; flags via BENCH_FLAGS=-h
	$(GO) run ./loadtest/bench $(BENCH_FLAGS)

clean: ## Remove build outputs
	rm -rf bin
