// One instance of dosql.wasm with its host imports. The wasm owns SQLite, the VFS and the page
// cache, and produces every response body; this file only moves bytes across the boundary.

import type { Meta } from "./storage";
import { wasiImports } from "./wasi";

export const OP_QUERY = 1;
export const OP_BATCH = 2;
export const OP_STATS = 3;
export const OP_HRANA = 4;
export const OP_LIMITS = 5;

/** The memory the module asks for at instantiation (crates/wasm: INITIAL_MEMORY_BYTES, in
 *  64 KiB wasm pages; a Rust test checks that the two agree). */
export const WASM_INITIAL_PAGES = 32;
const WASM_PAGE_BYTES = 65536;

/** What dosql.wasm exports (bench/src/asyncify.ts extends it with asyncify's exports). */
export interface Exports {
  dosql_alloc(len: number): number;
  dosql_free(ptr: number, len: number): void;
  dosql_open(pageSize: number, pageCount: number, txid: number, cachePages: number, readAhead: number): number;
  dosql_exec(op: number, bodyPtr: number, bodyLen: number): number;
  dosql_result_ptr(): number;
  dosql_result_len(): number;
  _initialize?: () => void;
}

export interface OpenOptions {
  cachePages: number;
  readAhead: number;
  /** The most the instance's memory may grow to (bytes; the isolate's memory budget). */
  maxMemoryBytes: number;
}

export interface WasmResponse {
  status: number;
  body: Uint8Array;
}

/** Pages committed by one commit: page number and a copy of its stored value (the wasm encodes
 *  pages, see crates/pagestore/src/codec.rs: at most page_size bytes). */
export type CommittedPages = ReadonlyArray<readonly [number, ArrayBuffer]>;

/** A page store whose reads wait for storage (classic DO storage: `PageStorage`). */
export interface AsyncPageSource {
  /** The committed head; `meta.page_size` is the instance's page size. */
  readonly meta: Meta;
  /** The stored values of pages `nos`, in order (null: never written). */
  readPages(nos: readonly number[]): Promise<(Uint8Array | null)[]>;
  /** Commits `pages` and the new page count atomically; synchronous (no await inside). */
  commit(pageCount: number, pages: CommittedPages): void;
}

/** A page store that reads synchronously (SQLite-backed DOs' `ctx.storage.kv`). */
export interface SyncPageSource {
  readonly meta: Meta;
  /** The stored values of pages `nos` in order (null: never written), read synchronously. */
  readPagesSync(nos: readonly number[]): (Uint8Array | null)[];
  commit(pageCount: number, pages: CommittedPages): void;
}

/** The page source of an instance that serves no database yet (never read: it is not open). */
const NO_PAGES: SyncPageSource = {
  meta: { format: 4, page_size: 4096, page_count: 0, txid: 0 },
  readPagesSync: () => {
    throw new Error("this instance serves no database");
  },
  commit: () => {
    throw new Error("this instance serves no database");
  },
};

