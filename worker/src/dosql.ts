// One instance of dosql.wasm with its host imports. The wasm owns SQLite, the VFS, the page
// cache and the storage layout, and produces every response body; this file only moves bytes
// across the boundary (storage's side of it: kv.ts).

import { WASM_INITIAL_PAGES } from "./constants";
import { intVar } from "./http";
import type { KvBridge } from "./kv";
import { wasiImports } from "./wasi";

/** What dosql.wasm exports (bench/src/asyncify.ts extends it with asyncify's exports). */
export interface Exports {
  dosql_alloc(len: number): number;
  dosql_free(ptr: number, len: number): void;
  dosql_open(kind: number, newPageSize: number, cachePages: number, readAhead: number): number;
  dosql_exec(op: number, bodyPtr: number, bodyLen: number): number;
  dosql_warm_up(): number;
  dosql_prime(): number;
  dosql_position(): number;
  dosql_result_ptr(): number;
  dosql_result_len(): number;
  _initialize?: () => void;
}

// One of each per isolate: each is a runtime object, and a cold object's first request made
// three (bench W4, perf).
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** How to open: a new database's page size (0: the default), the page cache's pages, pages
 *  read ahead, and the most bytes the instance's memory may grow to (the isolate's budget). */
export type OpenOptions = { newPageSize: number; cachePages: number; readAhead: number; maxMemoryBytes: number };

/** What dosql_open answers: the head it read. */
export type Opened = { page_size: number; page_count: number; txid: number; format: number };
/** The settings of the environment that OP_LIMITS carries (worker/src/index.ts: Env). */
export type LimitSettings = {
  CACHE_PAGES?: string;
  CACHE_BYTES?: string;
  HISTORY?: string | null;
  HISTORY_RETENTION_MS?: string | null;
  HISTORY_MAX_BYTES?: string | null;
  DOSQL_TEST_REPLICATION_FAULTS?: string | null;
};

/** OP_LIMITS's body (crates/wasm/src/lib.rs: Share, which refuses an unknown field): the
 *  instance's share of the isolate's budget and the settings. */
export function limitsRequest(shareBytes: number, e: LimitSettings): Uint8Array {
  const setting = (v: string | undefined) => (v ? intVar(v, 0) : null);
  const history = { enabled: e.HISTORY ?? null, retention_ms: e.HISTORY_RETENTION_MS ?? null, max_bytes: e.HISTORY_MAX_BYTES ?? null };
  const faults = e.DOSQL_TEST_REPLICATION_FAULTS ?? null;
  return encoder.encode(JSON.stringify({ share_bytes: shareBytes, cache_pages: setting(e.CACHE_PAGES), cache_bytes: setting(e.CACHE_BYTES), history, replication_faults: faults }));
}

/** An answer of the wasm: an HTTP status and the body, unparsed. */
export type WasmResponse = { status: number; body: Uint8Array };

/**
 * One dosql.wasm instance, over one of two bridges (the same module serves both): `create`
 * (classic storage) runs under JSPI, `kv_get` a `WebAssembly.Suspending` import and the
 * exports `WebAssembly.promising`; `createSync` (SQLite-backed storage, whose `kv` reads are
 * synchronous) calls plain functions: no stack switching, no promise per call.
 */
export class DosqlInstance {
  private exports!: Exports;
  /** The instance's linear memory: the module imports it, so that its maximum is ours. */
  readonly memory: WebAssembly.Memory;
  /** The database's storage (null: the instance serves none yet). */
  private storage: KvBridge | null = null;
  /** Last host-side error, handed to the wasm through the error_message import. */
  private lastError = "";
  /** The answer kv_get (kv_head, kv_row) kept for kv_take. */
  private pending: Uint8Array | null = null;
  /** kv_row's SELECT as text, and its address in wasm memory (a static string). */
  private rowSelect = "";
  private rowSelectAt = -1;
  /** The head the last open read. */
  opened: Opened | null = null;
  // JSPI: these exports may suspend (inside kv_get) and so return promises.
  private openAsync!: (...a: Parameters<Exports["dosql_open"]>) => Promise<number>;
  private execAsync!: (...a: Parameters<Exports["dosql_exec"]>) => Promise<number>;

  private constructor(
    /** Whether this instance runs without JSPI (createSync). */
    readonly sync: boolean,
    maxMemoryBytes: number,
  ) {
    const maximum = Math.max(WASM_INITIAL_PAGES, Math.floor(maxMemoryBytes / 65536));
    this.memory = new WebAssembly.Memory({ initial: WASM_INITIAL_PAGES, maximum });
  }

  /** Bytes of linear memory the instance holds now (it never shrinks). */
  memoryBytes(): number {
    return this.memory.buffer.byteLength;
  }

