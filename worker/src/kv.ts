// Durable Object storage for dosql.wasm: the host side of its kv_get / kv_apply imports. This
// file moves bytes and nothing else: which keys exist, what a record holds, what a commit
// writes, all of it is decided in Rust (crates/layout; the byte formats: crates/layout/src/
// wire.rs). Here: reading the keys a request names, issuing a write plan's calls in one
// synchronous stretch (no await between them, which Durable Object storage applies atomically,
// and the output gate holds the response until they are durable), checking the production
// limits once more before the first call (local workerd does not enforce them), and counting
// every call for /_storage_stats.
//
// Two kinds of storage. Classic (KV-backed): get/put/delete of at most 128 keys per call, the
// reads awaited (the wasm suspends under JSPI). SQLite-backed: the synchronous `storage.kv`
// (one key per call) and `storage.sql` for the head row; a plan's kv and SQL writes in one
// synchronous stretch are one implicit transaction.

/** Keys per get()/put()/delete() call (crates/layout: Limits; a Rust test keeps them equal). */
export const MAX_KEYS_PER_CALL = 128;
/** A key's bytes. */
export const MAX_KEY_BYTES = 2048;
/** A value's bytes, classic / SQLite-backed storage. */
export const MAX_VALUE_BYTES_CLASSIC = 128 * 1024;
export const MAX_VALUE_BYTES_SQLITE = 2 * 1000 * 1000;
/** Room for serialization's framing around a value. */
export const VALUE_OVERHEAD_BYTES = 64;
/** SQLite-backed storage's table holding the head (crates/layout: HEAD_TABLE). */
export const HEAD_TABLE = "dosql_head";

/** Counters since this object started (served at /_storage_stats). */
export interface StorageStats {
  get_calls: number;
  get_keys: number;
  get_keys_max: number;
  put_calls: number;
  put_keys: number;
  put_keys_max: number;
  put_value_bytes_max: number;
  bytes_written: number;
  bytes_read: number;
  delete_calls: number;
  delete_keys: number;
  delete_keys_max: number;
  key_bytes_max: number;
  /** Plans that wrote the head: commits and import switches. */
  commits: number;
  /** Plans refused for a limit (nothing written). */
  refused_calls: number;
  /** Pages commits carried inside the head rather than under their keys. */
  meta_pages: number;
  /** Pages that left the head for their keys in a commit that did not rewrite them. */
  evicted_pages: number;
}

export class LimitError extends Error {}

/** What of DurableObjectStorage is used here (tests and the warm-up pass a stand-in). */
export interface Storage {
  get(keys: string[]): Promise<Map<string, unknown>>;
  put(entries: Record<string, unknown>): Promise<void>;
  delete(keys: string[]): Promise<number>;
  /** SQLite-backed storage's synchronous API. */
  kv?: { get(key: string): unknown; put(key: string, value: unknown): void; delete(key: string): unknown };
  /** SQLite-backed storage's SQL API (the head table). */
  sql?: { exec(query: string, ...params: never[]): { toArray(): unknown[] } };
}

const TAG_BYTES = 1;
const TAG_STRUCTURED = 2;
const TAG_ROW = 3;

type Op = { op: 1 | 2; key: string; value: ArrayBuffer | Record<string, unknown> } | { op: 3; key: string } | { op: 4; text: string; blob: ArrayBuffer | null };

export class KvBridge {
  readonly stats: StorageStats = {
    get_calls: 0, get_keys: 0, get_keys_max: 0,
    put_calls: 0, put_keys: 0, put_keys_max: 0, put_value_bytes_max: 0, bytes_written: 0, bytes_read: 0,
    delete_calls: 0, delete_keys: 0, delete_keys_max: 0,
    key_bytes_max: 0, commits: 0, refused_calls: 0, meta_pages: 0, evicted_pages: 0,
  };
  /** Whether HEAD_TABLE is known to exist (SQLite-backed). */
  private headTable = false;

  /** `sqlite`: SQLite-backed storage (its synchronous kv and sql APIs); else classic. */
  constructor(
    private readonly storage: Storage,
    readonly sqlite: boolean,
  ) {}

  /** The storage kind as the wasm numbers it (dosql_open). */
  get kind(): 1 | 2 {
    return this.sqlite ? 2 : 1;
  }

  // ---- reads: the answer to a read request (wire.rs) ----

  /** SQLite-backed storage: answers synchronously. */
  readSync(request: Uint8Array): Uint8Array {
    const items = parseRead(request);
    const kv = this.storage.kv!;
    const out = new Writer();
    for (const item of items) {
      if (item === null) {
        this.headRow(out);
        continue;
      }
      this.checkKeys([item]);
      this.count("get", 1, 1);
      this.value(out, kv.get(item));
    }
    return out.bytes();
  }

