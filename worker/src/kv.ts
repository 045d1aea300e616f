// Durable Object storage for dosql.wasm: the host side of its kv_get / kv_head / kv_row /
// kv_apply imports. It moves bytes: keys, records, what a commit writes, the head table's SQL
// and the limits are decided in Rust (crates/layout; the bytes: crates/layout/src/wire.rs). Here: reading what a
// request names, checking a write plan against the limits it states (local workerd does not
// enforce production's), issuing its calls in one synchronous stretch (which Durable Object
// storage applies atomically; the output gate holds the response until they are durable), and
// counting every call for /_storage_stats. Classic storage: get/put/delete of many keys per
// call, reads awaited (JSPI); SQLite-backed: the synchronous `kv` and `sql` APIs.

/** Counters since this object started (served at /_storage_stats). `commits`: plans that
 *  wrote the head; `refused_calls`: plans refused for a limit (nothing written); `meta_pages`:
 *  pages carried inside the head; `evicted_pages`: pages that left it for their keys. A class
 *  of plain fields: V8 keeps it a fast object (counting runs on every commit). */
class StorageStats {
  get_calls = 0; get_keys = 0; get_keys_max = 0; put_calls = 0; put_keys = 0; put_keys_max = 0;
  delete_calls = 0; delete_keys = 0; delete_keys_max = 0; put_value_bytes_max = 0; bytes_written = 0;
  bytes_read = 0; key_bytes_max = 0; commits = 0; refused_calls = 0; meta_pages = 0; evicted_pages = 0;
}

export class LimitError extends Error {}

/** What of DurableObjectStorage is used here (tests pass a stand-in): classic storage's API,
 *  and SQLite-backed storage's synchronous `kv` and `sql` (the head row). */
export interface Storage {
  get(keys: string[]): Promise<Map<string, unknown>>;
  put(entries: Record<string, unknown>): Promise<void>;
  delete(keys: string[]): Promise<number>;
  kv?: { get(key: string): unknown; put(key: string, value: unknown): void; delete(key: string): unknown };
  sql?: { exec(query: string, ...params: never[]): { toArray(): unknown[] } };
}

/** The limits a request states (wire.rs: limits). */
type Limits = { keysPerCall: number; keyBytes: number; valueBytes: number };

export class KvBridge {
  readonly stats = new StorageStats();
  /** CREATE TABLE statements already run (SQLite-backed). */
  private readonly created = new Set<string>();

  /** `sqlite`: SQLite-backed storage (its synchronous kv and sql APIs); else classic. */
  constructor(
    private readonly storage: Storage,
    readonly sqlite: boolean,
  ) {}

  /** The storage kind as the wasm numbers it (dosql_open). */
  get kind(): 1 | 2 {
    return this.sqlite ? 2 : 1;
  }

  /** SQLite-backed storage: answers a read request synchronously. */
  readSync(request: Uint8Array): Uint8Array {
    const one = oneKey(request);
    if (one !== null) return this.readOne(one);
    const { limits, items } = parseRead(request);
    return this.answer(items, (key) => {
      this.checkKeys([key], limits);
      this.count("get", 1, 1);
      return this.storage.kv!.get(key);
    });
  }

  /**
   * readSync of one key within the limits (oneKey): a page's read, for a database whose pages
   * are still kv keys (an earlier release's, until its next import; kv_row reads page rows).
   * The same answer and counts as the general path, without its objects (reader, items,
   * closures, writer parts): a cold object runs this code in V8's interpreter, where they
   * cost about a third of a page read (bench W4, perf).
   */
  private readOne(key: string): Uint8Array {
    const s = this.stats;
    s.get_calls++;
    s.get_keys++;
    s.get_keys_max = Math.max(s.get_keys_max, 1);
    s.key_bytes_max = Math.max(s.key_bytes_max, key.length);
    const v = this.storage.kv!.get(key);
    // A bytes value in one allocation, anything else through the general path's encoding.
    if (!(v instanceof ArrayBuffer)) {
      const out = new Writer();
      this.value(out, v);
      return out.bytes();
    }
    const n = v.byteLength;
    const out = new Uint8Array(5 + n);
    out[0] = 1;
    out[1] = n & 0xff;
    out[2] = (n >>> 8) & 0xff;
    out[3] = (n >>> 16) & 0xff;
    out[4] = n >>> 24;
    out.set(new Uint8Array(v), 5);
    s.bytes_read += n;
    return out;
  }

