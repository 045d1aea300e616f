// HTTP helpers shared by the routes (and the benchmark's contenders): JSON answers, settings,
// bodies, auth and the lock.

import { MAX_DRAIN_BYTES } from "./constants";

export const JSON_HEADERS = { "content-type": "application/json" };

export function jsonError(status: number, code: string, message: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ error: { code, message } }), { status, headers: { ...JSON_HEADERS, ...headers } });
}

/** An error libSQL clients can read: a Hrana `Error` (`message` and `code` at the top, which
 *  they turn into the error they throw), plus dosql's usual `error` object. */
export function hranaError(status: number, code: string, message: string): Response {
  return new Response(JSON.stringify({ message, code, error: { code, message } }), { status, headers: JSON_HEADERS });
}

/** A setting that must be a non-negative integer (`fallback` when unset or empty). */
export function intVar(value: string | null | undefined, fallback: number): number {
  const n = value === undefined || value === null || value === "" ? fallback : Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`not a non-negative integer: ${value}`);
  return n;
}

/** Whether the request carries `Authorization: Bearer <token>`, compared in constant time. */
export async function authorized(request: Request, token: string): Promise<boolean> {
  const header = request.headers.get("authorization") ?? "";
  const given = header.startsWith("Bearer ") ? header.slice(7) : "";
  // Compare digests, so neither the length nor a prefix of the token leaks through timing.
  const digest = async (s: string) => new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));
  const [a, b] = await Promise.all([digest(given), digest(token)]);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0 && given.length > 0;
}

/** The path of an absolute URL, without `new URL` (a runtime object per request): the
 *  Durable Object only ever sees URLs of the form scheme://host/path[?query][#fragment]. */
export function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start < 0) return "/";
  const end = url.search(/[?#]/);
  return url.slice(start, end < start ? url.length : end);
}

/** Reads the body, refusing (null) one over `limit` bytes without buffering all of it. */
export async function readBody(request: Request, limit: number): Promise<Uint8Array | null> {
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
  for (let next = await reader.read(); !next.done; next = await reader.read()) {
    total += next.value.byteLength;
    if (total <= limit) {
      parts.push(next.value);
    } else if (total > MAX_DRAIN_BYTES) {
      // Read and dropped the rest up to here, so that a client still sending reads the 413
      // instead of a reset connection; past the cap, stop reading.
      await reader.cancel();
      return null;
    }
  }
  if (total > limit) return null;
  const body = new Uint8Array(total);
  let off = 0;
  for (const p of parts) body.set(p, (off += p.byteLength) - p.byteLength);
  return body;
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
    const settled = () => void this.queued--;
    this.tail = run.then(settled, settled);
    return run;
  }
}
