// One instance of dosql.wasm with its host imports. The wasm owns SQLite, the VFS and the page
// cache, and produces every response body; this file only moves bytes across the boundary.

import { PageStorage } from "./storage";
import { wasiImports } from "./wasi";

export const OP_QUERY = 1;
export const OP_BATCH = 2;
export const OP_STATS = 3;

interface Exports {
  memory: WebAssembly.Memory;
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
}

export interface WasmResponse {
  status: number;
  body: Uint8Array;
}

export class DosqlInstance {
  private exports!: Exports;
  /** Last host-side error, handed to the wasm through the error_message import. */
  private lastError = "";
  // JSPI: these exports may suspend (inside read_pages) and so return promises.
  private open!: (...a: Parameters<Exports["dosql_open"]>) => Promise<number>;
  private execAsync!: (...a: Parameters<Exports["dosql_exec"]>) => Promise<number>;

  private constructor(private readonly pages: PageStorage) {}

  /** Instantiates `module` and opens the database at the head `pages.meta` holds. */
  static async create(module: WebAssembly.Module, pages: PageStorage, opts: OpenOptions): Promise<DosqlInstance> {
    const self = new DosqlInstance(pages);
    const memory = () => self.exports.memory;
    const instance = await WebAssembly.instantiate(module, {
      wasi_snapshot_preview1: wasiImports(module, memory),
      dosql: {
        // Typed as a plain import value: workers-types does not know Suspending.
        read_pages: new WebAssembly.Suspending(self.readPages.bind(self)) as unknown as WebAssembly.ImportValue,
        commit: self.commit.bind(self),
        error_message: self.errorMessage.bind(self),
      },
    });
    self.exports = instance.exports as unknown as Exports;
    self.exports._initialize?.();
    self.open = WebAssembly.promising(self.exports.dosql_open);
    self.execAsync = WebAssembly.promising(self.exports.dosql_exec);

    const m = pages.meta;
    const status = await self.open(m.page_size, m.page_count, m.txid, opts.cachePages, opts.readAhead);
    if (status !== 200) {
      throw new Error(`dosql_open returned ${status}: ${new TextDecoder().decode(self.result())}`);
    }
    return self;
  }

  /** Runs one operation; the body goes in and the response comes out as bytes, unparsed. */
  async exec(op: number, body: Uint8Array): Promise<WasmResponse> {
    const e = this.exports;
    // Allocate at least one byte so the pointer is never dangling; free with the same length.
    const cap = Math.max(body.byteLength, 1);
    const ptr = e.dosql_alloc(cap);
    if (ptr === 0) throw new Error(`dosql_alloc(${cap}) failed`);
    try {
      new Uint8Array(e.memory.buffer, ptr >>> 0, body.byteLength).set(body);
      const status = await this.execAsync(op, ptr, body.byteLength);
      return { status, body: this.result() };
    } finally {
      e.dosql_free(ptr, cap);
    }
  }

  /** A copy of the result buffer. */
  private result(): Uint8Array {
    const e = this.exports;
    const ptr = e.dosql_result_ptr() >>> 0;
    return new Uint8Array(e.memory.buffer.slice(ptr, ptr + (e.dosql_result_len() >>> 0)));
  }

  // ---- imports, module "dosql" ----

  /** read_pages(nos_ptr, n, out_ptr, found_ptr) -> 0 | -1. Async: runs under JSPI. */
  private async readPages(nosPtr: number, n: number, outPtr: number, foundPtr: number): Promise<number> {
    try {
      const dv = new DataView(this.exports.memory.buffer);
      const nos: number[] = [];
      for (let i = 0; i < n; i++) nos.push(dv.getUint32((nosPtr >>> 0) + 4 * i, true));
      const pages = await this.pages.readPages(nos);
      // Take memory.buffer again after the await: if the memory grew, any buffer taken
      // before it is detached.
      const mem = new Uint8Array(this.exports.memory.buffer);
      const size = this.pages.meta.page_size;
      this.checkRange(mem, outPtr, n * size);
      this.checkRange(mem, foundPtr, n);
      pages.forEach((page, i) => {
        if (page !== null) mem.set(page, (outPtr >>> 0) + i * size);
        mem[(foundPtr >>> 0) + i] = page === null ? 0 : 1;
      });
      return 0;
    } catch (err) {
      return this.fail("read_pages", err);
    }
  }

  /** commit(page_count, nos_ptr, n, data_ptr) -> 0 | -1. Synchronous: see PageStorage.commit. */
  private commit(pageCount: number, nosPtr: number, n: number, dataPtr: number): number {
    try {
      const buf = this.exports.memory.buffer;
      const size = this.pages.meta.page_size;
      this.checkRange(new Uint8Array(buf), dataPtr, n * size);
      const dv = new DataView(buf);
      const pages: Array<[number, ArrayBuffer]> = [];
      for (let i = 0; i < n; i++) {
        const start = (dataPtr >>> 0) + i * size;
        // slice() copies: storage must not hold a view of memory the wasm will reuse.
        pages.push([dv.getUint32((nosPtr >>> 0) + 4 * i, true), buf.slice(start, start + size)]);
      }
      this.pages.commit(pageCount >>> 0, pages);
      return 0;
    } catch (err) {
      return this.fail("commit", err);
    }
  }

  /** error_message(buf_ptr, cap) -> full length of the last host error, UTF-8. */
  private errorMessage(bufPtr: number, cap: number): number {
    const bytes = new TextEncoder().encode(this.lastError);
    new Uint8Array(this.exports.memory.buffer, bufPtr >>> 0, Math.min(cap, bytes.byteLength))
      .set(bytes.subarray(0, Math.min(cap, bytes.byteLength)));
    return bytes.byteLength;
  }

  private fail(what: string, err: unknown): number {
    this.lastError = `${what}: ${err instanceof Error ? err.message : String(err)}`;
    console.error(this.lastError);
    return -1;
  }

  private checkRange(mem: Uint8Array, ptr: number, len: number): void {
    if ((ptr >>> 0) + len > mem.byteLength) throw new Error(`range ${ptr >>> 0}+${len} outside wasm memory`);
  }
}
