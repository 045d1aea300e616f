// The database's pages in Durable Object storage (classic KV-backed, or SQLite-backed with
// the same keys: see readPagesSync):
//   <prefix>"0000000001" ... → one page each (an ArrayBuffer: the raw page of page_size bytes,
//                        or shorter: the page as an LZ4 block; the wasm encodes and decodes
//                        them, crates/pagestore/src/codec.rs, and so does `dosql export`), 1-based like
//                        SQLite's page numbers, zero-padded to 10 digits so keys sort in page
//                        order. The prefix is meta.prefix: "p:" (the default, and the only
//                        layout before imports existed, so older data stays valid) or
//                        "g<n>:p:" for a database loaded by `dosql import` (generation n);
//   "meta"             → { format, page_size, page_count, txid, prefix?, inline_nos?, inline? }:
//                        the committed head, and the stored values of a few recently written
//                        pages (`inline`, page numbers in `inline_nos`; see Meta.inline).
//                        format 3 (classic storage writes 3): pages may be carried in meta;
//                        format 2: page values may be compressed, page 1 may be `page1`;
//                        format 1: every value is a raw page under its key (both still read);
//                        format 4 (SQLite-backed storage writes 4): the head is a row of the
//                        table HEAD_TABLE instead, and "meta" only says so ({format: 4,
//                        head: HEAD_TABLE}), so that code from before format 4 refuses the
//                        database rather than taking it for an empty one. Why a table: see
//                        HEAD_TABLE;
//   "transfer"         → TransferState: the import being staged (if any), the next generation
//                        number, and page ranges of dead generations still to delete.
// Storage only ever holds committed transactions: a commit's puts and deletes are all issued
// in one synchronous stretch (no await between them), which DO storage applies atomically, and
// the output gate holds every response until they are durable. On SQLite-backed storage they go
// through the synchronous `storage.kv` (pages, "transfer") and `storage.sql` (the head row),
// whose writes in one such stretch are likewise one implicit transaction.
//
// An import writes its pages under a fresh generation prefix that no reader looks at, then
// switches the head (and so every reader) to it in one synchronous stretch: readers see the
// old database or the new one, never a mix. The old generation's keys become garbage,
// deleted in bounded batches.
//
// Production limits that local workerd does NOT enforce are enforced here (checkedGet, checkPut,
// checkKeys), and every call is counted so that tests can assert none came near them.

/** Keys per get()/put()/delete() call. */
export const MAX_KEYS_PER_CALL = 128;
/** A value's size (classic DO storage: 128 KiB, measured on the serialized value). */
export const MAX_VALUE_BYTES = 128 * 1024;
/** Headroom for V8 serialization's few bytes of framing around an ArrayBuffer. */
const VALUE_OVERHEAD_BYTES = 64;
/** A key's size. */
export const MAX_KEY_BYTES = 2048;

export interface Meta {
  /** 4 (SQLite-backed storage writes it): as 3, kept in HEAD_TABLE. 3 (classic storage writes
   *  it): pages may be carried inside meta (`inline`). 2: page values may be compressed
   *  (codec.rs), page 1 may be `page1`. 1: raw pages only. */
  format: 1 | 2 | 3 | 4;
  page_size: number;
  page_count: number;
  txid: number;
  /** Key prefix of the pages; absent means DEFAULT_PREFIX (records written before imports
   *  existed have none, and a database never imported into keeps writing none). */
  prefix?: string;
  /** Format 2 only: page 1's stored value (read as an inline page; see `inline`). */
  page1?: ArrayBuffer;
  /** Format 3: the page numbers of `inline`, in the order the commit wrote them. */
  inline_nos?: number[];
  /**
   * Format 3: the stored values of the pages the last commit wrote (at most INLINE_MAX_PAGES
   * pages of INLINE_MAX_BYTES in all; a bigger commit puts pages under their keys in page
   * order, page 1 last, until the rest fit),
   * carried inside meta, which every commit writes anyway. A one-row insert dirties page 1
   * (SQLite's change counter) and one leaf: both ride here, so the commit is ONE key instead
   * of three, which is most of what a small commit costs SQLite-backed storage
   * (bench/README.md). While a page is inline its own key is not read (it may hold an older
   * value); the next commit that does not rewrite it writes it under its key.
   */
  inline?: ArrayBuffer[];
}