  /** The head row and `key`'s value (kv_head; SQLite-backed storage), answered as a read
   *  request of the two is. The key is the wasm's own constant (the replication record's),
   *  far within every limit. */
  readHead(select: string, key: string): Uint8Array {
    const out = new Writer();
    this.headRow(out, select);
    this.count("get", 1, 1);
    this.stats.key_bytes_max = Math.max(this.stats.key_bytes_max, key.length);
    this.value(out, this.storage.kv!.get(key));
    return out.bytes();
  }

  /** A page's row (kv_row; SQLite-backed storage): its blob, or undefined for no row. */
  pageRow(select: string, id: number): ArrayBuffer | undefined {
    const v = this.row(select, id);
    if (v === undefined) return undefined;
    if (!(v instanceof ArrayBuffer)) throw new Error(`row ${id} holds no blob`);
    this.stats.bytes_read += v.byteLength;
    return v;
  }

  /** Classic storage: one get() per `keysPerCall` keys, awaited together. */
  async read(request: Uint8Array): Promise<Uint8Array> {
    const { limits, items } = parseRead(request);
    const keys = items.filter(([what, , key]) => what !== 1 && key !== "").map(([, , key]) => key);
    const calls = chunks(keys, limits.keysPerCall).map((chunk) => {
      this.checkKeys(chunk, limits);
      this.count("get", 1, chunk.length, chunk.length);
      return this.storage.get(chunk);
    });
    const found = new Map<string, unknown>();
    for (const m of await Promise.all(calls)) for (const [k, v] of m) found.set(k, v);
    return this.answer(items, (key) => found.get(key));
  }

  /** The response to `items`: each key's value as `get` has it, the head row read here. */
  private answer(items: ReadItem[], get: (key: string) => unknown): Uint8Array {
    const out = new Writer();
    for (const [what, select, key, id] of items) {
      if (what === 1) this.headRow(out, select);
      // A row, else the key earlier releases kept it under (none for a page).
      else if (what === 2) this.value(out, this.row(select, id) ?? (key === "" ? undefined : get(key)));
      else this.value(out, get(key));
    }
    return out.bytes();
  }

  /** A row's column `record` (a commit log record or a page) as `select` reads it
   *  (undefined: no row, or no table yet). */
  private row(select: string, id: number): ArrayBuffer | undefined {
    let rows: { record: ArrayBuffer }[];
    try {
      rows = this.storage.sql!.exec(select, id as never).toArray() as typeof rows;
    } catch (err) {
      if (err instanceof Error && /no such table/.test(err.message)) return undefined;
      throw err;
    }
    this.count("get", 1, 1);
    return rows[0]?.record;
  }

