// Page transfer for `dosql import` / `dosql export` / `dosql verify`: whole databases in and out
// as raw SQLite pages, in requests that fit the storage limits (≤128 keys a call) and the
// 1 MiB body limit.
//
//   GET    /db/<name>/pages?from=N&count=M[&txid=T]  → M pages from N (≤128), binary, in order:
//            each page's stored value (raw or LZ4, crates/pagestore/src/codec.rs) after its
//            length (u32 LE; 0 = never stored, reads as zeros); x-dosql-pages-format: 2. Headers
//            x-dosql-page-size, -page-count, -txid give the head the pages belong to. With
//            txid=T and a different head: 409 TXID_CHANGED (the client restarts its snapshot).
//   GET    /db/<name>/import                → the transfer state: live prefix and head, staged
//            import, garbage left (a client whose commit answer was lost checks the prefix)
//   POST   /db/<name>/import                → {"page_size", "page_count", "force"}: starts an
//            import under a fresh generation prefix (an import already staged is abandoned);
//            409 NOT_EMPTY if the database has a schema and force is not set.
//            Answers {"import_id", "prefix", "max_chunk_pages", "max_chunk_bytes",
//            "page_formats": [1, 2]}.
//   PUT    /db/<name>/import/<id>?from=N[&format=2] → pages N..N+k-1 (1 ≤ k ≤ 128), in order
//            (N = the next page expected; a resend of pages already received is accepted and
//            changes nothing): format 1 (the default), k whole raw pages back to back; format
//            2, k stored values (raw or LZ4, crates/pagestore/src/codec.rs), each after its
//            length (u32 LE, 1..page_size), page 1 raw; a value that does not decode to a
//            whole page is refused (400). Stored as sent: a client that compresses stores
//            about half the bytes. 409 OUT_OF_ORDER names the page
//            expected, 409 IMPORT_SUPERSEDED when another import started since.
//   POST   /db/<name>/import/<id>/commit    → {"force"}: switches the database to the staged
//            pages atomically (the head, in one synchronous stretch), drops the wasm instance so it re-reads the
//            head, and starts deleting the old generation. Answers {"txid", "page_size",
//            "page_count", "garbage_pages"}.
//   DELETE /db/<name>/import/<id>           → abandons the staged import.
//   POST   /db/<name>/import/gc             → deletes another bounded share of old generations'
//            keys; answers {"garbage_pages"} still to delete (the CLI calls it until 0).
//
// Every operation runs inside `locked`: no SQL request is inside the wasm while the head moves,
// and the transfer record changes in one synchronous stretch at a time.

import { OP_QUERY } from "./dosql";
import { type DbContext, JSON_HEADERS, jsonError, jsonResponse } from "./http";
import { isPageSize, isPageValue, MAX_KEYS_PER_CALL, type PageStorage } from "./storage";

/** Largest request body the object accepts (see index.ts). */
const MAX_BODY_BYTES = 1024 * 1024;
/** Delete calls one request spends on garbage: bounded so every request stays short. */
const GC_CALLS_PER_REQUEST = 64;
/** A new database's page size when the object never opened one (only used for reading). */
const FALLBACK_PAGE_SIZE = 4096;
const SQLITE_MAGIC = new TextEncoder().encode("SQLite format 3\0");
/** What GET /pages answers with (see above); a client checks it. */
const PAGES_FORMAT = "2";

