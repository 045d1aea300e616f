// The smallest WASI preview1 shim dosql.wasm needs. SQLite runs with its own VFS (no files),
// so only a clock, randomness, stdout/stderr (Rust panics, debug prints) and empty
// args/environment are real; every other import the module names answers ENOSYS.

const [ESUCCESS, EBADF, ENOSYS] = [0, 8, 52];

/** Thrown by proc_exit: unwinds out of the wasm like a trap (the instance is then dropped). */
export class WasiExit extends Error {
  constructor(readonly code: number) {
    super(`wasm called proc_exit(${code})`);
  }
}

type WasiFn = (...args: never[]) => number | void;

/**
 * The `wasi_snapshot_preview1` import object for `module`: every WASI function it imports,
 * real or ENOSYS. `memory` is called on each use because the memory's buffer changes when it
 * grows. `fixedRandomness`: a fixed xorshift stream instead of crypto.getRandomValues, for the
 * warm-up's instance (warmup.ts): Workers forbid generating random values at module scope.
 */
export function wasiImports(module: WebAssembly.Module, memory: () => WebAssembly.Memory, { fixedRandomness = false } = {}): Record<string, WasiFn> {
  let fixed = 0x9e3779b9;
  // One DataView per memory buffer (a new one only after the memory grew).
  let dataView: DataView | null = null;
  const view = (): DataView => {
    const buffer = memory().buffer;
    if (dataView?.buffer !== buffer) dataView = new DataView(buffer);
    return dataView;
  };
  const bytes = (ptr: number, len: number) => new Uint8Array(memory().buffer, ptr, len);
  const decoder = new TextDecoder();
  const pending: Record<number, string> = { 1: "", 2: "" };
  const zeroPair = (countPtr: number, sizePtr: number): number => {
    view().setUint32(countPtr, 0, true);
    view().setUint32(sizePtr, 0, true);
    return ESUCCESS;
  };

  const impl: Record<string, WasiFn> = {
    clock_time_get(_id: number, _precision: bigint, outPtr: number): number {
      // Date.now() in workerd advances only across I/O (a Spectre mitigation); good enough.
      // Nanoseconds as two u32 halves, exact in doubles and without a BigInt per call:
      // ms < 2^42, so (ms mod 2^32) * 10^6 < 2^52 and (ms div 2^32) * 10^6 < 2^30.
      const ms = Date.now();
      const low = (ms % 0x1_0000_0000) * 1_000_000;
      view().setUint32(outPtr, low % 0x1_0000_0000, true);
      view().setUint32(outPtr + 4, Math.floor(ms / 0x1_0000_0000) * 1_000_000 + Math.floor(low / 0x1_0000_0000), true);
      return ESUCCESS;
    },
    random_get(ptr: number, len: number): number {
      if (fixedRandomness) {
        const out = bytes(ptr, len);
        for (let i = 0; i < len; i++) {
          fixed ^= fixed << 13;
          fixed ^= fixed >>> 17;
          fixed ^= fixed << 5;
          out[i] = fixed & 0xff;
        }
      } else {
        // getRandomValues fills at most 65536 bytes per call.
        for (let off = 0; off < len; off += 65536) crypto.getRandomValues(bytes(ptr + off, Math.min(65536, len - off)));
      }
      return ESUCCESS;
    },
    fd_write(fd: number, iovs: number, iovsLen: number, nwrittenPtr: number): number {
      if (fd !== 1 && fd !== 2) return EBADF;
      const dv = view();
      let [total, text] = [0, ""];
      for (let i = 0; i < iovsLen; i++) {
        const len = dv.getUint32(iovs + i * 8 + 4, true);
        text += decoder.decode(bytes(dv.getUint32(iovs + i * 8, true), len), { stream: true });
        total += len;
      }
      // Line-buffer so that one message written in pieces logs as one line.
      const lines = (pending[fd] + text).split("\n");
      pending[fd] = lines.pop() ?? "";
      for (const line of lines) (fd === 1 ? console.log : console.error)(`dosql.wasm: ${line}`);
      dv.setUint32(nwrittenPtr, total, true);
      return ESUCCESS;
    },
    environ_sizes_get: zeroPair,
    args_sizes_get: zeroPair,
    ...Object.fromEntries(["environ_get", "args_get", "sched_yield"].map((n) => [n, () => ESUCCESS])),
    proc_exit(code: number): void {
      throw new WasiExit(code);
    },
  };

  const imports: Record<string, WasiFn> = {};
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.module === "wasi_snapshot_preview1" && imp.kind === "function") imports[imp.name] = impl[imp.name] ?? (() => ENOSYS);
  }
  return imports;
}
