// The wasm's inner time, in Node (bench/dist/inner.mjs, built by bench/build.mjs): the same
// request bodies through the same JS glue (worker/src/dosql.ts createSync, and this
// directory's asyncify runtime) over an in-memory page map, timed with performance.now().
// In workerd the clock does not advance while JavaScript or wasm runs (it moves only across
// I/O), so this is where wasm time can be measured; Node's V8 is the same engine.
//
//   node bench/dist/inner.mjs --bodies DIR --dosql dosql.wasm --asyncify dosql-asyncify.wasm [--reps 5]
// prints {"reps", "times_ms": {"<variant>": {"W1": [..], ...}}, "suspensions": {...}} as JSON.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { OP_BATCH, OP_QUERY } from "../../worker/src/constants";
import { DosqlInstance } from "../../worker/src/dosql";
import { KvBridge } from "../../worker/src/kv";
import { MemoryStorage } from "../../worker/src/memory-storage";
import { AsyncifyInstance } from "./asyncify";

/** SQLite-backed storage in memory, as the wasm reaches it (reads answer at once). */
const memoryStorage = (): KvBridge => new KvBridge(new MemoryStorage(), true);
/** Classic storage in memory: its reads go through the awaited path (asyncify suspends). */
const memoryClassic = (): KvBridge => new KvBridge(new MemoryStorage(), false);

interface Db {
  exec(op: number, body: Uint8Array): Promise<{ status: number; body: Uint8Array }>;
}

interface Variant {
  label: string;
  open(): Promise<Db>;
}

const args = process.argv.slice(2);
const arg = (name: string, fallback?: string): string => {
  const i = args.indexOf(name);
  if (i >= 0 && i + 1 < args.length) return args[i + 1];
  if (fallback === undefined) throw new Error(`${name} is required`);
  return fallback;
};
const bodiesDir = arg("--bodies");
const reps = Number(arg("--reps", "5"));
// workers-types declares Module abstract (workerd refuses run-time compilation); Node compiles.
const compile = (path: string): WebAssembly.Module =>
  new (WebAssembly.Module as unknown as new (bytes: Uint8Array) => WebAssembly.Module)(readFileSync(path));
const dosqlModule = compile(arg("--dosql"));
const asyncifyPath = arg("--asyncify", "");
const asyncifyModule = asyncifyPath === "" ? null : compile(asyncifyPath);

const enc = new TextEncoder();
const file = (name: string): Uint8Array => readFileSync(join(bodiesDir, name));
const list = (name: string): Uint8Array[] => (JSON.parse(readFileSync(join(bodiesDir, name), "utf8")) as unknown[]).map((b) => enc.encode(JSON.stringify(b)));
const bodies = {
  w1: file("w1.json"), w2: file("w2.json"), w3Setup: list("w3-setup.json"), w3: list("w3.json"),
  w5Setup: list("w5-setup.json"), w5: file("w5.json"),
};

const optsOf = (size: number) => ({ newPageSize: size, cachePages: 4096, readAhead: 0, maxMemoryBytes: 1 << 30 });
const variants: Variant[] = [];
for (const size of [4096, 16384, 65536]) {
  variants.push({
    label: `wasm-sync-${size / 1024}k`,
    open: async () => DosqlInstance.createSync(dosqlModule, memoryStorage(), optsOf(size)),
  });
}
const asyncifies: AsyncifyInstance[] = [];
if (asyncifyModule !== null) {
  variants.push({
    label: "wasm-asyncify-4k",
    open: async () => {
      const db = await AsyncifyInstance.create(asyncifyModule, memoryClassic(), optsOf(4096));
      asyncifies.push(db);
      return db;
    },
  });
}

async function run(db: Db, op: number, body: Uint8Array): Promise<void> {
  const r = await db.exec(op, body);
  if (r.status !== 200) throw new Error(`status ${r.status}: ${new TextDecoder().decode(r.body).slice(0, 300)}`);
}

const times: Record<string, Record<string, number[]>> = {};
const w5dbs = new Map<string, Db>();
for (const v of variants) {
  const db = await v.open();
  for (const b of bodies.w5Setup) await run(db, OP_QUERY, b);
  w5dbs.set(v.label, db);
}

for (let n = 0; n <= reps; n++) {
  for (const v of variants) {
    const t: Record<string, number> = {};
    let db = await v.open();
    let t0 = performance.now();
    await run(db, OP_BATCH, bodies.w1);
    t.W1 = performance.now() - t0;
    t0 = performance.now();
    await run(db, OP_BATCH, bodies.w2);
    t.W2 = performance.now() - t0;
    db = await v.open();
    for (const b of bodies.w3Setup) await run(db, OP_QUERY, b);
    t0 = performance.now();
    for (const b of bodies.w3) await run(db, OP_QUERY, b);
    t.W3 = performance.now() - t0;
    t0 = performance.now();
    await run(w5dbs.get(v.label) as Db, OP_QUERY, bodies.w5);
    t.W5 = performance.now() - t0;
    if (n === 0) continue; // warm-up
    const entry = (times[v.label] ??= {});
    for (const [w, ms] of Object.entries(t)) (entry[w] ??= []).push(ms);
  }
}
console.log(JSON.stringify({ reps, times_ms: times, asyncify_suspensions: asyncifies.reduce((s, d) => s + d.suspensions, 0) }));
