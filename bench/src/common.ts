// What every benchmark Durable Object class shares: the request shape (dosql's own
// `/query` {"sql","params"} and `/batch` [{"sql","params"},...], so every contender receives
// the very same bytes), storage counters in dosql's `/_storage_stats` shape, and a lock.

export const JSON_HEADERS = { "content-type": "application/json" };

/** One statement of a request: dosql's shape. Positional parameters only in the benchmark. */
export interface Statement {
  sql: string;
  params?: Array<string | number | null>;
}

/** The routes a benchmark object serves (the Worker forwards /db/<name>/<route>). */
export type Route = "query" | "batch" | "_storage_stats" | "ping";

export function route(request: Request): Route | null {
  const rest = new URL(request.url).pathname.replace(/^\/db\/[^/]+\/?/, "");
  return rest === "query" || rest === "batch" || rest === "_storage_stats" || rest === "ping" ? rest : null;
}

export function json(value: unknown, status = 200): Response {
  return new Response(JSON.stringify(value), { status, headers: JSON_HEADERS });
}


/** Storage counters, the subset of dosql's StorageStats every contender can report. */
export interface Counters {
  get_calls: number;
  get_keys: number;
  put_calls: number;
  put_keys: number;
  bytes_written: number;
  bytes_read: number;
  delete_calls: number;
  delete_keys: number;
  commits: number;
}

export function newCounters(): Counters {
  return {
    get_calls: 0, get_keys: 0, put_calls: 0, put_keys: 0, bytes_written: 0, bytes_read: 0,
    delete_calls: 0, delete_keys: 0, commits: 0,
  };
}


/** The bytes of the binary values in `v` (a page, or meta with the pages it carries). */
export function byteLength(v: unknown): number {
  if (v instanceof ArrayBuffer) return v.byteLength;
  if (ArrayBuffer.isView(v)) return v.byteLength;
  if (typeof v === "object" && v !== null) return Object.values(v).reduce((n: number, x: unknown) => n + byteLength(x), 0);
  return 0;
}