/** The meta format classic storage writes (see Meta.format). */
const META_FORMAT = 3 as const;
/** The format SQLite-backed storage writes: the head lives in HEAD_TABLE. */
const HEAD_FORMAT = 4 as const;
/**
 * On SQLite-backed storage the head (every commit writes it) is row 0 of this table, a
 * rowid table reached through `storage.sql`, rather than the kv key "meta". workerd keeps kv
 * keys in a WITHOUT ROWID table, where finding a key compares it with its neighbours, and a
 * neighbour whose value spills into overflow pages (a stored page of over ~1 KB: most of
 * them) is read whole from disk to be compared: replacing "meta" took ~3.5 such reads and ~6
 * WAL frames per commit, a rowid lookup takes none and ~2 (bench/README.md). The kv API and
 * the SQL API write the same SQLite database, in the same implicit transaction, so a commit's
 * page puts and its head row land together.
 */
export const HEAD_TABLE = "dosql_head";
/** What "meta" holds once the head lives in HEAD_TABLE (written once, with the first head in
 *  format 4: a commit's, or an import's switch). */
const HEAD_POINTER = { format: HEAD_FORMAT, head: HEAD_TABLE } as const;
/** At most this many pages ride inside meta... */
export const INLINE_MAX_PAGES = 8;
/** ...of at most this many stored bytes in all. On SQLite-backed storage a value over ~1 KB
 *  spills into 4 KiB overflow pages, which cost less than another key (bench/README.md); a
 *  one-row commit (page 1 and a compressed leaf) fits in one. */
export const INLINE_MAX_BYTES = 4096;

/** The page key prefix of a database that was never imported into. */
export const DEFAULT_PREFIX = "p:";
const GENERATION_PREFIX_RE = /^g[1-9][0-9]*:p:$/;

/** An import in progress: pages 1..next-1 are stored under `prefix`, invisible to readers. */
export interface Staging {
  /** What the client names the import by (the generation number, as a string). */
  id: string;
  prefix: string;
  page_size: number;
  page_count: number;
  /** The next page expected: chunks arrive in order, so this records how far the upload got. */
  next: number;
}

/** Keys `prefix` + from..to (page numbers) that no reader can reach any more. */
export interface Garbage {
  prefix: string;
  from: number;
  to: number;
}

export interface TransferState {
  format: 1;
  /** Generation number of the next import (prefixes are never reused). */
  next_gen: number;
  staging: Staging | null;
  garbage: Garbage[];
}

/** Counters since this Durable Object instance started (served at /_storage_stats). */
export interface StorageStats {
  get_calls: number;
  get_keys: number;
  get_keys_max: number;
  put_calls: number;
  put_keys: number;
  put_keys_max: number;
  put_value_bytes_max: number;
  bytes_written: number;
  /** Value bytes read (as stored: compressed pages count their stored length). */
  bytes_read: number;
  delete_calls: number;
  delete_keys: number;
  delete_keys_max: number;
  key_bytes_max: number;
  commits: number;
  /** Calls refused because they would have exceeded a limit (never issued). */
  refused_calls: number;
  /** Dirty pages that commits carried inside `meta` rather than under their own keys. */
  meta_pages: number;
  /** Pages that left `meta` for their own keys in a commit that did not rewrite them. */
  evicted_pages: number;
}

export class LimitError extends Error {}

/** A put that passed the limit checks, with each value's measured size. */
interface CheckedPut {
  entries: Array<[string, unknown]>;
  sizes: number[];
}

export const pageKey = (no: number, prefix: string = DEFAULT_PREFIX): string => `${prefix}${String(no).padStart(10, "0")}`;

const encoder = new TextEncoder();

export function isPageSize(n: number): boolean {
  return Number.isInteger(n) && n >= 512 && n <= 65536 && (n & (n - 1)) === 0;
}

/** Whether `v` is an integer in 0..max. */
function isCount(v: unknown, max = 0xffffffff): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= max;
}

export class PageStorage {
  readonly stats: StorageStats = {
    get_calls: 0, get_keys: 0, get_keys_max: 0,
    put_calls: 0, put_keys: 0, put_keys_max: 0, put_value_bytes_max: 0, bytes_written: 0, bytes_read: 0,
    delete_calls: 0, delete_keys: 0, delete_keys_max: 0,
    key_bytes_max: 0, commits: 0, refused_calls: 0, meta_pages: 0, evicted_pages: 0,
  };
  /** The head as committed; loaded by loadMeta() before any other call. */
  meta: Meta = { format: META_FORMAT, page_size: 4096, page_count: 0, txid: 0 };
  /** Whether `meta` was read from storage (by loadMeta) rather than being the placeholder. */
  loaded = false;
  /** The pages `meta` carries (Meta.inline), by page number. */
  private inline = new Map<number, ArrayBuffer>();
  /** The "transfer" record, read on first use (loadTransfer) and kept in step after. */
  private transfer: TransferState | null = null;

