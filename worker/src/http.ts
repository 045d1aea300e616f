// Shared by the route modules (and the benchmark's contenders): JSON answers, settings, the
// lock, and what a database object offers route modules.

export const JSON_HEADERS = { "content-type": "application/json" };

export function jsonError(status: number, code: string, message: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ error: { code, message } }), {
    status,
    headers: { ...JSON_HEADERS, ...headers },
  });
}

/** The parts of a database object that route modules use. */
export interface DbContext {
  /** Runs `fn` with the wasm instance to itself (see DosqlDatabase.locked). */
  locked<T>(fn: () => Promise<T>): Promise<T>;
  /** Runs one wasm operation (call inside `locked`); a trap answers 500 and drops the instance. */
  exec(op: number, body: Uint8Array): Promise<Response>;
  /** Reads a request body within the size limit, or answers 413. */
  body(request: Request): Promise<Uint8Array | Response>;
}


/** A JSON answer. */
export function jsonResponse(value: unknown, status = 200): Response {
  return new Response(JSON.stringify(value), { status, headers: JSON_HEADERS });
}

/** A setting that must be a non-negative integer (`fallback` when unset or empty). */
export function intVar(value: string | null | undefined, fallback: number): number {
  const n = value === undefined || value === null || value === "" ? fallback : Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`not a non-negative integer: ${value}`);
  return n;
}

/** The most bytes the wasm's page cache may hold: CACHE_PAGES pages, else CACHE_BYTES (so 64
 *  KiB pages do not take 16 times the memory of 4 KiB ones). The instance's share of the
 *  memory budget caps it further (budget.ts). */
export function cacheBytes(env: { CACHE_PAGES?: string; CACHE_BYTES?: string }, pageSize: number): number {
  if (env.CACHE_PAGES) return intVar(env.CACHE_PAGES, 0) * pageSize;
  return intVar(env.CACHE_BYTES, 32 * 1024 * 1024);
}

/**
 * One call at a time: runs each function after every one queued before it has settled. A
 * JSPI-suspended wasm call yields to the event loop, and another request must never enter
 * the instance meanwhile.
 */
export class Lock {
  private tail: Promise<unknown> = Promise.resolve();
  /** Calls queued that have not settled yet. */
  queued = 0;

  run<T>(fn: () => Promise<T>): Promise<T> {
    this.queued++;
    const run = this.tail.then(fn);
    const settled = () => {
      this.queued--;
    };
    this.tail = run.then(settled, settled);
    return run;
  }
}
