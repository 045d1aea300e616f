// dosql's Worker and Durable Object: HTTP in, bytes into dosql.wasm, bytes out.
//
// Worker routes:   GET /                       → banner
//                  * /db/<name>/...            → the Durable Object idFromName(<name>), of
//                                                DosqlSqlDatabase (DOSQL_STORAGE "sqlite", the
//                                                default) or DosqlDatabase ("classic")
// Durable Object:  POST /db/<name>/query       → {"sql","params"}       (wasm op 1)
//                  POST /db/<name>/batch       → [{"sql","params"},...] (wasm op 2)
//                  GET  /db/<name>/stats       → wasm statistics        (wasm op 3)
//                  GET  /db/<name>/_storage_stats → storage call counters (kv.ts) and the head
//                  /db/<name>/v2..., /v3...    → libSQL's Hrana over HTTP (hrana.ts)
//                  /db/<name>/pages..., /import... → page transfer for dosql import/export
//                                                (wasm op 6: crates/api/src/transfer.rs)
// Database names: 1-64 characters of [A-Za-z0-9_.-]. Request bodies: at most 1 MiB (413).
// Auth: with the secret DOSQL_TOKEN set, every route needs `Authorization: Bearer <token>`.

import { env as moduleEnv } from "cloudflare:workers";
import wasmModule from "./dosql.wasm";
import { DosqlInstance, OP_BATCH, OP_HEAD, OP_LIMITS, OP_QUERY, OP_STATS, OP_TRANSFER, type OpenOptions, WASM_INITIAL_PAGES, type WasmResponse } from "./dosql";
import { budgetSetting, DEFAULT_BUDGET_BYTES, isolateBudget, limitsFor, type MemoryBudget, type Tenant } from "./budget";
import { KvBridge } from "./kv";
import { cacheBytes, type DbContext, intVar, JSON_HEADERS, jsonError, Lock } from "./http";
import { handleHrana } from "./hrana";
import { warmUp } from "./warmup";

export interface Env {
  /** Classic (KV-backed) storage: DosqlDatabase, the wasm under JSPI. */
  DB: DurableObjectNamespace;
  /** SQLite-backed storage: DosqlSqlDatabase, the wasm called synchronously. */
  DB_SQL?: DurableObjectNamespace;
  /** Which of the two serves the databases: "sqlite" (default when unset or empty: the faster,
   *  synchronous bridge, see bench/RESULTS.md) or "classic". */
  DOSQL_STORAGE?: string;
  /** Page size of a new database (bytes, power of two 512..65536); default 4096. */
  PAGE_SIZE?: string;
  /** Pages in the wasm's page cache; unset: CACHE_BYTES / page size. */
  CACHE_PAGES?: string;
  /** The page cache's budget in bytes when CACHE_PAGES is unset; default 32 MiB. */
  CACHE_BYTES?: string;
  /** Pages read ahead on a cache miss; default 0. */
  READ_AHEAD?: string;
  /** Bytes of wasm memory every dosql instance of the isolate may hold in all (budget.ts);
   *  default 64 MiB, at least 32 MiB. */
  DOSQL_MEMORY_BUDGET?: string | null;
  /** "off": no warm-up when the isolate starts (warmup.ts); anything else: warm up. */
  DOSQL_WARMUP?: string | null;
  /** When set (a secret), every request must carry `Authorization: Bearer <DOSQL_TOKEN>`. */
  DOSQL_TOKEN?: string;
}

/** The warm-up (warmup.ts) runs once per isolate, here at module scope: V8 compiles the
 *  wasm's request paths now instead of during the isolate's first request. */
const WARMUP = warmUp(wasmModule, (moduleEnv as Partial<Env>).DOSQL_WARMUP);
// And one instance instantiated ahead (no call into it yet, so no randomness consumed): the
// isolate's first SQLite-backed database adopts it instead of instantiating one then.
if (WARMUP.ran) {
  try {
    let bytes = DEFAULT_BUDGET_BYTES;
    try {
      bytes = budgetSetting((moduleEnv as Partial<Env>).DOSQL_MEMORY_BUDGET);
    } catch {
      // The objects answer BAD_CONFIG for it (see DosqlDatabase's constructor).
    }
    isolateBudget<DosqlInstance>(bytes).offer("sync", DosqlInstance.instantiateSync(wasmModule, { maxMemoryBytes: bytes }));
  } catch (err) {
    console.error("dosql: no spare instance:", err);
  }
}