  /** SQLite-backed storage's synchronous API, when the object has it and asked for it. */
  private readonly kv: SyncKvStorage | null;
  /** SQLite-backed storage's SQL API, which holds the head (HEAD_TABLE); null on classic. */
  private readonly sql: SqlStorage | null;
  /** Whether HEAD_TABLE exists (SQLite-backed only; checked by loadMeta). */
  private headTable = false;
  /** Whether "meta" already holds HEAD_POINTER (SQLite-backed only). */
  private pointerStored = false;

  /**
   * `sync`: the object is SQLite-backed (DosqlSqlDatabase). Reads may then use readPagesSync,
   * and every write goes through the synchronous `storage.kv` (one call per key) or, for the
   * head, `storage.sql` (HEAD_TABLE), applied in the same implicit transaction as the rest of
   * the synchronous stretch that issues it, which is cheaper there than the async put()
   * (measured in bench/README.md).
   */
  constructor(
    private readonly storage: DurableObjectStorage,
    { sync = false }: { sync?: boolean } = {},
  ) {
    this.kv = sync ? storage.kv : null;
    this.sql = sync ? storage.sql : null;
  }

  /**
   * Reads the head: HEAD_TABLE's row on SQLite-backed storage when there is one (it is then the
   * head, whatever "meta" holds: the first write of a row also wrote the pointer, and no code
   * writes a format-3 "meta" over a pointer, since every version before format 4 refuses it),
   * else the key "meta". A database never committed to gets `newPageSize`, 0 pages, txid 0.
   */
  async loadMeta(newPageSize: number): Promise<Meta> {
    let stored = this.sql === null ? undefined : this.readHeadRow();
    if (stored === undefined) {
      stored = (await this.checkedGet(["meta"])).get("meta") as Meta | undefined;
      // A full record under "meta" is format 1-3; format 4 there is only ever the pointer.
      if (stored?.format === HEAD_FORMAT) {
        throw new Error(`"meta" says the head is in table ${HEAD_TABLE}, which ${this.sql === null ? "classic storage does not have" : "holds no head"}`);
      }
    } else {
      if (stored.format !== HEAD_FORMAT) throw new Error(`unsupported head row in ${HEAD_TABLE}: format ${String(stored.format)}`);
      this.pointerStored = true;
    }
    if (stored === undefined) {
      if (!isPageSize(newPageSize)) throw new Error(`PAGE_SIZE ${newPageSize} is not a power of two in 512..65536`);
      this.meta = { format: this.writesFormat(), page_size: newPageSize, page_count: 0, txid: 0 };
      this.inline = new Map();
    } else {
      const inline = inlinePages(stored);
      if (inline === null) {
        throw new Error(`unsupported meta record ${JSON.stringify(stored, (_k, x: unknown) => (x instanceof ArrayBuffer ? x.byteLength : x))}`);
      }
      this.meta = { ...stored };
      this.inline = inline;
    }
    this.loaded = true;
    return this.meta;
  }

  /** The key prefix of the committed pages. */
  get prefix(): string {
    return this.meta.prefix ?? DEFAULT_PREFIX;
  }

  /** The stored values of pages `nos` in order (null: not stored; see codec.rs for what a
   *  value holds). Pages past page_count are not even asked for. */
  async readPages(nos: readonly number[]): Promise<(Uint8Array | null)[]> {
    // Taken once: every key of this read comes from the same generation.
    const prefix = this.prefix;
    const size = this.meta.page_size;
    const inline = this.inline;
    const stored = (no: number) => no >= 1 && no <= this.meta.page_count && !inline.has(no);
    const keys = [...new Set(nos.filter(stored).map((no) => pageKey(no, prefix)))];
    const chunks: Promise<Map<string, unknown>>[] = [];
    for (let i = 0; i < keys.length; i += MAX_KEYS_PER_CALL) {
      chunks.push(this.checkedGet(keys.slice(i, i + MAX_KEYS_PER_CALL)));
    }
    const found = new Map<string, unknown>();
    for (const m of await Promise.all(chunks)) for (const [k, v] of m) found.set(k, v);
    return nos.map((no) => this.pageValue(no, inline.get(no) ?? found.get(pageKey(no, prefix)), size));
  }

  /**
   * `readPages` without a promise, for a SQLite-backed Durable Object (DosqlSqlDatabase): each
   * page is one synchronous `storage.kv.get` (the kv API takes one key per call, so every call
   * is far within MAX_KEYS_PER_CALL), counted in `stats` like the async reads. SQLite-backed
   * storage applies async put()s to the same database at once, so these reads see every commit.
   */
  readPagesSync(nos: readonly number[]): (Uint8Array | null)[] {
    const prefix = this.prefix;
    const size = this.meta.page_size;
    const kv = this.storage.kv;
    const found = new Map<number, unknown>(this.inline);
    for (const no of nos) {
      if (no < 1 || no > this.meta.page_count || found.has(no)) continue;
      const key = pageKey(no, prefix);
      this.checkKeys([key]);
      this.stats.get_calls++;
      this.stats.get_keys++;
      this.stats.get_keys_max = Math.max(this.stats.get_keys_max, 1);
      found.set(no, kv.get(key));
    }
    return nos.map((no) => this.pageValue(no, found.get(no), size));
  }

