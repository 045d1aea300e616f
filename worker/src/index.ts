// dosql's Worker and Durable Object: HTTP in, bytes into dosql.wasm, bytes out.
//
// The Worker sends /db/<name>/... to the Durable Object idFromName(<name>): DosqlSqlDatabase
// (DOSQL_STORAGE "sqlite", the default) or DosqlDatabase ("classic"). Under /db/<name>/:
// POST query, POST batch, GET stats, GET _storage_stats (wasm ops QUERY, BATCH, STATS, HEAD);
// v2/..., v3/... (libSQL's Hrana, op HRANA) and pages, import/..., history, restore, ltx
// (page transfer and history, op ROUTE), whose routes the wasm serves whole. Names: 1-64 of [A-Za-z0-9_.-]; bodies: MAX_BODY_BYTES at
// most. With the secret DOSQL_TOKEN set, every route needs `Authorization: Bearer <token>`.

import { env as moduleEnv } from "cloudflare:workers";
import wasmModule from "./dosql.wasm";
import { MAINTAIN_DELAY_MS, MAX_BODY_BYTES, OP_BATCH, OP_HEAD, OP_HRANA, OP_LIMITS, OP_QUERY, OP_ROUTE, OP_STATS, WASM_INITIAL_PAGES } from "./constants";
import { DosqlInstance, limitsRequest, type OpenOptions, type WasmResponse } from "./dosql";
import { budgetSetting, isolateBudget, type MemoryBudget, type Tenant } from "./budget";
import { KvBridge } from "./kv";
import { authorized, hranaError, intVar, JSON_HEADERS, jsonError, Lock, pathOf, readBody } from "./http";
import { settleYoungGeneration, warmUp } from "./warmup";

/** Bindings and settings (each explained in worker/config.capnp and the README). */
export interface Env {
  DB: DurableObjectNamespace; // classic storage: DosqlDatabase, the wasm under JSPI
  DB_SQL?: DurableObjectNamespace; // SQLite-backed storage: DosqlSqlDatabase, synchronous
  DOSQL_STORAGE?: string; // which of the two serves the databases: "sqlite" (default), "classic"
  PAGE_SIZE?: string; // a new database's page size
  CACHE_PAGES?: string; // the page cache: pages, else
  CACHE_BYTES?: string; // bytes
  READ_AHEAD?: string; // pages read ahead on a cache miss
  DOSQL_MEMORY_BUDGET?: string | null; // wasm memory of every instance of the isolate (budget.ts)
  DOSQL_WARMUP?: string | null; // "off": no warm-up when the isolate starts (warmup.ts)
  DOSQL_TOKEN?: string; // set: every request needs `Authorization: Bearer <DOSQL_TOKEN>`
  HRANA_STREAM_TIMEOUT_MS?: string | null; // how long a Hrana stream may idle
  HISTORY?: string | null; // "off": no history
  HISTORY_RETENTION_MS?: string | null; // how long history is kept
  HISTORY_MAX_BYTES?: string | null; // and within how many bytes
  DOSQL_MAINTAIN_DELAY_MS?: string | null; // first write to first background work (tests)
  DOSQL_REPLICA_POLL_MS?: string | null; // how often a replica asks its primary for commits
  DOSQL_REPLICA_PUSH_MS?: string | null; // the least time between two pushes of commits to the replicas
  DOSQL_TEST_REPLICATION_FAULTS?: string | null; // tests: seeded faults between databases (crates/api/src/replica.rs)
}

// The warm-up (warmup.ts), once per isolate at module scope; then SPARES instances instantiated
// ahead for the next SQLite-backed databases, each prefaulted and primed (dosql.ts: prime; no
// randomness drawn, no storage touched), and V8's young generation settled (warmup.ts:
// settleYoungGeneration), all before any request.
const WARMUP = warmUp(wasmModule, (moduleEnv as Partial<Env>).DOSQL_WARMUP);
/** Spares kept: a cold start often wakes more than one object (the first request of the
 *  isolate, then another database), and each found one ready instead of instantiating. */
const SPARES = 2;
/** How long after a spare was taken another is made: instantiating costs ~0.4 ms, which made
 *  at once (setTimeout 0) landed inside the answer of the request that took it (perf, W4). */
