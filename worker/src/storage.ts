// The database's pages in Durable Object storage (classic, KV-backed):
//   "p:0000000001" ... → one page each (ArrayBuffer of page_size bytes), 1-based like SQLite's
//                        page numbers, zero-padded to 10 digits so keys sort in page order;
//   "meta"             → { format: 1, page_size, page_count, txid }.
// Storage only ever holds committed transactions: a commit's puts and deletes are all issued
// in one synchronous stretch (no await between them), which DO storage applies atomically, and
// the output gate holds every response until they are durable.
//
// Production limits that local workerd does NOT enforce are enforced here (checkedGet/Put/
// Delete), and every call is counted so that tests can assert none came near them.

/** Keys per get()/put()/delete() call. */
export const MAX_KEYS_PER_CALL = 128;
/** A value's size (classic DO storage: 128 KiB, measured on the serialized value). */
export const MAX_VALUE_BYTES = 128 * 1024;
/** Headroom for V8 serialization's few bytes of framing around an ArrayBuffer. */
const VALUE_OVERHEAD_BYTES = 64;
/** A key's size. */
export const MAX_KEY_BYTES = 2048;

export interface Meta {
  format: 1;
  page_size: number;
  page_count: number;
  txid: number;
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
  delete_calls: number;
  delete_keys: number;
  delete_keys_max: number;
  key_bytes_max: number;
  commits: number;
  /** Calls refused because they would have exceeded a limit (never issued). */
  refused_calls: number;
}

export class LimitError extends Error {}

export const pageKey = (no: number): string => `p:${String(no).padStart(10, "0")}`;

const encoder = new TextEncoder();

function isPageSize(n: number): boolean {
  return Number.isInteger(n) && n >= 512 && n <= 65536 && (n & (n - 1)) === 0;
}

export class PageStorage {
  readonly stats: StorageStats = {
    get_calls: 0, get_keys: 0, get_keys_max: 0,
    put_calls: 0, put_keys: 0, put_keys_max: 0, put_value_bytes_max: 0, bytes_written: 0,
    delete_calls: 0, delete_keys: 0, delete_keys_max: 0,
    key_bytes_max: 0, commits: 0, refused_calls: 0,
  };
  /** The head as committed; loaded by loadMeta() before any other call. */
  meta: Meta = { format: 1, page_size: 4096, page_count: 0, txid: 0 };

  constructor(private readonly storage: DurableObjectStorage) {}

  /** Reads `meta`; a database never committed to gets `newPageSize`, 0 pages, txid 0. */
  async loadMeta(newPageSize: number): Promise<Meta> {
    const stored = (await this.checkedGet(["meta"])).get("meta") as Meta | undefined;
    if (stored === undefined) {
      if (!isPageSize(newPageSize)) throw new Error(`PAGE_SIZE ${newPageSize} is not a power of two in 512..65536`);
      this.meta = { format: 1, page_size: newPageSize, page_count: 0, txid: 0 };
    } else {
      if (stored.format !== 1 || !isPageSize(stored.page_size) || !Number.isInteger(stored.page_count)) {
        throw new Error(`unsupported meta record ${JSON.stringify(stored)}`);
      }
      this.meta = { ...stored };
    }
    return this.meta;
  }