  /**
   * Commits `pages` (each a copy, not a view of wasm memory) and the new page count as one
   * transaction. SYNCHRONOUS on purpose: every put()/delete() is issued before returning, with
   * no await between them, so DO storage applies them atomically. All calls are planned and
   * checked against the limits BEFORE the first is issued: a failure halfway would otherwise
   * leave a partial commit to be flushed at the next await.
   */
  commit(pageCount: number, pages: ReadonlyArray<readonly [number, ArrayBuffer]>): void {
    const prev = this.meta;
    const prefix = this.prefix;
    if (!Number.isInteger(pageCount) || pageCount < 0) throw new Error(`bad page count ${pageCount}`);
    const next: Meta = { format: this.writesFormat(), page_size: prev.page_size, page_count: pageCount, txid: prev.txid + 1 };
    // Only a database loaded by an import carries a prefix: the others keep today's record.
    if (prev.prefix !== undefined) next.prefix = prev.prefix;

    // This commit's pages ride in meta, as far as the budget allows.
    const inline = new Map<number, ArrayBuffer>();
    let inlineBytes = 0;
    for (const [no, bytes] of pages) {
      if (no < 1 || no > pageCount) throw new Error(`commit writes page ${no} outside 1..${pageCount}`);
      if (bytes.byteLength === 0 || bytes.byteLength > prev.page_size) {
        throw new Error(`page ${no}'s value is ${bytes.byteLength} bytes, page size ${prev.page_size}`);
      }
      inlineBytes += bytes.byteLength - (inline.get(no)?.byteLength ?? 0);
      inline.set(no, bytes);
    }
    const puts: Array<[string, unknown]> = [];
    // The previous commit's pages that this one does not rewrite leave meta for their keys.
    let evicted = 0;
    for (const [no, bytes] of this.inline) {
      if (no <= pageCount && !inline.has(no)) {
        puts.push([pageKey(no, prefix), bytes]);
        evicted++;
      }
    }
    // Over the budget, pages go under their keys in the commit's order (the wasm sorts a
    // commit's pages), page 1 last: a cold start reads page 1 first, and nearly every commit
    // rewrites it (SQLite's change counter). A page 1 over the budget by itself goes first.
    const over = () => inline.size > INLINE_MAX_PAGES || inlineBytes > INLINE_MAX_BYTES;
    const leave = (no: number, bytes: ArrayBuffer) => {
      puts.push([pageKey(no, prefix), bytes]);
      inline.delete(no);
      inlineBytes -= bytes.byteLength;
    };
    const order = [...inline.keys()].filter((no) => no !== 1);
    const page1 = inline.get(1);
    if (page1 !== undefined) {
      if (page1.byteLength > INLINE_MAX_BYTES) order.unshift(1);
      else order.push(1);
    }
    for (const no of order) {
      if (!over()) break;
      leave(no, inline.get(no)!);
    }
    if (inline.size > 0) next.inline_nos = [...inline.keys()];
    // Measured here, before the buffers join it: JSON.stringify over ArrayBuffers takes V8's
    // slow path, a measurable part of a one-row commit (bench/README.md).
    const metaBytes = this.sql === null ? new Map([["meta", JSON.stringify(next).length + inlineBytes]]) : undefined;
    if (inline.size > 0) next.inline = [...inline.values()];
    const head = this.sql === null ? null : this.checkHead(next);
    if (head === null) puts.push(["meta", next]);
    const deletes: string[] = [];
    for (let no = pageCount + 1; no <= prev.page_count; no++) deletes.push(pageKey(no, prefix));

    const putBatches = chunk(puts, MAX_KEYS_PER_CALL);
    const deleteBatches = chunk(deletes, MAX_KEYS_PER_CALL);
    const checked = putBatches.map((b) => this.checkPut(b, metaBytes));
    for (const b of deleteBatches) this.checkKeys(b);

    // From here on: no await, no throw expected.
    for (const p of checked) this.issuePut(p);
    for (const b of deleteBatches) this.issueDelete(b);
    if (head !== null) this.issueHead(head);
    this.stats.meta_pages += inline.size;
    this.stats.evicted_pages += evicted;
    this.meta = next;
    this.inline = inline;
    this.stats.commits++;
  }

