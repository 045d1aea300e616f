// One instance of dosql.wasm with its host imports. The wasm owns SQLite, the VFS, the page
// cache and the storage layout, and produces every response body; this file only moves bytes
// across the boundary (storage's side of it: kv.ts).

import type { KvBridge } from "./kv";
import { wasiImports } from "./wasi";

// Operation codes of dosql_exec (crates/wasm/src/lib.rs, `op`; a Rust test keeps them equal).
export const OP_QUERY = 1;
export const OP_BATCH = 2;
export const OP_STATS = 3;
export const OP_HRANA = 4;
export const OP_LIMITS = 5;
export const OP_TRANSFER = 6;
export const OP_HEAD = 7;

/** The memory the module asks for at instantiation (crates/wasm: INITIAL_MEMORY_BYTES, in
 *  64 KiB wasm pages; a Rust test checks that the two agree). */
export const WASM_INITIAL_PAGES = 32;
const WASM_PAGE_BYTES = 65536;

/** What dosql.wasm exports (bench/src/asyncify.ts extends it with asyncify's exports). */
export interface Exports {
  dosql_alloc(len: number): number;
  dosql_free(ptr: number, len: number): void;
  dosql_open(kind: number, newPageSize: number, cachePages: number, readAhead: number): number;
  dosql_exec(op: number, bodyPtr: number, bodyLen: number): number;
  dosql_result_ptr(): number;
  dosql_result_len(): number;
  _initialize?: () => void;
}

export interface OpenOptions {
  /** Page size of a database never committed to. */
  newPageSize: number;
  cachePages: number;
  readAhead: number;
  /** The most the instance's memory may grow to (bytes; the isolate's memory budget). */
  maxMemoryBytes: number;
}

/** What dosql_open answers: the head it read. */
export interface Opened {
  page_size: number;
  page_count: number;
  txid: number;
  format: number;
}

export interface WasmResponse {
  status: number;
  body: Uint8Array;
}

/** The storage of an instance that serves no database yet (never read: it is not open). */
const NO_STORAGE = {
  sqlite: true,
  readSync: (): Uint8Array => {
    throw new Error("this instance serves no database");
  },
  apply: (): void => {
    throw new Error("this instance serves no database");
  },
} as unknown as KvBridge;

/**
 * One dosql.wasm instance. Two bridges between the wasm's synchronous storage reads and
 * Durable Object storage:
 * - `create` (classic storage): JSPI. `kv_get` is a `WebAssembly.Suspending` import and the
 *   exports run under `WebAssembly.promising`.
 * - `createSync` (SQLite-backed storage): reads are synchronous (`ctx.storage.kv`), so the
 *   imports are plain functions and the exports are called directly: no stack switching, no
 *   promise per call.
 * The same module serves both.
 */
export class DosqlInstance {
  private exports!: Exports;
  /** The instance's linear memory: the module imports it, so that its maximum is ours. */
  readonly memory: WebAssembly.Memory;
  /** Last host-side error, handed to the wasm through the error_message import. */
  private lastError = "";
  /** The answer kv_get kept for kv_take. */
  private pending: Uint8Array | null = null;
  /** The head the last open read. */
  opened: Opened | null = null;
  // JSPI: these exports may suspend (inside kv_get) and so return promises.
  private openAsync!: (...a: Parameters<Exports["dosql_open"]>) => Promise<number>;
  private execAsync!: (...a: Parameters<Exports["dosql_exec"]>) => Promise<number>;

  private constructor(
    private storage: KvBridge,
    /** Whether this instance runs without JSPI (createSync). */
    readonly sync: boolean,
    maxMemoryBytes: number,
  ) {
    const maximum = Math.max(WASM_INITIAL_PAGES, Math.floor(maxMemoryBytes / WASM_PAGE_BYTES));
    this.memory = new WebAssembly.Memory({ initial: WASM_INITIAL_PAGES, maximum });
  }

