// W4 alone (bench/run.mjs's cold starts), for iterating on the cold start: builds the W4
// database once per contender (bench/dist/data, kept), then per rep and contender (rotating
// order) restarts workerd and times the start-up, the class's first request (SELECT 1 on an
// empty database), the first point query of the W4 database and of the 0.5 MB one (a second
// cold object). Besides wall time ("first", "big", "small"), "cpu ..." is the CPU workerd's
// main thread spent in the request (/proc/<pid>/task/<pid>/schedstat): on a busy machine
// it moves far less than wall time. Prints medians, each sample, ratios to the first
// contender. SEGS=<file> writes the W4 requests' CLOCK_MONOTONIC windows ([{n, s, e, reqs}])
// for bench/tools/perf-attr.py (run this under `perf record -k CLOCK_MONOTONIC -g`).
//
//   node bench/tools/w4-drive.mjs <reps> <contender>...    e.g. 7 native-sql dosql-sync
//
// Env: BENCH_PORT (8790 here), BENCH_W4_MB (50), DOSQL_WARMUP (on), BENCH_DATA (bench/dist/data), CONFIG (config.capnp:
// another config in bench/, e.g. with v8Flags). Needs `node bench/build.mjs` first.
import { spawn } from "node:child_process";
import http from "node:http";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as W from "../workloads.mjs";

const here = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const [reps, ...names] = process.argv.slice(2);
const PORT = Number(process.env.BENCH_PORT ?? 8790);
const MB = Number(process.env.BENCH_W4_MB ?? 50);
// BENCH_DATA: another data directory (an A/B of builds whose storage layouts differ).
const DATA = resolve(process.env.BENCH_DATA ?? join(here, "dist", "data"));
const WORKERD = join(here, "..", "worker", "node_modules", ".bin", "workerd");
let agent = new http.Agent({ keepAlive: true });

function request(method, path, body) {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const r = http.request({ host: "127.0.0.1", port: PORT, path, method, agent, headers: { "content-type": "application/json" } }, (resp) => {
      let text = "";
      resp.on("data", (c) => (text += c));
      resp.on("end", () => res({ status: resp.statusCode, text, ms: performance.now() - t0 }));
    });
    r.on("error", rej);
    r.end(body);
  });
}
/** CPU nanoseconds workerd's main thread ran (schedstat; noise-proof where wall time is not). */
const cpu = () => Number(readFileSync(`/proc/${proc.pid}/task/${proc.pid}/schedstat`, "utf8").split(" ")[0]);
async function q(c, db, body) {
  const c0 = cpu();
  const r = await request("POST", `/c/${c}/${db}/query`, typeof body === "string" ? body : JSON.stringify(body));
  if (r.status !== 200) throw new Error(`${c}/${db}: ${r.status} ${r.text.slice(0, 300)}`);
  r.cpu = (cpu() - c0) / 1e6;
  return r;
}
let proc = null;
async function start() {
  mkdirSync(DATA, { recursive: true });
  const t0 = performance.now();
  proc = spawn(WORKERD, ["serve", join(here, process.env.CONFIG ?? "config.capnp"), "--socket-addr", `http=127.0.0.1:${PORT}`, "--directory-path", `bench-data=${DATA}`], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, DOSQL_WARMUP: process.env.DOSQL_WARMUP ?? "on" },
  });
  for (;;) {
    try {
      if ((await request("GET", "/ping")).status === 200) return performance.now() - t0;
    } catch {}
    await new Promise((r) => setTimeout(r, 5));
  }
}
async function stop() {
  if (!proc) return;
  const p = proc;
  proc = null;
  agent.destroy();
  agent = new http.Agent({ keepAlive: true });
  const done = new Promise((r) => p.on("exit", r));
  p.kill("SIGTERM");
  await done;
}
process.on("exit", () => proc?.kill("SIGKILL"));

const big = W.w4Setup(MB);
const small = W.w4Setup(0.5);
const [BIG, SMALL] = [`w4d-big-${MB}`, "w4d-small"];
await start();
// Each database is built once and kept (bench/run.mjs's W4 uses other names).
const has = async (c, db) => (await request("POST", `/c/${c}/${db}/query`, JSON.stringify({ sql: "SELECT count(*) FROM w4" }))).status === 200;
for (const c of names) {
  if (!(await has(c, BIG))) for (const b of big.bodies) await q(c, BIG, b);
  if (!(await has(c, SMALL))) for (const b of small.bodies) await q(c, SMALL, b);
}
await stop();
const bigQ = JSON.stringify(W.w4(big.rows));
const smallQ = JSON.stringify(W.w4(small.rows));
const T = {};
const segs = [];
process.on("exit", () => process.env.SEGS && writeFileSync(process.env.SEGS, JSON.stringify(segs)));
const push = (k, c, v) => ((T[k] ??= {})[c] ??= []).push(v);
for (let rep = 0; rep <= Number(reps); rep++) {
  for (const c of names.map((_, i) => names[(i + rep) % names.length])) {
    const up = await start();
    const first = await q(c, "w4first", { sql: "SELECT 1" });
    const s0 = process.hrtime.bigint();
    const r = await q(c, BIG, bigQ);
    segs.push({ n: c, s: Number(s0), e: Number(process.hrtime.bigint()), reqs: 1, rep });
    const s = await q(c, SMALL, smallQ);
    await stop();
    if (rep === 0) continue;
    push("start-up", c, up);
    push("first", c, first.ms);
    push("big", c, r.ms);
    push("small", c, s.ms);
    push("cpu first", c, first.cpu);
    push("cpu big", c, r.cpu);
    push("cpu small", c, s.cpu);
  }
}
const med = (a) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
for (const [k, byC] of Object.entries(T)) {
  const base = med(byC[names[0]]);
  console.log(k.padEnd(9), names.map((c) => `${c} ${med(byC[c]).toFixed(2)} (${(med(byC[c]) / base).toFixed(2)}x) [${byC[c].map((x) => x.toFixed(1)).join(" ")}]`).join("  |  "));
}
// Each rep's ratio to the first contender, restarted next to it: steadier than the ratio of
// the medians when the machine's speed drifts between reps.
for (const k of ["big", "cpu big"].filter((k) => T[k] !== undefined)) {
  for (const c of names.slice(1)) {
    const r = T[k][c].map((x, i) => x / T[k][names[0]][i]);
    console.log(`${k} per rep: ${c}/${names[0]} median ${med(r).toFixed(2)}x [${r.map((x) => x.toFixed(2)).join(" ")}]`);
  }
}