const SPARE_AGAIN_MS = 250;
function spareAhead(): void {
  try {
    // A bad setting: the objects answer BAD_CONFIG for it, and no spare is made.
    const bytes = budgetSetting((moduleEnv as Partial<Env>).DOSQL_MEMORY_BUDGET);
    isolateBudget<DosqlInstance>(bytes).offer("sync", WASM_INITIAL_PAGES * 65536, () => {
      const spare = DosqlInstance.instantiateSync(wasmModule, { maxMemoryBytes: bytes });
      spare.prefault();
      // A failure leaves an instance as good as one not primed: its first open does it.
      const primed = spare.prime();
      if (primed.status !== 200) console.error("dosql: a spare was not primed:", new TextDecoder().decode(primed.body));
      return spare;
    }, SPARES);
  } catch (err) {
    console.error("dosql: no spare instance:", err);
  }
}
if (WARMUP.ran) {
  spareAhead();
  WARMUP.settled_bytes = settleYoungGeneration();
}

/**
 * The least time between two pushes of commits to the replicas (DOSQL_REPLICA_PUSH_MS):
 * the first commit after a quiet spell goes at once, later ones wait for the next push and
 * go together, and a replica applies them in one call, one storage transaction and one
 * request instead of one each. Each push costs a replica about what the client's insert
 * costs the primary (bench W3 with replicas, perf: the request between objects, the
 * replica's storage transaction, its fsync), so under a stream of writes pushing each commit
 * alone cost the objects' CPU 2-3x the writes' own. Adds up to this much replication lag.
 */
const PUSH_EVERY_MS = 25;

/** How long after a read of a primary it looks for an alarm already past due (scheduleUpkeep). */
const UPKEEP_LOOK_MS = 1000;

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const { pathname } = new URL(request.url);
    if (env.DOSQL_TOKEN && !(await authorized(request, env.DOSQL_TOKEN))) {
      return jsonError(401, "UNAUTHORIZED", "missing or wrong bearer token", { "www-authenticate": "Bearer" });
    }
    const about = { name: "dosql", about: "SQLite in a Durable Object, one database per name", routes: "/db/<name>/... (README: HTTP API)" };
    if (pathname === "/") return new Response(JSON.stringify(about), { headers: JSON_HEADERS });
    const m = /^\/db\/([^/]*)(?:\/.*)?$/.exec(pathname);
    if (m === null) return jsonError(404, "NOT_FOUND", `no route for ${pathname}`);
    // A libSQL client given ".../db/<name>" without the trailing slash asks for "/db/v2/pipeline"
    // (a database named "v2"): say what is wrong instead ("/db/v2/query" still reaches "v2").
    if (/^\/db\/(?:v1|v2|v3|v3-protobuf)(?:\/(?:pipeline|cursor|execute)?)?$/.test(pathname)) {
      const why = `${pathname} is a libSQL (Hrana) endpoint right under /db/: the client URL lacks its trailing slash. `;
      return hranaError(400, "URL_NEEDS_TRAILING_SLASH", `${why}Use "http(s)://<host>/db/<name>/" (ending in "/"), so that the client's requests go to /db/<name>/v2/pipeline.`);
    }
    if (!NAME_RE.test(m[1])) return jsonError(400, "BAD_DATABASE_NAME", "a database name is 1-64 characters of A-Z a-z 0-9 _ . -");
    // Routes between databases (replication) are reached from Durable Objects only.
    if (/^\/db\/[^/]+\/_(?:replica|replicate|sync)(?:\/|$)/.test(pathname)) return jsonError(404, "NOT_FOUND", `no route for ${pathname}`);
    const storage = env.DOSQL_STORAGE || "sqlite";
    const ns = storage === "classic" ? env.DB : storage === "sqlite" ? env.DB_SQL : undefined;
    if (ns === undefined) {
      const why = storage === "sqlite" ? "the DB_SQL binding is missing" : `unknown value ${JSON.stringify(storage)}`;
      return jsonError(500, "BAD_CONFIG", `DOSQL_STORAGE: ${why} (use "classic" or "sqlite")`);
    }
    return ns.get(ns.idFromName(m[1])).fetch(request);
  },
} satisfies ExportedHandler<Env>;

/** The wasm's answer as an HTTP response (a status outside 200..599 would not be one), with
 *  the database's bookmark. */