  // ---- imports (see transfer.ts for the protocol) ----

  /** The "transfer" record (a fresh one if none was ever written). */
  async loadTransfer(): Promise<TransferState> {
    if (this.transfer === null) {
      const stored = (await this.checkedGet(["transfer"])).get("transfer") as TransferState | undefined;
      if (stored === undefined) {
        this.transfer = { format: 1, next_gen: 1, staging: null, garbage: [] };
      } else {
        if (stored.format !== 1 || !isCount(stored.next_gen) || !Array.isArray(stored.garbage)) {
          throw new Error(`unsupported transfer record ${JSON.stringify(stored)}`);
        }
        this.transfer = structuredClone(stored);
      }
    }
    return structuredClone(this.transfer);
  }

  /** Pages still to delete: dead generations and abandoned imports. Call loadTransfer() first. */
  garbagePages(): number {
    return (this.transfer?.garbage ?? []).reduce((n, g) => n + Math.max(0, g.to - g.from + 1), 0);
  }

  /**
   * Starts an import of `pageCount` pages of `pageSize` bytes under a new generation prefix.
   * An import already staged is abandoned: its pages become garbage. Call loadTransfer() first.
   */
  beginImport(pageSize: number, pageCount: number): Staging {
    const t = this.current();
    if (!isPageSize(pageSize)) throw new Error(`page size ${pageSize} is not a power of two in 512..65536`);
    if (!isCount(pageCount) || pageCount < 1) throw new Error(`bad page count ${pageCount}`);
    const next: TransferState = structuredClone(t);
    if (next.staging !== null) next.garbage.push(stagedGarbage(next.staging));
    const gen = next.next_gen;
    next.next_gen = gen + 1;
    next.staging = { id: String(gen), prefix: `g${gen}:p:`, page_size: pageSize, page_count: pageCount, next: 1 };
    this.writeTransfer(next);
    return next.staging;
  }

  /**
   * Stores pages `from`.. of the staged import (stored values of 1..page_size bytes) and records how
   * far the upload got, in one synchronous stretch. The caller checked the range and order.
   */
  stagePages(from: number, pages: readonly ArrayBuffer[]): void {
    const t = this.current();
    const s = t.staging;
    if (s === null) throw new Error("no import is staged");
    // Stored values as uploaded (raw pages, or compressed by the client: transfer.ts).
    const puts: Array<[string, unknown]> = pages.map((bytes, i) => [pageKey(from + i, s.prefix), bytes]);
    const next: TransferState = structuredClone(t);
    next.staging!.next = Math.max(s.next, from + pages.length);
    const putBatches = chunk(puts, MAX_KEYS_PER_CALL);
    const checked = putBatches.map((b) => this.checkPut(b));
    const record = this.checkPut([["transfer", next]]);
    // No await from here: the pages and the record that counts them land together.
    for (const p of checked) this.issuePut(p);
    this.issuePut(record);
    this.transfer = next;
  }

  /** Drops the staged import: its pages become garbage. */
  abortImport(): void {
    const t = this.current();
    if (t.staging === null) return;
    const next: TransferState = structuredClone(t);
    next.garbage.push(stagedGarbage(next.staging!));
    next.staging = null;
    this.writeTransfer(next);
  }

  /**
   * Makes the staged (complete) import the database: `meta` gets the new prefix, page size and
   * page count and txid + 1, in ONE put with the transfer record that turns the old
   * generation into garbage. Readers see the old pages or the new, never a mix. The caller
   * holds the wasm lock and drops the instance afterwards (its cache holds old pages).
   */
  switchToStaged(): Meta {
    const t = this.current();
    const s = t.staging;
    if (s === null) throw new Error("no import is staged");
    if (s.next !== s.page_count + 1) throw new Error(`the import has ${s.next - 1} of ${s.page_count} pages`);
    const prev = this.meta;
    const meta: Meta = { format: this.writesFormat(), page_size: s.page_size, page_count: s.page_count, txid: prev.txid + 1, prefix: s.prefix };
    const next: TransferState = structuredClone(t);
    next.staging = null;
    if (prev.page_count > 0) next.garbage.push({ prefix: this.prefix, from: 1, to: prev.page_count });
    if (this.sql === null) {
      this.issuePut(this.checkPut([["meta", meta], ["transfer", next]]));
    } else {
      const head = this.checkHead(meta);
      this.issuePut(this.checkPut([["transfer", next]]));
      this.issueHead(head);
    }
    this.meta = meta;
    this.inline = new Map();
    this.transfer = next;
    this.stats.commits++;
    return meta;
  }