/** Largest request body passed to the wasm (crates/api: transfer::MAX_BODY_BYTES; a Rust
 *  test keeps them equal). */
const MAX_BODY_BYTES = 1024 * 1024;

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const { pathname } = new URL(request.url);
    if (env.DOSQL_TOKEN && !(await authorized(request, env.DOSQL_TOKEN))) {
      return jsonError(401, "UNAUTHORIZED", "missing or wrong bearer token", { "www-authenticate": "Bearer" });
    }
    if (pathname === "/") {
      return new Response(
        JSON.stringify({
          name: "dosql",
          about: "SQLite in a Durable Object, one database per name",
          routes: ["POST /db/<name>/query", "POST /db/<name>/batch", "GET /db/<name>/stats", "GET /db/<name>/_storage_stats"],
        }),
        { headers: JSON_HEADERS },
      );
    }
    const m = /^\/db\/([^/]*)(?:\/.*)?$/.exec(pathname);
    if (m === null) return jsonError(404, "NOT_FOUND", `no route for ${pathname}`);
    const name = m[1];
    // A libSQL client given ".../db/<name>" without the trailing slash resolves its endpoints
    // against "/db/" and asks for "/db/v2/pipeline" (or probes "/db/v3-protobuf"): that would
    // address a database named "v2". Say what is wrong instead. ("/db/v2/query" etc. still
    // reach a database named "v2".)
    if (/^\/db\/(?:v1|v2|v3|v3-protobuf)(?:\/(?:pipeline|cursor|execute)?)?$/.test(pathname)) {
      const message =
        `${pathname} is a libSQL (Hrana) endpoint right under /db/: the client URL lacks its trailing slash. ` +
        `Use "http(s)://<host>/db/<name>/" (ending in "/"), so that the client's requests go to /db/<name>/v2/pipeline.`;
      const code = "URL_NEEDS_TRAILING_SLASH";
      return new Response(JSON.stringify({ message, code, error: { code, message } }), { status: 400, headers: JSON_HEADERS });
    }
    if (!NAME_RE.test(name)) {
      return jsonError(400, "BAD_DATABASE_NAME", "a database name is 1-64 characters of A-Z a-z 0-9 _ . -");
    }
    const ns = namespace(env);
    if (ns instanceof Response) return ns;
    return ns.get(ns.idFromName(name)).fetch(request);
  },
} satisfies ExportedHandler<Env>;

/** The Durable Object namespace DOSQL_STORAGE selects, or a 500 answer for a bad setting. */
function namespace(env: Env): DurableObjectNamespace | Response {
  const storage = env.DOSQL_STORAGE || "sqlite";
  if (storage === "classic") return env.DB;
  if (storage === "sqlite" && env.DB_SQL !== undefined) return env.DB_SQL;
  const why = storage === "sqlite" ? "the DB_SQL binding is missing" : `unknown value ${JSON.stringify(storage)}`;
  return jsonError(500, "BAD_CONFIG", `DOSQL_STORAGE: ${why} (use "classic" or "sqlite")`);
}

/** Whether the request carries `Authorization: Bearer <token>`, compared in constant time. */
async function authorized(request: Request, token: string): Promise<boolean> {
  const header = request.headers.get("authorization") ?? "";
  const given = header.startsWith("Bearer ") ? header.slice(7) : "";
  // Compare digests, so neither the length nor a prefix of the token leaks through timing.
  const digest = async (s: string) => new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));
  const [a, b] = await Promise.all([digest(given), digest(token)]);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0 && given.length > 0;
}

/** Throws unless the wasm took its limits (a bug: the instance is then dropped). */
function checkLimits(res: WasmResponse): void {
  if (res.status !== 200) throw new Error(`setting the instance's memory limits failed: ${new TextDecoder().decode(res.body)}`);
}

/** The wasm's answer as an HTTP response (a status outside 200..599 would not be one). */
function answer(res: WasmResponse): Response {
  const status = res.status >= 200 && res.status <= 599 ? res.status : 500;
  return new Response(res.body, { status, headers: JSON_HEADERS });
}