  /** Bytes of linear memory the instance holds now (it never shrinks). */
  memoryBytes(): number {
    return this.memory.buffer.byteLength;
  }

  /** Instantiates `module` over classic storage (JSPI) and opens the database it holds. */
  static async create(module: WebAssembly.Module, storage: KvBridge, opts: OpenOptions): Promise<DosqlInstance> {
    const self = new DosqlInstance(storage, false, opts.maxMemoryBytes);
    const instance = await WebAssembly.instantiate(module, self.imports(
      module,
      // Typed as a plain import value: workers-types does not know Suspending.
      new WebAssembly.Suspending(self.kvGet.bind(self)) as unknown as WebAssembly.ImportValue,
    ));
    self.exports = instance.exports as unknown as Exports;
    self.exports._initialize?.();
    self.openAsync = WebAssembly.promising(self.exports.dosql_open);
    self.execAsync = WebAssembly.promising(self.exports.dosql_exec);
    await self.reopen(storage, opts);
    return self;
  }

  /** Instantiates `module` over SQLite-backed storage (no JSPI) and opens the database it
   *  holds. Use `execSync` (or `exec`) afterwards. */
  static createSync(
    module: WebAssembly.Module,
    storage: KvBridge,
    opts: OpenOptions,
    { fixedRandomness = false }: { fixedRandomness?: boolean } = {},
  ): DosqlInstance {
    const self = DosqlInstance.instantiateSync(module, opts, { fixedRandomness });
    self.storage = storage;
    self.checkOpen(self.exports.dosql_open(storage.kind, opts.newPageSize, opts.cachePages, opts.readAhead));
    return self;
  }

  /**
   * Instantiates `module` for the synchronous bridge without opening a database: a spare
   * instance, which `reopen` gives a database later. Makes no call into the wasm, so it
   * consumes no randomness (and may be made at module scope).
   */
  static instantiateSync(
    module: WebAssembly.Module,
    opts: Pick<OpenOptions, "maxMemoryBytes">,
    { fixedRandomness = false }: { fixedRandomness?: boolean } = {},
  ): DosqlInstance {
    const self = new DosqlInstance(NO_STORAGE, true, opts.maxMemoryBytes);
    const instance = new WebAssembly.Instance(module, self.imports(module, self.kvGetSync.bind(self), fixedRandomness));
    self.exports = instance.exports as unknown as Exports;
    self.exports._initialize?.();
    return self;
  }

  /**
   * Makes this instance serve the database `storage` holds (of the same bridge: SQLite-backed
   * storage for a createSync instance). The previous database's session and Hrana streams
   * are closed inside the wasm; its memory is reused.
   */
  async reopen(storage: KvBridge, opts: OpenOptions): Promise<void> {
    this.storage = storage;
    const args = [storage.kind, opts.newPageSize, opts.cachePages, opts.readAhead] as const;
    this.checkOpen(this.sync ? this.exports.dosql_open(...args) : await this.openAsync(...args));
  }

  private imports(module: WebAssembly.Module, kvGet: WebAssembly.ImportValue, fixedRandomness = false): WebAssembly.Imports {
    return {
      env: { memory: this.memory },
      wasi_snapshot_preview1: wasiImports(module, () => this.memory, { fixedRandomness }),
      dosql: {
        kv_get: kvGet,
        kv_take: this.kvTake.bind(this),
        kv_apply: this.kvApply.bind(this),
        error_message: this.errorMessage.bind(this),
        // meta.duration_ms. workerd's clock advances only across I/O, so a synchronous
        // request measures 0.
        now_ms: Date.now,
      },
    };
  }

  private checkOpen(status: number): void {
    const body = new TextDecoder().decode(this.result());
    if (status !== 200) throw new Error(`dosql_open returned ${status}: ${body}`);
    this.opened = JSON.parse(body) as Opened;
  }

  /** Runs one operation; the body goes in and the response comes out as bytes, unparsed. */
  async exec(op: number, body: Uint8Array): Promise<WasmResponse> {
    if (this.sync) return this.execSync(op, body);
    return this.withBody(body, async (ptr, len) => this.respond(await this.execAsync(op, ptr, len)));
  }