  /**
   * Deletes up to `maxCalls` batches of garbage keys (at most 128 keys each) and records the
   * progress, all without an await. Garbage keys are under prefixes no reader uses, so deleting
   * them needs no atomicity with anything; the record only saves repeating work. Returns the
   * pages still to delete.
   */
  collectGarbage(maxCalls: number): number {
    const t = this.current();
    if (t.garbage.length === 0) return 0;
    const next: TransferState = structuredClone(t);
    // Never touch a live prefix, whatever the record says.
    const live = new Set([this.prefix, ...(next.staging === null ? [] : [next.staging.prefix])]);
    next.garbage = next.garbage.filter((g) => !live.has(g.prefix) && g.from <= g.to);
    const batches: string[][] = [];
    while (batches.length < maxCalls && next.garbage.length > 0) {
      const g = next.garbage[0];
      const to = Math.min(g.to, g.from + MAX_KEYS_PER_CALL - 1);
      const keys: string[] = [];
      for (let no = g.from; no <= to; no++) keys.push(pageKey(no, g.prefix));
      batches.push(keys);
      g.from = to + 1;
      if (g.from > g.to) next.garbage.shift();
    }
    for (const b of batches) this.checkKeys(b);
    const record = this.checkPut([["transfer", next]]);
    for (const b of batches) this.issueDelete(b);
    this.issuePut(record);
    this.transfer = next;
    return this.garbagePages();
  }

  /** The meta format this storage writes. */
  private writesFormat(): 3 | 4 {
    return this.sql === null ? META_FORMAT : HEAD_FORMAT;
  }

  /** The head row (SQLite-backed storage), or undefined when there is none yet. */
  private readHeadRow(): Meta | undefined {
    const sql = this.sql!;
    this.headTable = sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", HEAD_TABLE).toArray().length > 0;
    if (!this.headTable) return undefined;
    this.stats.get_calls++;
    this.stats.get_keys++;
    this.stats.get_keys_max = Math.max(this.stats.get_keys_max, 1);
    const rows = sql.exec<{ head: string; inline: ArrayBuffer | null }>(`SELECT head, inline FROM ${HEAD_TABLE} WHERE id = 0`).toArray();
    if (rows.length === 0) return undefined;
    const meta = decodeHead(rows[0].head, rows[0].inline);
    if (meta === null) throw new Error(`unsupported head row in ${HEAD_TABLE}: ${rows[0].head.slice(0, 200)}`);
    return meta;
  }

  /** The head row of `meta` (and the pointer, when "meta" does not hold it yet), checked
   *  against the limits: issueHead only issues. */
  private checkHead(meta: Meta): CheckedHead {
    const head = encodeHead(meta);
    const n = head.text.length + (head.inline?.byteLength ?? 0);
    if (n + VALUE_OVERHEAD_BYTES > MAX_VALUE_BYTES) this.refuse(`head of ${n} bytes (limit ${MAX_VALUE_BYTES})`);
    return { ...head, bytes: n, pointer: this.pointerStored ? null : this.checkPut([["meta", HEAD_POINTER]]) };
  }

  /** Writes the head row (and, the first time, the pointer under "meta"), counted as puts. */
  private issueHead(head: CheckedHead): void {
    const sql = this.sql!;
    if (!this.headTable) {
      sql.exec(`CREATE TABLE IF NOT EXISTS ${HEAD_TABLE}(id INTEGER PRIMARY KEY, head TEXT NOT NULL, inline BLOB)`);
      this.headTable = true;
    }
    sql.exec(`INSERT OR REPLACE INTO ${HEAD_TABLE}(id, head, inline) VALUES (0, ?, ?)`, head.text, head.inline);
    const s = this.stats;
    s.put_calls++;
    s.put_keys++;
    s.put_keys_max = Math.max(s.put_keys_max, 1);
    s.put_value_bytes_max = Math.max(s.put_value_bytes_max, head.bytes);
    s.bytes_written += head.bytes;
    if (head.pointer !== null) {
      this.issuePut(head.pointer);
      this.pointerStored = true;
    }
  }

  private current(): TransferState {
    if (this.transfer === null) throw new Error("transfer record not loaded");
    return this.transfer;
  }

  private writeTransfer(next: TransferState): void {
    this.issuePut(this.checkPut([["transfer", next]]));
    this.transfer = next;
  }

  private async checkedGet(keys: string[]): Promise<Map<string, unknown>> {
    this.checkKeys(keys);
    this.stats.get_calls++;
    this.stats.get_keys += keys.length;
    this.stats.get_keys_max = Math.max(this.stats.get_keys_max, keys.length);
    return this.storage.get(keys);
  }