/** The path of an absolute URL, without `new URL` (a runtime object per request): the
 *  Durable Object only ever sees URLs of the form scheme://host/path[?query][#fragment]. */
function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start < 0) return "/";
  let end = url.length;
  const q = url.indexOf("?", start);
  if (q >= 0) end = q;
  const h = url.indexOf("#", start);
  if (h >= 0 && h < end) end = h;
  return url.slice(start, end);
}

/** Most bytes read (and dropped) from an oversized body before answering 413, so that the
 *  client, still sending, reads the answer instead of a reset connection. */
const MAX_DRAIN_BYTES = 16 * 1024 * 1024;

/** Reads the body, refusing (null) one over `limit` bytes without buffering all of it. */
async function readBody(request: Request, limit: number): Promise<Uint8Array | null> {
  if (request.body === null) return new Uint8Array(0);
  // A declared length within the limit (the usual case): one read by the runtime. The stream
  // reader below costs a promise and an event-loop turn per chunk, about 7% of a one-row
  // insert request (bench/README.md).
  const declared = Number(request.headers.get("content-length") ?? NaN);
  if (Number.isInteger(declared) && declared >= 0 && declared <= limit) {
    const body = new Uint8Array(await request.arrayBuffer());
    return body.byteLength <= limit ? body : null;
  }
  const parts: Uint8Array[] = [];
  let total = 0;
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      // Drop the rest (up to a cap) rather than reset a client that is still sending.
      while (total <= MAX_DRAIN_BYTES) {
        const next = await reader.read();
        if (next.done) return null;
        total += next.value.byteLength;
      }
      await reader.cancel();
      return null;
    }
    parts.push(value);
  }
  const body = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    body.set(p, off);
    off += p.byteLength;
  }
  return body;
}

/**
 * A database on classic (KV-backed) storage: the wasm's page reads await `storage.get`, so it
 * runs under JSPI (DosqlInstance.create).
 */
export class DosqlDatabase implements DurableObject, Tenant<DosqlInstance> {
  protected readonly storage: KvBridge;
  private db: DosqlInstance | null = null;
  /** The isolate's memory budget, shared by every database object in it. */
  private readonly budget: MemoryBudget<DosqlInstance>;
  /** A setting that cannot be used (every request answers 500 BAD_CONFIG with it). */
  private readonly configError: string | null = null;
  /** The share the instance's limits were last set from (0: never set). */
  private limitsShare = 0;
  /** One call at a time into the wasm instance. */
  private readonly lock = new Lock();

  constructor(
    ctx: DurableObjectState,
    protected readonly env: Env,
  ) {
    let bytes = DEFAULT_BUDGET_BYTES;
    try {
      bytes = budgetSetting(env.DOSQL_MEMORY_BUDGET);
    } catch (err) {
      this.configError = err instanceof Error ? err.message : String(err);
    }
    this.budget = isolateBudget(bytes);
    this.storage = new KvBridge(ctx.storage, this.sqliteBacked());
    // Open before the first request is delivered. A failure is kept out of
    // blockConcurrencyWhile (which would reset the object) and retried by the next request.
    void ctx.blockConcurrencyWhile(() => this.locked(() => this.instance().then(() => undefined, () => undefined)));
  }

  async fetch(request: Request): Promise<Response> {
    if (this.configError !== null) return jsonError(500, "BAD_CONFIG", this.configError);
    const pathname = pathOf(request.url);
    // The path after /db/<name>/ (the Worker checked the name).
    const rest = pathname.replace(/^\/db\/[^/]+\/?/, "");
    const first = rest.split("/")[0];
    switch (first) {
      case "query":
      case "batch": {
        if (rest !== first) break;
        if (request.method !== "POST") return jsonError(405, "METHOD_NOT_ALLOWED", `${first} takes POST`, { allow: "POST" });
        const body = await this.body(request);
        if (body instanceof Response) return body;
        const op = first === "query" ? OP_QUERY : OP_BATCH;
        // The common case: an open synchronous instance and nothing queued for it. Its call
        // runs to completion without yielding, so nothing can interleave: skip the queue.
        if (this.lock.queued === 0 && this.db !== null && this.db.sync) return this.respond(this.db, op, body);
        return this.locked(() => this.exec(op, body));
      }
      case "stats":
        if (rest !== first) break;
        if (request.method !== "GET") return jsonError(405, "METHOD_NOT_ALLOWED", "stats takes GET", { allow: "GET" });
        return this.locked(() => this.stats());
      case "_storage_stats":
        if (rest !== first) break;
        if (request.method !== "GET") return jsonError(405, "METHOD_NOT_ALLOWED", "_storage_stats takes GET", { allow: "GET" });
        return this.locked(() => this.storageStats());
      case "v2":
      case "v3":
        return handleHrana(request, rest, this.context());
      case "pages":
      case "import":
        return this.transfer(request, rest);
    }
    return jsonError(404, "NOT_FOUND", `no route for ${pathname}`);
  }

