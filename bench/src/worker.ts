// The benchmark's Worker: every contender is a Durable Object class of this one Worker, served
// by one workerd process (bench/config.capnp), and every one receives the same requests.
//
//   GET  /ping                          → "ok" (warms the isolate; no Durable Object)
//   *    /c/<contender>/<db>/<route>    → Durable Object idFromName(<db>) of <contender>, as
//                                         /db/<db>/<route>: query | batch | _storage_stats | ping,
//                                         and a dosql class's own routes (replicas, history, stats)
//
// Contenders:
//   dosql-jspi[-16k|-64k]   dosql's own DosqlDatabase (worker/src/index.ts), JSPI, classic storage
//   dosql-sync[-16k|-64k]   dosql's own DosqlSqlDatabase: the same wasm with plain imports over
//                           SQLite-backed ctx.storage.kv
//   dosql-asyncify          the asyncified wasm (wasm-opt --asyncify), classic storage
//   native-sql              workerd's own SQLite through ctx.storage.sql (SQLite-backed)
//   prior-art               @rkusa/wasm-sqlite 0.1.1 over classic storage, no page cache
//   probe-*                 W3 only: storage writes of a dosql commit, no SQL (storage floor);
//                           probe-sync-log-*: with a history log record as a kv key or a row
//   dosql-*-no-history      W1-W3 only: dosql 4K with HISTORY=off (every other dosql class
//                           keeps history, the production default), the cost of the commit log
//   dosql-sync-2-replicas   dosql-sync's class under another name, for the replication rows
//                           (bench/run.mjs): its databases have two read replicas, objects of
//                           the same class (config.capnp: DB_SQL)

import { DosqlDatabase, DosqlSqlDatabase, type Env as DosqlEnv } from "../../worker/src/index";
import { DEFAULT_CACHE_BYTES, OP_BATCH, OP_QUERY } from "../../worker/src/constants";
import { intVar, jsonError as dosqlJsonError, Lock } from "../../worker/src/http";
import { KvBridge } from "../../worker/src/kv";
import asyncifyModule from "./dosql-asyncify.wasm";
import { Sqlite, type Connection } from "@rkusa/wasm-sqlite";
import { AsyncifyInstance } from "./asyncify";
import { countingStorage, withStorage } from "./counting";
import { byteLength, type Counters, json, JSON_HEADERS, newCounters, route, type Statement } from "./common";

/** An error answer in dosql's shape (worker/src/http.ts). */
const jsonError = (status: number, code: string, err: unknown): Response =>
  dosqlJsonError(status, code, err instanceof Error ? err.message : String(err));
/** The key of page `no` as dosql's layout names it (crates/layout/src/keys.rs), for the
 *  storage probes, which store what a commit stores without running the layout. */
const pageKey = (no: number): string => `p:${String(no).padStart(10, "0")}`;

interface Env extends DosqlEnv {
  [binding: string]: unknown;
}

const BINDINGS: Record<string, string> = {
  "dosql-jspi": "JSPI_4K",
  "dosql-jspi-16k": "JSPI_16K",
  "dosql-jspi-64k": "JSPI_64K",
  "dosql-sync": "SYNC_4K",
  "dosql-sync-16k": "SYNC_16K",
  "dosql-sync-64k": "SYNC_64K",
  "dosql-asyncify": "ASYNCIFY_4K",
  "native-sql": "NATIVE_SQL",
  "probe-sync": "PROBE_SYNC",
  "probe-classic": "PROBE_CLASSIC",
  "probe-sync-log-kv": "PROBE_SYNC_LOG_KV",
  "probe-sync-log-row": "PROBE_SYNC_LOG_ROW",
  "prior-art": "PRIOR_ART",
  "dosql-jspi-no-history": "JSPI_4K_NO_HISTORY",
  "dosql-sync-no-history": "SYNC_4K_NO_HISTORY",
  "dosql-sync-2-replicas": "SYNC_4K",
};

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const { pathname, search } = new URL(request.url);
    if (pathname === "/ping") return new Response("ok");
    const m = /^\/c\/([^/]+)\/([A-Za-z0-9_.-]+)\/([a-z_]+)$/.exec(pathname);
    const binding = m === null ? undefined : BINDINGS[m[1]];
    if (m === null || binding === undefined) return jsonError(404, "NOT_FOUND", `no route for ${pathname}`);
    const ns = env[binding] as DurableObjectNamespace;
    return ns.get(ns.idFromName(m[2])).fetch(new Request(`http://do/db/${m[2]}/${m[3]}${search}`, request));
  },
} satisfies ExportedHandler<Env>;

