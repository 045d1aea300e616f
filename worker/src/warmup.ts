// A warm-up of dosql.wasm when the isolate starts: V8 compiles a wasm function on its first
// call, so the isolate's first request used to pay for compiling SQLite's query, commit and
// read paths (43-47 ms in workerd). The wasm runs a database's requests once, through the very
// functions a real database runs, on storage of its own in wasm memory (crates/wasm/src/
// warmup.rs; no host storage call), at module scope: no Durable Object, 400 ms of CPU allowed.
// Then the host's side of a request runs too (warmHost): the same instance over this file's
// KvBridge on MemoryStorage, a JS object in memory, never Durable Object storage; V8 compiles
// JS functions on first call as well, and the storage bridge had been left to the first cold
// object's query (its CompileLazy and inline-cache misses: ~7% of it, perf on W4).
// Workers forbid random values at module scope, so the instance's WASI random_get answers a
// fixed stream; the instance is then dropped, and every real instance gets real randomness.
// DOSQL_WARMUP=off turns it off, and with it the spare instances and settleYoungGeneration
// (worker/src/index.ts; workerd config, wrangler.toml).

import { OP_LIMITS, OP_QUERY } from "./constants";
import { DosqlInstance, limitsRequest } from "./dosql";
import { KvBridge } from "./kv";
import { MemoryStorage } from "./memory-storage";

export interface WarmupReport {
  /** Whether it ran (false: turned off, or it failed). */
  ran: boolean;
  /** Why it did not run or failed. */
  note?: string;
  /** Requests it ran, and the storage reads and writes they made (in wasm memory). */
  requests?: number;
  reads?: number;
  writes?: number;
  /** The host's side (warmHost): requests, and the reads and writes MemoryStorage served. */
  host?: { requests: number; reads: number; writes: number; page_row_reads: number; key_reads: number };
  /** Bytes of short-lived objects allocated after it (settleYoungGeneration). */
  settled_bytes?: number;
}

/** Runs the warm-up in an instance of `module` of its own. Never throws: a failed warm-up
 *  costs nothing but time. */
export function warmUp(module: WebAssembly.Module, setting: string | null | undefined): WarmupReport {
  if (setting === "off" || setting === "0" || setting === "false") return { ran: false, note: "DOSQL_WARMUP is off" };
  try {
    const instance = DosqlInstance.instantiateSync(module, { maxMemoryBytes: 32 * 1024 * 1024 }, { fixedRandomness: true });
    const res = instance.warmUp();
    const body = new TextDecoder().decode(res.body);
    if (res.status !== 200) throw new Error(`${res.status} ${body}`);
    return { ran: true, ...(JSON.parse(body) as object), host: warmHost(instance) };
  } catch (err) {
    const note = err instanceof Error ? err.message : String(err);
    console.error(`dosql: the warm-up failed (${note}); requests will compile what they use`);
    return { ran: false, note };
  }
}

/** Statements of the host's part: a table whose rows outgrow the head (so that pages get keys of
 *  their own), a commit that moves pages out, then a cold open and a point read by key. */
const HOST_STEPS: ReadonlyArray<[op: number, body: object] | "reopen"> = [
  [OP_QUERY, { sql: "CREATE TABLE warm(id INTEGER PRIMARY KEY, v TEXT NOT NULL)" }],
  [OP_QUERY, { sql: "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 60) INSERT INTO warm(v) SELECT hex(randomblob(600)) FROM c" }],
  [OP_QUERY, { sql: "UPDATE warm SET v = 'x' WHERE id = ?", params: [3] }],
  "reopen",
  [OP_QUERY, { sql: "SELECT id, substr(v, 1, 8) FROM warm WHERE id = ?", params: [40] }],
];

/** One-key page reads (kv.ts: oneKey) run by the host's warm-up: past V8's 8 calls before a
 *  function gets feedback. */
const KEY_READS = 10;

/**
 * The host's side of requests, on the warm-up's instance (fixed randomness) over MemoryStorage:
 * KvBridge's reads and writes, the head row, the wire's parsing, the instance's calls. Returns
 * what it ran; throws when a step fails (warmUp reports it).
 */
function warmHost(instance: DosqlInstance): NonNullable<WarmupReport["host"]> {
  const storage = new MemoryStorage();
  const bridge = new KvBridge(storage, true);
  const opts = { newPageSize: 0, cachePages: 16, readAhead: 0, maxMemoryBytes: 32 * 1024 * 1024 };
  const limits = limitsRequest(32 * 1024 * 1024, {});
  let requests = 0;
  const run = (op: number, body: Uint8Array) => {
    const r = instance.execSync(op, body);
    requests++;
    if (r.status !== 200) throw new Error(`host warm-up: ${r.status} ${new TextDecoder().decode(r.body)}`);
    instance.position();
  };
  // As a database's instance starts: opened (a synchronous instance has when reopen returns;
  // a failure throws here), then its limits.
  const open = () => {
    void instance.reopen(bridge, opts);
    run(OP_LIMITS, limits);
  };
  open();
  for (const step of HOST_STEPS) {
    if (step === "reopen") open();
    else run(step[0], new TextEncoder().encode(JSON.stringify(step[1])));
  }
  // The database above keeps its pages as rows (a new database's); one an earlier release
  // wrote keeps them under kv keys until its next import. That page read's own path too.
  const key = "p:0000000002";
  storage.data.set(key, new Uint8Array(64).buffer);
  const request = new Uint8Array(15 + key.length);
  const dv = new DataView(request.buffer);
  dv.setUint16(0, 128, true);
  dv.setUint16(2, key.length, true);
  dv.setUint32(4, 1 << 20, true);
  dv.setUint32(8, 1, true);
  dv.setUint16(13, key.length, true);
  new TextEncoder().encodeInto(key, request.subarray(15));
  for (let i = 0; i < KEY_READS; i++) {
    if (bridge.readSync(request)[0] !== 1) throw new Error("host warm-up: the kv page read");
  }
  return { requests, reads: storage.reads, writes: storage.writes, page_row_reads: storage.pageRowReads, key_reads: storage.keyReads };
}

/**
 * Makes V8 collect its young generation now, at start-up, rather than during the first
 * requests: what the warm-up and the spare instances leave alive (about 1.5 MB: the instances'
 * objects, the module's functions and their feedback) sits in the young generation, and the
 * first two scavenges copy all of it (the second promotes it). With workerd's --trace-gc they
 * took 1.2-1.9 ms each inside the first requests after the warm-up, about 3 ms of a cold
 * object's first query (bench W4), and none when the warm-up was off. V8 offers no call to
 * collect (no --expose-gc on Cloudflare), so this allocates short-lived arrays, a few MB, past
 * the young generation's size at start-up (1-2 MB semi-spaces): the scavenges it causes find
 * almost nothing dead to skip and promote the rest. Costs about 2 ms at start-up.
 * Returns the bytes allocated (about).
 */
export function settleYoungGeneration(): number {
  const ring: unknown[] = new Array(64);
  const arrays = 2000;
  // Stored, so that no compiler can prove the arrays unused and skip them.
  for (let i = 0; i < arrays; i++) ring[i & 63] = new Array(512);
  return ring.length === 64 ? arrays * 512 * 4 : 0;
}
