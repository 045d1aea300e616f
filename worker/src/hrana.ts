// libSQL's Hrana over HTTP, for @libsql/client and the other libSQL SDKs: the database URL is
// http(s)://<host>/db/<name>/ (the trailing slash matters: clients resolve "v2/pipeline"
// against it).
//
//   GET  v2, v3            → 200: the versions served (clients probe them)
//   POST v2/pipeline       → Hrana 2 pipeline (JSON)           } wasm op 4; the protocol
//   POST v3/pipeline       → Hrana 3 pipeline (JSON)           } itself lives in
//   POST v3/cursor         → Hrana 3 cursor (lines of JSON)    } crates/api/src/hrana.rs
//   v3-protobuf...         → 404 (Protobuf is not served, so clients fall back to JSON)
//
// Streams are SQLite connections inside the wasm, named by batons; one left without a request
// for HRANA_STREAM_TIMEOUT_MS (default 10000) is rolled back and closed.

import { env } from "cloudflare:workers";
import { OP_HRANA } from "./dosql";
import { type DbContext, JSON_HEADERS } from "./http";

/** How long a stream may go without a request before it is rolled back and closed. */
export const DEFAULT_STREAM_TIMEOUT_MS = 10_000;

const encoder = new TextEncoder();

export async function handleHrana(request: Request, rest: string, db: DbContext): Promise<Response> {
  switch (rest) {
    case "v2":
    case "v3":
      if (request.method !== "GET" && request.method !== "HEAD") {
        return hranaError(405, "METHOD_NOT_ALLOWED", `${rest} takes GET`, { allow: "GET" });
      }
      return new Response(`dosql: Hrana over HTTP ${rest} (JSON)\n`, { headers: { "content-type": "text/plain" } });
    case "v2/pipeline":
    case "v3/pipeline":
    case "v3/cursor": {
      if (request.method !== "POST") return hranaError(405, "METHOD_NOT_ALLOWED", `${rest} takes POST`, { allow: "POST" });
      let timeoutMs: number;
      try {
        timeoutMs = streamTimeoutMs();
      } catch (err) {
        return hranaError(500, "BAD_CONFIG", err instanceof Error ? err.message : String(err));
      }
      const body = await db.body(request);
      if (body instanceof Response) {
        return hranaError(body.status, "PAYLOAD_TOO_LARGE", "request body over the size limit (1 MiB)");
      }
      const [version, endpoint] = rest.split("/");
      // The header line tells the wasm the endpoint and the configured timeout: the instance
      // may be re-created at any time, so every call carries them.
      const header = encoder.encode(
        JSON.stringify({ version: version === "v3" ? 3 : 2, endpoint, stream_timeout_ms: timeoutMs }) + "\n",
      );
      const input = new Uint8Array(header.byteLength + body.byteLength);
      input.set(header, 0);
      input.set(body, header.byteLength);
      const res = await db.locked(() => db.exec(OP_HRANA, input));
      if (endpoint === "cursor" && res.ok) {
        // Lines of JSON, not one JSON document.
        return new Response(res.body, { status: res.status, headers: { "content-type": "text/plain" } });
      }
      return res;
    }
  }
  return hranaError(404, "NOT_FOUND", `no Hrana endpoint ${rest} (served: v2/pipeline, v3/pipeline, v3/cursor; JSON only)`);
}

/** HRANA_STREAM_TIMEOUT_MS from the environment, or the default. */
function streamTimeoutMs(): number {
  // workerd's fromEnvironment binding is null when the variable is unset.
  const raw = (env as unknown as Record<string, unknown>).HRANA_STREAM_TIMEOUT_MS;
  if (raw === undefined || raw === null || raw === "") return DEFAULT_STREAM_TIMEOUT_MS;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`HRANA_STREAM_TIMEOUT_MS is not a positive integer: ${raw}`);
  return n;
}

/**
 * An error answer that libSQL clients can read: a Hrana `Error` (`message`, `code` at the top,
 * which they turn into the error they throw), plus dosql's usual `error` object.
 */
export function hranaError(status: number, code: string, message: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ message, code, error: { code, message } }), {
    status,
    headers: { ...JSON_HEADERS, ...headers },
  });
}