function answer(res: WasmResponse, bookmark: string): Response {
  return new Response(res.body, { status: res.status >= 200 && res.status <= 599 ? res.status : 500, headers: { ...JSON_HEADERS, "x-dosql-bookmark": bookmark } });
}

/** 400 for an x-dosql-bookmark that is not one (null: none, or a good one). */
function badBookmark(request: Request): Response | null {
  const want = request.headers.get("x-dosql-bookmark");
  if (want === null || want === "first-primary" || /^[0-9a-f]{16}:[0-9]+$/.test(want)) return null;
  return jsonError(400, "BAD_BOOKMARK", 'x-dosql-bookmark is "<lineage>:<txid>" as an answer gave it, or "first-primary"');
}

/** Whether bookmark `have` is at least as new as `want` (`<lineage>:<txid>`, same lineage). */
function reached(have: string, want: string): boolean {
  const [hl, ht] = have.split(":");
  const [wl, wt] = want.split(":");
  return hl === wl && Number(ht) >= Number(wt);
}

/** A database on classic (KV-backed) storage: the wasm's page reads await `storage.get`, so it
 *  runs under JSPI (DosqlInstance.create). */
export class DosqlDatabase implements DurableObject, Tenant<DosqlInstance> {
  protected readonly storage: KvBridge;
  private db: DosqlInstance | null = null;
  /** The isolate's memory budget, shared by every database object in it. */
  private readonly budget: MemoryBudget<DosqlInstance>;
  /** Timing settings (Env): the least time between two pushes to the replicas, a replica's
   *  polls, a first write to the background work. */
  private readonly timing = { pushEveryMs: PUSH_EVERY_MS, pollMs: 10_000, maintainDelayMs: MAINTAIN_DELAY_MS };
  /** A setting that cannot be used (every request answers 500 BAD_CONFIG with it). */
  private readonly configError: string | null = null;
  /** The share the instance's limits were last set from (0: never set). */
  private limitsShare = 0;
  /** One call at a time into the wasm instance. */
  private readonly lock = new Lock();
  /** Whether an alarm for the background work is known to be set. */
  private upkeepSet = false;
  /** Whether a request looked at the alarm in this object's life (scheduleUpkeep). */
  private upkeepLooked = false;
  /** The storage's put and delete calls when note() last looked. */
  private writesSeen = 0;
  /** The database's position after the last call (DosqlInstance.position): bookmark,
   *  primary ("" unless a replica), replicas. */
  private pos = ["", "", ""];
  /** The bookmark the replicas were last told about, and the replicas being told. */
  private pushed = "";
  private readonly poking = new Map<string, boolean>();
  /** When the replicas were last pushed commits, and whether a push waits for its time. */
  private lastPushAt = 0;
  private pushWaiting = false;
  /** A replica's catch-up under way. */
  private syncing: Promise<void> | null = null;

  constructor(
    private readonly ctx: DurableObjectState,
    protected readonly env: Env,
  ) {
    let bytes = 0;
    try {
      bytes = budgetSetting(env.DOSQL_MEMORY_BUDGET);
      // Read once, here: a bad value must answer BAD_CONFIG, not throw after a commit.
      const ms = (name: "DOSQL_REPLICA_PUSH_MS" | "DOSQL_REPLICA_POLL_MS" | "DOSQL_MAINTAIN_DELAY_MS", fallback: number) => {
        try {
          return intVar(env[name], fallback);
        } catch (err) {
          throw new Error(`${name}: ${err instanceof Error ? err.message : String(err)}`);
        }
      };
      this.timing = { pushEveryMs: ms("DOSQL_REPLICA_PUSH_MS", PUSH_EVERY_MS), pollMs: ms("DOSQL_REPLICA_POLL_MS", 10_000), maintainDelayMs: ms("DOSQL_MAINTAIN_DELAY_MS", MAINTAIN_DELAY_MS) };
    } catch (err) {
      this.configError = err instanceof Error ? err.message : String(err);
    }
    this.budget = isolateBudget(bytes || budgetSetting(undefined));
    this.storage = new KvBridge(ctx.storage, this.sqliteBacked());
    // Open before the first request is delivered; a failure is retried by the next request,
    // which answers for it. SQLite-backed storage reads synchronously, so the open runs here
    // to its end and nothing can interleave: no blockConcurrencyWhile, whose input gate and
    // promises were ~2% of a cold object's first query (bench W4, perf). Classic storage's
    // reads are awaited: blockConcurrencyWhile holds requests back meanwhile, with a failure
    // kept out of it (it would reset the object).
    // (In the base class's constructor: a subclass's own fields are not set yet while the
    // database opens, so nothing the open runs may use them.)
    if (this.sqliteBacked() && this.configError === null) {
      try {
        this.instanceSync();
      } catch (err) {
        // this.db stays null: the first request opens again and answers for it.
        console.error("dosql: opening the database failed (the next request tries again):", err);
      }
    } else {
      void ctx.blockConcurrencyWhile(() => this.locked(() => this.instance().then(() => undefined, () => undefined)));
    }
  }

