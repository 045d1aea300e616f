// dosql.wasm through Binaryen's asyncify instead of JSPI: the module is transformed with
//   wasm-opt --asyncify --pass-arg=asyncify-imports@dosql.kv_get -O2
// and this file is the runtime half of the transform. When the wasm calls kv_get, the import
// starts the storage read, asks the wasm to unwind its stack into a buffer
// (asyncify_start_unwind) and returns; the export call then returns early, the caller awaits
// the read, asks for a rewind (asyncify_start_rewind) and calls the same export again, which
// replays its stack down to kv_get, which now returns the result. Warm reads never reach
// kv_get, so they never unwind, but every instrumented function pays for its checks.

import { WASM_INITIAL_PAGES } from "../../worker/src/constants";
import { type Exports as DosqlExports, type OpenOptions, type Opened, type WasmResponse } from "../../worker/src/dosql";
import type { KvBridge } from "../../worker/src/kv";
import { wasiImports } from "../../worker/src/wasi";

interface Exports extends DosqlExports {
  asyncify_start_unwind(dataPtr: number): void;
  asyncify_stop_unwind(): void;
  asyncify_start_rewind(dataPtr: number): void;
  asyncify_stop_rewind(): void;
}

/** Bytes for the unwound stack (SQLite's call chain down to a page read is deep). */
const UNWIND_STACK_BYTES = 256 * 1024;

const NORMAL = 0;
const UNWINDING = 1;
const REWINDING = 2;

export class AsyncifyInstance {
  private exports!: Exports;
  private state = NORMAL;
  private pending: Promise<number> | null = null;
  private value = 0;
  /** asyncify's data struct: i32 current, i32 end, then the stack buffer. */
  private dataPtr = 0;
  private lastError = "";
  /** Suspensions so far (page reads that waited for storage). */
  suspensions = 0;

  /** The instance's memory (the module imports it, as dosql.ts provides it). */
  private readonly memory: WebAssembly.Memory;

  /** The answer kv_get kept for kv_take. */
  private answer: Uint8Array | null = null;
  opened: Opened | null = null;

  private constructor(private readonly storage: KvBridge, maxMemoryBytes: number) {
    this.memory = new WebAssembly.Memory({ initial: WASM_INITIAL_PAGES, maximum: Math.max(WASM_INITIAL_PAGES, Math.floor(maxMemoryBytes / 65536)) });
  }

  static async create(module: WebAssembly.Module, storage: KvBridge, opts: OpenOptions): Promise<AsyncifyInstance> {
    const self = new AsyncifyInstance(storage, opts.maxMemoryBytes);
    const instance = await WebAssembly.instantiate(module, {
      env: { memory: self.memory },
      wasi_snapshot_preview1: wasiImports(module, () => self.memory),
      dosql: {
        kv_get: self.kvGet.bind(self),
        kv_take: (out: number) => {
          const a = self.answer ?? new Uint8Array(0);
          self.answer = null;
          new Uint8Array(self.memory.buffer, out >>> 0, a.byteLength).set(a);
        },
        // Page rows are SQLite-backed storage's; this instance serves classic storage.
        kv_row: () => self.fail(new Error("kv_row: classic storage has no page rows")),
        kv_head: () => self.fail(new Error("kv_head: classic storage has no head row")),
        kv_apply: (ptr: number, len: number) => {
          try {
            self.storage.apply(new Uint8Array(self.memory.buffer, ptr >>> 0, len));
            return 0;
          } catch (err) {
            return self.fail(err);
          }
        },
        error_message: (ptr: number, cap: number) => {
          const bytes = new TextEncoder().encode(self.lastError);
          const n = Math.min(cap, bytes.byteLength);
          new Uint8Array(self.memory.buffer, ptr >>> 0, n).set(bytes.subarray(0, n));
          return bytes.byteLength;
        },
        now_ms: Date.now,
      },
    });
    self.exports = instance.exports as unknown as Exports;
    self.exports._initialize?.();
    self.dataPtr = self.exports.dosql_alloc(8 + UNWIND_STACK_BYTES);
    const status = await self.call(() => self.exports.dosql_open(storage.kind, opts.newPageSize, opts.cachePages, opts.readAhead));
    const body = new TextDecoder().decode(self.result());
    if (status !== 200) throw new Error(`dosql_open returned ${status}: ${body}`);
    self.opened = JSON.parse(body) as Opened;
    return self;
  }

  async exec(op: number, body: Uint8Array): Promise<WasmResponse> {
    const e = this.exports;
    const cap = Math.max(body.byteLength, 1);
    const ptr = e.dosql_alloc(cap);
    if (ptr === 0) throw new Error(`dosql_alloc(${cap}) failed`);
    try {
      new Uint8Array(this.memory.buffer, ptr >>> 0, body.byteLength).set(body);
      const status = await this.call(() => e.dosql_exec(op, ptr, body.byteLength));
      return { status, body: this.result() };
    } finally {
      e.dosql_free(ptr, cap);
    }
  }

  /** Calls an export, unwinding and rewinding around every read that has to wait. */
  private async call(fn: () => number): Promise<number> {
    let r = fn();
    while (this.state === UNWINDING) {
      this.exports.asyncify_stop_unwind();
      this.state = NORMAL;
      this.value = await (this.pending as Promise<number>);
      this.pending = null;
      this.exports.asyncify_start_rewind(this.dataPtr);
      this.state = REWINDING;
      r = fn();
    }
    return r;
  }

  /** kv_get: first call starts the read and unwinds; the replayed call returns its result. */
  private kvGet(reqPtr: number, len: number): number {
    if (this.state === REWINDING) {
      this.exports.asyncify_stop_rewind();
      this.state = NORMAL;
      return this.value;
    }
    const memory = this.memory;
    // A copy: the request must survive the unwinding unchanged.
    const req = new Uint8Array(memory.buffer.slice(reqPtr >>> 0, (reqPtr >>> 0) + len));
    this.suspensions++;
    this.pending = this.storage.read(req).then(
      (answer) => {
        this.answer = answer;
        return answer.byteLength;
      },
      (err) => this.fail(err),
    );
    const dv = new DataView(memory.buffer);
    dv.setInt32(this.dataPtr, this.dataPtr + 8, true);
    dv.setInt32(this.dataPtr + 4, this.dataPtr + 8 + UNWIND_STACK_BYTES, true);
    this.exports.asyncify_start_unwind(this.dataPtr);
    this.state = UNWINDING;
    return 0;
  }

  private fail(err: unknown): number {
    this.lastError = err instanceof Error ? err.message : String(err);
    console.error(this.lastError);
    return -1;
  }

  private result(): Uint8Array {
    const e = this.exports;
    const ptr = e.dosql_result_ptr() >>> 0;
    return new Uint8Array(this.memory.buffer.slice(ptr, ptr + (e.dosql_result_len() >>> 0)));
  }
}