export async function handleTransfer(request: Request, rest: string, db: DbContext): Promise<Response> {
  const url = new URL(request.url);
  const parts = rest.split("/");
  const method = request.method;
  try {
    if (parts[0] === "pages" && parts.length === 1) {
      if (method !== "GET") return notAllowed("pages takes GET", "GET");
      return await db.locked(() => readPages(url, db.pages));
    }
    if (parts[0] === "import") {
      if (parts.length === 1) {
        if (method === "GET") return await db.locked(() => status(db.pages));
        if (method === "POST") return await begin(request, db);
        return notAllowed("import takes GET or POST", "GET, POST");
      }
      if (parts.length === 2 && parts[1] === "gc") {
        if (method !== "POST") return notAllowed("import/gc takes POST", "POST");
        return await db.locked(async () => {
          await loaded(db.pages);
          return jsonResponse({ garbage_pages: db.pages.collectGarbage(GC_CALLS_PER_REQUEST) });
        });
      }
      if (parts.length === 2 && parts[1] !== "") {
        if (method === "PUT") return await chunk(request, url, parts[1], db);
        if (method === "DELETE") return await abort(parts[1], db);
        return notAllowed("import/<id> takes PUT or DELETE", "PUT, DELETE");
      }
      if (parts.length === 3 && parts[2] === "commit") {
        if (method !== "POST") return notAllowed("import/<id>/commit takes POST", "POST");
        return await commit(request, parts[1], db);
      }
    }
    return jsonError(404, "NOT_FOUND", `no route for ${url.pathname}`);
  } catch (err) {
    // A storage failure (or a refused limit): nothing half-done is visible, since every change
    // is one synchronous stretch that either issued all its calls or none.
    return jsonError(500, "TRANSFER_FAILED", err instanceof Error ? err.message : String(err));
  }
}

function notAllowed(message: string, allow: string): Response {
  return jsonError(405, "METHOD_NOT_ALLOWED", message, { allow });
}

/** Loads the head and the transfer record if this object has not yet. */
async function loaded(pages: PageStorage): Promise<void> {
  if (!pages.loaded) await pages.loadMeta(FALLBACK_PAGE_SIZE);
  await pages.loadTransfer();
}

function headHeaders(pages: PageStorage): Record<string, string> {
  const m = pages.meta;
  return {
    "x-dosql-page-size": String(m.page_size),
    "x-dosql-page-count": String(m.page_count),
    "x-dosql-txid": String(m.txid),
  };
}

/** A non-negative integer query parameter, or `fallback` when absent; null when malformed. */
function intParam(url: URL, name: string, fallback: number): number | null {
  const v = url.searchParams.get(name);
  if (v === null || v === "") return fallback;
  if (!/^[0-9]{1,15}$/.test(v)) return null;
  return Number(v);
}

async function readPages(url: URL, pages: PageStorage): Promise<Response> {
  await loaded(pages);
  const from = intParam(url, "from", 1);
  const count = intParam(url, "count", 0);
  const txid = intParam(url, "txid", -1);
  if (from === null || from < 1 || count === null || count > MAX_KEYS_PER_CALL || txid === null) {
    return jsonError(400, "BAD_REQUEST", `pages takes from ≥ 1, count ≤ ${MAX_KEYS_PER_CALL} and txid as integers`);
  }
  const m = pages.meta;
  if (txid >= 0 && txid !== m.txid) {
    return jsonError(409, "TXID_CHANGED", `the database is at txid ${m.txid}, not ${txid}: restart the snapshot`, headHeaders(pages));
  }
  const last = Math.min(m.page_count, from + count - 1);
  const nos: number[] = [];
  for (let no = from; no <= last; no++) nos.push(no);
  // The stored values as they are (the client decodes them: crates/pagestore/src/codec.rs),
  // each after its length as u32 little-endian; length 0: a page never stored (zeros).
  const found = await pages.readPages(nos);
  const body = new Uint8Array(found.reduce((n, v) => n + 4 + (v?.byteLength ?? 0), 0));
  const dv = new DataView(body.buffer);
  let at = 0;
  for (const value of found) {
    dv.setUint32(at, value?.byteLength ?? 0, true);
    if (value !== null) body.set(value, at + 4);
    at += 4 + (value?.byteLength ?? 0);
  }
  return new Response(body, {
    headers: { "content-type": "application/octet-stream", "x-dosql-pages-format": PAGES_FORMAT, ...headHeaders(pages) },
  });
}

async function status(pages: PageStorage): Promise<Response> {
  await loaded(pages);
  const t = await pages.loadTransfer();
  return jsonResponse({
    prefix: pages.prefix,
    page_size: pages.meta.page_size,
    page_count: pages.meta.page_count,
    txid: pages.meta.txid,
    staging: t.staging,
    garbage: t.garbage,
    garbage_pages: pages.garbagePages(),
  });
}

