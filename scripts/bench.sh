#!/usr/bin/env bash
# dosql's benchmark (`make bench`; not part of `make test`). Expects the default wasm build
# (make wasm) and the worker's node_modules (workerd, esbuild); `make bench` provides both.
#
#   scripts/bench.sh                  # full: 5 runs after a warm-up, W6 10 s, W4 50 MB (~10 min on 2 cores)
#   BENCH_QUICK=1 scripts/bench.sh    # quick: 3 runs, W6 3 s, W4 10 MB (~3-4 min)
#
# Also: BENCH_REPS, BENCH_W6_SECONDS, BENCH_W4_MB, BENCH_PORT (8788), BENCH_OUT (default
# bench/RESULTS.md). Steps: npm ci in bench/ when needed; the native floor binary
# (cargo build --release -p dosql-bench); bench/build.mjs (bundles, the asyncify build, cached);
# bench/run.mjs (one workerd process, every contender; writes bench/RESULTS.md). bench/README.md
# says what is measured and how to read it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

wasm="target/wasm/dosql.wasm"
[ -f "$wasm" ] || { echo "bench.sh: $wasm is missing (run: make wasm)" >&2; exit 1; }
[ -x worker/node_modules/.bin/workerd ] || { echo "bench.sh: worker/node_modules is missing (run: cd worker && npm ci)" >&2; exit 1; }

if [ ! -d bench/node_modules ] || [ bench/package-lock.json -nt bench/node_modules/.package-lock.json ]; then
  (cd bench && npm ci --no-audit --no-fund --loglevel=error)
fi
cargo build --release --locked -p dosql-bench
worker/node_modules/.bin/tsc --noEmit -p bench
node bench/build.mjs
exec node bench/run.mjs