  /**
   * Issues a put that checkPut passed: one async put() on classic storage, one synchronous
   * kv.put() per key on SQLite-backed storage; counted as issued. Callers check every call of
   * a write before issuing the first, so a refused write issues nothing.
   */
  private issuePut({ entries, sizes }: CheckedPut): void {
    const s = this.stats;
    const perCall = this.kv === null ? entries.length : 1;
    s.put_calls += entries.length / perCall;
    s.put_keys += entries.length;
    s.put_keys_max = Math.max(s.put_keys_max, perCall);
    for (const n of sizes) {
      s.put_value_bytes_max = Math.max(s.put_value_bytes_max, n);
      s.bytes_written += n;
    }
    if (this.kv !== null) {
      for (const [k, v] of entries) this.kv.put(k, v);
      return;
    }
    // The promise is not awaited (see commit()); a storage failure breaks the object and the
    // output gate turns the pending response into an error, so only log here.
    this.storage.put(Object.fromEntries(entries)).catch((e) => console.error("storage.put failed:", e));
  }

  /** Deletes `keys` (checked by checkKeys: at most MAX_KEYS_PER_CALL), as issuePut puts. */
  private issueDelete(keys: string[]): void {
    const s = this.stats;
    const perCall = this.kv === null ? keys.length : 1;
    s.delete_calls += keys.length / perCall;
    s.delete_keys += keys.length;
    s.delete_keys_max = Math.max(s.delete_keys_max, perCall);
    if (this.kv !== null) {
      for (const k of keys) this.kv.delete(k);
      return;
    }
    this.storage.delete(keys).catch((e) => console.error("storage.delete failed:", e));
  }

  /** Checks a put's keys and values against the limits (throws LimitError), measuring each
   *  value once for issuePut (records whose size the caller knows: `known`, by key). */
  private checkPut(entries: Array<[string, unknown]>, known?: ReadonlyMap<string, number>): CheckedPut {
    this.checkKeys(entries.map(([k]) => k));
    const sizes = entries.map(([k, v]) => {
      const n = v instanceof ArrayBuffer ? v.byteLength : (known?.get(k) ?? recordBytes(v));
      if (n + VALUE_OVERHEAD_BYTES > MAX_VALUE_BYTES) this.refuse(`value of ${k} is ${n} bytes (limit ${MAX_VALUE_BYTES} serialized)`);
      return n;
    });
    return { entries, sizes };
  }

  private checkKeys(keys: string[]): void {
    if (keys.length > MAX_KEYS_PER_CALL) this.refuse(`${keys.length} keys in one call (limit ${MAX_KEYS_PER_CALL})`);
    for (const k of keys) {
      // UTF-8 takes at most 3 bytes per UTF-16 unit: only a long key needs measuring (and
      // every key dosql makes is ASCII, so its length is its size).
      const n = 3 * k.length <= MAX_KEY_BYTES ? k.length : encoder.encode(k).byteLength;
      if (n > MAX_KEY_BYTES) this.refuse(`key of ${n} bytes (limit ${MAX_KEY_BYTES})`);
      this.stats.key_bytes_max = Math.max(this.stats.key_bytes_max, n);
    }
  }

  /** A stored page value as bytes (null: not stored); anything but 1..size bytes is an error. */
  private pageValue(no: number, v: unknown, size: number): Uint8Array | null {
    if (v === undefined) return null;
    const bytes = v instanceof ArrayBuffer ? new Uint8Array(v)
      : ArrayBuffer.isView(v) ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : null;
    if (bytes === null || bytes.byteLength === 0 || bytes.byteLength > size) {
      throw new Error(`page ${no}: stored value is not a page value of at most ${size} bytes`);
    }
    this.stats.bytes_read += bytes.byteLength;
    return bytes;
  }

  private refuse(why: string): never {
    this.stats.refused_calls++;
    throw new LimitError(`storage limit: ${why}`);
  }
}

/** About the serialized size of a record without page values (the transfer record, an
 *  import's meta): its JSON in UTF-8, measured only when long. commit() measures the meta it
 *  writes itself, page values included. */
function recordBytes(v: unknown): number {
  const text = JSON.stringify(v);
  return 3 * text.length <= MAX_VALUE_BYTES - VALUE_OVERHEAD_BYTES ? text.length : encoder.encode(text).byteLength;
}

/**
 * Whether `value` is a stored value of a `size`-byte page (crates/pagestore/src/codec.rs):
 * the raw page (exactly `size` bytes), or one LZ4 block that decodes to exactly `size` bytes
 * with every match inside what it decoded so far. Walks the block without writing the page.
 * Says nothing of the content: it keeps values that would fail to decode out of storage.
 */
