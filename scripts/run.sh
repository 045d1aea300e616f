#!/usr/bin/env bash
# Serves dosql on workerd in the foreground until Ctrl-C. `make run` builds first.
#
#   PORT=8787 DATA_DIR=./data scripts/run.sh
#
# PORT: the loopback port (default 8787). DATA_DIR: where Durable Object storage lives
# (default <repo>/data; created if missing). Keep one workerd version per DATA_DIR.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port="${PORT:-8787}"
data_dir="${DATA_DIR:-$root/data}"
workerd="$root/worker/node_modules/.bin/workerd"

missing=()
[ -x "$workerd" ] || missing+=("$workerd (run: cd worker && npm ci)")
for f in worker/dist/worker.js worker/dist/dosql.wasm; do
  [ -f "$root/$f" ] || missing+=("$root/$f (run: node worker/build.mjs, after the wasm build)")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "run.sh: not built; missing:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  echo "run.sh: 'make run' builds everything first." >&2
  exit 1
fi
case "$port" in '' | *[!0-9]*) echo "run.sh: PORT must be a number, got '$port'" >&2; exit 1 ;; esac

mkdir -p "$data_dir"
data_dir="$(cd "$data_dir" && pwd)"
echo "dosql: serving http://127.0.0.1:$port/ (data in $data_dir; Ctrl-C stops)"
# exec: workerd gets the signals (Ctrl-C) directly, and a caller's kill reaches it.
exec "$workerd" serve "$root/worker/config.capnp" \
  --socket-addr "http=127.0.0.1:$port" \
  --directory-path "dosql-data=$data_dir"