  /** What hrana.ts may use of this object. */
  private context(): DbContext {
    return {
      locked: (fn) => this.locked(fn),
      exec: (op, body) => this.exec(op, body),
      body: (request) => this.body(request),
    };
  }

  /** /pages and /import (crates/api/src/transfer.rs): the request goes to the wasm as a header
   *  line and the body; the answer comes back as a header line and the body. */
  private async transfer(request: Request, rest: string): Promise<Response> {
    const body = request.method === "GET" || request.method === "HEAD" ? new Uint8Array(0) : await this.body(request);
    if (body instanceof Response) return body;
    const q = request.url.indexOf("?");
    const header = new TextEncoder().encode(JSON.stringify({ method: request.method, path: rest, query: q < 0 ? "" : request.url.slice(q + 1) }) + "\n");
    const input = new Uint8Array(header.byteLength + body.byteLength);
    input.set(header);
    input.set(body, header.byteLength);
    return this.locked(async () => {
      const res = await this.exec(OP_TRANSFER, input);
      const bytes = new Uint8Array(await res.arrayBuffer());
      const split = bytes.indexOf(10);
      // Not a transfer answer: an error from before the wasm's route (open failed, a trap).
      if (split < 0 || bytes[0] !== 123) return new Response(bytes, { status: res.status, headers: JSON_HEADERS });
      const headers = { ...JSON_HEADERS, ...(JSON.parse(new TextDecoder().decode(bytes.subarray(0, split))) as Record<string, string>) };
      return new Response(bytes.subarray(split + 1), { status: res.status, headers });
    });
  }

  /** /_storage_stats: the storage calls counted since the object started, and the head as
   *  storage holds it. */
  private async storageStats(): Promise<Response> {
    // This request's own read of the head is not counted, so that two snapshots differ by
    // exactly the calls the requests between them made.
    const stats = { ...this.storage.stats };
    const res = await this.exec(OP_HEAD, new Uint8Array(0));
    Object.assign(this.storage.stats, stats);
    const meta = res.ok ? ((await res.json()) as unknown) : null;
    return new Response(JSON.stringify({ ...stats, meta }), { headers: JSON_HEADERS });
  }

  // ---- the isolate's memory budget (budget.ts) ----

  get kind(): string {
    return this.sqliteBacked() ? "sync" : "jspi";
  }

  memoryBytes(): number {
    return this.db?.memoryBytes() ?? 0;
  }

  busy(): boolean {
    return this.lock.queued > 0;
  }

  surrender(): DosqlInstance | null {
    const db = this.db;
    this.db = null;
    this.limitsShare = 0;
    return db;
  }

  /** Drops the instance for good (it trapped, or holds a state that must not be reused). */
  private dropInstance(): void {
    this.db = null;
    this.limitsShare = 0;
    this.budget.forget(this);
  }

  /**
   * Makes room in the isolate's budget for a request to this instance and returns the limits
   * to give it when its share moved by more than an eighth since they were last set (null:
   * keep them; a wasm call per request would cost more than the precision is worth).
   */
  private share(pageSize: number): Uint8Array | null {
    const share = this.budget.use(this);
    if (this.limitsShare !== 0 && Math.abs(share - this.limitsShare) * 8 < this.limitsShare) return null;
    this.limitsShare = share;
    return new TextEncoder().encode(JSON.stringify(limitsFor(share, pageSize, cacheBytes(this.env, pageSize))));
  }