  /** Pages `nos` in order (null: not stored). Pages past page_count are not even asked for. */
  async readPages(nos: readonly number[]): Promise<(Uint8Array | null)[]> {
    const keys = [...new Set(nos.filter((no) => no >= 1 && no <= this.meta.page_count).map(pageKey))];
    const chunks: Promise<Map<string, unknown>>[] = [];
    for (let i = 0; i < keys.length; i += MAX_KEYS_PER_CALL) {
      chunks.push(this.checkedGet(keys.slice(i, i + MAX_KEYS_PER_CALL)));
    }
    const found = new Map<string, unknown>();
    for (const m of await Promise.all(chunks)) for (const [k, v] of m) found.set(k, v);
    return nos.map((no) => {
      const v = found.get(pageKey(no));
      if (v === undefined) return null;
      const bytes = v instanceof ArrayBuffer ? new Uint8Array(v)
        : ArrayBuffer.isView(v) ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : null;
      if (bytes === null || bytes.byteLength !== this.meta.page_size) {
        throw new Error(`page ${no}: stored value is not ${this.meta.page_size} bytes`);
      }
      return bytes;
    });
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
    if (!Number.isInteger(pageCount) || pageCount < 0) throw new Error(`bad page count ${pageCount}`);
    const next: Meta = { format: 1, page_size: prev.page_size, page_count: pageCount, txid: prev.txid + 1 };

    const puts: Array<[string, unknown]> = [];
    for (const [no, bytes] of pages) {
      if (no < 1 || no > pageCount) throw new Error(`commit writes page ${no} outside 1..${pageCount}`);
      if (bytes.byteLength !== prev.page_size) throw new Error(`page ${no} is ${bytes.byteLength} bytes, not ${prev.page_size}`);
      puts.push([pageKey(no), bytes]);
    }
    puts.push(["meta", next]);
    const deletes: string[] = [];
    for (let no = pageCount + 1; no <= prev.page_count; no++) deletes.push(pageKey(no));

    const putBatches = chunk(puts, MAX_KEYS_PER_CALL);
    const deleteBatches = chunk(deletes, MAX_KEYS_PER_CALL);
    for (const b of putBatches) this.checkPut(b);
    for (const b of deleteBatches) this.checkKeys(b);

    // From here on: no await, no throw expected.
    for (const b of putBatches) this.checkedPut(b);
    for (const b of deleteBatches) this.checkedDelete(b);
    this.meta = next;
    this.stats.commits++;
  }

  private async checkedGet(keys: string[]): Promise<Map<string, unknown>> {
    this.checkKeys(keys);
    this.stats.get_calls++;
    this.stats.get_keys += keys.length;
    this.stats.get_keys_max = Math.max(this.stats.get_keys_max, keys.length);
    return this.storage.get(keys);
  }

  /** Issues one put() of `entries` (already checked; checked again for safety). */
  private checkedPut(entries: Array<[string, unknown]>): void {
    const sizes = this.checkPut(entries);
    const s = this.stats;
    s.put_calls++;
    s.put_keys += entries.length;
    s.put_keys_max = Math.max(s.put_keys_max, entries.length);
    for (const n of sizes) {
      s.put_value_bytes_max = Math.max(s.put_value_bytes_max, n);
      s.bytes_written += n;
    }
    // The promise is not awaited (see commit()); a storage failure breaks the object and the
    // output gate turns the pending response into an error, so only log here.
    this.storage.put(Object.fromEntries(entries)).catch((e) => console.error("storage.put failed:", e));
  }

  private checkedDelete(keys: string[]): void {
    this.checkKeys(keys);
    const s = this.stats;
    s.delete_calls++;
    s.delete_keys += keys.length;
    s.delete_keys_max = Math.max(s.delete_keys_max, keys.length);
    this.storage.delete(keys).catch((e) => console.error("storage.delete failed:", e));
  }

  /** Checks a put's keys and values; returns each value's size in bytes. */
  private checkPut(entries: Array<[string, unknown]>): number[] {
    this.checkKeys(entries.map(([k]) => k));
    return entries.map(([k, v]) => {
      const n = v instanceof ArrayBuffer ? v.byteLength : encoder.encode(JSON.stringify(v)).byteLength;
      if (n + VALUE_OVERHEAD_BYTES > MAX_VALUE_BYTES) this.refuse(`value of ${k} is ${n} bytes (limit ${MAX_VALUE_BYTES} serialized)`);
      return n;
    });
  }

  private checkKeys(keys: string[]): void {
    if (keys.length > MAX_KEYS_PER_CALL) this.refuse(`${keys.length} keys in one call (limit ${MAX_KEYS_PER_CALL})`);
    for (const k of keys) {
      const n = encoder.encode(k).byteLength;
      if (n > MAX_KEY_BYTES) this.refuse(`key of ${n} bytes (limit ${MAX_KEY_BYTES})`);
      this.stats.key_bytes_max = Math.max(this.stats.key_bytes_max, n);
    }
  }

  private refuse(why: string): never {
    this.stats.refused_calls++;
    throw new LimitError(`storage limit: ${why}`);
  }
}

function chunk<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