  async fetch(request: Request): Promise<Response> {
    if (this.configError !== null) return jsonError(500, "BAD_CONFIG", this.configError);
    const pathname = pathOf(request.url);
    // The path after /db/<name>/ (the Worker checked the name).
    const rest = pathname.replace(/^\/db\/[^/]+\/?/, "");
    const first = rest.split("/")[0];
    const method = (want: string) => (request.method === want ? null : jsonError(405, "METHOD_NOT_ALLOWED", `${first} takes ${want}`, { allow: want }));
    switch (first) {
      case "query":
      case "batch": {
        if (rest !== first) break;
        const body = method("POST") ?? (await this.body(request));
        if (body instanceof Response) return body;
        const op = first === "query" ? OP_QUERY : OP_BATCH;
        const bad = badBookmark(request);
        if (bad !== null) return bad;
        if (this.pos[1] !== "") return this.onReplica(request, op, body);
        // The common case: an open synchronous instance and nothing queued for it. Its call
        // runs to completion without yielding, so nothing can interleave: skip the queue.
        if (this.lock.queued === 0 && this.db?.sync) return this.respond(this.db, op, body);
        return this.locked(() => this.exec(op, body));
      }
      case "stats":
      case "_storage_stats":
        if (rest !== first) break;
        return method("GET") ?? this.locked(() => (first === "stats" ? this.stats() : this.storageStats()));
      case "v2":
      case "v3": {
        // Hrana on a replica with a bookmark: the primary answers unless the replica has it.
        if (this.pos[1] === "" || !request.headers.has("x-dosql-bookmark")) return this.routed(OP_HRANA, request, rest);
        const bad = badBookmark(request);
        if (bad !== null) return bad;
        const body = await this.body(request);
        return body instanceof Response ? body : this.onReplica(request, OP_HRANA, body);
      }
      case "pages":
      case "import":
      case "history":
      case "restore":
      case "ltx":
      case "branch":
      case "replicas":
      case "_replica":
      case "_replicate":
        return this.routed(OP_ROUTE, request, rest);
      case "_sync": {
        // A primary's push: with its newest commits, applied at once; without, one catch-up
        // at a time (another under way is waited for).
        const body = await this.body(request);
        if (body instanceof Response || body.byteLength > 0) return body instanceof Response ? body : this.routed(OP_ROUTE, request, rest, body);
        return this.sync().then(() => new Response("{}", { headers: JSON_HEADERS }));
      }
    }
    return jsonError(404, "NOT_FOUND", `no route for ${pathname}`);
  }

  /** Hrana, page transfer and history, whose routes the wasm serves whole (crates/api/src/
   *  http.rs): the request goes in as a header line and the body, the answer comes out the
   *  same way. */
  private async routed(op: number, request: Request, rest: string, read?: Uint8Array): Promise<Response> {
    const hrana = op === OP_HRANA;
    const body = read ?? (request.method === "GET" || request.method === "HEAD" ? new Uint8Array(0) : await this.body(request));
    if (body instanceof Response) return hrana ? hranaError(413, "PAYLOAD_TOO_LARGE", `request body over ${MAX_BODY_BYTES} bytes`) : body;
    const q = request.url.indexOf("?");
    const db = /^\/db\/([^/]+)/.exec(pathOf(request.url))?.[1];
    const line = { method: request.method, path: rest, query: q < 0 ? "" : request.url.slice(q + 1), db, hrana_stream_timeout_ms: (hrana && this.env.HRANA_STREAM_TIMEOUT_MS) || null };
    this.scheduleUpkeep(false);
    // A branch, a replica's catch-up (crates/api/src/http.rs): the wasm's requests to another
    // database, carried one at a time, this object's lock released while each travels.
    for (let input = body, step: object | undefined; ; ) {
      const res = await this.locked(() => this.framed(op, { ...line, step }, input));
      const send = res.headers.get("x-dosql-send");
      if (send === null) return res;
      const to = JSON.parse(send) as { to: string; method: string; path: string; location_hint?: string };
      await this.testDelay();
      // Unreachable: the route hears of it as the other database's 502, and answers for it.
      const out = await this.stub(to.to, to.location_hint)
        .fetch(`https://dosql/db/${to.to}/${to.path}`, { method: to.method, body: to.method === "GET" ? null : await res.arrayBuffer() })
        .catch((err: unknown) => jsonError(502, "UNREACHABLE", `${to.to}: ${err instanceof Error ? err.message : String(err)}`));
      step = { state: JSON.parse(res.headers.get("x-dosql-state")!) as unknown, status: out.status };
      input = new Uint8Array(await out.arrayBuffer());
    }
  }