  /** `exec` without a promise: only for an instance made by `createSync`. */
  execSync(op: number, body: Uint8Array): WasmResponse {
    if (!this.sync) throw new Error("execSync needs an instance made by createSync");
    return this.withBody(body, (ptr, len) => this.respond(this.exports.dosql_exec(op, ptr, len)));
  }

  /** Copies `body` into wasm memory for the duration of `run`. */
  private withBody<R>(body: Uint8Array, run: (ptr: number, len: number) => R): R {
    const e = this.exports;
    // Allocate at least one byte so the pointer is never dangling; free with the same length.
    const cap = Math.max(body.byteLength, 1);
    const ptr = e.dosql_alloc(cap);
    if (ptr === 0) throw new Error(`dosql_alloc(${cap}) failed`);
    let result: R;
    try {
      new Uint8Array(this.memory.buffer, ptr >>> 0, body.byteLength).set(body);
      result = run(ptr, body.byteLength);
    } catch (err) {
      e.dosql_free(ptr, cap);
      throw err;
    }
    if (result instanceof Promise) {
      return result.finally(() => e.dosql_free(ptr, cap)) as R;
    }
    e.dosql_free(ptr, cap);
    return result;
  }

  private respond(status: number): WasmResponse {
    return { status, body: this.result() };
  }

  /** A copy of the result buffer. */
  private result(): Uint8Array {
    const e = this.exports;
    const ptr = e.dosql_result_ptr() >>> 0;
    return new Uint8Array(this.memory.buffer.slice(ptr, ptr + (e.dosql_result_len() >>> 0)));
  }

  // ---- imports, module "dosql" ----

  /** kv_get(req, len) -> answer length | -1. Async: runs under JSPI. */
  private async kvGet(reqPtr: number, len: number): Promise<number> {
    try {
      // A copy: the request must survive the suspension unchanged.
      const req = new Uint8Array(this.memory.buffer.slice(reqPtr >>> 0, (reqPtr >>> 0) + len));
      return this.keep(await this.storage.read(req));
    } catch (err) {
      return this.fail("kv_get", err);
    }
  }

  /** kv_get for createSync: the same contract, answered without suspending. */
  private kvGetSync(reqPtr: number, len: number): number {
    try {
      return this.keep(this.storage.readSync(new Uint8Array(this.memory.buffer, reqPtr >>> 0, len)));
    } catch (err) {
      return this.fail("kv_get", err);
    }
  }

  private keep(answer: Uint8Array): number {
    this.pending = answer;
    return answer.byteLength;
  }

  /** kv_take(out): the answer kv_get kept, copied into wasm memory. */
  private kvTake(outPtr: number): void {
    const answer = this.pending ?? new Uint8Array(0);
    this.pending = null;
    new Uint8Array(this.memory.buffer, outPtr >>> 0, answer.byteLength).set(answer);
  }

  /** kv_apply(plan, len) -> 0 | -1. Synchronous: see KvBridge.apply. */
  private kvApply(planPtr: number, len: number): number {
    try {
      this.storage.apply(new Uint8Array(this.memory.buffer, planPtr >>> 0, len));
      return 0;
    } catch (err) {
      return this.fail("kv_apply", err);
    }
  }

  /** error_message(buf_ptr, cap) -> full length of the last host error, UTF-8. */
  private errorMessage(bufPtr: number, cap: number): number {
    const bytes = new TextEncoder().encode(this.lastError);
    const n = Math.min(cap, bytes.byteLength);
    new Uint8Array(this.memory.buffer, bufPtr >>> 0, n).set(bytes.subarray(0, n));
    return bytes.byteLength;
  }

  private fail(what: string, err: unknown): number {
    this.lastError = `${what}: ${err instanceof Error ? err.message : String(err)}`;
    console.error(this.lastError);
    return -1;
  }
}
