#!/usr/bin/env bash
# Storage syscalls per W3 request, per contender: `strace -c -f` on the benchmark's workerd
# while w3-drive.mjs sends 1,000 one-row inserts to one contender at a time (after its own
# warm-up run, so that each is counted in steady state; the counted run is w3-drive's 100
# warm-up inserts and its 1,000, 1,100 requests). Counts `pwrite64` (WAL frames),
# `pread64` (pages read past SQLite's cache) and `fsync` per request.
#
#   bash bench/tools/w3-strace.sh native-sql dosql-sync probe-sync
#
# Needs strace and a built bench (node bench/build.mjs). Uses BENCH_PORT (8788) and a
# scratch data directory; stops any workerd serving the benchmark first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root/bench"
port="${BENCH_PORT:-8788}"
data="$(mktemp -d)"
out="$(mktemp -d)"
pkill -f "workerd serve .*config.capnp" || true
../worker/node_modules/.bin/workerd serve config.capnp --socket-addr "http=127.0.0.1:$port" \
  --directory-path "bench-data=$data" >"$out/workerd.log" 2>&1 &
wpid=$!
trap 'kill $wpid 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/ping" >/dev/null && break; sleep 0.1; done
for c in "$@"; do
  DB="strace-$c" SEGS="$out/segs.json" node tools/w3-drive.mjs 1 "$c" >/dev/null
  strace -f -c -p "$wpid" -o "$out/$c.txt" 2>/dev/null &
  spid=$!
  sleep 0.5
  DB="strace-$c" N=1000 SEGS="$out/segs.json" node tools/w3-drive.mjs 1 "$c" >/dev/null
  kill -INT "$spid"
  wait "$spid" || true
  awk -v c="$c" '$NF ~ /^(pwrite64|pread64|fsync)$/ { n[$NF] = $4 }
    END { r = 1100; printf "%-14s per request: pwrite64 %.2f  pread64 %.2f  fsync %.2f\n", c, n["pwrite64"]/r, n["pread64"]/r, n["fsync"]/r }' "$out/$c.txt"
done