  /** The Durable Object of database `name` (of this class's storage). */
  private stub(name: string, locationHint?: string): DurableObjectStub {
    const ns = (this.sqliteBacked() ? this.env.DB_SQL : this.env.DB)!;
    return ns.get(ns.idFromName(name), locationHint ? { locationHint: locationHint as DurableObjectLocationHint } : undefined);
  }

  /** A query or batch on a read replica: answered from its pages when they are at least as new
   *  as the request's bookmark (after one catch-up with the primary if they are not), else,
   *  and for writes, by the primary. */
  private async onReplica(request: Request, op: number, body: Uint8Array): Promise<Response> {
    const want = request.headers.get("x-dosql-bookmark");
    if (want !== null && want !== "first-primary" && !reached(this.pos[0], want)) await this.sync();
    if (want === "first-primary" || (want !== null && !reached(this.pos[0], want))) return this.forward(request, body);
    if (op === OP_HRANA) return this.routed(op, request, pathOf(request.url).replace(/^\/db\/[^/]+\/?/, ""), body);
    const res = await this.locked(() => this.exec(op, body));
    return res.status === 421 ? this.forward(request, body) : res;
  }

  /** Sends a request to the primary; its answer says so. A request forwarded already (two
   *  databases that follow each other) is refused rather than sent round again. */
  private async forward(request: Request, body: Uint8Array): Promise<Response> {
    const primary = this.pos[1];
    if (request.headers.has("x-dosql-forwarded-to")) return jsonError(508, "FORWARDING_LOOP", `forwarded twice, now to ${primary}: detach one of the databases that follow each other`);
    const url = request.url.replace(/\/db\/[^/]+\//, `/db/${primary}/`);
    const headers = new Headers(request.headers);
    headers.set("x-dosql-forwarded-to", primary);
    try {
      const out = await this.stub(primary).fetch(url, { method: request.method, headers, body });
      const res = new Response(out.body, out);
      res.headers.set("x-dosql-forwarded-to", primary);
      return res;
    } catch (err) {
      return jsonError(502, "PRIMARY_UNREACHABLE", `${primary}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /** A replica's catch-up with its primary (the `_sync` route); failures are in /stats.
   *  Requests that ask meanwhile wait for the one under way rather than start another. */
  private sync(): Promise<void> {
    this.syncing ??= this.routed(OP_ROUTE, new Request("https://dosql/_sync", { method: "POST" }), "_sync")
      .then(async (res) => void (res.ok || console.error("dosql: replica catch-up:", await res.text())))
      .catch((err: unknown) => console.error("dosql: replica catch-up:", err))
      .finally(() => (this.syncing = null));
    return this.syncing;
  }

  /** After a call: the position; a primary's replicas are told of new commits. */
  private note(db: DosqlInstance): string {
    this.pos = db.position();
    // Storage written since the last call (a commit, an import staged or dropped, pruning), or
    // a replica (whose polls the alarm makes, even before its first commit arrives): background
    // work to schedule.
    const writes = this.storage.stats.put_calls + this.storage.stats.delete_calls;
    if (writes !== this.writesSeen || this.pos[1] !== "") this.scheduleUpkeep(true);
    this.writesSeen = writes;
    if (this.pos[2] !== "" && this.pos[0] !== this.pushed) this.schedulePush();
    return this.pos[0];
  }

  /** Pushes the commits the replicas were not sent yet now, or, within DOSQL_REPLICA_PUSH_MS
   *  of the last push, when that has passed: commits made meanwhile go together. */
  private schedulePush(): void {
    if (this.pushWaiting) return;
    const wait = this.lastPushAt + this.timing.pushEveryMs - Date.now();
    if (wait <= 0) return this.pushNow();
    this.pushWaiting = true;
    setTimeout(() => {
      this.pushWaiting = false;
      this.pushNow();
    }, wait);
  }

  private pushNow(): void {
    if (this.pos[2] === "" || this.pos[0] === this.pushed) return;
    const from = Number(this.pushed.split(":")[1] ?? 0) + 1;
    const at = Number(this.pos[0].split(":")[1]);
    // Nothing pushed yet in this object's life: the newest commit (a replica asks for any
    // gap before it); else the commits after the last one pushed.
    const fresh = this.pushed === "" ? at : Math.min(from, at);
    this.pushed = this.pos[0];
    this.lastPushAt = Date.now();
    void this.push(this.pos[2].split(","), fresh);
  }

  /** Sends replicas the commits from txid `from` on (one `_replicate` answer, made once for
   *  all of them), each replica one push in flight and one more queued (a queued one, or one
   *  made in vain, just tells it to catch up; one never told catches up at its alarm). */
  private async push(replicas: string[], from: number): Promise<void> {
    const idle = replicas.filter((r) => {
      if (this.poking.has(r)) this.poking.set(r, true);
      return !this.poking.has(r);
    });
    if (idle.length === 0) return;
    for (const r of idle) this.poking.set(r, false);
    const res = await this.locked(() => this.framed(OP_ROUTE, { method: "GET", path: "_replicate", query: `from=${from}` }, new Uint8Array(0))).catch(() => null);
    const batch = res?.ok ? new Uint8Array(await res.arrayBuffer()) : null;
    for (const r of idle) this.poke(r, batch);
  }

  /** Tests: DOSQL_TEST_REPLICATION_FAULTS's delay_ms before each request between databases. */
  private testDelay(): Promise<void> | void {
    const ms = Number(/delay_ms=(\d+)/.exec(this.env.DOSQL_TEST_REPLICATION_FAULTS ?? "")?.[1] ?? 0);
    if (ms > 0) return new Promise((r) => setTimeout(r, ms));
  }

  private poke(replica: string, batch: Uint8Array | null): void {
    this.poking.set(replica, this.poking.get(replica) ?? false);
    void Promise.resolve(this.testDelay())
      .then(() => this.stub(replica).fetch(`https://dosql/db/${replica}/_sync`, { method: "POST", body: batch }))
      .then((r) => r.arrayBuffer())
      .catch((err: unknown) => console.error(`dosql: telling ${replica}:`, err))
      .finally(() => {
        const again = this.poking.get(replica);
        this.poking.delete(replica);
        if (again) {
          this.poking.set(replica, false);
          this.poke(replica, null);
        }
      });
  }

  /** Runs a framed route (call inside `locked`). */
  private async framed(op: number, line: object, body: Uint8Array): Promise<Response> {
    const header = new TextEncoder().encode(JSON.stringify(line) + "\n");
    const input = new Uint8Array(header.byteLength + body.byteLength);
    input.set(header);
    input.set(body, header.byteLength);
    const res = await this.exec(op, input);
    const bytes = new Uint8Array(await res.arrayBuffer());
    const split = bytes.indexOf(10);
    // Not a framed answer: an error from before the wasm's route (open failed, a trap).
    if (split < 0 || bytes[0] !== 123) return new Response(bytes, { status: res.status, headers: JSON_HEADERS });
    const headers = { ...JSON_HEADERS, "x-dosql-bookmark": this.pos[0], ...(JSON.parse(new TextDecoder().decode(bytes.subarray(0, split))) as Record<string, string>) };
    return new Response(bytes.subarray(split + 1), { status: res.status, headers });
  }

  /** The alarm: one bounded step of the database's background work (pruning the history,
   *  finishing a checksum, deleting garbage), then the next alarm when the wasm says when. */
  async alarm(): Promise<void> {
    // A replica asks its primary for commits at least this often (its pushes may be lost).
    const poll = this.pos[1] === "" ? null : Date.now() + this.timing.pollMs;
    if (poll !== null) await this.sync(); // never throws: a failure is in /stats
    const res = await this.locked(() => this.framed(OP_ROUTE, { method: "POST", path: "_maintain", query: "" }, new TextEncoder().encode("{}")));
    const r = res.ok ? ((await res.json()) as { due_ms?: number | null }) : null;
    if (r === null) console.error("dosql: background work failed:", await res.text());
    const due = Math.min(r?.due_ms ?? Infinity, poll ?? Infinity);
    this.upkeepSet = due !== Infinity;
    if (this.upkeepSet) await this.ctx.storage.setAlarm(Math.max(due, Date.now()));
  }

  /**
   * The alarm for the background work (history pruning, checksums, garbage; a replica's polls),
   * which then reschedules itself (alarm above): set after the first request that wrote to
   * storage, or on a replica (see note), never by a read of a primary, which so costs no
   * storage write and whose answer waits for none (the output gate holds an answer until the
   * writes before it are stored: a cold object's first read used to wait for its alarm's).
   * Once per object life an alarm already past due is set again: local workerd does not fire
   * one that came due while it was down.
   */
  private scheduleUpkeep(wrote: boolean): void {
    if (this.upkeepSet || (this.upkeepLooked && !wrote)) return;
    this.upkeepLooked = true;
    if (wrote) this.upkeepSet = true;
    const delay = this.timing.maintainDelayMs;
    const look = () =>
      void this.ctx.storage.getAlarm().then((at) => {
        if (at !== null && at <= Date.now()) return this.ctx.storage.setAlarm(at);
        if (at === null && wrote) return this.ctx.storage.setAlarm(Date.now() + delay);
      });
    // A read only looks for a past-due alarm a second after it started, off its answer's
    // path: getAlarm makes a Date (V8 loads ICU's time zone data for it) and crosses into
    // storage, about 5% of a cold object's first query (perf on bench W4), and a look right
    // after the read (setTimeout 0) still ran before the client had the answer, on the
    // thread that answers. The cost moves, once per object life; it does not go away. An
    // object evicted within the second looks in its next life.
    if (wrote) look();
    else setTimeout(look, UPKEEP_LOOK_MS);
  }

  /** /_storage_stats: the storage calls counted since the object started; the stored head. */
  private async storageStats(): Promise<Response> {
    // This request's own read of the head is not counted, so that two snapshots differ by
    // exactly the calls the requests between them made.
    const stats = { ...this.storage.stats };
    const res = await this.exec(OP_HEAD, new Uint8Array(0));
    Object.assign(this.storage.stats, stats);
    const meta = res.ok ? ((await res.json()) as unknown) : null;
    return new Response(JSON.stringify({ ...stats, meta }), { headers: JSON_HEADERS });
  }

  /** /stats: the wasm's statistics, and the memory this instance and the isolate hold. */
  private async stats(): Promise<Response> {
    const res = await this.exec(OP_STATS, new Uint8Array(0));
    if (!res.ok) return res;
    const b = this.budget;
    const memory = { instance_bytes: this.memoryBytes(), isolate_bytes: b.total(), budget_bytes: b.budgetBytes, instances: b.instances, dropped_instances: b.dropped, reused_instances: b.reused, share_bytes: this.limitsShare };
    return new Response(JSON.stringify({ ...((await res.json()) as object), memory, warmup: WARMUP }), { headers: { ...JSON_HEADERS, "x-dosql-bookmark": this.pos[0] } });
  }

  // ---- the isolate's memory budget (budget.ts) ----

  get kind(): string {
    return this.sqliteBacked() ? "sync" : "jspi";
  }
  readonly memoryBytes = (): number => this.db?.memoryBytes() ?? 0;
  readonly busy = (): boolean => this.lock.queued > 0;

  surrender(): DosqlInstance | null {
    const db = this.db;
    this.db = null;
    this.limitsShare = 0;
    return db;
  }

  /**
   * Makes room in the isolate's budget for a request to this instance and returns the share
   * to set its limits from when it moved by more than an eighth since they were last set
   * (null: keep them; a wasm call per request would cost more than the precision is worth).
   */
  private share(): Uint8Array | null {
    const share = this.budget.use(this);
    if (this.limitsShare !== 0 && Math.abs(share - this.limitsShare) * 8 < this.limitsShare) return null;
    this.limitsShare = share;
    return limitsRequest(share, this.env);
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
      const opts = this.openOptions();
      // An idle database's instance when the isolate has no room for another; its limits
      // (the cache's size among them) are set from this database's share before its request.
      const reused = this.budget.adopt(this, WASM_INITIAL_PAGES * 65536);
      if (reused !== null) await reused.reopen(this.storage, opts);
      this.opened(reused ?? (await this.createInstance(opts)));
    }
    return this.db!;
  }

  /** instance() for SQLite-backed storage, without a promise (its reads are synchronous);
   *  a failure throws. */
  private instanceSync(): void {
    const opts = this.openOptions();
    const reused = this.budget.adopt(this, WASM_INITIAL_PAGES * 65536);
    // A synchronous instance has opened when reopen returns (a failure throws).
    if (reused !== null) void reused.reopen(this.storage, opts);
    this.opened(reused ?? DosqlInstance.createSync(wasmModule, this.storage, opts));
  }

  private openOptions(): OpenOptions {
    return { newPageSize: intVar(this.env.PAGE_SIZE, 0), cachePages: 16, readAhead: intVar(this.env.READ_AHEAD, 0), maxMemoryBytes: this.budget.budgetBytes };
  }

  /** Takes `db`, open on this database, as its instance. */
  private opened(db: DosqlInstance): void {
    this.db = db;
    // A timer per instance taken, not one shared: a timer dies with the object that set it
    // (evicted within the delay), and offer() makes none past SPARES.
    if (WARMUP.ran && db.sync) setTimeout(spareAhead, SPARE_AGAIN_MS);
    // A replica that was down catches up by itself.
    if ((this.note(db), this.pos[1] !== "")) setTimeout(() => void this.sync(), 0);
    this.limitsShare = 0;
    this.budget.use(this);
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
    try {
      return await this.respond(await this.instance(), op, body);
    } catch (err) {
      return jsonError(500, "OPEN_FAILED", err instanceof Error ? err.message : String(err));
    }
  }

  /** Runs `op` on `db`, first setting its limits (and settings) when its share moved; a
   *  setting the wasm refuses is the answer (and is sent again next time). A synchronous
   *  instance answers without a promise: its call runs to completion, nothing can
   *  interleave. */
  private respond(db: DosqlInstance, op: number, body: Uint8Array): Response | Promise<Response> {
    const settle = (res: Response) => {
      this.budget.settle(this);
      this.budget.shed(this);
      return res;
    };
    const refused = (r: WasmResponse) => (r.status === 200 ? null : ((this.limitsShare = 0), answer(r, this.pos[0])));
    if (op === OP_QUERY || op === OP_BATCH || op === OP_HRANA) this.scheduleUpkeep(false);
    try {
      const limits = this.share();
      if (db.sync) {
        const set = limits === null ? null : refused(db.execSync(OP_LIMITS, limits));
        if (set !== null) return settle(set);
        const r = db.execSync(op, body);
        return settle(answer(r, this.note(db)));
      }
      const run = async () => {
        const set = limits === null ? null : refused(await db.exec(OP_LIMITS, limits));
        if (set !== null) return set;
        const r = await db.exec(op, body);
        return answer(r, this.note(db));
      };
      return run().then(settle, (err: unknown) => settle(this.trapped(err)));
    } catch (err) {
      return settle(this.trapped(err));
    }
  }

  /** A trap (or a throw out of an import) leaves the instance in an unknown state. Drop it for
   *  good: the next request re-creates it from storage, which holds only committed work. */
  private trapped(err: unknown): Response {
    this.db = null;
    this.limitsShare = 0;
    this.budget.forget(this);
    console.error("dosql.wasm trapped:", err);
    return jsonError(500, "WASM_TRAP", err instanceof Error ? err.message : String(err));
  }
}

/** A database on SQLite-backed storage (enableSql / new_sqlite_classes): as DosqlDatabase, but
 *  the wasm reads synchronously (`storage.kv`, `storage.sql`) and runs without JSPI. */
export class DosqlSqlDatabase extends DosqlDatabase {
  protected override sqliteBacked(): boolean {
    return true;
  }

  protected override async createInstance(opts: OpenOptions): Promise<DosqlInstance> {
    return DosqlInstance.createSync(wasmModule, this.storage, opts);
  }
}
