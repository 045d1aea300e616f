# dosql: the two commands are `make run` (build, then serve databases on workerd) and
# `make test` (every test). Everything else here serves those two.
SHELL := /bin/bash
.DEFAULT_GOAL := help

SETUP_STAMP := target/.setup-stamp
WASM_RAW := target/wasm/wasm32-wasip1/wasm/dosql_wasm.wasm
WASM := target/wasm/dosql.wasm
# The features rustc's wasm32-wasip1 output uses; wasm-opt must be told to keep them.
WASM_OPT_FLAGS := -O3 --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
	--enable-nontrapping-float-to-int
WORKER := worker/dist/worker.js

.PHONY: help setup run test lint test-rust test-e2e test-node wasm worker bench

help:
	@echo "make run   - build, then serve dosql on workerd (PORT=8787, DATA_DIR=./data)"
	@echo "make test  - run every test (installs what it needs first)"

# The toolchain (Debian's wasm parts) and npm packages, once per machine; again when the
# script or the npm lock file changes.
$(SETUP_STAMP): scripts/setup.sh $(wildcard */package-lock.json)
	bash scripts/setup.sh
	@mkdir -p $(dir $@) && touch $@

setup: $(SETUP_STAMP)

# The Durable Object module (profile `wasm`: LTO, no debug info). Cargo decides what is
# stale; the rule always asks it.
wasm: setup
	bash scripts/wasm-build.sh build --profile wasm -p dosql-wasm
	@$(MAKE) --no-print-directory $(WASM)

# Binaryen after LLVM: 5-10% less wasm time on the benchmark and a smaller module
# (bench/README.md); re-run only when cargo produced a new module.
$(WASM): $(WASM_RAW)
	wasm-opt $(WASM_OPT_FLAGS) $< -o $@

worker: wasm
	DOSQL_WASM=$(WASM) node worker/build.mjs

run: worker
	bash scripts/run.sh

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cd worker && npx tsc --noEmit -p .
	worker/node_modules/.bin/tsc --noEmit -p bench

test-rust: setup
	cargo test --workspace --locked --exclude dosql-e2e

# End to end: a real workerd process serving the built worker, over HTTP.
test-e2e: worker
	cargo test -p dosql-e2e --locked -- --test-threads=2

# JavaScript clients (@libsql/client) against workerd.
test-node: worker
	cd worker && node --test test/

test: lint test-rust test-e2e test-node

# Not part of `make test`: timings are for the benchmark's own ratios, never assertions.
bench: worker
	bash scripts/bench.sh
