# Latchkey. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO        ?= go
PG        := deploy/local/pg.sh
# The suite runs every package with the race detector; the timeout is a
# safety net far above the few minutes it takes.
TEST_FLAGS ?= -race -count=1 -timeout 30m

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: run
run: ## run the whole stack locally: PostgreSQL, a web mailbox, and `latchkey dev`
	@deploy/local/run.sh

.PHONY: test
test: verify-generated ## the whole suite against real PostgreSQL, JetStream and SMTP, with -race
	@url=$$($(PG) start) && LATCHKEY_TEST_DATABASE_URL="$$url" $(GO) test $(TEST_FLAGS) ./...

.PHONY: generate
generate: ## regenerate the sqlc code from queries/ and schema/
	$(GO) tool sqlc generate

.PHONY: verify-generated
verify-generated: ## fail when the committed sqlc code is stale
	@$(GO) tool sqlc diff || { echo "generated code is stale: run 'make generate' and commit the result" >&2; exit 1; }

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: verify
verify: verify-generated lint ## everything CI checks besides the tests

# Builds stamp the git revision (`latchkey version`) when git can read the
# checkout; explicit, because some environments set GOFLAGS=-buildvcs=false.
BUILDVCS := $(shell git rev-parse --is-inside-work-tree >/dev/null 2>&1 && echo auto || echo false)

.PHONY: build
build: ## build bin/latchkey
	$(GO) build -trimpath -buildvcs=$(BUILDVCS) -o bin/latchkey ./cmd/latchkey

BENCH_OUT  ?= bench-out
BENCH_ARGS ?=

.PHONY: bench
bench: ## the load harness: full stack on loopback, table + $(BENCH_OUT)/bench.json (BENCH_ARGS=--profile, --quick…)
	@$(GO) build -buildvcs=$(BUILDVCS) -o .local/bin/latchkey ./cmd/latchkey
	@url=$$($(PG) start) && LATCHKEY_DATABASE_URL="$$url" BENCH_OUT="$(BENCH_OUT)" .local/bin/latchkey bench $(BENCH_ARGS)

.PHONY: microbench
microbench: ## Go micro-benchmarks (go test -bench)
	@url=$$($(PG) start) && LATCHKEY_TEST_DATABASE_URL="$$url" $(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: db-stop
db-stop: ## stop the private PostgreSQL cluster
	@$(PG) stop

.PHONY: clean
clean: ## remove build output (keeps .local: the database and mailbox)
	rm -rf bin bench-out
