// dosql's Worker and Durable Object: HTTP in, bytes into dosql.wasm, bytes out.
//
// Worker routes:   GET /                       → banner
//                  * /db/<name>/...            → the Durable Object idFromName(<name>)
// Durable Object:  POST /db/<name>/query       → {"sql","params"}       (wasm op 1)
//                  POST /db/<name>/batch       → [{"sql","params"},...] (wasm op 2)
//                  GET  /db/<name>/stats       → wasm statistics        (wasm op 3)
//                  GET  /db/<name>/_storage_stats → storage call counters (PageStorage.stats)
// Database names: 1-64 characters of [A-Za-z0-9_.-]. Request bodies: at most 1 MiB (413).

import wasmModule from "./dosql.wasm";
import { DosqlInstance, OP_BATCH, OP_QUERY, OP_STATS } from "./dosql";
import { PageStorage } from "./storage";

export interface Env {
  DB: DurableObjectNamespace;
  /** Page size of a new database (bytes, power of two 512..65536); default 4096. */
  PAGE_SIZE?: string;
  /** Pages in the wasm's page cache; default 4096. */
  CACHE_PAGES?: string;
  /** Pages read ahead on a cache miss; default 0. */
  READ_AHEAD?: string;
}

/** Largest request body passed to the wasm. */
const MAX_BODY_BYTES = 1024 * 1024;

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const JSON_HEADERS = { "content-type": "application/json" };

function jsonError(status: number, code: string, message: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ error: { code, message } }), {
    status,
    headers: { ...JSON_HEADERS, ...headers },
  });
}

function intVar(value: string | undefined, fallback: number): number {
  const n = value === undefined || value === "" ? fallback : Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`not a non-negative integer: ${value}`);
  return n;
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const { pathname } = new URL(request.url);
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
    if (!NAME_RE.test(name)) {
      return jsonError(400, "BAD_DATABASE_NAME", "a database name is 1-64 characters of A-Z a-z 0-9 _ . -");
    }
    return env.DB.get(env.DB.idFromName(name)).fetch(request);
  },
} satisfies ExportedHandler<Env>;

/** Reads the body, refusing (null) one over `limit` bytes without buffering all of it. */
async function readBody(request: Request, limit: number): Promise<Uint8Array | null> {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) return null;
  if (request.body === null) return new Uint8Array(0);
  const parts: Uint8Array[] = [];
  let total = 0;
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
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

export class DosqlDatabase implements DurableObject {
  private readonly pages: PageStorage;
  private db: DosqlInstance | null = null;
  /** Tail of the promise-chain mutex: one call at a time into the wasm instance. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    ctx: DurableObjectState,
    private readonly env: Env,
  ) {
    this.pages = new PageStorage(ctx.storage);
    // Open before the first request is delivered. A failure is kept out of
    // blockConcurrencyWhile (which would reset the object) and retried by the next request.
    void ctx.blockConcurrencyWhile(() => this.locked(() => this.instance().then(() => undefined, () => undefined)));
  }

  async fetch(request: Request): Promise<Response> {
    const route = /^\/db\/[^/]+\/([^/]+)$/.exec(new URL(request.url).pathname)?.[1];
    switch (route) {
      case "query":
      case "batch": {
        if (request.method !== "POST") return jsonError(405, "METHOD_NOT_ALLOWED", `${route} takes POST`, { allow: "POST" });
        // Read the body before taking the lock, so a slow upload holds up nobody.
        const body = await readBody(request, MAX_BODY_BYTES);
        if (body === null) return jsonError(413, "PAYLOAD_TOO_LARGE", `request body over ${MAX_BODY_BYTES} bytes`);
        return this.locked(() => this.exec(route === "query" ? OP_QUERY : OP_BATCH, body));
      }
      case "stats":
        if (request.method !== "GET") return jsonError(405, "METHOD_NOT_ALLOWED", "stats takes GET", { allow: "GET" });
        return this.locked(() => this.exec(OP_STATS, new Uint8Array(0)));
      case "_storage_stats":
        if (request.method !== "GET") return jsonError(405, "METHOD_NOT_ALLOWED", "_storage_stats takes GET", { allow: "GET" });
        return new Response(JSON.stringify({ ...this.pages.stats, meta: this.pages.meta }), { headers: JSON_HEADERS });
      default:
        return jsonError(404, "NOT_FOUND", `no route for ${new URL(request.url).pathname}`);
    }
  }

  /**
   * Runs `fn` after every call queued before it has settled. A JSPI-suspended wasm call yields
   * to the event loop, and another request must never enter the instance meanwhile.
   */
  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** The open instance, created from storage's committed head if there is none. */
  private async instance(): Promise<DosqlInstance> {
    if (this.db === null) {
      await this.pages.loadMeta(intVar(this.env.PAGE_SIZE, 4096));
      this.db = await DosqlInstance.create(wasmModule, this.pages, {
        cachePages: intVar(this.env.CACHE_PAGES, 4096),
        readAhead: intVar(this.env.READ_AHEAD, 0),
      });
    }
    return this.db;
  }

  private async exec(op: number, body: Uint8Array): Promise<Response> {
    let db: DosqlInstance;
    try {
      db = await this.instance();
    } catch (err) {
      return jsonError(500, "OPEN_FAILED", err instanceof Error ? err.message : String(err));
    }
    try {
      const res = await db.exec(op, body);
      const status = res.status >= 200 && res.status <= 599 ? res.status : 500;
      return new Response(res.body, { status, headers: JSON_HEADERS });
    } catch (err) {
      // A trap (or a throw out of an import) leaves the instance in an unknown state. Drop it:
      // the next request re-creates it from storage, which holds only committed transactions.
      this.db = null;
      console.error("dosql.wasm trapped:", err);
      return jsonError(500, "WASM_TRAP", err instanceof Error ? err.message : String(err));
    }
  }
}
