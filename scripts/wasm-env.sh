#!/usr/bin/env bash
# Environment for a wasm32-wasip1 cargo build of dosql. See DEVELOPERS.md.
#
#   source scripts/wasm-env.sh          # set the environment in this shell
#   scripts/wasm-env.sh <cmd> [args]    # run one command with the environment set
#   scripts/wasm-env.sh                 # print the chosen environment
#
# Then: cargo build --release --target wasm32-wasip1 $DOSQL_WASM_BUILD_STD -p <crate>
# (scripts/wasm-build.sh does exactly that.)
#
# Two toolchains, chosen automatically (force one with DOSQL_WASM_TOOLCHAIN=rustup|debian):
#  rustup: rustup has the wasm32-wasip1 target AND a wasi-sdk exists (WASI_SDK_PATH, else
#          /opt/wasi-sdk). rustup's cargo, prebuilt std, the wasi-sdk's clang for C code.
#  debian: Debian's rustc-web (/usr/bin/rustc, /usr/bin/cargo) builds std from source
#          (-Zbuild-std, hence RUSTC_BOOTSTRAP=1); clang-19 + wasi-libc compile SQLite and
#          wasm-ld-19 links. This is what works on the project machines (rustup there is
#          x86_64-only and cannot fetch targets).
#
# Every variable below is a default: a value already in the environment wins.
#
# NOTE: LIBSQLITE3_FLAGS is read by libsqlite3-sys for whatever target it builds, native
# included, and PATH (debian mode) puts Debian's cargo first. So don't `source` this into a
# shell you also use for native builds; prefer the `scripts/wasm-env.sh <cmd>` form.
#
# Prints nothing when sourced unless DOSQL_VERBOSE=1. Safe under `set -euo pipefail` callers
# and safe to source twice.

