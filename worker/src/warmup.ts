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

import { type CommittedPages, DosqlInstance, OP_BATCH, OP_HRANA, OP_LIMITS, OP_QUERY, OP_STATS, type SyncPageSource } from "./dosql";
import type { Meta } from "./storage";

/** Pages in a Map: a SyncPageSource that never leaves the isolate. */
export class MemoryPages implements SyncPageSource {
  meta: Meta;
  private readonly values = new Map<number, Uint8Array>();
  /** Page reads and commits it served (the warm-up must exercise both). */
  reads = 0;
  commits = 0;

  constructor(pageSize: number) {
    this.meta = { format: 4, page_size: pageSize, page_count: 0, txid: 0 };
  }

  readPagesSync(nos: readonly number[]): (Uint8Array | null)[] {
    this.reads++;
    return nos.map((no) => this.values.get(no) ?? null);
  }

  commit(pageCount: number, pages: CommittedPages): void {
    for (const [no, value] of pages) this.values.set(no, new Uint8Array(value));
    for (const no of [...this.values.keys()]) if (no > pageCount) this.values.delete(no);
    this.meta = { ...this.meta, page_count: pageCount, txid: this.meta.txid + 1 };
    this.commits++;
  }
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
    const pages = new MemoryPages(4096);
    const opts = { cachePages: 64, readAhead: 0, maxMemoryBytes: 32 * 1024 * 1024 };
    const db = DosqlInstance.createSync(module, pages, opts, { fixedRandomness: true });
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
    db.reopen(pages, opts);
    run(OP_QUERY, { sql: "SELECT id, name, data FROM warm WHERE id = ?", params: [7] });
    run(OP_QUERY, { sql: "UPDATE warm SET score = score + 1 WHERE id = :id", params: { id: 3 } });
    run(OP_STATS, "");
    const hrana = JSON.stringify({ version: 3, endpoint: "pipeline", stream_timeout_ms: 10_000 });
    run(OP_HRANA, `${hrana}\n${JSON.stringify({ baton: null, requests: [{ type: "execute", stmt: { sql: "SELECT count(*) FROM warm" } }, { type: "close" }] })}`);
    if (pages.reads === 0 || pages.commits === 0) throw new Error("the warm-up read or committed nothing");
    return { ran: true, calls };
  } catch (err) {
    const note = err instanceof Error ? err.message : String(err);
    console.error(`dosql: the warm-up failed (${note}); requests will compile what they use`);
    return { ran: false, note, calls };
  }
}