/** The page cache as the wasm sizes it when memory is plentiful (crates/wasm: MemoryLimits::
 *  for_share, with the default CACHE_BYTES unless CACHE_PAGES or CACHE_BYTES is set). */
const cachePages = (env: Env, pageSize: number): number =>
  env.CACHE_PAGES ? intVar(env.CACHE_PAGES, 0) : Math.max(16, Math.floor(intVar(env.CACHE_BYTES, DEFAULT_CACHE_BYTES) / pageSize));

/** `Base` as a Durable Object class (workerd constructs it with ctx and env) of one page size. */
function withPageSize(
  Base: new (ctx: DurableObjectState, env: Env, pageSize: number) => DurableObject,
  pageSize: number,
): new (ctx: DurableObjectState, env: Env) => DurableObject {
  return class extends Base {
    constructor(ctx: DurableObjectState, env: Env) {
      super(ctx, env, pageSize);
    }
  };
}

// ---- dosql, JSPI: the production class, with its storage calls counted ----

class DosqlJspi extends DosqlDatabase {
  private readonly counters: Counters;

  constructor(ctx: DurableObjectState, env: Env, pageSize: number) {
    const counters = newCounters();
    super(withStorage(ctx, countingStorage(ctx.storage, counters)), { ...env, PAGE_SIZE: String(pageSize) });
    this.counters = counters;
  }

  override async fetch(request: Request): Promise<Response> {
    const r = route(request);
    if (r === "ping") return new Response("ok");
    if (r === "_storage_stats") {
      // Its own read of the stored head is not counted (as DosqlDatabase does for its stats).
      const counted = { ...this.counters };
      const own = (await (await super.fetch(request)).json()) as { commits: number; meta_pages: number; evicted_pages: number };
      Object.assign(this.counters, counted);
      return json({ ...counted, commits: own.commits, meta_pages: own.meta_pages, evicted_pages: own.evicted_pages });
    }
    return super.fetch(request);
  }
}

export const DosqlJspi4k = withPageSize(DosqlJspi, 4096);
export const DosqlJspi16k = withPageSize(DosqlJspi, 16384);
export const DosqlJspi64k = withPageSize(DosqlJspi, 65536);
export const DosqlJspi4kNoHistory = withPageSize(
  class extends DosqlJspi {
    constructor(ctx: DurableObjectState, env: Env, pageSize: number) {
      super(ctx, { ...env, HISTORY: "off" }, pageSize);
    }
  },
  4096,
);

// ---- storage probes (W3 only): what a dosql 4K single-row commit stores, with no SQL and no wasm ----
// Each request stores what one W3 commit of dosql 4K stores, with the sizes it measures
// (bench/RESULTS.md, "Storage calls"): ONE record, the head, carrying page 1 (~0.2 KiB;
// SQLite's change counter changes on every commit) and the table's last leaf (an LZ4 block
// that grows from a few bytes to ~2.2 KiB as the leaf fills, ~1.1 KiB on average) inside it.
// Like dosql's, the values change content and size on every commit: SQLite (workerd's
// storage) rewrites an unchanged or same-size value in place, which would make the floor look
// cheaper than it is. And like dosql's, the head has neighbours: the object first stores
// PROBE_PAGES filled leaves under page keys. workerd keeps kv keys in a WITHOUT ROWID table,
// where finding a key compares it with neighbours, and a neighbour whose value spills into
// overflow pages is read whole to be compared (bench/README.md). The storage floor of W3.
//
// SQLite-backed (probe-sync), as DosqlSqlDatabase: the head is row 0 of a rowid table
// written through `storage.sql` (worker/src/storage.ts, HEAD_TABLE). Classic (probe-classic),
// as DosqlDatabase: the head is the key "meta", one put().