__dosql_wasm_env() {
  local root toolchain sdk rustup_bin llvm_sfx wasi_inc wasi_lib

  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

  # ---- which toolchain -------------------------------------------------------------------
  sdk="${WASI_SDK_PATH:-}"
  if [ -z "$sdk" ] && [ -x /opt/wasi-sdk/bin/clang ]; then sdk=/opt/wasi-sdk; fi

  toolchain="${DOSQL_WASM_TOOLCHAIN:-}"
  if [ -z "$toolchain" ]; then
    toolchain=debian
    if [ -n "$sdk" ] && [ -x "$sdk/bin/clang" ] && command -v rustup >/dev/null 2>&1 \
      && rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
      toolchain=rustup
    fi
  fi

  case "$toolchain" in
    rustup)
      if [ -z "$sdk" ]; then
        echo "wasm-env.sh: DOSQL_WASM_TOOLCHAIN=rustup needs WASI_SDK_PATH (or /opt/wasi-sdk)" >&2
        return 1
      fi
      export WASI_SDK_PATH="$sdk"
      # rustup's proxies first on PATH (they normally are already).
      rustup_bin="$(dirname "$(command -v rustup 2>/dev/null || echo "${CARGO_HOME:-$HOME/.cargo}/bin/rustup")")"
      case ":$PATH:" in
        ":$rustup_bin:"*) ;;
        *) export PATH="$rustup_bin:$PATH" ;;
      esac
      export CC_wasm32_wasip1="${CC_wasm32_wasip1:-$sdk/bin/clang}"
      export AR_wasm32_wasip1="${AR_wasm32_wasip1:-$sdk/bin/llvm-ar}"
      export CFLAGS_wasm32_wasip1="${CFLAGS_wasm32_wasip1:---sysroot=$sdk/share/wasi-sysroot}"
      # rustup's wasm32-wasip1 std is prebuilt and self-contained (own crt + libc): no flags.
      export DOSQL_WASM_BUILD_STD="${DOSQL_WASM_BUILD_STD-}"
      ;;
    debian)
      # Paths of the Debian packages (rustc-web, clang-19, lld-19, llvm-19, wasi-libc).
      local rust_bin="${DOSQL_WASM_RUST_BIN:-/usr/bin}"
      llvm_sfx="${DOSQL_LLVM_SUFFIX--19}"
      wasi_inc="${DOSQL_WASI_INCLUDE:-/usr/include/wasm32-wasi}"
      wasi_lib="${DOSQL_WASI_LIB:-/usr/lib/wasm32-wasi}"

      # Debian's rustc/cargo first (rustup's proxies in ~/.cargo/bin are x86_64-only).
      case ":$PATH:" in
        ":$rust_bin:"*) ;;
        *) export PATH="$rust_bin:$PATH" ;;
      esac
      # -Zbuild-std is unstable; rustc-web is a stable compiler.
      export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"
      # Linker and libc search path, scoped to the wasm target so host build scripts and
      # proc macros still link natively. (/usr/bin/rust-lld, where it exists, points at an
      # uninstalled lld: always name the linker.) NB cargo ignores target rustflags when
      # RUSTFLAGS is set; a user-set RUSTFLAGS must then carry -C link-arg=-L$wasi_lib itself.
      export CARGO_TARGET_WASM32_WASIP1_LINKER="${CARGO_TARGET_WASM32_WASIP1_LINKER:-wasm-ld$llvm_sfx}"
      export CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="${CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS:--C link-arg=-L$wasi_lib}"
      export CC_wasm32_wasip1="${CC_wasm32_wasip1:-clang$llvm_sfx}"
      export AR_wasm32_wasip1="${AR_wasm32_wasip1:-llvm-ar$llvm_sfx}"
      # Without -nostdlibinc clang silently picks up glibc's /usr/include for wasm32.
      export CFLAGS_wasm32_wasip1="${CFLAGS_wasm32_wasip1:--nostdlibinc -isystem $wasi_inc}"
      export DOSQL_WASM_BUILD_STD="${DOSQL_WASM_BUILD_STD-"-Zbuild-std=std,panic_abort"}"
      ;;
    *)
      echo "wasm-env.sh: DOSQL_WASM_TOOLCHAIN must be 'rustup' or 'debian', not '$toolchain'" >&2
      return 1
      ;;
  esac
  export DOSQL_WASM_TOOLCHAIN="$toolchain"

  # SQLite for the Durable Object: no OS layer (our VFS registers in sqlite3_os_init),
  # single-threaded, no WAL, temp tables in memory, batch-atomic writes for the page store.
  export LIBSQLITE3_FLAGS="${LIBSQLITE3_FLAGS--DSQLITE_OS_OTHER=1 -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_DEFAULT_MEMSTATUS=0 -DSQLITE_TEMP_STORE=3 -DSQLITE_THREADSAFE=0 -DSQLITE_OMIT_WAL -DSQLITE_ENABLE_BATCH_ATOMIC_WRITE}"

  # A target dir of its own (DOSQL_WASM_TARGET_DIR, else $CARGO_TARGET_DIR/wasm, else
  # <repo>/target/wasm), never the native one. This environment changes WHAT gets built
  # (LIBSQLITE3_FLAGS, RUSTC_BOOTSTRAP, Debian's cargo/rustc) without always changing the
  # unit hashes cargo files build-script outputs under. libsqlite3-sys reads
  # LIBSQLITE3_FLAGS for every target and only declares rerun-if-env-changed, so a host
  # build by rustup's rustc that inherits this environment (rustup mode's
  # `scripts/wasm-env.sh cargo test`; `cargo`, rust-analyzer or `~/.cargo/bin/cargo` in a
  # shell that sourced this file) is the very same unit as the native build and reuses its
  # build-script out dir: it recompiles SQLite without an OS layer and single-threaded over
  # the native one, and the next plain native build recompiles it back (about 50 s each
  # way, measured). In a separate dir that damage stays here. Also: cargo holds a
  # per-target-dir lock (a wasm build would wait on rust-analyzer), `cargo clean` would
  # wipe both caches, and rustup's cargo 1.95 and Debian's 1.96 then never write into
  # one dir. (Proper --target wasm builds alone would coexist in the native dir: measured,
  # no rebuilds when alternating. The leaks above are the reason.)
  if [ -z "${DOSQL_WASM_TARGET_DIR:-}" ]; then
    if [ -n "${CARGO_TARGET_DIR:-}" ]; then
      DOSQL_WASM_TARGET_DIR="$CARGO_TARGET_DIR/wasm"
    else
      DOSQL_WASM_TARGET_DIR="$root/target/wasm"
    fi
  fi
  export DOSQL_WASM_TARGET_DIR
  export CARGO_TARGET_DIR="$DOSQL_WASM_TARGET_DIR"
  export DOSQL_ROOT="${DOSQL_ROOT:-$root}"
  export DOSQL_WASM_ENV=1
}

__dosql_wasm_env_show() {
  local v
  for v in DOSQL_WASM_TOOLCHAIN DOSQL_WASM_BUILD_STD CARGO_TARGET_DIR WASI_SDK_PATH \
    RUSTC_BOOTSTRAP CARGO_TARGET_WASM32_WASIP1_LINKER CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS \
    RUSTFLAGS CC_wasm32_wasip1 AR_wasm32_wasip1 CFLAGS_wasm32_wasip1 LIBSQLITE3_FLAGS; do
    if [ -n "${!v+x}" ]; then printf '%s=%q\n' "$v" "${!v}"; fi
  done
  printf 'cargo=%s (%s)\n' "$(command -v cargo)" "$(cargo --version 2>/dev/null)"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  # Sourced: leave no helper functions behind; fail the `source` if the setup failed.
  if __dosql_wasm_env; then
    if [ "${DOSQL_VERBOSE:-0}" = 1 ]; then __dosql_wasm_env_show >&2; fi
    unset -f __dosql_wasm_env __dosql_wasm_env_show
  else
    unset -f __dosql_wasm_env __dosql_wasm_env_show
    return 1
  fi
else
  # Executed.
  set -euo pipefail
  __dosql_wasm_env
  if [ "${DOSQL_VERBOSE:-0}" = 1 ] || [ $# -eq 0 ]; then __dosql_wasm_env_show >&2; fi
  if [ $# -gt 0 ]; then exec "$@"; fi
fi
