// Shared by the route modules: JSON answers and what a database object offers them.

import type { PageStorage } from "./storage";

export const JSON_HEADERS = { "content-type": "application/json" };

export function jsonError(status: number, code: string, message: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ error: { code, message } }), {
    status,
    headers: { ...JSON_HEADERS, ...headers },
  });
}

/** The parts of a database object that route modules use. */
export interface DbContext {
  /** The page storage (meta, counters). */
  pages: PageStorage;
  /** Runs `fn` with the wasm instance to itself (see DosqlDatabase.locked). */
  locked<T>(fn: () => Promise<T>): Promise<T>;
  /** Runs one wasm operation (call inside `locked`); a trap answers 500 and drops the instance. */
  exec(op: number, body: Uint8Array): Promise<Response>;
  /** Reads a request body within the size limit, or answers 413. */
  body(request: Request): Promise<Uint8Array | Response>;
  /** Drops the wasm instance: the next call re-creates it from storage (call inside `locked`). */
  reset(): void;
}


/** A JSON answer. */
export function jsonResponse(value: unknown, status = 200): Response {
  return new Response(JSON.stringify(value), { status, headers: JSON_HEADERS });
}
