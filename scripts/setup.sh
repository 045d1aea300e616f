#!/usr/bin/env bash
# Installs everything dosql's build and tests need on a fresh Debian 12 machine, and nothing
# on a machine that already has it. Idempotent: `make` calls it through a stamp file.
#
# The wasm toolchain: a machine with rustup's wasm32-wasip1 target and a wasi-sdk (WASI_SDK_PATH)
# needs no Debian parts. Elsewhere (rustup here cannot fetch targets) Debian's rustc-web builds
# std from source (-Zbuild-std) and clang-19 + wasi-libc compile SQLite; see DEVELOPERS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

have_rustup_wasm() {
  command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1
}
have_wasi_sdk() { [ -n "${WASI_SDK_PATH:-}" ] && [ -x "${WASI_SDK_PATH}/bin/clang" ]; }

apt_pkgs=()
need_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' || apt_pkgs+=("$1"); }

if ! (have_rustup_wasm && have_wasi_sdk); then
  for p in rustc-web cargo-web rust-web-src clang-19 lld-19 llvm-19 wasi-libc libclang-rt-19-dev-wasm32; do
    need_pkg "$p"
  done
fi
need_pkg binaryen
command -v node >/dev/null 2>&1 || { need_pkg nodejs; need_pkg npm; }

if [ ${#apt_pkgs[@]} -gt 0 ]; then
  log "apt-get install ${apt_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

# Every npm project of the repository (worker/, bench/): installed exactly from its lock file.
for dir in worker bench; do
  [ -f "$dir/package-lock.json" ] || continue
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    log "npm ci ($dir/)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
log "ok"