export function isPageValue(value: Uint8Array, size: number): boolean {
  if (value.byteLength === size) return true;
  if (value.byteLength === 0 || value.byteLength > size) return false;
  let s = 0;
  let d = 0;
  // A length nibble of 15 continues in bytes until one below 255.
  const extend = (n: number): number => {
    if (n < 15) return n;
    for (;;) {
      if (s >= value.byteLength) return -1;
      const b = value[s++];
      n += b;
      if (b !== 255) return n;
    }
  };
  while (s < value.byteLength) {
    const token = value[s++];
    const literals = extend(token >> 4);
    if (literals < 0 || s + literals > value.byteLength || d + literals > size) return false;
    s += literals;
    d += literals;
    if (s === value.byteLength) break; // the last sequence: literals only
    if (s + 2 > value.byteLength) return false;
    const offset = value[s] | (value[s + 1] << 8);
    s += 2;
    const match = extend(token & 15);
    if (offset === 0 || offset > d || match < 0 || d + match + 4 > size) return false;
    d += match + 4;
  }
  return d === size;
}

/** A head as HEAD_TABLE's row holds it: `text`, the meta record's fields as JSON with the
 *  inline values' lengths (`inline_lens`) in place of the values; `inline`, the values back
 *  to back (null when there are none). */
interface EncodedHead {
  text: string;
  inline: ArrayBuffer | null;
}

/** A head row that passed the limit checks, with its size, and the pointer's put when it is
 *  still to write. */
interface CheckedHead extends EncodedHead {
  bytes: number;
  pointer: CheckedPut | null;
}

function encodeHead(meta: Meta): EncodedHead {
  const { inline, ...fields } = meta;
  if (inline === undefined || inline.length === 0) return { text: JSON.stringify(fields), inline: null };
  let n = 0;
  for (const v of inline) n += v.byteLength;
  const out = new Uint8Array(n);
  let off = 0;
  for (const v of inline) {
    out.set(new Uint8Array(v), off);
    off += v.byteLength;
  }
  return { text: JSON.stringify({ ...fields, inline_lens: inline.map((v) => v.byteLength) }), inline: out.buffer };
}

/** The meta record of a head row (checked by loadMeta, as any record), or null when the row
 *  does not parse or its values' lengths do not add up. */
function decodeHead(text: string, inline: ArrayBuffer | null): Meta | null {
  let fields: Meta & { inline_lens?: unknown };
  try {
    fields = JSON.parse(text) as Meta & { inline_lens?: unknown };
  } catch {
    return null;
  }
  if (typeof fields !== "object" || fields === null) return null;
  const { inline_lens: lens, ...meta } = fields;
  if (lens === undefined) return inline === null ? meta : null;
  if (inline === null || !Array.isArray(lens) || !lens.every((n) => isCount(n))) return null;
  const values: ArrayBuffer[] = [];
  let off = 0;
  for (const n of lens as number[]) {
    values.push(inline.slice(off, off + n));
    off += n;
  }
  if (off !== inline.byteLength) return null;
  meta.inline = values;
  return meta;
}

/** The pages a stored meta record carries (format 2's page1 is page 1), or null when the
 *  record is not one this code understands. */
function inlinePages(m: Meta): Map<number, ArrayBuffer> | null {
  const pageValue = (v: unknown) => v instanceof ArrayBuffer && v.byteLength >= 1 && v.byteLength <= m.page_size;
  if (!(m.format === 1 || m.format === 2 || m.format === 3 || m.format === 4) || !isPageSize(m.page_size) || !isCount(m.page_count) || !isCount(m.txid, Number.MAX_SAFE_INTEGER)
    || (m.prefix !== undefined && !(m.prefix === DEFAULT_PREFIX || GENERATION_PREFIX_RE.test(m.prefix)))) return null;
  const inline = new Map<number, ArrayBuffer>();
  if (m.page1 !== undefined) {
    if (m.format !== 2 || !pageValue(m.page1) || m.page_count < 1) return null;
    inline.set(1, m.page1);
  }
  if (m.inline !== undefined || m.inline_nos !== undefined) {
    const nos = m.inline_nos;
    const values = m.inline;
    if (!(m.format === 3 || m.format === 4) || !Array.isArray(nos) || !Array.isArray(values) || nos.length !== values.length) return null;
    for (let i = 0; i < nos.length; i++) {
      if (!isCount(nos[i], m.page_count) || nos[i] < 1 || inline.has(nos[i]) || !pageValue(values[i])) return null;
      inline.set(nos[i], values[i]);
    }
  }
  return inline;
}

/** The pages an abandoned import wrote. */
function stagedGarbage(s: Staging): Garbage {
  return { prefix: s.prefix, from: 1, to: s.next - 1 };
}

function chunk<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