  /** Instantiates `module` over classic storage (JSPI) and opens the database it holds. */
  static async create(module: WebAssembly.Module, storage: KvBridge, opts: OpenOptions): Promise<DosqlInstance> {
    const self = new DosqlInstance(false, opts.maxMemoryBytes);
    // Typed as a plain import value: workers-types does not know Suspending.
    const kvGet = new WebAssembly.Suspending(self.kvGet.bind(self)) as unknown as WebAssembly.ImportValue;
    self.start(await WebAssembly.instantiate(module, self.imports(module, kvGet)));
    self.openAsync = WebAssembly.promising(self.exports.dosql_open);
    self.execAsync = WebAssembly.promising(self.exports.dosql_exec);
    await self.reopen(storage, opts);
    return self;
  }

  /** Instantiates `module` over SQLite-backed storage (no JSPI) and opens the database it
   *  holds. Use `execSync` (or `exec`) afterwards. */
  static createSync(module: WebAssembly.Module, storage: KvBridge, opts: OpenOptions): DosqlInstance {
    const self = DosqlInstance.instantiateSync(module, opts);
    void self.reopen(storage, opts);
    return self;
  }

  /**
   * Instantiates `module` for the synchronous bridge without opening a database: a spare
   * instance, which `reopen` gives a database later, or the warm-up's. Makes no call into the
   * wasm, so it consumes no randomness (and may be made at module scope).
   */
  static instantiateSync(module: WebAssembly.Module, opts: Pick<OpenOptions, "maxMemoryBytes">, { fixedRandomness = false } = {}): DosqlInstance {
    const self = new DosqlInstance(true, opts.maxMemoryBytes);
    self.start(new WebAssembly.Instance(module, self.imports(module, self.kvGetSync.bind(self), fixedRandomness)));
    return self;
  }

  /**
   * Touches every page of the instance's memory once, so that the kernel maps them now
   * rather than inside its first database's first query (a spare, made while idle). Writes
   * back what each page holds: nothing changes.
   */
  prefault(): void {
    const m = new Uint8Array(this.memory.buffer);
    for (let i = 0; i < m.length; i += 4096) m[i] = m[i];
  }

  private start(instance: WebAssembly.Instance): void {
    this.exports = instance.exports as unknown as Exports;
    this.exports._initialize?.();
  }

  /**
   * Makes this instance serve the database `storage` holds (of the same bridge: SQLite-backed
   * storage for a synchronous instance). The previous database's session and Hrana streams
   * are closed inside the wasm; its memory is reused. A synchronous instance has opened it
   * when this returns (the promise is already settled; an error throws here).
   */
  reopen(storage: KvBridge, opts: OpenOptions): Promise<void> {
    this.storage = storage;
    const args = [storage.kind, opts.newPageSize, opts.cachePages, opts.readAhead] as const;
    if (this.sync) return Promise.resolve(this.checkOpen(this.exports.dosql_open(...args)));
    return this.openAsync(...args).then((status) => this.checkOpen(status));
  }

  /** The database's position after the last call: its bookmark (`<lineage>:<txid>`), its
   *  primary (empty: none) and its replicas (comma-separated), one per line. */
  position(): string[] {
    this.exports.dosql_position();
    return decoder.decode(this.result()).split("\n");
  }

  /** Readies a spare for its first database: SQLite's setup and open path run once on an
   *  in-memory database (dosql_vfs::prime), then a database's open, limits and first query on
   *  an empty one in wasm memory (crates/wasm/src/warmup.rs: prime); no randomness drawn, no storage
   *  touched. */
  prime(): WasmResponse {
    return this.respond(this.exports.dosql_prime());
  }

  /** The warm-up (crates/wasm/src/warmup.rs) on an in-memory database of its own. */
  warmUp(): WasmResponse {
    return this.respond(this.exports.dosql_warm_up());
  }

  private imports(module: WebAssembly.Module, kvGet: WebAssembly.ImportValue, fixedRandomness = false): WebAssembly.Imports {
    return {
      env: { memory: this.memory },
      wasi_snapshot_preview1: wasiImports(module, () => this.memory, { fixedRandomness }),
      dosql: {
        kv_get: kvGet,
        kv_take: this.kvTake.bind(this),
        kv_row: this.kvRow.bind(this),
        kv_head: this.kvHead.bind(this),
        kv_apply: this.kvApply.bind(this),
        error_message: this.errorMessage.bind(this),
        // meta.duration_ms. workerd's clock advances only across I/O, so a synchronous
        // request measures 0.
        now_ms: Date.now,
      },
    };
  }

  private checkOpen(status: number): void {
    const body = decoder.decode(this.result());
    if (status !== 200) throw new Error(`dosql_open returned ${status}: ${body}`);
    this.opened = JSON.parse(body) as Opened;
  }

  /** Runs one operation; the body goes in and the response comes out as bytes, unparsed. */
  async exec(op: number, body: Uint8Array): Promise<WasmResponse> {
    if (this.sync) return this.execSync(op, body);
    const ptr = this.copyIn(body);
    return this.execAsync(op, ptr, body.byteLength).then(this.respond.bind(this)).finally(() => this.exports.dosql_free(ptr, Math.max(body.byteLength, 1)));
  }