  /** Classic storage: one get() per 128 keys, awaited together. */
  async read(request: Uint8Array): Promise<Uint8Array> {
    const items = parseRead(request);
    const keys = items.filter((k): k is string => k !== null);
    const found = new Map<string, unknown>();
    const calls: Promise<Map<string, unknown>>[] = [];
    for (let i = 0; i < keys.length; i += MAX_KEYS_PER_CALL) {
      const chunk = keys.slice(i, i + MAX_KEYS_PER_CALL);
      this.checkKeys(chunk);
      this.count("get", 1, chunk.length);
      calls.push(this.storage.get(chunk));
    }
    for (const m of await Promise.all(calls)) for (const [k, v] of m) found.set(k, v);
    const out = new Writer();
    for (const item of items) {
      if (item === null) out.u8(0);
      else this.value(out, found.get(item));
    }
    return out.bytes();
  }

  private value(out: Writer, v: unknown): void {
    if (v === undefined || v === null) {
      out.u8(0);
    } else if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) {
      const b = v instanceof ArrayBuffer ? new Uint8Array(v) : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      this.stats.bytes_read += b.byteLength;
      out.u8(TAG_BYTES);
      out.sized(b);
    } else {
      // A structured value (what earlier releases wrote): JSON, binary parts as base64.
      const text = JSON.stringify(v, (_k, x: unknown) => (x instanceof ArrayBuffer ? { $bytes: base64(new Uint8Array(x)) } : x));
      const b = encoder.encode(text);
      this.stats.bytes_read += b.byteLength;
      out.u8(TAG_STRUCTURED);
      out.sized(b);
    }
  }

  private headRow(out: Writer): void {
    const sql = this.storage.sql;
    if (sql === undefined) {
      out.u8(0);
      return;
    }
    let rows: { head: string; inline: ArrayBuffer | null }[];
    try {
      rows = sql.exec(`SELECT head, inline FROM ${HEAD_TABLE} WHERE id = 0`).toArray() as typeof rows;
    } catch (err) {
      // One statement instead of two: no table yet means no head row.
      if (err instanceof Error && /no such table/.test(err.message)) {
        out.u8(0);
        return;
      }
      throw err;
    }
    this.headTable = true;
    this.count("get", 1, 1);
    if (rows.length === 0) {
      out.u8(0);
      return;
    }
    const text = encoder.encode(rows[0].head);
    out.u8(TAG_ROW);
    out.sized(text);
    const blob = rows[0].inline;
    this.stats.bytes_read += text.byteLength + (blob?.byteLength ?? 0);
    if (blob === null) {
      out.u8(0);
    } else {
      out.u8(1);
      out.sized(new Uint8Array(blob));
    }
  }

  // ---- writes: a plan (wire.rs), issued in one synchronous stretch ----

  /**
   * Issues every call of `plan` with no await between them, after checking them all against
   * the limits (throws LimitError, having issued nothing). SYNCHRONOUS on purpose: Durable
   * Object storage applies what one synchronous stretch issues atomically.
   */
  apply(plan: Uint8Array): void {
    const r = new Reader(plan);
    const commit = r.u8() === 1;
    const inlinePages = r.u16();
    const evictedPages = r.u16();
    const n = r.u32();
    const ops: Op[] = [];
    for (let i = 0; i < n; i++) {
      const op = r.u8();
      if (op === 1) ops.push({ op, key: r.key(), value: r.copy() });
      else if (op === 2) ops.push({ op, key: r.key(), value: fromJson(decoder.decode(r.view())) });
      else if (op === 3) ops.push({ op, key: r.key() });
      else if (op === 4) ops.push({ op, text: decoder.decode(r.view()), blob: r.u8() === 1 ? r.copy() : null });
      else throw new Error(`write plan op ${op}`);
    }
    // The second check: every call, before the first is issued.
    const maxValue = this.sqlite ? MAX_VALUE_BYTES_SQLITE : MAX_VALUE_BYTES_CLASSIC;
    const puts: [string, unknown][] = [];
    const deletes: string[] = [];
    const sizes: number[] = [];
    let row: { text: string; blob: ArrayBuffer | null } | null = null;
    for (const o of ops) {
      if (o.op === 4) {
        row = { text: o.text, blob: o.blob };
        const size = o.text.length + (o.blob?.byteLength ?? 0);
        if (size + VALUE_OVERHEAD_BYTES > maxValue) this.refuse(`head of ${size} bytes (limit ${maxValue})`);
        sizes.push(size);
        continue;
      }
      this.checkKeys([o.key]);
      if (o.op === 3) {
        deletes.push(o.key);
        continue;
      }
      const size = o.value instanceof ArrayBuffer ? o.value.byteLength : JSON.stringify(o.value).length;
      if (size + VALUE_OVERHEAD_BYTES > maxValue) this.refuse(`value of ${o.key} is ${size} bytes (limit ${maxValue} serialized)`);
      puts.push([o.key, o.value]);
      sizes.push(size);
    }
    if (row !== null && this.storage.sql === undefined) this.refuse("a head row on storage without SQL");
    // From here on: no await, no throw expected.
    if (this.sqlite) {
      const kv = this.storage.kv!;
      for (const [k, v] of puts) kv.put(k, v);
      for (const k of deletes) kv.delete(k);
      this.count("put", puts.length, puts.length);
      this.count("delete", deletes.length, deletes.length);
    } else {
      // The promises are not awaited (see above): a storage failure breaks the object and the
      // output gate turns the pending response into an error, so only log here.
      for (let i = 0; i < puts.length; i += MAX_KEYS_PER_CALL) {
        const chunk = puts.slice(i, i + MAX_KEYS_PER_CALL);
        this.storage.put(Object.fromEntries(chunk)).catch((e) => console.error("storage.put failed:", e));
        this.count("put", 1, chunk.length);
      }
      for (let i = 0; i < deletes.length; i += MAX_KEYS_PER_CALL) {
        const chunk = deletes.slice(i, i + MAX_KEYS_PER_CALL);
        this.storage.delete(chunk).catch((e) => console.error("storage.delete failed:", e));
        this.count("delete", 1, chunk.length);
      }
    }
    if (row !== null) {
      const sql = this.storage.sql!;
      if (!this.headTable) {
        sql.exec(`CREATE TABLE IF NOT EXISTS ${HEAD_TABLE}(id INTEGER PRIMARY KEY, head TEXT NOT NULL, inline BLOB)`);
        this.headTable = true;
      }
      sql.exec(`INSERT OR REPLACE INTO ${HEAD_TABLE}(id, head, inline) VALUES (0, ?, ?)`, ...([row.text, row.blob] as never[]));
      this.count("put", 1, 1);
    }
    const s = this.stats;
    for (const size of sizes) {
      s.put_value_bytes_max = Math.max(s.put_value_bytes_max, size);
      s.bytes_written += size;
    }
    if (commit) s.commits++;
    s.meta_pages += inlinePages;
    s.evicted_pages += evictedPages;
  }

  private count(what: "get" | "put" | "delete", calls: number, keys: number): void {
    const s = this.stats as unknown as Record<string, number>;
    s[`${what}_calls`] += calls;
    s[`${what}_keys`] += keys;
    if (calls > 0) s[`${what}_keys_max`] = Math.max(s[`${what}_keys_max`], Math.ceil(keys / calls));
  }

  private checkKeys(keys: string[]): void {
    if (keys.length > MAX_KEYS_PER_CALL) this.refuse(`${keys.length} keys in one call (limit ${MAX_KEYS_PER_CALL})`);
    for (const k of keys) {
      // dosql's keys are ASCII: a key's length is its size in bytes.
      if (k.length > MAX_KEY_BYTES) this.refuse(`key of ${k.length} bytes (limit ${MAX_KEY_BYTES})`);
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

/** A read request's items: a key, or null for the head row. */
function parseRead(request: Uint8Array): (string | null)[] {
  const r = new Reader(request);
  const n = r.u32();
  const items: (string | null)[] = [];
  for (let i = 0; i < n; i++) {
    const what = r.u8();
    const key = r.key();
    items.push(what === 1 ? null : key);
  }
  return items;
}

/** A structured value as the wasm writes it: JSON, binary parts as {"$bytes": base64}. */
function fromJson(text: string): Record<string, unknown> {
  return JSON.parse(text, (_k, x: unknown) => {
    if (typeof x === "object" && x !== null && Object.keys(x).length === 1 && typeof (x as { $bytes?: unknown }).$bytes === "string") {
      return unbase64((x as { $bytes: string }).$bytes).buffer;
    }
    return x;
  }) as Record<string, unknown>;
}

function base64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(s);
}

function unbase64(s: string): Uint8Array {
  const raw = atob(s);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

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
    const v = this.dv.getUint16(this.at, true);
    this.at += 2;
    return v;
  }
  u32(): number {
    const v = this.dv.getUint32(this.at, true);
    this.at += 4;
    return v;
  }
  /** A key: u16 length, ASCII. */
  key(): string {
    const n = this.u16();
    let s = "";
    for (let i = 0; i < n; i++) s += String.fromCharCode(this.b[this.at + i]);
    this.at += n;
    return s;
  }
  /** A u32-sized part, as a view (valid while the wasm memory is not reused). */
  view(): Uint8Array {
    const n = this.u32();
    if (this.at + n > this.b.byteLength) throw new Error("write plan cut short");
    const v = this.b.subarray(this.at, this.at + n);
    this.at += n;
    return v;
  }
  /** A u32-sized part, copied: storage must not hold a view of memory the wasm reuses. */
  copy(): ArrayBuffer {
    return this.view().slice().buffer;
  }
}

class Writer {
  private buf = new Uint8Array(256);
  private at = 0;
  private room(n: number): void {
    if (this.at + n <= this.buf.byteLength) return;
    const next = new Uint8Array(Math.max(this.buf.byteLength * 2, this.at + n));
    next.set(this.buf.subarray(0, this.at));
    this.buf = next;
  }
  u8(v: number): void {
    this.room(1);
    this.buf[this.at++] = v;
  }
  sized(b: Uint8Array): void {
    this.room(4 + b.byteLength);
    new DataView(this.buf.buffer).setUint32(this.at, b.byteLength, true);
    this.buf.set(b, this.at + 4);
    this.at += 4 + b.byteLength;
  }
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.at);
  }
}