const PROBE_PAGE1_BYTES = 240;
/** Filled leaves a W3 database holds under their keys by the measured runs (~30 rows each). */
const PROBE_PAGES = 200;
const PROBE_FULL_LEAF_BYTES = 1900;
/** The head of commit `txid`: its fields and the two pages it carries. */
const probeHead = (txid: number) => ({
  fields: { format: 3, page_size: 4096, page_count: 60, txid, inline_nos: [1, 2 + Math.floor(txid / 100)] },
  inline: [new Uint8Array(PROBE_PAGE1_BYTES).fill((txid + 1) & 0xff), new Uint8Array(16 + ((txid * 22) % 2200)).fill(txid & 0xff)],
});

abstract class Probe implements DurableObject {
  private txid = 0;
  protected readonly counters = newCounters();
  constructor(protected readonly ctx: DurableObjectState) {}
  async fetch(request: Request): Promise<Response> {
    const r = route(request);
    if (r === "ping") return new Response("ok");
    if (r === "_storage_stats") return json(this.counters);
    await request.arrayBuffer();
    if (this.txid === 0) {
      const leaves: Array<[string, unknown]> = [];
      for (let no = 2; no < 2 + PROBE_PAGES; no++) leaves.push([pageKey(no), new Uint8Array(PROBE_FULL_LEAF_BYTES).fill(no).buffer]);
      for (let i = 0; i < leaves.length; i += 128) this.storeLeaves(leaves.slice(i, i + 128));
    }
    this.counters.bytes_written += this.storeHead(probeHead(++this.txid));
    this.counters.put_keys++;
    this.counters.put_calls++;
    this.counters.commits++;
    return json({ columns: [], rows: [] });
  }
  protected abstract storeLeaves(entries: Array<[string, unknown]>): void;
  /** Stores the head; returns the bytes stored. */
  protected abstract storeHead(head: ReturnType<typeof probeHead>): number;
}

/** SQLite-backed: the head as a row through storage.sql, what DosqlSqlDatabase does. */
export class ProbeSync extends Probe {
  constructor(ctx: DurableObjectState, _env: Env) {
    super(ctx);
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS probe_head(id INTEGER PRIMARY KEY, head TEXT NOT NULL, inline BLOB)");
  }
  protected storeLeaves(entries: Array<[string, unknown]>): void {
    for (const [k, v] of entries) this.ctx.storage.kv.put(k, v);
  }
  protected storeHead({ fields, inline }: ReturnType<typeof probeHead>): number {
    const text = JSON.stringify({ ...fields, format: 4, inline_lens: inline.map((v) => v.byteLength) });
    const blob = new Uint8Array(inline.reduce((n, v) => n + v.byteLength, 0));
    let off = 0;
    for (const v of inline) {
      blob.set(v, off);
      off += v.byteLength;
    }
    this.ctx.storage.sql.exec("INSERT OR REPLACE INTO probe_head(id, head, inline) VALUES (0, ?, ?)", text, blob.buffer);
    return text.length + blob.byteLength;
  }
}

/** A commit's log record as dosql 4K writes one for a W3 commit (~1.3 KiB of pre-images). */
const probeRecord = (txid: number) => new Uint8Array(1300 + (txid % 64)).fill(txid & 0xff);

/** ProbeSync plus the log record under its `l:` key (kv.put), what dosql does with history. */
export class ProbeSyncLogKv extends ProbeSync {
  protected override storeHead(head: ReturnType<typeof probeHead>): number {
    const record = probeRecord(head.fields.txid);
    this.ctx.storage.kv.put(`l:${String(head.fields.txid).padStart(20, "0")}`, record.buffer);
    return super.storeHead(head) + record.byteLength;
  }
}

/** ProbeSync plus the log record as a row of a rowid table (storage.sql): the alternative. */
export class ProbeSyncLogRow extends ProbeSync {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS probe_log(txid INTEGER PRIMARY KEY, record BLOB NOT NULL)");
  }
  protected override storeHead(head: ReturnType<typeof probeHead>): number {
    const record = probeRecord(head.fields.txid);
    this.ctx.storage.sql.exec("INSERT OR REPLACE INTO probe_log(txid, record) VALUES (?, ?)", head.fields.txid, record.buffer);
    return super.storeHead(head) + record.byteLength;
  }
}

