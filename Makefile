SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
MAKEFLAGS += --no-print-directory

BIN := node_modules/.bin
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: setup generate lint deps breaking release-contracts build run test test-fast test-deps check-generated bench bench-quick bench-peers

# Installs the exact dependencies of package-lock.json.
setup:
	npm ci

node_modules/.package-lock.json: package-lock.json
	npm ci

# Regenerates gen/ from proto/: TypeScript (protoc-gen-es) and the descriptor set that server
# reflection serves.
# The descriptor set holds only what the gRPC listener serves (and the error details it sends):
# upstream contracts such as proto/inference are not services of ours.
SERVED_PROTOS := --path proto/infergate --path proto/grpc --path proto/google/rpc

generate: node_modules/.package-lock.json
	$(BIN)/buf generate
	$(BIN)/buf build $(SERVED_PROTOS) -o gen/infergate.binpb

# Fails when gen/ is not what `make generate` produces from proto/.
check-generated: node_modules/.package-lock.json
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(BIN)/buf generate --output "$$tmp"; \
	$(BIN)/buf build $(SERVED_PROTOS) -o "$$tmp/gen/infergate.binpb"; \
	diff -r "$$tmp/gen" gen || { echo "gen/ is stale: run make generate and commit"; exit 1; }

lint: node_modules/.package-lock.json
	$(BIN)/buf lint
	$(BIN)/tsc -p tsconfig.test.json
	$(BIN)/tsc -p console/tsconfig.json
	$(MAKE) deps

# Fails when an import in src/ points up the layers (docs/architecture.md, "Layers"; the rules,
# each with its reason, are in .dependency-cruiser.cjs) or closes a cycle.
deps: node_modules/.package-lock.json
	$(BIN)/depcruise src --config .dependency-cruiser.cjs

# Fails when proto/ breaks compatibility with the last released contract (contracts/).
breaking: node_modules/.package-lock.json
	$(BIN)/buf breaking --against contracts/released.binpb

# Records proto/ as released: later changes must stay compatible with it.
release-contracts: node_modules/.package-lock.json
	$(BIN)/buf build --exclude-source-info -o contracts/released.binpb

build: node_modules/.package-lock.json
	npm run --silent build

# Serves the embedded default (the built-in mock models) on 127.0.0.1:50051 (gRPC) and
# 127.0.0.1:8080 (Connect, gRPC-Web, JSON). Pass flags with ARGS="--config infergate.yaml".
run: build
	node bin/infergate.js $(ARGS)

# Debian packages for the Python client test (installed only when missing).
test-deps:
	scripts/install-test-deps.sh

# Runs every test: unit, in-memory, and end to end on loopback ports (builds dist/ first).
test: node_modules/.package-lock.json test-deps
	$(BIN)/vitest run $(ARGS)

# The same without the slow tier (vitest.config.ts, slowTests): for the edit-test loop. CI runs
# `make test`, every tier.
test-fast: node_modules/.package-lock.json test-deps
	$(BIN)/vitest run --project fast $(ARGS)

# Benchmarks on loopback (docs/benchmarks.md): overhead, ceilings, cache, streaming, 10,000 held
# streams, the Portkey peer (installed first when it can be), --workers, Predict against a KServe
# fake, the upstream-client floor, embeddings, the CPU tracing and budgets add (issue 20), and a
# CPU profile of infergate. About 22 minutes; writes
# bench/RESULTS.md and bench/results.json.
bench: node_modules/.package-lock.json
	$(MAKE) bench-peers || echo "bench: Portkey could not be installed; its figures are skipped"
	bench/run.sh --profile

# Every benchmark for about a second, to check the harness (CI); the figures mean nothing.
# Writes bench/out/RESULTS-quick.md.
bench-quick: node_modules/.package-lock.json
	bench/run.sh --quick

# Installs the peer gateway (Portkey, from npm) into bench/peers/, never into our dependencies.
bench-peers:
	cd bench/peers && npm ci --no-audit --no-fund