/**
 * One dosql.wasm instance. Two bridges between the wasm's synchronous page reads and storage:
 * - `create` (the default, classic DO storage): JSPI. `read_pages` is a
 *   `WebAssembly.Suspending` import and the exports run under `WebAssembly.promising`.
 * - `createSync` (SQLite-backed DOs): the store reads synchronously (`ctx.storage.kv`), so the
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
  // JSPI: these exports may suspend (inside read_pages) and so return promises.
  private open!: (...a: Parameters<Exports["dosql_open"]>) => Promise<number>;
  private execAsync!: (...a: Parameters<Exports["dosql_exec"]>) => Promise<number>;

  private constructor(
    private pages: AsyncPageSource | SyncPageSource,
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

  /** Instantiates `module` and opens the database at the head `pages.meta` holds (JSPI). */
  static async create(module: WebAssembly.Module, pages: AsyncPageSource, opts: OpenOptions): Promise<DosqlInstance> {
    const self = new DosqlInstance(pages, false, opts.maxMemoryBytes);
    const instance = await WebAssembly.instantiate(module, self.imports(
      module,
      // Typed as a plain import value: workers-types does not know Suspending.
      new WebAssembly.Suspending(self.readPages.bind(self)) as unknown as WebAssembly.ImportValue,
    ));
    self.exports = instance.exports as unknown as Exports;
    self.exports._initialize?.();
    self.open = WebAssembly.promising(self.exports.dosql_open);
    self.execAsync = WebAssembly.promising(self.exports.dosql_exec);

    const m = pages.meta;
    const status = await self.open(m.page_size, m.page_count, m.txid, opts.cachePages, opts.readAhead);
    self.checkOpen(status);
    return self;
  }

  /**
   * Instantiates `module` synchronously over a synchronous store (no JSPI) and opens the
   * database at the head `pages.meta` holds. Use `execSync` (or `exec`) afterwards.
   */
  static createSync(
    module: WebAssembly.Module,
    pages: SyncPageSource,
    opts: OpenOptions,
    { fixedRandomness = false }: { fixedRandomness?: boolean } = {},
  ): DosqlInstance {
    const self = DosqlInstance.instantiateSync(module, opts, { fixedRandomness }, pages);
    const m = pages.meta;
    self.checkOpen(self.exports.dosql_open(m.page_size, m.page_count, m.txid, opts.cachePages, opts.readAhead));
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
    pages: SyncPageSource = NO_PAGES,
  ): DosqlInstance {
    const self = new DosqlInstance(pages, true, opts.maxMemoryBytes);
    const instance = new WebAssembly.Instance(module, self.imports(module, self.readPagesSync.bind(self), fixedRandomness));
    self.exports = instance.exports as unknown as Exports;
    self.exports._initialize?.();
    return self;
  }

  /**
   * Makes this instance serve another database: `pages` (of the same bridge: a sync source
   * for a createSync instance) at the head its `meta` holds. The previous database's session
   * and Hrana streams are closed inside the wasm; its memory is reused.
   */
  async reopen(pages: AsyncPageSource | SyncPageSource, opts: OpenOptions): Promise<void> {
    this.pages = pages;
    const m = pages.meta;
    const args = [m.page_size, m.page_count, m.txid, opts.cachePages, opts.readAhead] as const;
    this.checkOpen(this.sync ? this.exports.dosql_open(...args) : await this.open(...args));
  }

  private imports(module: WebAssembly.Module, readPages: WebAssembly.ImportValue, fixedRandomness = false): WebAssembly.Imports {
    return {
      env: { memory: this.memory },
      wasi_snapshot_preview1: wasiImports(module, () => this.memory, { fixedRandomness }),
      dosql: {
        read_pages: readPages,
        commit: this.commit.bind(this),
        error_message: this.errorMessage.bind(this),
        // meta.duration_ms. workerd's clock advances only across I/O, so a synchronous
        // request measures 0.
        now_ms: Date.now,
      },
    };
  }

  private checkOpen(status: number): void {
    if (status !== 200) {
      throw new Error(`dosql_open returned ${status}: ${new TextDecoder().decode(this.result())}`);
    }
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

  /** read_pages(nos_ptr, n, out_ptr, lens_ptr) -> 0 | -1. Async: runs under JSPI. */
  private async readPages(nosPtr: number, n: number, outPtr: number, lensPtr: number): Promise<number> {
    try {
      const nos = pageNumbers(this.memory, nosPtr, n);
      const pages = await (this.pages as AsyncPageSource).readPages(nos);
      // writePages takes memory.buffer again after the await: if the memory grew, any buffer
      // taken before it is detached.
      writePages(this.memory, pages, this.pages.meta.page_size, outPtr, lensPtr);
      return 0;
    } catch (err) {
      return this.fail("read_pages", err);
    }
  }

  /** read_pages for createSync: the same contract, answered without suspending. */
  private readPagesSync(nosPtr: number, n: number, outPtr: number, lensPtr: number): number {
    try {
      const nos = pageNumbers(this.memory, nosPtr, n);
      const pages = (this.pages as SyncPageSource).readPagesSync(nos);
      writePages(this.memory, pages, this.pages.meta.page_size, outPtr, lensPtr);
      return 0;
    } catch (err) {
      return this.fail("read_pages", err);
    }
  }

  /** commit(page_count, nos_ptr, n, data_ptr, lens_ptr) -> 0 | -1. Synchronous: see PageStorage.commit. */
  private commit(pageCount: number, nosPtr: number, n: number, dataPtr: number, lensPtr: number): number {
    try {
      const pages = committedPages(this.memory, nosPtr, n, dataPtr, lensPtr, this.pages.meta.page_size);
      this.pages.commit(pageCount >>> 0, pages);
      return 0;
    } catch (err) {
      return this.fail("commit", err);
    }
  }

  /** error_message(buf_ptr, cap) -> full length of the last host error, UTF-8. */
  private errorMessage(bufPtr: number, cap: number): number {
    return copyMessage(this.memory, this.lastError, bufPtr, cap);
  }

  private fail(what: string, err: unknown): number {
    this.lastError = `${what}: ${err instanceof Error ? err.message : String(err)}`;
    console.error(this.lastError);
    return -1;
  }
}

