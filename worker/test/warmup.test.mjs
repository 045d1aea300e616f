// The warm-up (src/warmup.ts, crates/wasm/src/warmup.rs), in Node with the built dosql.wasm:
// it runs the read, commit and Hrana paths on an in-memory database of its own, never asks for
// real randomness (Workers forbid it at module scope), and instances made afterwards get real
// randomness again.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const { build } = createRequire(import.meta.url)("esbuild");
const bundle = await build({
  entryPoints: [join(here, "..", "src", "warmup.ts")],
  bundle: true,
  format: "esm",
  platform: "neutral",
  write: false,
  external: ["cloudflare:*"],
});
const { warmUp } = await import(`data:text/javascript;base64,${Buffer.from(bundle.outputFiles[0].text).toString("base64")}`);
const bundle2 = await build({ entryPoints: [join(here, "..", "src", "dosql.ts")], bundle: true, format: "esm", platform: "neutral", write: false });
const { DosqlInstance } = await import(`data:text/javascript;base64,${Buffer.from(bundle2.outputFiles[0].text).toString("base64")}`);
const bundle3 = await build({ entryPoints: [join(here, "..", "src", "kv.ts")], bundle: true, format: "esm", platform: "neutral", write: false });
const { KvBridge } = await import(`data:text/javascript;base64,${Buffer.from(bundle3.outputFiles[0].text).toString("base64")}`);
const bundle4 = await build({ entryPoints: [join(here, "..", "src", "memory-storage.ts")], bundle: true, format: "esm", platform: "neutral", write: false });
const { MemoryStorage } = await import(`data:text/javascript;base64,${Buffer.from(bundle4.outputFiles[0].text).toString("base64")}`);
const module = new WebAssembly.Module(readFileSync(join(here, "..", "dist", "dosql.wasm")));

/** Runs `fn` with crypto.getRandomValues counting its calls (and throwing, when `forbid`). */
function withRandomness(forbid, fn) {
  const real = crypto.getRandomValues;
  let calls = 0;
  crypto.getRandomValues = (a) => {
    calls++;
    if (forbid) throw new Error("Disallowed operation called within global scope");
    return real.call(crypto, a);
  };
  try {
    return { result: fn(), calls };
  } finally {
    crypto.getRandomValues = real;
  }
}

test("the warm-up runs every path on its own store without real randomness", () => {
  const { result, calls } = withRandomness(true, () => warmUp(module, undefined));
  assert.equal(result.ran, true, result.note);
  assert.ok(result.requests >= 20, JSON.stringify(result));
  assert.ok(result.key_reads > 0, "pages read by key, as a real database reads them");
  assert.ok(result.reads > 0 && result.writes > 0, JSON.stringify(result));
  // The host's side too: KvBridge over MemoryStorage, reads (a cold open's) and writes.
  assert.ok(result.host.requests >= 5 && result.host.reads > 0 && result.host.writes > 0, JSON.stringify(result));
  // Pages read both ways a database keeps them: rows (a new one's) and kv keys (an older one's).
  assert.ok(result.host.page_row_reads > 0 && result.host.key_reads >= 10, JSON.stringify(result.host));
  assert.equal(calls, 0, "the warm-up asked for real randomness");
});

test("the warm-up can be turned off", () => {
  assert.deepEqual(warmUp(module, "off"), { ran: false, note: "DOSQL_WARMUP is off" });
});

test("a failing warm-up reports and never throws", () => {
  const broken = new WebAssembly.Module(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]));
  const r = warmUp(broken, undefined);
  assert.equal(r.ran, false);
  assert.ok(r.note.length > 0);
});

test("an instance made after the warm-up gets real randomness", () => {
  warmUp(module, undefined);
  const { calls } = withRandomness(false, () => {
    const db = DosqlInstance.createSync(module, new KvBridge(new MemoryStorage(), true), { newPageSize: 4096, cachePages: 16, readAhead: 0, maxMemoryBytes: 32 << 20 });
    const header = JSON.stringify({ method: "POST", path: "v3/pipeline" });
    const body = JSON.stringify({ baton: null, requests: [{ type: "execute", stmt: { sql: "SELECT 1" } }] });
    const res = db.execSync(4, new TextEncoder().encode(`${header}\n${body}`));
    assert.equal(res.status, 200);
    assert.match(new TextDecoder().decode(res.body), /"baton":"[A-Za-z0-9_-]{32}"/);
  });
  assert.ok(calls > 0, "the baton came from crypto.getRandomValues");
});

test("a spare's prefault changes no byte of its memory, its priming draws no randomness, and the spare then serves a database", () => {
  const spare = DosqlInstance.instantiateSync(module, { maxMemoryBytes: 32 << 20 });
  const before = new Uint8Array(spare.memory.buffer).slice();
  assert.ok(before.some((b) => b !== 0), "the data segments are in memory");
  spare.prefault();
  assert.deepEqual(new Uint8Array(spare.memory.buffer), before);
  // Primed at module scope too, where Workers forbid randomness: it draws none.
  const { result: primed, calls } = withRandomness(true, () => spare.prime());
  assert.equal(primed.status, 200, new TextDecoder().decode(primed.body));
  assert.equal(calls, 0);
  void spare.reopen(new KvBridge(new MemoryStorage(), true), { newPageSize: 4096, cachePages: 16, readAhead: 0, maxMemoryBytes: 32 << 20 });
  const res = spare.execSync(1, new TextEncoder().encode(JSON.stringify({ sql: "SELECT 41 + 1" })));
  assert.equal(res.status, 200);
  assert.deepEqual(JSON.parse(new TextDecoder().decode(res.body)).rows, [[42]]);
});
