#!/usr/bin/env bash
# Build for wasm32-wasip1 with the environment of scripts/wasm-env.sh. See DEVELOPERS.md.
#
#   scripts/wasm-build.sh [SUBCOMMAND] [CARGO ARGS...]
#
#   scripts/wasm-build.sh --release -p dosql-vfs      # = cargo build --release ...
#   scripts/wasm-build.sh check -p dosql-pagestore    # any cargo subcommand that takes --target
#
# Adds `--target wasm32-wasip1` (unless given) and $DOSQL_WASM_BUILD_STD (-Zbuild-std on the
# Debian toolchain). Output: $CARGO_TARGET_DIR/wasm32-wasip1/<profile>/*.wasm, where
# CARGO_TARGET_DIR defaults to <repo>/target/wasm; the .wasm files there are listed on stderr.
# Works from any directory (cargo finds the manifest from the cwd, or pass --manifest-path).
set -euo pipefail
# shellcheck source=scripts/wasm-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/wasm-env.sh"

sub=build
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then sub="$1"; shift; fi

args=("$@")
have_target=0
for a in "${args[@]+"${args[@]}"}"; do
  case "$a" in --target|--target=*) have_target=1 ;; esac
done
if [ "$have_target" = 0 ]; then args=(--target wasm32-wasip1 "${args[@]+"${args[@]}"}"); fi

# shellcheck disable=SC2086  # DOSQL_WASM_BUILD_STD is a (possibly empty) list of flags
set -- cargo "$sub" "${args[@]}" ${DOSQL_WASM_BUILD_STD:-}
if [ "${DOSQL_VERBOSE:-0}" = 1 ]; then echo "+ $*" >&2; fi
start=$SECONDS
"$@"

if [ "$sub" = build ]; then
  profile=debug
  for a in "${args[@]}"; do
    case "$a" in
      --release|-r) profile=release ;;
      --profile=*) profile="${a#--profile=}" ;;
    esac
  done
  prev=""
  for a in "${args[@]}"; do
    if [ "$prev" = --profile ]; then profile="$a"; fi
    prev="$a"
  done
  [ "$profile" = dev ] && profile=debug
  out="$CARGO_TARGET_DIR/wasm32-wasip1/$profile"
  echo "wasm-build: $((SECONDS - start)) s, toolchain $DOSQL_WASM_TOOLCHAIN, output in $out" >&2
  find "$out" -maxdepth 1 -name '*.wasm' -printf '  %p (%s bytes)\n' >&2 2>/dev/null || true
fi