// ---- the memory side of the imports, shared by every bridge ----

/** The `n` page numbers (u32 LE) at `nosPtr`. */
export function pageNumbers(memory: WebAssembly.Memory, nosPtr: number, n: number): number[] {
  const dv = new DataView(memory.buffer);
  const nos: number[] = [];
  for (let i = 0; i < n; i++) nos.push(dv.getUint32((nosPtr >>> 0) + 4 * i, true));
  return nos;
}

/** Writes value `values[i]` to `outPtr + i*size` and its length (0: none) to `lensPtr + 4*i`. */
export function writePages(
  memory: WebAssembly.Memory, values: readonly (Uint8Array | null)[], size: number, outPtr: number, lensPtr: number,
): void {
  const mem = new Uint8Array(memory.buffer);
  checkRange(mem, outPtr, values.length * size);
  checkRange(mem, lensPtr, values.length * 4);
  const dv = new DataView(memory.buffer);
  values.forEach((value, i) => {
    if (value !== null && (value.byteLength === 0 || value.byteLength > size)) {
      throw new Error(`a stored page value is ${value.byteLength} bytes, page size ${size}`);
    }
    if (value !== null) mem.set(value, (outPtr >>> 0) + i * size);
    dv.setUint32((lensPtr >>> 0) + 4 * i, value === null ? 0 : value.byteLength, true);
  });
}

/** The `n` values a commit import names: page numbers at `nosPtr`, lengths at `lensPtr`, the
 *  values back to back at `dataPtr`. Each is copied out of wasm memory. */
export function committedPages(
  memory: WebAssembly.Memory, nosPtr: number, n: number, dataPtr: number, lensPtr: number, size: number,
): Array<[number, ArrayBuffer]> {
  const buf = memory.buffer;
  const mem = new Uint8Array(buf);
  checkRange(mem, nosPtr, n * 4);
  checkRange(mem, lensPtr, n * 4);
  const dv = new DataView(buf);
  const pages: Array<[number, ArrayBuffer]> = [];
  let start = dataPtr >>> 0;
  for (let i = 0; i < n; i++) {
    const len = dv.getUint32((lensPtr >>> 0) + 4 * i, true);
    if (len === 0 || len > size) throw new Error(`commit value ${i} is ${len} bytes, page size ${size}`);
    checkRange(mem, start, len);
    // slice() copies: storage must not hold a view of memory the wasm will reuse.
    pages.push([dv.getUint32((nosPtr >>> 0) + 4 * i, true), buf.slice(start, start + len)]);
    start += len;
  }
  return pages;
}

/** error_message's copy: at most `cap` bytes of `message`; returns its full UTF-8 length. */
export function copyMessage(memory: WebAssembly.Memory, message: string, bufPtr: number, cap: number): number {
  const bytes = new TextEncoder().encode(message);
  const n = Math.min(cap, bytes.byteLength);
  new Uint8Array(memory.buffer, bufPtr >>> 0, n).set(bytes.subarray(0, n));
  return bytes.byteLength;
}

function checkRange(mem: Uint8Array, ptr: number, len: number): void {
  if ((ptr >>> 0) + len > mem.byteLength) throw new Error(`range ${ptr >>> 0}+${len} outside wasm memory`);
}
