// W4's cold start in Node, step by step, with the same glue as the Durable Object
// (worker/src); Node's clock advances during synchronous code, workerd's does not.
// `setup <file> <wasm>` builds the W4 database (MB, default 50) into a MemoryStorage and writes
// it (v8.serialize); `run <file> <wasm>` in a fresh process: the module-scope warm-up and
// spare, a first object (SELECT 1 on an empty database, on the spare), a cold object over the
// stored database (each step timed), then N (15) more cold objects on new instances and N on
// one instance opened again: the median of each step (what is per instance, what per module).
//
//   node -e 'require("esbuild").buildSync({entryPoints: ["bench/tools/cold.ts"], bundle: true,
//     format: "esm", platform: "node", outfile: "bench/dist/cold.mjs"})'   (from worker/)
//   node bench/dist/cold.mjs setup /tmp/w4.bin target/wasm/dosql.wasm
//   node bench/dist/cold.mjs run /tmp/w4.bin target/wasm/dosql.wasm
import { readFileSync, writeFileSync } from "node:fs";
import { deserialize, serialize } from "node:v8";
import { OP_LIMITS, OP_QUERY } from "../../worker/src/constants";
import { DosqlInstance } from "../../worker/src/dosql";
import { KvBridge } from "../../worker/src/kv";
import { warmUp } from "../../worker/src/warmup";
import { MemoryStorage } from "../../worker/src/memory-storage";
// @ts-expect-error plain JS module
import * as W from "../workloads.mjs";

const [mode, file, wasmPath] = process.argv.slice(2);
const t0 = performance.now();
const module = new (WebAssembly.Module as unknown as new (b: Uint8Array) => WebAssembly.Module)(readFileSync(wasmPath));
const tCompile = performance.now() - t0;
const enc = new TextEncoder();
const opts = { newPageSize: 0, cachePages: 16, readAhead: 0, maxMemoryBytes: 1 << 30 };
const limits = enc.encode(JSON.stringify({ share_bytes: 64 << 20, cache_pages: null, cache_bytes: 33554432, history: { enabled: null, retention_ms: null, max_bytes: null } }));
const mb = Number(process.env.MB ?? 50);
const { rows, bodies } = W.w4Setup(mb) as { rows: number; bodies: unknown[] };
const check = (r: { status: number; body: Uint8Array }) => {
  if (r.status !== 200) throw new Error(`${r.status} ${new TextDecoder().decode(r.body)}`);
  return r;
};
if (mode === "setup") {
  const st = new MemoryStorage();
  const db = DosqlInstance.createSync(module, new KvBridge(st, true), opts);
  check(db.execSync(OP_LIMITS, limits));
  for (const b of bodies) check(db.execSync(OP_QUERY, enc.encode(JSON.stringify(b))));
  writeFileSync(file, serialize({ data: st.data, row: st.row }));
} else {
  const saved = deserialize(readFileSync(file)) as { data: Map<string, unknown>; row: MemoryStorage["row"] };
  const T: Record<string, number> = { compile: tCompile };
  const time = <X>(k: string, f: () => X): X => {
    const s = performance.now();
    const x = f();
    T[k] = performance.now() - s;
    console.log(`---- ${k} ${T[k].toFixed(2)} ms`);
    return x;
  };
  const warm = time("warmup", () => warmUp(module, process.env.DOSQL_WARMUP));
  if (!warm.ran) console.log("warm-up off");
  const spare = time("spare", () => DosqlInstance.instantiateSync(module, { maxMemoryBytes: 1 << 30 }));
  const first = new KvBridge(new MemoryStorage(), true);
  time("first.open", () => spare.reopen(first, opts));
  time("first.limits", () => check(spare.execSync(OP_LIMITS, limits)));
  time("first.query", () => check(spare.execSync(OP_QUERY, enc.encode(JSON.stringify({ sql: "SELECT 1" })))));
  const st = new MemoryStorage();
  (st as unknown as { table: boolean }).table = true;
  for (const [k, v] of saved.data) st.data.set(k, v);
  st.row = saved.row;
  const kv = new KvBridge(st, true);
  const q = enc.encode(JSON.stringify(W.w4(rows)));
  const db = time("big.instantiate", () => DosqlInstance.instantiateSync(module, { maxMemoryBytes: 1 << 30 }));
  time("big.open", () => db.reopen(kv, opts));
  time("big.limits", () => check(db.execSync(OP_LIMITS, limits)));
  const r = time("big.query", () => check(db.execSync(OP_QUERY, q)));
  console.log(new TextDecoder().decode(r.body).slice(0, 200));
  const r2 = time("big.query2", () => check(db.execSync(OP_QUERY, q)));
  void r2;
  // More cold objects (each a new instance, as a cold object gets): the per-instance costs.
  const M: Record<string, number[]> = {};
  const n = Number(process.env.N ?? 15);
  for (let i = 0; i < n; i++) {
    const lap = <X>(k: string, f: () => X): X => {
      const s = performance.now();
      const x = f();
      (M[k] ??= []).push(performance.now() - s);
      return x;
    };
    const kvi = new KvBridge(st, true);
    const d = lap("instantiate", () => DosqlInstance.instantiateSync(module, { maxMemoryBytes: 1 << 30 }));
    lap("open", () => d.reopen(kvi, opts));
    lap("limits", () => check(d.execSync(OP_LIMITS, limits)));
    lap("query", () => check(d.execSync(OP_QUERY, q)));
  }
  // The same on one instance opened again on each database: what is per instance.
  const one = DosqlInstance.instantiateSync(module, { maxMemoryBytes: 1 << 30 });
  for (let i = 0; i < n; i++) {
    const lap = <X>(k: string, f: () => X): X => {
      const s = performance.now();
      const x = f();
      (M[k] ??= []).push(performance.now() - s);
      return x;
    };
    const kvi = new KvBridge(st, true);
    lap("reuse.open", () => one.reopen(kvi, opts));
    lap("reuse.limits", () => check(one.execSync(OP_LIMITS, limits)));
    lap("reuse.query", () => check(one.execSync(OP_QUERY, q)));
  }
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];
  console.log("per cold instance (median of", n, "):", JSON.stringify(Object.fromEntries(Object.entries(M).map(([k, v]) => [k, +med(v).toFixed(3)]))));
  console.log(JSON.stringify(Object.fromEntries(Object.entries(T).map(([k, v]) => [k, +v.toFixed(3)]))));
}