/** A JSON object body, or the 400/413 answer. */
async function jsonBody(request: Request, db: DbContext): Promise<Record<string, unknown> | Response> {
  const body = await db.body(request);
  if (body instanceof Response) return body;
  try {
    const v: unknown = JSON.parse(new TextDecoder().decode(body));
    if (typeof v === "object" && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // answered below
  }
  return jsonError(400, "BAD_REQUEST", "the body must be a JSON object");
}

/**
 * The 409 answer when the database has a schema (and so would be overwritten), else null. Asks
 * SQLite through the wasm, so the answer is about the database the next query would see.
 */
async function refuseNonEmpty(db: DbContext): Promise<Response | null> {
  const res = await db.exec(OP_QUERY, new TextEncoder().encode(JSON.stringify({ sql: "SELECT count(*) FROM sqlite_schema" })));
  if (res.status !== 200) {
    const text = await res.text();
    return jsonError(409, "NOT_EMPTY", `cannot tell whether the database is empty (${text}); force replaces it anyway`);
  }
  const answer = (await res.json()) as { rows?: unknown[][] };
  const objects = Number(answer.rows?.[0]?.[0] ?? 0);
  if (objects > 0) {
    return jsonError(409, "NOT_EMPTY", `the database is not empty (${objects} schema objects); force replaces it`);
  }
  return null;
}

async function begin(request: Request, db: DbContext): Promise<Response> {
  const body = await jsonBody(request, db);
  if (body instanceof Response) return body;
  const { page_size: pageSize, page_count: pageCount, force } = body;
  if (typeof pageSize !== "number" || !isPageSize(pageSize)) {
    return jsonError(400, "BAD_REQUEST", "page_size must be a power of two in 512..65536");
  }
  if (typeof pageCount !== "number" || !Number.isInteger(pageCount) || pageCount < 1 || pageCount > 0xfffffffe) {
    return jsonError(400, "BAD_REQUEST", "page_count must be a positive integer");
  }
  return db.locked(async () => {
    await loaded(db.pages);
    if (force !== true) {
      const refused = await refuseNonEmpty(db);
      if (refused !== null) return refused;
    }
    const staging = db.pages.beginImport(pageSize, pageCount);
    // Clear what earlier imports left (an abandoned import's pages included), a share at a time.
    db.pages.collectGarbage(GC_CALLS_PER_REQUEST);
    return jsonResponse({
      import_id: staging.id,
      prefix: staging.prefix,
      // Room for format 2's length before each value, too.
      max_chunk_pages: Math.min(MAX_KEYS_PER_CALL, Math.floor(MAX_BODY_BYTES / (pageSize + 4))),
      max_chunk_bytes: MAX_BODY_BYTES,
      page_formats: [1, 2],
    });
  });
}

/** Format 1: `body` as whole raw pages (copies), or why it is not 1..128 of them. */
function rawPages(body: Uint8Array, size: number): ArrayBuffer[] | string {
  const k = body.byteLength / size;
  if (!Number.isInteger(k) || k < 1 || k > MAX_KEYS_PER_CALL) {
    return `the body must be 1 to ${MAX_KEYS_PER_CALL} whole pages of ${size} bytes; got ${body.byteLength} bytes`;
  }
  const pages: ArrayBuffer[] = [];
  for (let i = 0; i < k; i++) pages.push(body.slice(i * size, (i + 1) * size).buffer);
  return pages;
}

/** Format 2: `body` as stored values, each after its u32 LE length (copies), or why not.
 *  Each must decode to a whole page (isPageValue); that it is the right page, the client
 *  answers for, as with raw pages (dosql's CLI decodes each value back before sending it). */
function storedValues(body: Uint8Array, size: number): ArrayBuffer[] | string {
  const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const values: ArrayBuffer[] = [];
  for (let at = 0; at < body.byteLength;) {
    if (values.length === MAX_KEYS_PER_CALL) return `more than ${MAX_KEYS_PER_CALL} values in one chunk`;
    if (at + 4 > body.byteLength) return `value ${values.length}'s length is cut short`;
    const len = dv.getUint32(at, true);
    at += 4;
    if (len < 1 || len > size) return `value ${values.length} is ${len} bytes; a stored page value is 1..${size}`;
    if (at + len > body.byteLength) return `value ${values.length} (${len} bytes) is cut short`;
    const value = body.slice(at, at + len);
    if (!isPageValue(value, size)) return `value ${values.length} is not a ${size}-byte page, raw or as an LZ4 block`;
    values.push(value.buffer);
    at += len;
  }
  return values.length > 0 ? values : "the body holds no page value";
}

/** The staged import named `id`, or the 409 answer. */
async function staged(id: string, pages: PageStorage) {
  const t = await pages.loadTransfer();
  if (t.staging === null || t.staging.id !== id) {
    return jsonError(409, "IMPORT_SUPERSEDED", `import ${id} is not in progress (another import started, or it ended)`);
  }
  return t.staging;
}

async function chunk(request: Request, url: URL, id: string, db: DbContext): Promise<Response> {
  const from = intParam(url, "from", 0);
  if (from === null || from < 1) return jsonError(400, "BAD_REQUEST", "from must be a page number ≥ 1");
  const format = intParam(url, "format", 1);
  if (format !== 1 && format !== 2) return jsonError(400, "BAD_REQUEST", "format must be 1 (raw pages) or 2 (stored values)");
  // Read the body before taking the lock, so a slow upload holds up nobody.
  const body = await db.body(request);
  if (body instanceof Response) return body;
  return db.locked(async () => {
    await loaded(db.pages);
    const s = await staged(id, db.pages);
    if (s instanceof Response) return s;
    const size = s.page_size;
    const values = format === 1 ? rawPages(body, size) : storedValues(body, size);
    if (typeof values === "string") return jsonError(400, "BAD_REQUEST", values);
    const k = values.length;
    const last = from + k - 1;
    if (last > s.page_count) {
      return jsonError(400, "BAD_REQUEST", `pages ${from}..${last} are beyond the import's ${s.page_count} pages`);
    }
    // In order only: `next` then proves every page below it arrived. A resend of pages already
    // stored (a lost acknowledgement) is fine; a gap is not.
    if (from > s.next) {
      return jsonError(409, "OUT_OF_ORDER", `expected page ${s.next} next, got pages ${from}..${last}`);
    }
    if (from === 1) {
      const header = new Uint8Array(values[0], 0, Math.min(100, values[0].byteLength));
      const raw = (header[16] << 8) | header[17];
      if (values[0].byteLength !== size || !SQLITE_MAGIC.every((b, i) => header[i] === b) || (raw === 1 ? 65536 : raw) !== size) {
        return jsonError(400, "BAD_REQUEST", `page 1 is not the header of a SQLite database with ${size}-byte pages (raw, in either format)`);
      }
    }
    db.pages.stagePages(from, values);
    return jsonResponse({ next: Math.max(s.next, last + 1), page_count: s.page_count });
  });
}

async function commit(request: Request, id: string, db: DbContext): Promise<Response> {
  const body = await jsonBody(request, db);
  if (body instanceof Response) return body;
  return db.locked(async () => {
    await loaded(db.pages);
    const s = await staged(id, db.pages);
    if (s instanceof Response) return s;
    if (s.next !== s.page_count + 1) {
      return jsonError(409, "INCOMPLETE", `the import has ${s.next - 1} of its ${s.page_count} pages`);
    }
    // Checked again at the switch: someone may have written to the database since the start.
    if (body.force !== true) {
      const refused = await refuseNonEmpty(db);
      if (refused !== null) return refused;
    }
    const meta = db.pages.switchToStaged();
    // The instance caches pages and the head of the old generation: the next request opens a
    // fresh one from the new `meta`.
    db.reset();
    const garbage = db.pages.collectGarbage(GC_CALLS_PER_REQUEST);
    return new Response(
      JSON.stringify({ txid: meta.txid, page_size: meta.page_size, page_count: meta.page_count, garbage_pages: garbage }),
      { headers: JSON_HEADERS },
    );
  });
}

async function abort(id: string, db: DbContext): Promise<Response> {
  return db.locked(async () => {
    await loaded(db.pages);
    const s = await staged(id, db.pages);
    if (s instanceof Response) return s;
    db.pages.abortImport();
    return jsonResponse({ garbage_pages: db.pages.collectGarbage(GC_CALLS_PER_REQUEST) });
  });
}