/** Classic storage: the head under "meta", one put() not awaited, what DosqlDatabase does. */
export class ProbeClassic extends Probe {
  constructor(ctx: DurableObjectState, _env: Env) { super(ctx); }
  protected storeLeaves(entries: Array<[string, unknown]>): void {
    void this.ctx.storage.put(Object.fromEntries(entries));
  }
  protected storeHead({ fields, inline }: ReturnType<typeof probeHead>): number {
    const meta = { ...fields, inline: inline.map((v) => v.buffer) };
    void this.ctx.storage.put({ meta });
    return byteLength(meta);
  }
}

// ---- dosql, synchronous: the production SQLite-backed class (ctx.storage.kv, no JSPI) ----

class DosqlSync extends DosqlSqlDatabase {
  constructor(ctx: DurableObjectState, env: Env, pageSize: number) {
    super(ctx, { ...env, PAGE_SIZE: String(pageSize) });
  }

  override async fetch(request: Request): Promise<Response> {
    // Its own /_storage_stats counts every storage call (PageStorage.stats).
    if (route(request) === "ping") return new Response("ok");
    return super.fetch(request);
  }
}

export const DosqlSync4k = withPageSize(DosqlSync, 4096);
export const DosqlSync16k = withPageSize(DosqlSync, 16384);
export const DosqlSync64k = withPageSize(DosqlSync, 65536);
export const DosqlSync4kNoHistory = withPageSize(
  class extends DosqlSync {
    constructor(ctx: DurableObjectState, env: Env, pageSize: number) {
      super(ctx, { ...env, HISTORY: "off" }, pageSize);
    }
  },
  4096,
);

// ---- dosql, asyncify: the transformed module, classic storage ----

export class DosqlAsyncify4k implements DurableObject {
  private readonly counters = newCounters();
  private readonly storage: KvBridge;
  private db: AsyncifyInstance | null = null;
  private readonly lock = new Lock();

  constructor(ctx: DurableObjectState, private readonly env: Env) {
    this.storage = new KvBridge(countingStorage(ctx.storage, this.counters), false);
    void ctx.blockConcurrencyWhile(() => this.lock.run(() => this.instance().then(() => undefined, () => undefined)));
  }

  async fetch(request: Request): Promise<Response> {
    const r = route(request);
    switch (r) {
      case "ping":
        return new Response("ok");
      case "_storage_stats":
        return json({ ...this.counters, commits: this.storage.stats.commits, meta_pages: this.storage.stats.meta_pages, evicted_pages: this.storage.stats.evicted_pages, suspensions: this.db?.suspensions ?? 0 });
      case "query":
      case "batch": {
        const body = new Uint8Array(await request.arrayBuffer());
        return this.lock.run(async () => {
          try {
            const db = await this.instance();
            const res = await db.exec(r === "query" ? OP_QUERY : OP_BATCH, body);
            return new Response(res.body, { status: res.status, headers: JSON_HEADERS });
          } catch (err) {
            this.db = null;
            return jsonError(500, "WASM_TRAP", err);
          }
        });
      }
    }
    return jsonError(404, "NOT_FOUND", request.url);
  }

  private async instance(): Promise<AsyncifyInstance> {
    if (this.db === null) {
      this.db = await AsyncifyInstance.create(asyncifyModule, this.storage, {
        newPageSize: 4096,
        cachePages: cachePages(this.env, 4096),
        readAhead: intVar(this.env.READ_AHEAD, 0),
        maxMemoryBytes: 1 << 30,
      });
    }
    return this.db;
  }
}

// ---- workerd's own SQLite: ctx.storage.sql ----

type SqlValue = ArrayBuffer | string | number | null;

export class NativeSql implements DurableObject {
  private readonly sql: SqlStorage;
  private rowsRead = 0;
  private rowsWritten = 0;

  constructor(private readonly ctx: DurableObjectState, _env: Env) {
    this.sql = ctx.storage.sql;
  }

  async fetch(request: Request): Promise<Response> {
    const r = route(request);
    try {
      switch (r) {
        case "ping":
          return new Response("ok");
        case "_storage_stats":
          return json({ rows_read: this.rowsRead, rows_written: this.rowsWritten, database_size: this.sql.databaseSize });
        case "query":
          return json(this.run((await request.json()) as Statement));
        case "batch": {
          const stmts = (await request.json()) as Statement[];
          return json({ results: this.ctx.storage.transactionSync(() => stmts.map((s) => this.run(s))) });
        }
      }
    } catch (err) {
      return jsonError(400, "SQLITE_ERROR", err);
    }
    return jsonError(404, "NOT_FOUND", request.url);
  }