  /** /stats: the wasm's statistics, and the memory this instance and the isolate hold. */
  private async stats(): Promise<Response> {
    const res = await this.exec(OP_STATS, new Uint8Array(0));
    if (!res.ok) return res;
    const stats = (await res.json()) as Record<string, unknown>;
    stats.memory = {
      instance_bytes: this.memoryBytes(),
      isolate_bytes: this.budget.total(),
      budget_bytes: this.budget.budgetBytes,
      instances: this.budget.instances,
      dropped_instances: this.budget.dropped,
      reused_instances: this.budget.reused,
      share_bytes: this.limitsShare,
    };
    stats.warmup = WARMUP;
    return new Response(JSON.stringify(stats), { headers: JSON_HEADERS });
  }

  /** The request body, or the 413 answer when it is over the limit. */
  private async body(request: Request): Promise<Uint8Array | Response> {
    // Read the body before taking the lock, so a slow upload holds up nobody.
    const body = await readBody(request, MAX_BODY_BYTES);
    return body ?? jsonError(413, "PAYLOAD_TOO_LARGE", `request body over ${MAX_BODY_BYTES} bytes`);
  }

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    return this.lock.run(fn);
  }

  /** The open instance, created from storage's committed head if there is none. */
  private async instance(): Promise<DosqlInstance> {
    if (this.db === null) {
      const opts: OpenOptions = {
        newPageSize: intVar(this.env.PAGE_SIZE, 4096),
        cachePages: 16,
        readAhead: intVar(this.env.READ_AHEAD, 0),
        maxMemoryBytes: this.budget.budgetBytes,
      };
      // An idle database's instance when the isolate has no room for another; its limits
      // (the cache's size among them) are set from this database's share before its request.
      const reused = this.budget.adopt(this, WASM_INITIAL_PAGES * 65536);
      if (reused !== null) {
        await reused.reopen(this.storage, opts);
        this.db = reused;
      } else {
        this.db = await this.createInstance(opts);
      }
      this.limitsShare = 0;
      this.budget.use(this);
    }
    return this.db;
  }

  /** Whether the class is SQLite-backed (its storage has the synchronous `kv` API). */
  protected sqliteBacked(): boolean {
    return false;
  }

  /** Instantiates the wasm over `this.storage`. */
  protected createInstance(opts: OpenOptions): Promise<DosqlInstance> {
    return DosqlInstance.create(wasmModule, this.storage, opts);
  }

  private async exec(op: number, body: Uint8Array): Promise<Response> {
    let db: DosqlInstance;
    try {
      db = await this.instance();
    } catch (err) {
      return jsonError(500, "OPEN_FAILED", err instanceof Error ? err.message : String(err));
    }
    if (db.sync) return this.respond(db, op, body);
    try {
      const limits = this.share(db.opened?.page_size ?? 4096);
      if (limits !== null) checkLimits(await db.exec(OP_LIMITS, limits));
      return answer(await db.exec(op, body));
    } catch (err) {
      return this.trapped(err);
    } finally {
      this.budget.settle(this);
    }
  }

  /** Runs `op` on a createSync instance, which runs to completion without yielding. */
  private respond(db: DosqlInstance, op: number, body: Uint8Array): Response {
    try {
      const limits = this.share(db.opened?.page_size ?? 4096);
      if (limits !== null) checkLimits(db.execSync(OP_LIMITS, limits));
      return answer(db.execSync(op, body));
    } catch (err) {
      return this.trapped(err);
    } finally {
      this.budget.settle(this);
    }
  }

  /** A trap (or a throw out of an import) leaves the instance in an unknown state. Drop it:
   *  the next request re-creates it from storage, which holds only committed transactions. */
  private trapped(err: unknown): Response {
    this.dropInstance();
    console.error("dosql.wasm trapped:", err);
    return jsonError(500, "WASM_TRAP", err instanceof Error ? err.message : String(err));
  }
}

/**
 * A database on SQLite-backed storage (enableSql / new_sqlite_classes): everything as in
 * DosqlDatabase, except that the wasm reads synchronously through `storage.kv` and
 * `storage.sql` (KvBridge.readSync) and so runs without JSPI (DosqlInstance.createSync).
 */
export class DosqlSqlDatabase extends DosqlDatabase {
  protected override sqliteBacked(): boolean {
    return true;
  }

  protected override async createInstance(opts: OpenOptions): Promise<DosqlInstance> {
    return DosqlInstance.createSync(wasmModule, this.storage, opts);
  }
}