  /** `exec` without a promise: only for an instance made by `createSync`. */
  execSync(op: number, body: Uint8Array): WasmResponse {
    if (!this.sync) throw new Error("execSync needs an instance made by createSync");
    const ptr = this.copyIn(body);
    try {
      return this.respond(this.exports.dosql_exec(op, ptr, body.byteLength));
    } finally {
      this.exports.dosql_free(ptr, Math.max(body.byteLength, 1));
    }
  }

  /** Copies `body` into memory the wasm allocated (at least one byte, so the pointer is never
   *  dangling; the caller frees it with the same length). */
  private copyIn(body: Uint8Array): number {
    const ptr = this.exports.dosql_alloc(Math.max(body.byteLength, 1));
    if (ptr === 0) throw new Error(`dosql_alloc(${body.byteLength}) failed`);
    new Uint8Array(this.memory.buffer, ptr >>> 0, body.byteLength).set(body);
    return ptr;
  }

  /** The answer of a call that returned `status`: it and a copy of the result buffer. */
  private respond(status: number): WasmResponse {
    return { status, body: this.result() };
  }
  private result(): Uint8Array {
    const ptr = this.exports.dosql_result_ptr() >>> 0;
    return new Uint8Array(this.memory.buffer.slice(ptr, ptr + (this.exports.dosql_result_len() >>> 0)));
  }

  // ---- imports, module "dosql" ----

  private get kv(): KvBridge {
    if (this.storage === null) throw new Error("this instance serves no database");
    return this.storage;
  }

  /** kv_get(req, len) -> answer length | -1. Async: runs under JSPI. */
  private async kvGet(reqPtr: number, len: number): Promise<number> {
    try {
      // A copy: the request must survive the suspension unchanged.
      return this.keep(await this.kv.read(new Uint8Array(this.memory.buffer.slice(reqPtr >>> 0, (reqPtr >>> 0) + len))));
    } catch (err) {
      return this.fail("kv_get", err);
    }
  }

  /** kv_get for createSync: the same contract, answered without suspending. */
  private kvGetSync(reqPtr: number, len: number): number {
    try {
      return this.keep(this.kv.readSync(new Uint8Array(this.memory.buffer, reqPtr >>> 0, len)));
    } catch (err) {
      return this.fail("kv_get", err);
    }
  }

  private keep(answer: Uint8Array): number {
    this.pending = answer;
    return answer.byteLength;
  }

  /**
   * kv_row(select, select_len, id, out, cap) -> blob length | -2 (no row) | -1: a page's row
   * (SQLite-backed storage), its blob written to `out` when it fits in `cap` bytes, else kept
   * for kv_take. The fewest steps a page read can take (a cold object runs them in V8's
   * interpreter): the SELECT is a static string of the wasm, decoded once per address.
   */
  private kvRow(selectPtr: number, selectLen: number, id: number, outPtr: number, cap: number): number {
    try {
      if (selectPtr !== this.rowSelectAt || selectLen !== this.rowSelect.length) {
        this.rowSelect = decoder.decode(new Uint8Array(this.memory.buffer, selectPtr >>> 0, selectLen));
        this.rowSelectAt = selectPtr;
      }
      const blob = this.kv.pageRow(this.rowSelect, id);
      if (blob === undefined) return -2;
      const n = blob.byteLength;
      // `cap` arrives as a signed i32: compared unsigned, as the wasm compares it.
      if (n <= cap >>> 0) new Uint8Array(this.memory.buffer, outPtr >>> 0, n).set(new Uint8Array(blob));
      else this.pending = new Uint8Array(blob);
      return n;
    } catch (err) {
      return this.fail("kv_row", err);
    }
  }

  /** kv_head(select, select_len, key, key_len) -> answer length | -1: the head row and one
   *  key's value (SQLite-backed storage), answered as a read request of the two is and kept
   *  for kv_take: a database's open, without a read request's parsing. */
  private kvHead(selectPtr: number, selectLen: number, keyPtr: number, keyLen: number): number {
    try {
      const text = (ptr: number, len: number) => decoder.decode(new Uint8Array(this.memory.buffer, ptr >>> 0, len));
      return this.keep(this.kv.readHead(text(selectPtr, selectLen), text(keyPtr, keyLen)));
    } catch (err) {
      return this.fail("kv_head", err);
    }
  }

  /** kv_take(out): the answer kv_get, kv_head or kv_row kept, copied into wasm memory. */
  private kvTake(outPtr: number): void {
    const answer = this.pending ?? new Uint8Array(0);
    this.pending = null;
    new Uint8Array(this.memory.buffer, outPtr >>> 0, answer.byteLength).set(answer);
  }

  /** kv_apply(plan, len) -> 0 | -1. Synchronous: see KvBridge.apply. */
  private kvApply(planPtr: number, len: number): number {
    try {
      this.kv.apply(new Uint8Array(this.memory.buffer, planPtr >>> 0, len));
      return 0;
    } catch (err) {
      return this.fail("kv_apply", err);
    }
  }

  /** error_message(buf_ptr, cap) -> full length of the last host error, UTF-8. */
  private errorMessage(bufPtr: number, cap: number): number {
    const bytes = encoder.encode(this.lastError);
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