  private run(s: Statement): unknown {
    const cursor = this.sql.exec(s.sql, ...(s.params ?? []));
    const rows: unknown[][] = [];
    for (const row of cursor.raw<SqlValue[]>()) rows.push(row.map(value));
    this.rowsRead += cursor.rowsRead;
    this.rowsWritten += cursor.rowsWritten;
    return { columns: cursor.columnNames, rows, rows_affected: cursor.rowsWritten };
  }
}

function value(v: SqlValue): unknown {
  if (v instanceof ArrayBuffer) {
    let s = "";
    for (const b of new Uint8Array(v)) s += String.fromCharCode(b);
    return { base64: btoa(s) };
  }
  return v;
}

// ---- the prior art: @rkusa/wasm-sqlite 0.1.1 (asyncified SQLite, no page cache) ----

export class PriorArt implements DurableObject {
  private readonly counters = newCounters();
  private readonly storage: DurableObjectStorage;
  private conn: Connection | null = null;
  private pageCount = 0;
  private readonly lock = new Lock();

  constructor(ctx: DurableObjectState, _env: Env) {
    this.storage = countingStorage(ctx.storage, this.counters);
    void ctx.blockConcurrencyWhile(() => this.lock.run(() => this.connection().then(() => undefined, () => undefined)));
  }

  async fetch(request: Request): Promise<Response> {
    const r = route(request);
    switch (r) {
      case "ping":
        return new Response("ok");
      case "_storage_stats":
        return json({ ...this.counters, page_count: this.pageCount });
      case "query":
      case "batch": {
        const body = await request.text();
        return this.lock.run(async () => {
          let conn: Connection;
          try {
            conn = await this.connection();
          } catch (err) {
            return jsonError(500, "OPEN_FAILED", err);
          }
          try {
            if (r === "query") {
              const s = JSON.parse(body) as Statement;
              return new Response(await conn.queryRaw(s.sql, s.params ?? []), { headers: JSON_HEADERS });
            }
            const stmts = JSON.parse(body) as Statement[];
            await conn.execute("BEGIN");
            const results: string[] = [];
            try {
              for (const s of stmts) results.push(await conn.queryRaw(s.sql, s.params ?? []));
              await conn.execute("COMMIT");
            } catch (err) {
              await conn.execute("ROLLBACK").catch(() => undefined);
              throw err;
            }
            return new Response(`{"results":[${results.join(",")}]}`, { headers: JSON_HEADERS });
          } catch (err) {
            return jsonError(400, "SQLITE_ERROR", err);
          }
        });
      }
    }
    return jsonError(404, "NOT_FOUND", request.url);
  }

  /** Wired as the package's README shows: one storage key per 4 KiB page, plus the count. */
  private async connection(): Promise<Connection> {
    if (this.conn === null) {
      this.pageCount = ((await this.storage.get<number>("count")) ?? 0);
      const sqlite = await Sqlite.instantiate({
        pageCount: () => this.pageCount,
        getPage: async (ix: number): Promise<Uint8Array> => {
          const v = await this.storage.get<ArrayBuffer | Uint8Array>(String(ix));
          return v === undefined ? new Uint8Array(4096) : new Uint8Array(v instanceof ArrayBuffer ? v : v.buffer);
        },
        putPage: async (ix: number, page: Uint8Array): Promise<void> => {
          // A copy: `page` is a view of the wasm memory (serializing it would take the memory).
          const entries: Record<string, unknown> = { [String(ix)]: page.slice() };
          if (ix + 1 > this.pageCount) {
            this.pageCount = ix + 1;
            entries.count = this.pageCount;
          }
          await this.storage.put(entries);
        },
        delPage: async (ix: number): Promise<void> => {
          await this.storage.delete(String(ix));
          if (ix + 1 >= this.pageCount) {
            this.pageCount = ix;
            await this.storage.put("count", this.pageCount);
          }
        },
      });
      const conn = await sqlite.connect();
      // Its VFS has no temporary files: GROUP BY's sorter (W5) must stay in memory.
      await conn.execute("PRAGMA temp_store = MEMORY");
      this.conn = conn;
    }
    return this.conn;
  }
}
