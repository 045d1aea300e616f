# dosql: the two commands are `make run` (build, then serve databases on workerd) and
# `make test` (every test). Everything else here serves those two.
SHELL := /bin/bash
.DEFAULT_GOAL := help

SETUP_STAMP := target/.setup-stamp

.PHONY: help setup test test-rust lint wasm-check

help:
	@echo "make run   - build and serve dosql on workerd (PORT, DATA_DIR)"
	@echo "make test  - run every test (installs what it needs first)"

# Installs the toolchain and npm packages once per machine (apt, npm ci); re-run when the
# script or the lock file changes.
$(SETUP_STAMP): scripts/setup.sh $(wildcard worker/package-lock.json)
	bash scripts/setup.sh
	@mkdir -p $(dir $@) && touch $@

setup: $(SETUP_STAMP)

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

test-rust: setup
	cargo test --workspace --locked

# The VFS must keep building for the Durable Object target.
wasm-check: setup
	bash scripts/wasm-build.sh build --release -p dosql-vfs --features os-other

test: lint test-rust wasm-check
