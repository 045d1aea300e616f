// A/B timing of dosql.wasm builds (bench/dist/inner-ab.mjs, built by bench/build.mjs): the
// same request bodies and JS glue as src/inner.ts, 4K pages, createSync only, but several
// modules in one Node process, interleaved per repetition (the starting build rotates), so a
// noisy machine slows every build alike. For build settings (compiler flags, SQLite options,
// wasm-opt), not for the published numbers (those are inner.ts's).
//
//   node bench/dist/inner-ab.mjs --bodies DIR [--reps 30] A=a.wasm B=b.wasm ...
//
// DIR holds the bodies bench/run.mjs writes (bench/dist/bodies after one `make bench`, or
// `node bench/dist/inner-ab.mjs --write-bodies DIR`). ONLY=W1,W5 runs a subset (W1 implies W2);
// WARM=1 adds W1-warm (below).
// Prints per build the medians (and minimum) in ms, whether its W1/W2/W5 answers (without
// meta) hash the same as the first build's, and the wasm memory in 64 KiB pages after W1+W2;
// then one JSON line with every sample.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { OP_BATCH, OP_QUERY } from "../../worker/src/constants";
import { DosqlInstance } from "../../worker/src/dosql";
import { KvBridge } from "../../worker/src/kv";
import { MemoryStorage } from "../../worker/src/memory-storage";

const args = process.argv.slice(2);
const arg = (name: string, fb?: string): string => { const i = args.indexOf(name); if (i >= 0) return args[i + 1]; if (fb === undefined) throw new Error(name); return fb; };
const writeTo = arg("--write-bodies", "");
if (writeTo !== "") {
  // The same files bench/run.mjs writes (its writeBodies), from the same workloads.
  const W = await import(new URL("../workloads.mjs", import.meta.url).href);
  mkdirSync(writeTo, { recursive: true });
  const put = (n: string, v: unknown) => writeFileSync(join(writeTo, n), JSON.stringify(v));
  put("w1.json", W.w1()); put("w2.json", W.w2()); put("w3-setup.json", W.w3Setup()); put("w3.json", W.w3(0));
  put("w5-setup.json", W.w5Setup()); put("w5.json", W.w5());
  process.exit(0);
}
const bodiesDir = arg("--bodies");
const reps = Number(arg("--reps", "15"));
// workers-types declares Module abstract (workerd refuses run-time compilation); Node compiles.
const compile = (path: string): WebAssembly.Module =>
  new (WebAssembly.Module as unknown as new (bytes: Uint8Array) => WebAssembly.Module)(readFileSync(path));
const builds = args
  .filter((a) => a.includes("=") && !a.startsWith("--"))
  .map((a) => {
    const [label, path] = a.split("=");
    return { label, mod: compile(path) };
  });
const enc = new TextEncoder();
const dec = new TextDecoder();
const file = (n: string) => readFileSync(join(bodiesDir, n));
const list = (n: string) => (JSON.parse(readFileSync(join(bodiesDir, n), "utf8")) as unknown[]).map((b) => enc.encode(JSON.stringify(b)));
const bodies = { w1: file("w1.json"), w2: file("w2.json"), w3Setup: list("w3-setup.json"), w3: list("w3.json"), w5Setup: list("w5-setup.json"), w5: file("w5.json") };
const opts = { newPageSize: 4096, cachePages: 4096, readAhead: 0, maxMemoryBytes: 1 << 30 };
const open = (m: WebAssembly.Module) => DosqlInstance.createSync(m, new KvBridge(new MemoryStorage(), true), opts);
const digests: Record<string, Record<string, string>> = {};
function run(label: string, w: string, db: DosqlInstance, op: number, body: Uint8Array): void {
  const r = db.execSync(op, body);
  if (r.status !== 200) throw new Error(`status ${r.status}: ${dec.decode(r.body).slice(0, 300)}`);
  if (w !== "" && digestOn) {
    const j = JSON.parse(dec.decode(r.body));
    const res = JSON.stringify(j.results ?? j.rows ?? j.result ?? Object.fromEntries(Object.entries(j).filter(([k]) => k !== "meta")));
    ((digests[label] ??= {})[w] = createHash("sha256").update(res).digest("hex").slice(0, 16));
  }
}
let digestOn = false;
// WARM=1: W1 a second time on the instance that just ran W1 and W2 (after DROP TABLE): what a
// fresh instance's memory growth (and first touch of it) costs W1.
const warm = process.env.WARM === "1";
const only = (process.env.ONLY ?? "W1,W2,W3,W5").split(",");
const mem: Record<string, number> = {};
const w5dbs = new Map<string, DosqlInstance>();
if (only.includes("W5")) for (const b of builds) { const db = open(b.mod); for (const s of bodies.w5Setup) run(b.label, "", db, OP_QUERY, s); w5dbs.set(b.label, db); }
const times: Record<string, Record<string, number[]>> = {};
for (let n = 0; n <= reps; n++) {
  for (let k = 0; k < builds.length; k++) {
    const b = builds[(k + n) % builds.length];
    const t: Record<string, number> = {};
    digestOn = n === 0;
    let db = open(b.mod);
    let t0 = 0;
    if (only.includes("W1") || only.includes("W2")) {
    t0 = performance.now(); run(b.label, "W1", db, OP_BATCH, bodies.w1); t.W1 = performance.now() - t0;
    t0 = performance.now(); run(b.label, "W2", db, OP_BATCH, bodies.w2); t.W2 = performance.now() - t0;
    mem[b.label] = db.memoryBytes() / 65536;
    if (warm) {
      // W1 again on the same instance: its memory is already grown and touched.
      run(b.label, "", db, OP_QUERY, enc.encode(JSON.stringify({ sql: "DROP TABLE w1" })));
      t0 = performance.now(); run(b.label, "", db, OP_BATCH, bodies.w1); t["W1-warm"] = performance.now() - t0;
    }
    }
    if (only.includes("W3")) {
    db = open(b.mod);
    for (const s of bodies.w3Setup) run(b.label, "", db, OP_QUERY, s);
    t0 = performance.now(); for (const s of bodies.w3) run(b.label, "", db, OP_QUERY, s); t.W3 = performance.now() - t0;
    }
    if (only.includes("W5")) {
    t0 = performance.now(); run(b.label, "W5", w5dbs.get(b.label) as DosqlInstance, OP_QUERY, bodies.w5); t.W5 = performance.now() - t0;
    }
    if (n === 0) continue;
    const e = (times[b.label] ??= {});
    for (const [w, ms] of Object.entries(t)) (e[w] ??= []).push(ms);
  }
}
const median = (xs: number[]) => { const a = [...xs].sort((x, y) => x - y); const m = a.length >> 1; return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2; };
const ref = builds[0].label;
console.log(`reps ${reps}; medians ms (min)`);
for (const b of builds) {
  const e = times[b.label];
  const same = JSON.stringify(digests[b.label]) === JSON.stringify(digests[ref]) ? "results==" + ref : "RESULTS DIFFER " + JSON.stringify(digests[b.label]);
  console.log(b.label.padEnd(14), Object.keys(e).map((w) => `${w} ${median(e[w]).toFixed(2)} (${Math.min(...e[w]).toFixed(2)})`).join("  "), same, ...(b.label in mem ? ["pages", mem[b.label]] : []));
}
console.log("JSON " + JSON.stringify({ reps, times }));