  /** A value as a response item: tag 0 absent, 1 bytes, 2 structured (JSON; what earlier
   *  releases wrote, binary parts as {"$bytes": base64}). */
  private value(out: Writer, v: unknown): void {
    let b: Uint8Array;
    if (v === undefined || v === null) return out.u8(0);
    if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) {
      b = v instanceof ArrayBuffer ? new Uint8Array(v) : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      out.u8(1);
    } else {
      b = encoder.encode(JSON.stringify(v, (_k, x: unknown) => (x instanceof ArrayBuffer ? { $bytes: base64(new Uint8Array(x)) } : x)));
      out.u8(2);
    }
    this.stats.bytes_read += b.byteLength;
    out.sized(b);
  }

  /** The head row (tag 3) as `select` reads it; absent when there is no row or no table (or
   *  no SQL: classic storage). */
  private headRow(out: Writer, select: string): void {
    let rows: { head: string; inline: ArrayBuffer | null }[];
    if (this.storage.sql === undefined) return out.u8(0);
    try {
      rows = this.storage.sql.exec(select).toArray() as typeof rows;
    } catch (err) {
      // One statement instead of two: no table yet means no head row.
      if (err instanceof Error && /no such table/.test(err.message)) return out.u8(0);
      throw err;
    }
    this.count("get", 1, 1);
    if (rows.length === 0) return out.u8(0);
    const [text, blob] = [encoder.encode(rows[0].head), rows[0].inline];
    this.stats.bytes_read += text.byteLength + (blob?.byteLength ?? 0);
    out.u8(3);
    out.sized(text);
    out.u8(blob === null ? 0 : 1);
    if (blob !== null) out.sized(new Uint8Array(blob));
  }

  /**
   * Issues every call of `plan` with no await between them, after checking them all against
   * the plan's limits (throws LimitError, having issued nothing). SYNCHRONOUS on purpose:
   * Durable Object storage applies what one synchronous stretch issues atomically.
   */
  apply(plan: Uint8Array): void {
    const r = new Reader(plan);
    const [commit, inlinePages, evictedPages, limits] = [r.u8() === 1, r.u16(), r.u16(), r.limits()];
    const puts: [string, unknown][] = [];
    const deletes: string[] = [];
    const sizes: number[] = [];
    let row: { create: string; upsert: string; text: string; blob: ArrayBuffer | null } | null = null;
    // Rows (commit log records, pages): [create, statement, id, value] to write, [statement,
    // id] to delete.
    const rows: [string, string, number, ArrayBuffer][] = [];
    const rowDeletes: [string, number][] = [];
    for (let n = r.u32(); n > 0; n--) {
      const op = r.u8();
      if (op === 4) {
        row = { create: r.str(), upsert: r.str(), text: decoder.decode(r.view()), blob: r.u8() === 1 ? r.copy() : null };
        sizes.push(row.text.length + (row.blob?.byteLength ?? 0));
        continue;
      }
      if (op === 5) {
        rows.push([r.str(), r.str(), r.id(), r.copy()]);
        sizes.push(rows[rows.length - 1][3].byteLength);
        continue;
      }
      if (op === 6) rowDeletes.push([r.str(), r.id()]);
      const key = r.str();
      // A row delete's key: where an earlier release kept it; none for a page.
      if (op === 6 && key === "") continue;
      this.checkKeys([key], limits);
      if (op === 3 || op === 6) {
        deletes.push(key);
        continue;
      }
      const value = op === 1 ? r.copy() : fromJson(decoder.decode(r.view()));
      sizes.push(value instanceof ArrayBuffer ? value.byteLength : JSON.stringify(value).length);
      puts.push([key, value]);
    }
    const largest = sizes.reduce((a, b) => Math.max(a, b), 0);
    if (largest > limits.valueBytes) this.refuse(`a value of ${largest} bytes (limit ${limits.valueBytes})`);
    if ((row !== null || rows.length + rowDeletes.length > 0) && this.storage.sql === undefined) this.refuse("rows on storage without SQL");
    // From here on: no await, no throw expected.
    if (this.sqlite) {
      const kv = this.storage.kv!;
      for (const [k, v] of puts) kv.put(k, v);
      for (const k of deletes) kv.delete(k);
      this.count("put", puts.length, puts.length);
      this.count("delete", deletes.length, deletes.length);
    } else {
      // Not awaited (see above): a storage failure breaks the object and the output gate turns
      // the pending response into an error, so only log here.
      const log = (e: unknown) => console.error("storage write failed:", e);
      for (const chunk of chunks(puts, limits.keysPerCall)) this.storage.put(Object.fromEntries(chunk)).catch(log);
      for (const chunk of chunks(deletes, limits.keysPerCall)) this.storage.delete(chunk).catch(log);
      // The first chunk is the largest.
      this.count("put", Math.ceil(puts.length / limits.keysPerCall), puts.length, Math.min(puts.length, limits.keysPerCall));
      this.count("delete", Math.ceil(deletes.length / limits.keysPerCall), deletes.length, Math.min(deletes.length, limits.keysPerCall));
    }
    const sql = this.storage.sql!;
    const create = (statement: string) => {
      if (this.created.has(statement)) return;
      sql.exec(statement);
      this.created.add(statement);
    };
    for (const [make, upsert, id, value] of rows) {
      create(make);
      // Plain arguments: a spread's array per row was allocated for every page a commit wrote.
      sql.exec(upsert, id as never, value as never);
    }
    for (const [del, id] of rowDeletes) {
      try {
        sql.exec(del, id as never);
      } catch (err) {
        // No table yet: records earlier releases wrote, whose keys went above.
        if (!(err instanceof Error && /no such table/.test(err.message))) throw err;
      }
    }
    this.count("put", rows.length, rows.length);
    this.count("delete", rowDeletes.length, rowDeletes.length);
    if (row !== null) {
      create(row.create);
      sql.exec(row.upsert, ...([row.text, row.blob] as never[]));
      this.count("put", 1, 1);
    }
    const s = this.stats;
    s.put_value_bytes_max = Math.max(s.put_value_bytes_max, largest);
    s.bytes_written += sizes.reduce((a, b) => a + b, 0);
    if (commit) s.commits++;
    s.meta_pages += inlinePages;
    s.evicted_pages += evictedPages;
  }

  /** Counts `calls` calls of `keys` keys in all, `max` in the largest. */
  private count(what: "get" | "put" | "delete", calls: number, keys: number, max = calls > 0 ? 1 : 0): void {
    const s = this.stats;
    if (what === "get") [s.get_calls, s.get_keys, s.get_keys_max] = [s.get_calls + calls, s.get_keys + keys, Math.max(s.get_keys_max, max)];
    else if (what === "put") [s.put_calls, s.put_keys, s.put_keys_max] = [s.put_calls + calls, s.put_keys + keys, Math.max(s.put_keys_max, max)];
    else [s.delete_calls, s.delete_keys, s.delete_keys_max] = [s.delete_calls + calls, s.delete_keys + keys, Math.max(s.delete_keys_max, max)];
  }

  /** Checks (and counts) one read call's keys, or one key of a write. */
  private checkKeys(keys: string[], limits: Limits): void {
    if (keys.length > limits.keysPerCall) this.refuse(`${keys.length} keys in one call (limit ${limits.keysPerCall})`);
    for (const k of keys) {
      // dosql's keys are ASCII: a key's length is its size in bytes.
      if (k.length > limits.keyBytes) this.refuse(`key of ${k.length} bytes (limit ${limits.keyBytes})`);
      this.stats.key_bytes_max = Math.max(this.stats.key_bytes_max, k.length);
    }
  }

  private refuse(why: string): never {
    this.stats.refused_calls++;
    throw new LimitError(`storage limit: ${why}`);
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** `list` in runs of at most `n`. */
function chunks<T>(list: T[], n: number): T[][] {
  return Array.from({ length: Math.ceil(list.length / n) }, (_, i) => list.slice(i * n, (i + 1) * n));
}

/** A read item (wire.rs): [0 a key | 1 the head row | 2 a row (a log record, a page), its
 *  SELECT, the key (a log record's key in earlier releases; "" for a page), the row's id]. */
type ReadItem = [number, string, string, number];

/** A read request: its limits and items. */
function parseRead(request: Uint8Array): { limits: Limits; items: ReadItem[] } {
  const r = new Reader(request);
  const limits = r.limits();
  const items: ReadItem[] = [];
  for (let n = r.u32(); n > 0; n--) {
    const what = r.u8();
    if (what === 0) items.push([0, "", r.str(), 0]);
    else if (what === 1) items.push([1, r.str(), "", 0]);
    else {
      const select = r.str();
      const id = r.id();
      items.push([2, select, r.str(), id]);
    }
  }
  return { limits, items };
}

/**
 * The key of a read request (wire.rs) of exactly one key item within its limits, else null
 * (the general path parses it, and refuses what is past a limit). Bytes: limits (u16 keys
 * per call, u16 key bytes, u32 value bytes), u32 items = 1, u8 item kind 0, u16-sized key.
 */
function oneKey(r: Uint8Array): string | null {
  if (r.byteLength < 15 || r[8] !== 1 || r[9] !== 0 || r[10] !== 0 || r[11] !== 0 || r[12] !== 0) return null;
  const n = r[13] | (r[14] << 8);
  const keysPerCall = r[0] | (r[1] << 8);
  const keyBytes = r[2] | (r[3] << 8);
  // dosql's keys are ASCII: a key's length is its size in bytes.
  if (r.byteLength !== 15 + n || keysPerCall < 1 || n > keyBytes) return null;
  return decoder.decode(r.subarray(15));
}

/** A structured value as the wasm writes it: JSON, binary parts as {"$bytes": base64}. */
function fromJson(text: string): Record<string, unknown> {
  return JSON.parse(text, (_k, x: unknown) => {
    const b = typeof x === "object" && x !== null && Object.keys(x).length === 1 ? (x as { $bytes?: unknown }).$bytes : undefined;
    return typeof b === "string" ? Uint8Array.from(atob(b), (c) => c.charCodeAt(0)).buffer : x;
  }) as Record<string, unknown>;
}

function base64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Reads wire.rs's little-endian fields. */
class Reader {
  private at = 0;
  private readonly dv: DataView;
  constructor(private readonly b: Uint8Array) {
    this.dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  u8(): number {
    return this.dv.getUint8(this.at++);
  }
  u16(): number {
    return this.dv.getUint16((this.at += 2) - 2, true);
  }
  u32(): number {
    return this.dv.getUint32((this.at += 4) - 4, true);
  }
  /** A u64 row id (at most 2^53 - 1: wire.rs keeps them so). */
  id(): number {
    return Number(this.dv.getBigUint64((this.at += 8) - 8, true));
  }
  limits(): Limits {
    return { keysPerCall: this.u16(), keyBytes: this.u16(), valueBytes: this.u32() };
  }
  /** A u16-sized ASCII string (a key or a statement). TextDecoder: ~20x faster than
   *  String.fromCharCode over a spread of the bytes, which cost W3 ~7 µs per commit. */
  str(): string {
    const n = this.u16();
    return decoder.decode(this.b.subarray(this.at, (this.at += n)));
  }
  /** A u32-sized part, as a view (valid while the wasm memory is not reused). */
  view(): Uint8Array {
    const n = this.u32();
    if (this.at + n > this.b.byteLength) throw new Error("write plan cut short");
    return this.b.subarray(this.at, (this.at += n));
  }
  /** A u32-sized part, copied: storage must not hold a view of memory the wasm reuses. */
  copy(): ArrayBuffer {
    return this.view().slice().buffer;
  }
}

/** Writes a read response: its parts, joined at the end. */
class Writer {
  private readonly parts: Uint8Array[] = [];
  u8(v: number): void {
    this.parts.push(Uint8Array.of(v));
  }
  sized(b: Uint8Array): void {
    const n = new Uint8Array(4);
    new DataView(n.buffer).setUint32(0, b.byteLength, true);
    this.parts.push(n, b);
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.parts.reduce((n, p) => n + p.byteLength, 0));
    let at = 0;
    for (const p of this.parts) out.set(p, (at += p.byteLength) - p.byteLength);
    return out;
  }
}
