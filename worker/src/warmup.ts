// A warm-up of dosql.wasm when the isolate starts: V8 compiles a wasm module's functions
// lazily, on their first call, and compiles them for the whole module, so the first request
// of the isolate paid for compiling SQLite's query, commit and read paths: 43-47 ms in
// workerd, and 3-5x native on the first query of a cold object. Running those paths once at
// module scope moves that cost to the isolate's start-up, where Cloudflare allows 400 ms of
// CPU (and a first constructor would still charge it to the first request).
//
// It runs on an in-memory page store of its own: module scope has no Durable Object, so it
// cannot touch storage, and it opens no real database. Workers forbid generating random
// values at module scope, so while it runs the WASI random_get of its instance answers a
// fixed stream (Rust's hash tables and Hrana's batons ask for some); the instance is then
// dropped, and every real instance, created later, gets real randomness.
//
// DOSQL_WARMUP=off turns it off (workerd config and wrangler.toml).

import { DosqlInstance, OP_BATCH, OP_HRANA, OP_LIMITS, OP_QUERY, OP_STATS } from "./dosql";
import { HEAD_TABLE, KvBridge, type Storage } from "./kv";

/**
 * SQLite-backed Durable Object storage in memory: what KvBridge uses of it (the synchronous
 * kv API and the head table's three statements), for the warm-up and for tests. It never
 * leaves the isolate.
 */
export class MemoryStorage implements Storage {
  readonly data = new Map<string, unknown>();
  row: { head: string; inline: ArrayBuffer | null } | null = null;
  private table = false;
  /** Reads and writes it served (the warm-up must exercise both). */
  reads = 0;
  writes = 0;

  readonly kv = {
    get: (k: string): unknown => {
      this.reads++;
      return this.data.get(k);
    },
    put: (k: string, v: unknown): void => {
      this.writes++;
      this.data.set(k, v);
    },
    delete: (k: string): boolean => this.data.delete(k),
  };

  readonly sql = {
    exec: (query: string, ...params: unknown[]) => {
      const cursor = (rows: unknown[]) => ({ toArray: () => rows });
      if (query.startsWith("CREATE TABLE IF NOT EXISTS")) {
        this.table = true;
        return cursor([]);
      }
      if (!this.table) throw new Error(`no such table: ${HEAD_TABLE}`);
      if (query.startsWith("SELECT")) {
        this.reads++;
        return cursor(this.row === null ? [] : [this.row]);
      }
      this.writes++;
      this.row = { head: params[0] as string, inline: params[1] as ArrayBuffer | null };
      return cursor([]);
    },
  } as unknown as NonNullable<Storage["sql"]>;

  get = async (keys: string[]): Promise<Map<string, unknown>> => new Map(keys.filter((k) => this.data.has(k)).map((k) => [k, this.data.get(k)]));
  put = async (entries: Record<string, unknown>): Promise<void> => {
    for (const [k, v] of Object.entries(entries)) this.data.set(k, v);
  };
  delete = async (keys: string[]): Promise<number> => keys.filter((k) => this.data.delete(k)).length;
}

export interface WarmupReport {
  /** Whether it ran (false: turned off, or it failed). */
  ran: boolean;
  /** Why it did not run or failed. */
  note?: string;
  /** Wasm calls it made. */
  calls: number;
}

const encoder = new TextEncoder();

/**
 * Runs the read, write and Hrana paths of `module` once on an in-memory database, with fixed
 * randomness, and drops the instance. Never throws: a failed warm-up costs nothing but time.
 */
export function warmUp(module: WebAssembly.Module, setting: string | null | undefined): WarmupReport {
  if (setting === "off" || setting === "0" || setting === "false") return { ran: false, note: "DOSQL_WARMUP is off", calls: 0 };
  let calls = 0;
  try {
    const memory = new MemoryStorage();
    const storage = new KvBridge(memory, true);
    const opts = { newPageSize: 4096, cachePages: 64, readAhead: 0, maxMemoryBytes: 32 * 1024 * 1024 };
    const db = DosqlInstance.createSync(module, storage, opts, { fixedRandomness: true });
    const run = (op: number, body: unknown) => {
      calls++;
      const res = db.execSync(op, encoder.encode(typeof body === "string" ? body : JSON.stringify(body)));
      if (res.status !== 200) throw new Error(`op ${op}: ${res.status} ${new TextDecoder().decode(res.body)}`);
    };
    run(OP_LIMITS, { cache_pages: 64, max_txn_bytes: 8 << 20, heap_bytes: 8 << 20, max_answer_bytes: 1 << 20 });
    run(OP_QUERY, { sql: "CREATE TABLE warm(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)" });
    run(OP_QUERY, { sql: "INSERT INTO warm(name, score, data) VALUES (?, ?, ?)", params: ["a", 1.5, { base64: "AAEC" }] });
    run(OP_BATCH, Array.from({ length: 20 }, (_, i) => ({ sql: "INSERT INTO warm(name, score) VALUES (?, ?)", params: [`row ${i} ${"x".repeat(200)}`, i] })));
    run(OP_QUERY, { sql: "SELECT name, count(*), sum(score) FROM warm GROUP BY name ORDER BY 2 DESC LIMIT 3" });
    // A fresh session over the committed pages: its cache is cold, so the point read goes
    // through read_pages and the page decoder, as a cold object's first query does.
    void db.reopen(storage, opts);
    run(OP_QUERY, { sql: "SELECT id, name, data FROM warm WHERE id = ?", params: [7] });
    run(OP_QUERY, { sql: "UPDATE warm SET score = score + 1 WHERE id = :id", params: { id: 3 } });
    run(OP_STATS, "");
    const hrana = JSON.stringify({ version: 3, endpoint: "pipeline", stream_timeout_ms: 10_000 });
    run(OP_HRANA, `${hrana}\n${JSON.stringify({ baton: null, requests: [{ type: "execute", stmt: { sql: "SELECT count(*) FROM warm" } }, { type: "close" }] })}`);
    if (memory.reads === 0 || memory.writes === 0) throw new Error("the warm-up read or committed nothing");
    return { ran: true, calls };
  } catch (err) {
    const note = err instanceof Error ? err.message : String(err);
    console.error(`dosql: the warm-up failed (${note}); requests will compile what they use`);
    return { ran: false, note, calls };
  }
}
