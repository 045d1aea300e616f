// dosql's benchmark driver (scripts/bench.sh runs it after building): the native floor
// (crates/bench) and the wasm's inner time in Node (dist/inner.mjs) first, then ONE workerd
// process serving every contender as its own Durable Object class (config.capnp), the same
// requests to each, interleaved round-robin per repetition; W4 restarts workerd for cold
// starts. Writes bench/RESULTS.md (tables of medians with ratios, storage calls, targets,
// replication, the machine) and bench/dist/results.json (every sample).
//
// Environment: BENCH_QUICK=1 (3 runs, W6 3 s, W4 10 MB: about 3 minutes), BENCH_REPS,
// BENCH_W6_SECONDS, BENCH_W4_MB, BENCH_PORT (8788), BENCH_OUT (bench/RESULTS.md).
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, createWriteStream } from "node:fs";
import http from "node:http";
import os from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import * as W from "./workloads.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..");
const dist = join(here, "dist");
const env = process.env;
const QUICK = env.BENCH_QUICK === "1";
const REPS = Number(env.BENCH_REPS ?? (QUICK ? 3 : 5));
const W6_SECONDS = Number(env.BENCH_W6_SECONDS ?? (QUICK ? 3 : 10));
const W6_CLIENTS = 16;
const W4_MB = Number(env.BENCH_W4_MB ?? (QUICK ? 10 : 50));
const W4_SMALL_MB = 0.5;
const PORT = Number(env.BENCH_PORT ?? 8788);
const OUT = resolve(env.BENCH_OUT ?? join(here, "RESULTS.md"));
const WORKERD = join(root, "worker", "node_modules", ".bin", "workerd");
const DATA = join(dist, "data");
const started = Date.now();

// Contenders (bench/src/worker.ts). W1-W5 run on all; W6 on the default page size of each bridge.
const LABEL = {
  "dosql-jspi": "dosql JSPI 4K",
  "dosql-jspi-16k": "dosql JSPI 16K",
  "dosql-jspi-64k": "dosql JSPI 64K",
  "dosql-sync": "dosql sync 4K",
  "dosql-sync-16k": "dosql sync 16K",
  "dosql-sync-64k": "dosql sync 64K",
  "dosql-asyncify": "dosql asyncify 4K",
  "native-sql": "native ctx.storage.sql",
  "prior-art": "prior art wasm-sqlite",
};
const ALL = Object.keys(LABEL);
// W3 only: the storage writes of one dosql 4K commit with no SQL (bench/src/worker.ts probes).
const PROBES = {
  "probe-sync": "storage only: SQLite-backed, the head row through storage.sql",
  "probe-classic": "storage only: classic, one put()",
  "probe-sync-log-kv": "storage only: SQLite-backed, plus a 1.3 KiB log record by kv.put (what history writes)",
  "probe-sync-log-row": "storage only: SQLite-backed, plus the log record as a rowid-table row through storage.sql",
};
// W1-W3 only: dosql 4K with HISTORY=off; every contender above keeps history (the default).
const NO_HISTORY = { "dosql-jspi-no-history": "dosql JSPI 4K, history off", "dosql-sync-no-history": "dosql sync 4K, history off" };
const HISTORY_PAIRS = [["dosql-jspi", "dosql-jspi-no-history"], ["dosql-sync", "dosql-sync-no-history"]];
const W13 = [...ALL, ...Object.keys(NO_HISTORY)];
const W6_SET = ["dosql-jspi", "dosql-sync", "dosql-asyncify", "native-sql", "prior-art"];
// Replication (bench/README.md): dosql sync 4K databases with two read replicas each, objects
// of the same class (config.capnp binds DB_SQL to it), reached as the contender REPL. W3 runs on
// one ("w3r", with the others), after which the replicas must hold the primary's last commit
// within CATCH_UP_MS; W6 runs on another ("w6r", with the others) while a sampler measures, every
// LAG_EVERY_MS, how long a replica takes to show the newest write a client was answered for;
// then W6's reads alone go to a replica, to its primary and to native (W6_READS).
const REPL = "dosql-sync-2-replicas";
const REPL_LABEL = "dosql sync 4K, 2 read replicas attached";
const replicasOf = (db) => [`${db}-r1`, `${db}-r2`];
const CATCH_UP_MS = 5000;
const LAG_EVERY_MS = 50;
const W6_READS = [
  { id: "replica", c: REPL, db: replicasOf("w6r")[0], label: "dosql sync 4K, a read replica" },
  { id: "primary", c: REPL, db: "w6r", label: "dosql sync 4K, its primary" },
  { id: "native", c: "native-sql", db: "w6", label: "native ctx.storage.sql" },
];
const DOSQL = ALL.filter((c) => c.startsWith("dosql-"));
const PAGE_SIZE = (c) => (c.endsWith("-64k") ? 65536 : c.endsWith("-16k") ? 16384 : c.startsWith("dosql-") || c === "prior-art" ? 4096 : null);

const log = (...a) => console.log(`[bench ${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s]`, ...a);
const median = (xs) => {
  const a = xs.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
  if (a.length === 0) return NaN;
  const m = a.length >> 1;
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
};
const pct = (sorted, p) => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]);
const rotate = (xs, n) => xs.map((_, i) => xs[(i + n) % xs.length]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** An answer's x-dosql-bookmark (`<lineage>:<txid>`) as [lineage, txid]. */
const bookmark = (b) => {
  const [lineage, txid] = (b ?? ":").split(":");
  return [lineage, Number(txid)];
};

// ---------------------------------------------------------------- HTTP

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

function request(method, path, body) {
  return new Promise((resolveP, reject) => {
    const data = body === undefined ? undefined : Buffer.from(typeof body === "string" ? body : JSON.stringify(body));
    const t0 = performance.now();
    const req = http.request(
      { host: "127.0.0.1", port: PORT, path, method, agent, headers: data ? { "content-type": "application/json", "content-length": data.length } : {} },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolveP({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString("utf8"), ms: performance.now() - t0 }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    if (data) req.write(data);
    req.end();
  });
}

async function call(contender, db, route, body) {
  const r = await request(body === undefined ? "GET" : "POST", `/c/${contender}/${db}/${route}`, body);
  if (r.status !== 200) throw new Error(`${contender}/${db}/${route}: HTTP ${r.status}: ${r.text.slice(0, 400)}`);
  return r;
}
const query = (c, db, body) => call(c, db, "query", body);
const batch = (c, db, body) => call(c, db, "batch", body);
const stats = async (c, db) => JSON.parse((await call(c, db, "_storage_stats")).text);

function diffStats(a, b) {
  const d = {};
  for (const k of Object.keys(b)) if (typeof b[k] === "number" && typeof a[k] === "number") d[k] = b[k] - a[k];
  return d;
}

// ---------------------------------------------------------------- workerd

let workerd = null;

/** Starts workerd (with `extraEnv` for its fromEnvironment settings, e.g. DOSQL_WARMUP) and
 *  returns the milliseconds from the spawn to its first answer: its start-up, which includes
 *  evaluating the Worker's module scope (and so dosql's warm-up). */
async function startWorkerd(extraEnv = {}) {
  mkdirSync(DATA, { recursive: true });
  const logFile = createWriteStream(join(dist, "workerd.log"), { flags: "a" });
  const t0 = performance.now();
  const p = spawn(WORKERD, ["serve", join(here, "config.capnp"), "--socket-addr", `http=127.0.0.1:${PORT}`, "--directory-path", `bench-data=${DATA}`], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...extraEnv },
  });
  p.stdout.pipe(logFile);
  p.stderr.pipe(logFile);
  const exited = new Promise((r) => p.on("exit", (code, sig) => r({ code, sig })));
  workerd = { p, exited };
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const r = await request("GET", "/ping");
      if (r.status === 200) return performance.now() - t0;
    } catch {
      // not listening yet
    }
    if (p.exitCode !== null) throw new Error(`workerd exited (${p.exitCode}); see ${join(dist, "workerd.log")}`);
    if (Date.now() > deadline) throw new Error("workerd did not come up in 60 s");
    await sleep(5);
  }
}

async function stopWorkerd() {
  if (workerd === null) return;
  const { p, exited } = workerd;
  workerd = null;
  agent.destroy();
  if (p.exitCode === null) {
    p.kill("SIGTERM");
    const t = setTimeout(() => p.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(t);
  }
}

process.on("exit", () => workerd?.p.kill("SIGKILL"));
for (const s of ["SIGINT", "SIGTERM"]) process.on(s, () => { workerd?.p.kill("SIGKILL"); process.exit(130); });

// ---------------------------------------------------------------- results

const R = {
  config: { reps: REPS, quick: QUICK, w6_seconds: W6_SECONDS, w6_clients: W6_CLIENTS, w4_mb: W4_MB },
  floor: null, inner: null, sizes: {}, rtt_ms: [],
  t: {}, // t[workload][contender] = [samples]
  storage: {}, // storage[workload][contender] = storage counter differences of the last run
  extra: {}, // extra[workload][contender] = {...}
  // Replication: catch-up after W3 (ms, commits behind); lag under W6 (ms): the sampler's,
  // and per commit and replica from the commit logs; reads[W6_READS id] = {rps, p50, p99:
  // [samples], errors, forwarded}.
  repl: { catch_up_ms: [], behind: [], lag_ms: [], apply_lag_ms: [], reads: {} },
};
const push = (w, c, v) => (((R.t[w] ??= {})[c] ??= []).push(v));
const setStorage = (w, c, v) => ((R.storage[w] ??= {})[c] = v);
const setExtra = (w, c, v) => ((R.extra[w] ??= {})[c] = { ...((R.extra[w] ?? {})[c] ?? {}), ...v });

function writeBodies(dir) {
  mkdirSync(dir, { recursive: true });
  const put = (name, v) => writeFileSync(join(dir, name), JSON.stringify(v));
  put("w1.json", W.w1());
  put("w2.json", W.w2());
  put("w3-setup.json", W.w3Setup());
  put("w3.json", W.w3(0));
  put("w5-setup.json", W.w5Setup());
  put("w5.json", W.w5());
}

// ---------------------------------------------------------------- the workloads over HTTP

const W1_BODY = JSON.stringify(W.w1());
const W2_BODY = JSON.stringify(W.w2());

async function runW1W2(c, rep) {
  const db = `w1-${rep}`;
  await call(c, db, "ping"); // instantiate the object (and its wasm) outside the timing
  const s0 = await stats(c, db);
  const r1 = await batch(c, db, W1_BODY);
  const s1 = await stats(c, db);
  const r2 = await batch(c, db, W2_BODY);
  const s2 = await stats(c, db);
  const n = JSON.parse(r2.text).results.length;
  if (n !== W.W2_SELECTS) throw new Error(`${c}: W2 answered ${n} results`);
  return { w1: r1.ms, w2: r2.ms, s1: diffStats(s0, s1), s2: diffStats(s1, s2), meta1: JSON.parse(r1.text).meta };
}

async function runW3(c, rep) {
  const db = c === REPL ? "w3r" : "w3";
  const bodies = W.w3(rep).map((b) => JSON.stringify(b));
  const s0 = await stats(c, db);
  let pagesWritten = 0;
  const t0 = performance.now();
  for (const b of bodies) {
    const r = await query(c, db, b);
    if (c.startsWith("dosql-")) pagesWritten += JSON.parse(r.text).meta.pages_written;
  }
  const ms = performance.now() - t0;
  const s1 = await stats(c, db);
  const caughtUp = c === REPL ? await catchUp(db, t0 + ms) : null;
  return { rps: (bodies.length / ms) * 1000, ms, s: diffStats(s0, s1), pagesWritten, caughtUp };
}

/** Attaches replicasOf(db) to `db` as its read replicas (`POST replicas` answers 201). */
async function attachReplicas(db) {
  for (const name of replicasOf(db)) {
    const r = await request("POST", `/c/${REPL}/${db}/replicas`, { name });
    if (r.status !== 201) throw new Error(`${db}: attaching ${name}: HTTP ${r.status}: ${r.text.slice(0, 400)}`);
  }
}

/** `db`'s last commit: {txid, checksum, ...} (history?limit=1). */
const lastCommit = async (db) => JSON.parse((await call(REPL, db, "history?limit=1")).text);

/** Polls the replicas of `db` (history?limit=1) until each holds the primary's txid and
 *  checksum; returns the ms from `since` (the last write's answer) to then, and how many
 *  commits behind the furthest replica was at the first look. Fails past CATCH_UP_MS. */
async function catchUp(db, since) {
  const want = await lastCommit(db);
  let behind = null;
  for (;;) {
    const have = await Promise.all(replicasOf(db).map(lastCommit));
    behind ??= Math.max(...have.map((h) => want.txid - h.txid));
    if (want.checksum !== null && have.every((h) => h.txid === want.txid && h.checksum === want.checksum)) return { ms: performance.now() - since, behind };
    if (performance.now() - since > CATCH_UP_MS) {
      const status = await Promise.all(replicasOf(db).map(async (n) => JSON.parse((await call(REPL, n, "stats")).text).replication));
      throw new Error(`the replicas of ${db} do not hold its txid ${want.txid} (checksum ${want.checksum}) ${CATCH_UP_MS} ms after the last write: ${JSON.stringify(status)}`);
    }
    await sleep(2);
  }
}

const W5_BODY = JSON.stringify(W.w5());
async function runW5(c) {
  const s0 = await stats(c, "w5");
  const r = await query(c, "w5", W5_BODY);
  const s1 = await stats(c, "w5");
  const j = JSON.parse(r.text);
  const rows = (Array.isArray(j) ? j : j.rows).length; // the prior art answers a bare array of row objects
  if (rows !== 100) throw new Error(`${c}: W5 answered ${rows} rows`);
  return { ms: r.ms, s: diffStats(s0, s1) };
}

/** W6_CLIENTS clients, each sending `next(rand)` ({write, body}) to `path` for `seconds`, the
 *  next request when the last is answered; `seen(answer, write)`, when given, sees each answer. */
async function drive(path, seconds, seed, next, seen) {
  const lat = [];
  let reads = 0;
  let writes = 0;
  let errors = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  await Promise.all(Array.from({ length: W6_CLIENTS }, async (_, i) => {
    const rand = W.prng(seed * 1000 + i);
    while (performance.now() < end) {
      const { write, body } = next(rand);
      const r = await request("POST", path, body);
      if (r.status !== 200) errors++;
      lat.push(r.ms);
      if (write) writes++;
      else reads++;
      seen?.(r, write);
    }
  }));
  const elapsed = performance.now() - t0;
  lat.sort((a, b) => a - b);
  return { rps: (lat.length / elapsed) * 1000, p50: pct(lat, 50), p99: pct(lat, 99), reads, writes, errors };
}

/** `db`'s commits after txid `from` (its history, newest first, by pages): txid → timestamp_ms. */
async function commitTimes(db, from) {
  const times = new Map();
  for (let before = ""; ; ) {
    const { commits } = JSON.parse((await call(REPL, db, `history?limit=1000${before}`)).text);
    for (const c of commits) if (c.txid > from) times.set(c.txid, c.timestamp_ms);
    if (commits.length < 1000 || commits.at(-1).txid <= from + 1) return times;
    before = `&before=${commits.at(-1).txid}`;
  }
}

/** For every commit of `db` after txid `from` and each replica: when the replica applied it
 *  minus when the primary made it, in ms (both commit logs' timestamp_ms: one workerd, one
 *  clock). */
async function applyLags(db, from) {
  const made = await commitTimes(db, from);
  const lags = [];
  for (const r of replicasOf(db)) for (const [txid, at] of await commitTimes(r, from)) lags.push(at - made.get(txid));
  return lags;
}

async function runW6(c, seconds, seed) {
  const db = c === REPL ? "w6r" : "w6";
  const from = c === REPL ? (await lastCommit(db)).txid : 0;
  const s0 = await stats(c, db);
  // With replicas: the newest commit a client was answered for, and when (for sampleLag).
  const acked = { lineage: "", txid: 0, at: 0 };
  const seen = (r, write) => {
    const [lineage, txid] = bookmark(r.headers["x-dosql-bookmark"]);
    if (write && r.status === 200 && txid > acked.txid) Object.assign(acked, { lineage, txid, at: performance.now() });
  };
  const [r, lags] = await Promise.all([
    drive(`/c/${c}/${db}/query`, seconds, seed, W.w6Request, c === REPL ? seen : undefined),
    c === REPL ? sampleLag(db, seconds, acked) : [],
  ]);
  const s1 = await stats(c, db);
  if (c !== REPL) return { ...r, lags, applyLags: [], s: diffStats(s0, s1) };
  await catchUp(db, performance.now());
  return { ...r, lags, applyLags: await applyLags(db, from), s: diffStats(s0, s1) };
}

/** Replication lag under load: every LAG_EVERY_MS, the newest commit a client was answered for
 *  (`acked`), then reads on a replica (the two in turn) until one is answered from that commit
 *  or a later one; a sample is the time from the writer's answer to that read's. */
async function sampleLag(db, seconds, acked) {
  const lags = [];
  const probe = JSON.stringify({ sql: "SELECT 1" });
  const end = performance.now() + seconds * 1000;
  for (let i = 0; performance.now() < end; i++) {
    await sleep(LAG_EVERY_MS);
    const { lineage, txid, at } = acked;
    if (txid === 0) continue;
    const path = `/c/${REPL}/${replicasOf(db)[i % 2]}/query`;
    for (;;) {
      const r = await request("POST", path, probe);
      if (r.status !== 200 || r.headers["x-dosql-forwarded-to"] !== undefined) throw new Error(`${path}: not answered by the replica: HTTP ${r.status}: ${r.text.slice(0, 400)}`);
      const [l, t] = bookmark(r.headers["x-dosql-bookmark"]);
      if (l === lineage && t >= txid) {
        lags.push(performance.now() - at);
        break;
      }
      if (performance.now() - at > CATCH_UP_MS) throw new Error(`${path}: at ${r.headers["x-dosql-bookmark"]}, ${CATCH_UP_MS} ms after ${lineage}:${txid} was answered`);
    }
  }
  return lags;
}

/** W6's reads alone on `t` (W6_READS); answers a replica forwarded to its primary are counted. */
async function runReads(t, seconds, seed) {
  let forwarded = 0;
  const r = await drive(`/c/${t.c}/${t.db}/query`, seconds, seed, (rand) => ({ write: false, body: W.w6Read(rand) }), (a) => {
    if (a.headers["x-dosql-forwarded-to"] !== undefined) forwarded++;
  });
  return { ...r, forwarded };
}

async function setup(c, db, bodies) {
  for (const b of bodies) await query(c, db, b);
}

// ---------------------------------------------------------------- phases

function floors(bodiesDir) {
  const bin = join(root, "target", "release", "dosql-bench");
  log("native floor: crates/bench (rusqlite; dosql VFS and API on MemStore)");
  // In-process runs are cheap: more of them, for steadier medians on a busy machine.
  const reps = String(2 * REPS + 1);
  R.floor = JSON.parse(execFileSync(bin, ["--bodies", bodiesDir, "--reps", reps, "--json"], { encoding: "utf8" }));
  log("wasm inner time in Node: dist/inner.mjs");
  R.inner = JSON.parse(execFileSync(process.execPath, [join(dist, "inner.mjs"), "--bodies", bodiesDir, "--dosql", join(dist, "dosql.wasm"), "--asyncify", join(dist, "dosql-asyncify.wasm"), "--reps", reps], { encoding: "utf8", maxBuffer: 64 << 20 }));
}

function sizes() {
  for (const [name, file] of [
    ["dosql (default build: JSPI and sync)", join(dist, "dosql.wasm")],
    ["dosql asyncify (wasm-opt --asyncify -O2)", join(dist, "dosql-asyncify.wasm")],
    ["prior art wasm-sqlite 0.1.1", join(dist, "wasm_sqlite.wasm")],
  ]) {
    const b = readFileSync(file);
    R.sizes[name] = { raw: b.length, gzip: gzipSync(b, { level: 9 }).length };
  }
  const secs = join(dist, "asyncify-build-seconds");
  if (existsSync(secs)) R.asyncify_build_seconds = Number(readFileSync(secs, "utf8"));
}

async function main() {
  rmSync(DATA, { recursive: true, force: true });
  const bodiesDir = join(dist, "bodies");
  writeBodies(bodiesDir);
  sizes();
  floors(bodiesDir);

  log(`workerd: one process, ${ALL.length} contenders; ${REPS} runs after a warm-up, interleaved`);
  await startWorkerd();

  // Round-trip of an empty request through the Worker to a Durable Object and back.
  for (let i = 0; i < 300; i++) await call("native-sql", "rtt", "ping");
  for (let i = 0; i < 500; i++) R.rtt_ms.push((await call("native-sql", "rtt", "ping")).ms);

  log("setup: W3, W5 (100,000 rows), W6 tables on every contender");
  for (const c of Object.keys(PROBES)) await call(c, "w3", "ping");
  for (const c of ALL) {
    await setup(c, "w3", W.w3Setup());
    await setup(c, "w5", W.w5Setup());
    if (W6_SET.includes(c)) await setup(c, "w6", W.w6Setup());
  }
  for (const c of Object.keys(NO_HISTORY)) await setup(c, "w3", W.w3Setup());
  log(`setup: ${REPL_LABEL}: W3 and W6 databases, each with its replicas`);
  await setup(REPL, "w3r", W.w3Setup());
  await setup(REPL, "w6r", W.w6Setup());
  for (const db of ["w3r", "w6r"]) await attachReplicas(db);

  for (let rep = 0; rep <= REPS; rep++) {
    const order = rotate(ALL, rep);
    const tag = rep === 0 ? "warm-up" : `run ${rep}/${REPS}`;
    log(`${tag}: W1+W2, W3, W5`);
    for (const c of rotate(W13, rep)) {
      const r = await runW1W2(c, rep);
      if (rep === 0) continue;
      push("W1", c, r.w1);
      push("W2", c, r.w2);
      setStorage("W1", c, r.s1);
      setStorage("W2", c, r.s2);
    }
    for (const c of rotate([...W13, ...Object.keys(PROBES), REPL], rep)) {
      const r = await runW3(c, rep);
      if (rep === 0) continue;
      push("W3", c, r.rps);
      setStorage("W3", c, r.s);
      setExtra("W3", c, { pages_written: r.pagesWritten });
      if (r.caughtUp !== null) {
        R.repl.catch_up_ms.push(r.caughtUp.ms);
        R.repl.behind.push(r.caughtUp.behind);
      }
    }
    for (const c of order) {
      const r = await runW5(c);
      if (rep === 0) continue;
      push("W5", c, r.ms);
      setStorage("W5", c, r.s);
    }
  }

  for (let rep = 0; rep <= REPS; rep++) {
    const secs = rep === 0 ? Math.min(2, W6_SECONDS) : W6_SECONDS;
    log(`${rep === 0 ? "warm-up" : `run ${rep}/${REPS}`}: W6, ${W6_CLIENTS} clients x ${secs} s each; then its reads alone`);
    for (const c of rotate([...W6_SET, REPL], rep)) {
      const r = await runW6(c, secs, rep);
      if (rep === 0) continue;
      push("W6 req/s", c, r.rps);
      push("W6 p50", c, r.p50);
      push("W6 p99", c, r.p99);
      setStorage("W6", c, r.s);
      setExtra("W6", c, { reads: r.reads, writes: r.writes, errors: r.errors });
      R.repl.lag_ms.push(...r.lags);
      R.repl.apply_lag_ms.push(...r.applyLags);
    }
    for (const t of rotate(W6_READS, rep)) {
      const r = await runReads(t, secs, rep);
      if (rep === 0) continue;
      const s = (R.repl.reads[t.id] ??= { rps: [], p50: [], p99: [], errors: 0, forwarded: 0 });
      s.rps.push(r.rps);
      s.p50.push(r.p50);
      s.p99.push(r.p99);
      s.errors += r.errors;
      s.forwarded += r.forwarded;
    }
  }

  // W4: databases of W4_MB and W4_SMALL_MB, then cold starts (a fresh workerd each run).
  log(`W4 setup: ${W4_MB} MB and ${W4_SMALL_MB} MB databases on every contender`);
  const big = W.w4Setup(W4_MB);
  const small = W.w4Setup(W4_SMALL_MB);
  for (const c of ALL) {
    const t0 = performance.now();
    await setup(c, "w4big", big.bodies);
    await setup(c, "w4small", small.bodies);
    setExtra("W4", c, { setup_ms: performance.now() - t0 });
  }
  const bigQuery = JSON.stringify(W.w4(big.rows));
  const smallQuery = JSON.stringify(W.w4(small.rows));
  // Every cold start is measured after a restart of its own, with dosql's warm-up on (the
  // default) and off (DOSQL_WARMUP=off), in the same run: the start-up (spawn to first answer,
  // which includes the warm-up), then the contender's first request (SELECT 1 on an empty
  // database: the first use of its wasm module), then the first queries of cold objects.
  for (let rep = 0; rep <= REPS; rep++) {
    log(`${rep === 0 ? "warm-up" : `run ${rep}/${REPS}`}: W4 cold starts, a restart per contender, warm-up on and off`);
    for (const warm of rotate(["on", "off"], rep)) {
      const suffix = warm === "on" ? "" : " (no warm-up)";
      for (const c of rotate(ALL, rep)) {
        await stopWorkerd();
        const startMs = await startWorkerd({ DOSQL_WARMUP: warm });
        const first = await query(c, "w4first", { sql: "SELECT 1" });
        const r = await query(c, "w4big", bigQuery);
        const s = await stats(c, "w4big");
        const rs = await query(c, "w4small", smallQuery);
        const ss = await stats(c, "w4small");
        if (rep === 0) continue;
        push(`W4 start-up${suffix}`, c, startMs);
        push(`W4 first${suffix}`, c, first.ms);
        push(`W4${suffix}`, c, r.ms);
        push(`W4 small${suffix}`, c, rs.ms);
        if (warm === "on") {
          setStorage("W4", c, s);
          setStorage("W4 small", c, ss);
        }
      }
    }
  }
  await stopWorkerd();
  R.seconds = (Date.now() - started) / 1000;
  writeFileSync(join(dist, "results.json"), JSON.stringify(R, null, 1));
  writeFileSync(OUT, report());
  log(`wrote ${relative(root, OUT)} and ${relative(root, join(dist, "results.json"))}`);
}

// ---------------------------------------------------------------- the report

const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "–");
const fx = (x) => (Number.isFinite(x) ? `${x >= 10 ? x.toFixed(0) : x.toFixed(2)}x` : "–");
const med = (w, c) => median(R.t[w]?.[c] ?? []);
const kb = (n) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(0)} KiB`);
const BASE = "native-sql";

function machine() {
  const sh = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { encoding: "utf8" }).trim();
    } catch {
      return "?";
    }
  };
  const cpus = os.cpus();
  return [
    `- date: ${new Date().toISOString()}; total run time ${f(R.seconds, 0)} s${QUICK ? " (BENCH_QUICK=1)" : ""}`,
    `- nproc ${cpus.length}; CPU ${cpus[0]?.model ?? "?"}; memory ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB; load average at the end ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`,
    `- ${os.type()} ${os.release()}; node ${process.version}; workerd ${sh(WORKERD, ["--version"])}`,
    `- git ${sh("git", ["-C", root, "rev-parse", "--short", "HEAD"])}${sh("git", ["-C", root, "status", "--porcelain"]) === "" ? "" : " (with uncommitted changes)"}`,
    `- ${REPS} runs after a warm-up; W1-W5 contenders interleaved round-robin within each run (the starting contender rotates); W6 ${W6_CLIENTS} clients x ${W6_SECONDS} s per contender per run; W4 ${W4_MB} MB, one workerd restart per contender per run, with dosql's warm-up on and off`,
  ].join("\n");
}

/**
 * Whether W3's commits each wrote exactly the dirty pages plus the head in one atomic write:
 * one put() per commit on classic storage; on SQLite-backed storage (`dosql-sync*`) the head
 * row (storage.sql) and one kv.put() per page key, which PageStorage issues in one synchronous
 * stretch (one implicit transaction): one call per key or row. The one-time pointer under
 * "meta" (a database's first head in format 4) is written by W3's setup, before the counters
 * are read, so it does not enter the difference.
 */
function commitShape(c, s, pagesWritten) {
  // Small commits carry their pages inside meta (worker/src/storage.ts, Meta.inline); a page
  // leaving meta is put under its key by a later commit that did not change it. With history
  // (every contender but the HISTORY=off ones) each commit also puts its log record, one key
  // for a commit this small (crates/layout/src/log.rs).
  const log = c in NO_HISTORY ? 0 : s.commits;
  if (s.put_keys - (s.evicted_pages ?? 0) + (s.meta_pages ?? 0) !== pagesWritten + s.commits + log) return false;
  return c.startsWith("dosql-sync") ? s.put_calls === s.put_keys : s.put_calls === s.commits;
}

function report() {
  const cols = ALL;
  const head = (names) => `| | ${names.map((c) => LABEL[c]).join(" | ")} |\n|---|${names.map(() => "---:").join("|")}|`;
  const row = (name, names, cell) => `| ${name} | ${names.map(cell).join(" | ")} |`;
  const vsBase = (w, c, higherBetter) => {
    const b = med(w, BASE);
    const v = med(w, c);
    return higherBetter ? v / b : v / b;
  };
  const timeCell = (w) => (c) => `${f(med(w, c), w === "W4" || w === "W4 small" ? 1 : 1)} (${fx(vsBase(w, c))})`;
  const rateCell = (w) => (c) => `${f(med(w, c), 0)} (${fx(vsBase(w, c, true))})`;
  const floor = (e, w) => median(R.floor?.times_ms?.[e]?.[w] ?? []);
  const inner = (e, w) => median(R.inner?.times_ms?.[e]?.[w] ?? []);
  const st = (w, c) => R.storage[w]?.[c];
  const yes = (ok) => (ok ? "**met**" : "**not met**");
  const replW3 = med("W3", REPL) / med("W3", BASE);

  const lines = [];
  lines.push("# dosql benchmark results", "");
  lines.push("Written by `make bench` (scripts/bench.sh → bench/run.mjs); do not edit by hand. See bench/README.md for what each contender and workload is, and the analysis.", "");
  lines.push("## Machine", "", machine(), "");

  lines.push("## Durable Objects over HTTP (one workerd, same requests to every contender)", "");
  lines.push(`Medians. Times in ms measured by the client around the HTTP request (Worker → Durable Object → back); in parentheses the ratio to ${LABEL[BASE]} (for times lower is better, for req/s higher is better). Empty request round trip (Worker → DO → back): median ${f(median(R.rtt_ms), 2)} ms.`, "");
  lines.push(head(cols));
  lines.push(row("W1 create + 10,000 inserts, 1 tx (ms)", cols, timeCell("W1")));
  lines.push(row("W2 1,000 point selects, 1 request (ms)", cols, timeCell("W2")));
  lines.push(row("W3 1,000 sequential 1-row insert requests (req/s)", cols, rateCell("W3")));
  lines.push(row(`W4 cold start: first point query, ${W4_MB} MB db (ms)`, cols, timeCell("W4")));
  lines.push(row(`W4 ... without the warm-up (DOSQL_WARMUP=off)`, cols, timeCell("W4 (no warm-up)")));
  lines.push(row(`W4 cold start: first point query, ${W4_SMALL_MB} MB db (ms)`, cols, timeCell("W4 small")));
  lines.push(row(`W4 ... without the warm-up`, cols, timeCell("W4 small (no warm-up)")));
  lines.push(row("W4 first request of the class after a restart (SELECT 1, empty db; ms)", cols, timeCell("W4 first")));
  lines.push(row(`W4 ... without the warm-up`, cols, timeCell("W4 first (no warm-up)")));
  lines.push(row("W4 workerd start-up: spawn to first answer, warm-up included (ms)", cols, timeCell("W4 start-up")));
  lines.push(row(`W4 ... without the warm-up`, cols, timeCell("W4 start-up (no warm-up)")));
  lines.push(row("W5 GROUP BY over 100,000 rows (ms)", cols, timeCell("W5")));
  lines.push(row(`W6 ${W6_CLIENTS} clients, 75% reads / 25% writes (req/s)`, cols, (c) => (W6_SET.includes(c) ? rateCell("W6 req/s")(c) : "")));
  lines.push(row("W6 latency p50 / p99 (ms)", cols, (c) => (W6_SET.includes(c) ? `${f(med("W6 p50", c), 2)} / ${f(med("W6 p99", c), 2)}` : "")));
  lines.push("");

  lines.push(`W3's storage floor: the same 1,000 requests to objects that only store what one dosql 4K commit stores (no SQL, no wasm): ${Object.entries(PROBES).map(([c, l]) => `${l}: ${f(med("W3", c), 0)} req/s (${fx(med("W3", c) / med("W3", BASE))})`).join("; ")}.`, "");
  lines.push("### History: what the commit log costs (dosql 4K, history on by default, against HISTORY=off)", "");
  lines.push("Every dosql contender above keeps history (the production default: each commit also writes the pre-images of the pages it overwrites, crates/layout/src/log.rs). The same 4K classes with HISTORY=off, interleaved with the rest:", "");
  lines.push("| | W1 (ms) | W2 (ms) | W3 (req/s) | W3 vs native | W3 bytes written per commit |", "|---|---:|---:|---:|---:|---:|");
  for (const [on, off] of HISTORY_PAIRS) {
    for (const c of [on, off]) {
      const s3 = st("W3", c);
      const per = s3 && s3.commits && s3.bytes_written !== undefined ? `${(s3.bytes_written / s3.commits / 1024).toFixed(2)} KiB` : "–";
      lines.push(`| ${LABEL[c] ?? NO_HISTORY[c]}${c === on ? " (history on)" : ""} | ${f(med("W1", c))} | ${f(med("W2", c))} | ${f(med("W3", c), 0)} | ${fx(med("W3", c) / med("W3", BASE))} | ${per} |`);
    }
    lines.push(`| on / off | ${fx(med("W1", on) / med("W1", off))} | ${fx(med("W2", on) / med("W2", off))} | ${fx(med("W3", on) / med("W3", off))} | | |`);
  }
  lines.push("");
  lines.push("### dosql against the prior art (@rkusa/wasm-sqlite 0.1.1): how many times faster", "");
  lines.push(head(DOSQL));
  for (const [w, name, hb] of [["W1", "W1", false], ["W2", "W2", false], ["W3", "W3", true], ["W4", "W4", false], ["W5", "W5", false], ["W6 req/s", "W6", true]]) {
    lines.push(row(name, DOSQL, (c) => {
      const v = med(w, c);
      const p = med(w, "prior-art");
      return fx(hb ? v / p : p / v);
    }));
  }
  lines.push("");

  lines.push("## Replication: dosql sync 4K with two read replicas", "");
  lines.push(`A primary and its two read replicas are objects of one class (dosql sync 4K) in the same workerd process, on this machine's ${os.cpus().length} cores: the replicas' catch-up (the primary's pushes, at most one per DOSQL_REPLICA_PUSH_MS, 25 ms by default, each carrying the commits made since the last, applied in one request) competes with the primary and the clients for the same CPU, where on Cloudflare each object runs on its own. Replicas catch up by the primary's pushes alone (config.capnp: DOSQL_REPLICA_POLL_MS is a day). Medians of ${REPS} runs, interleaved with the other contenders; ratios to ${LABEL[BASE]} in the same run.`, "");
  const reads = (id, k) => median(R.repl.reads[id]?.[k] ?? []);
  lines.push("| | req/s | vs native | p50 / p99 (ms) |", "|---|---:|---:|---:|");
  for (const c of ["dosql-sync", REPL, BASE]) lines.push(`| W3 1,000 sequential 1-row inserts, ${c === REPL ? REPL_LABEL : LABEL[c]} | ${f(med("W3", c), 0)} | ${fx(med("W3", c) / med("W3", BASE))} | |`);
  for (const c of ["dosql-sync", REPL, BASE]) {
    lines.push(`| W6 ${W6_CLIENTS} clients, 75% reads / 25% writes, ${c === REPL ? `${REPL_LABEL} (the lag sampler's reads on the replicas run beside it)` : LABEL[c]} | ${f(med("W6 req/s", c), 0)} | ${fx(med("W6 req/s", c) / med("W6 req/s", BASE))} | ${f(med("W6 p50", c), 2)} / ${f(med("W6 p99", c), 2)} |`);
  }
  for (const t of W6_READS) {
    lines.push(`| W6's reads alone, ${W6_CLIENTS} clients, to ${t.label} | ${f(reads(t.id, "rps"), 0)} | ${fx(reads(t.id, "rps") / reads("native", "rps"))} | ${f(reads(t.id, "p50"), 2)} / ${f(reads(t.id, "p99"), 2)} |`);
  }
  lines.push("");
  const sorted = (xs) => [...xs].sort((a, b) => a - b);
  const lagRow = (name, xs) => `| ${name} | ${f(pct(xs, 50), 1)} | ${f(pct(xs, 99), 1)} | ${f(xs.at(-1), 1)} | ${xs.length} |`;
  const readNote = W6_READS.map((t) => {
    const r = R.repl.reads[t.id];
    return `${t.id}: req/s ${r?.rps.map((x) => x.toFixed(0)).join(" ") ?? "–"}, ${r?.errors ?? "–"} errors, ${r?.forwarded ?? "–"} forwarded`;
  }).join("; ");
  lines.push(`- Catch-up after W3: the replicas held the primary's txid and checksum (\`history?limit=1\`, polled every ~2 ms) ${f(median(R.repl.catch_up_ms), 0)} ms after the last insert's answer (median; max ${f(Math.max(...R.repl.catch_up_ms), 0)}); at the first look the furthest replica was ${f(median(R.repl.behind), 0)} commits behind (median; max ${f(Math.max(...R.repl.behind), 0)}).`);
  lines.push(`- W6's reads alone, every run: ${readNote} (forwarded: answered by the primary instead of the replica).`);
  lines.push(`- Target: W3 on a primary with two replicas ≥ 0.75x native: ${fx(replW3)} → ${yes(replW3 >= 0.75)}`, "");
  lines.push(`Replication lag while W6's mixed load (${W6_CLIENTS} clients, 75/25) runs on the primary, every run. Per commit: for each commit of the run and each replica, when the replica applied it minus when the primary made it (the two commit logs' \`timestamp_ms\`, \`history\`: one workerd, one clock, 1 ms steps). Seen by a client: every ~${LAG_EVERY_MS} ms a sampler takes the newest commit a client was answered for (its \`x-dosql-bookmark\`), then reads \`SELECT 1\` on a replica (the two in turn, back to back) until one is answered from that commit or a later one; a sample is the time from the writer's answer to that read's, so it includes at least one read's round trip, which waits behind the clients' requests like theirs (W6's latency above). All of it in one process on ${os.cpus().length} cores: both include the catch-up's wait for CPU under the clients' load.`, "");
  lines.push("| lag under W6 (ms) | p50 | p99 | max | samples |", "|---|---:|---:|---:|---:|");
  lines.push(lagRow("per commit, from the commit logs (2 replicas)", sorted(R.repl.apply_lag_ms)));
  lines.push(lagRow("seen by a client (the sampler)", sorted(R.repl.lag_ms)));
  lines.push("");

  lines.push("## Storage calls per workload (last run)", "");
  lines.push("gets: get() calls (keys); puts: put() calls (keys), for `dosql sync` (SQLite-backed, synchronous `kv.put`) every key is its own call; written/read: value bytes. `native ctx.storage.sql` has no page store to count: its rows read / written as SQLite reports them.", "");
  const storageCell = (w) => (c) => {
    const s = st(w, c);
    if (s === undefined) return "";
    if (c === BASE) return `rows read ${s.rows_read ?? "–"}, written ${s.rows_written ?? "–"}`;
    return `gets ${s.get_calls} (${s.get_keys}); puts ${s.put_calls} (${s.put_keys}); written ${kb(s.bytes_written ?? 0)}; read ${kb(s.bytes_read ?? 0)}`;
  };
  lines.push(head(cols));
  for (const w of ["W1", "W2", "W3", "W4", "W4 small", "W5", "W6"]) lines.push(row(w, cols, storageCell(w)));
  lines.push("");

  // Commit shape: W3 is 1,000 commits; each should be ONE put of (dirty pages + meta).
  lines.push("### Commit shape (W3: 1,000 single-insert transactions)", "");
  lines.push("Classic storage: one put() per commit, the head under the key `meta`. SQLite-backed (`dosql sync`): the head as a row of a table written through `storage.sql`, and one synchronous kv.put() per page key, all issued in one synchronous stretch, which workerd applies as one transaction (\"keys put\" counts the head row as a key). Small commits carry their pages inside the head (one record); a page leaves it for its own key in a later commit that does not rewrite it, or when the head is over its budget.", "");
  lines.push("| | commits | put calls | keys put | dirty pages (wasm's count) | of them inside meta | pages moved out of meta | keys = dirty pages + meta + log record, in one write? |", "|---|---:|---:|---:|---:|---:|---:|---|");
  for (const c of [...DOSQL, ...Object.keys(NO_HISTORY)]) {
    const s = st("W3", c);
    const pw = R.extra.W3?.[c]?.pages_written;
    if (s === undefined) continue;
    lines.push(`| ${LABEL[c] ?? NO_HISTORY[c]} | ${s.commits} | ${s.put_calls} | ${s.put_keys} | ${pw} | ${s.meta_pages ?? 0} | ${s.evicted_pages ?? 0} | ${commitShape(c, s, pw) ? (c.startsWith("dosql-sync") ? "yes: one synchronous stretch per commit" : "yes: one put per commit") : "no"} |`);
  }
  lines.push("");

  lines.push("## Engine cost: where the time goes (ms, medians; W3 = all 1,000 requests)", "");
  lines.push("In-process rows run the same request bodies with no HTTP: `rusqlite` (native, in-memory database, cached statements, rows to JSON), `dosql-vfs` (the same on dosql's VFS over the in-memory MemStore), `dosql-api` (dosql's JSON API on the VFS: the code the wasm runs), `wasm` (dosql.wasm in Node with the same JS glue as the DO, over an in-memory page map; workerd's clock does not advance while code runs, so wasm time is measured in Node, same V8). The DO rows are the HTTP numbers above.", "");
  lines.push("| | W1 | W2 | W3 | W5 |", "|---|---:|---:|---:|---:|");
  const fr = (label, get) => lines.push(`| ${label} | ${["W1", "W2", "W3", "W5"].map((w) => f(get(w), 2)).join(" | ")} |`);
  for (const e of ["rusqlite", "dosql-vfs-4k", "dosql-api-4k", "dosql-api-16k", "dosql-api-64k"]) fr(`native ${e}`, (w) => floor(e, w));
  for (const e of ["wasm-sync-4k", "wasm-sync-16k", "wasm-sync-64k", "wasm-asyncify-4k"]) fr(`${e} (Node)`, (w) => inner(e, w));
  for (const c of ["dosql-sync", "dosql-jspi", "dosql-asyncify", "native-sql"]) {
    fr(`DO ${LABEL[c]} (HTTP)`, (w) => (w === "W3" ? 1000 / (med("W3", c) / 1000) : med(w, c)));
  }
  lines.push("");
  lines.push("| ratio | W1 | W2 | W5 |", "|---|---:|---:|---:|");
  const ratio = (label, a, b) => lines.push(`| ${label} | ${["W1", "W2", "W5"].map((w) => fx(a(w) / b(w))).join(" | ")} |`);
  ratio("wasm (sync, 4K) / native rusqlite", (w) => inner("wasm-sync-4k", w), (w) => floor("rusqlite", w));
  ratio("wasm (sync, 4K) / native dosql-api (the wasm cost alone)", (w) => inner("wasm-sync-4k", w), (w) => floor("dosql-api-4k", w));
  ratio("native dosql-api / rusqlite (the JSON API + VFS cost)", (w) => floor("dosql-api-4k", w), (w) => floor("rusqlite", w));
  ratio("wasm asyncify / wasm sync (asyncify's instrumentation)", (w) => inner("wasm-asyncify-4k", w), (w) => inner("wasm-sync-4k", w));
  lines.push("");

  lines.push("## Wasm module sizes", "", "| module | raw | gzip -9 |", "|---|---:|---:|");
  for (const [name, s] of Object.entries(R.sizes)) lines.push(`| ${name} | ${(s.raw / 1e6).toFixed(2)} MB | ${(s.gzip / 1e6).toFixed(2)} MB |`);
  if (R.asyncify_build_seconds) lines.push("", `The asyncify transform took ${f(R.asyncify_build_seconds, 0)} s (cached by input hash in bench/dist).`);
  lines.push("");

  lines.push("## Targets", "");
  const d = "dosql-jspi";
  const ds = "dosql-sync";
  const tgt = [];
  for (const c of [d, ds]) {
    tgt.push(`- W1 ${LABEL[c]} ≤ 1.0x native: ${fx(med("W1", c) / med("W1", BASE))} → ${yes(med("W1", c) <= med("W1", BASE))}; ≥ 5x faster than the prior art: ${fx(med("W1", "prior-art") / med("W1", c))} → ${yes(med("W1", "prior-art") / med("W1", c) >= 5)}`);
    tgt.push(`- W2 ${LABEL[c]} ≤ 1.0x native: ${fx(med("W2", c) / med("W2", BASE))} → ${yes(med("W2", c) <= med("W2", BASE))}; ≥ 5x faster than the prior art: ${fx(med("W2", "prior-art") / med("W2", c))} → ${yes(med("W2", "prior-art") / med("W2", c) >= 5)}`);
    tgt.push(`- W3 ${LABEL[c]} throughput ≥ 0.95x native: ${fx(med("W3", c) / med("W3", BASE))} → ${yes(med("W3", c) / med("W3", BASE) >= 0.95)}`);
  }
  for (const [on, off] of HISTORY_PAIRS) {
    const w3 = med("W3", on) / med("W3", BASE);
    const keep = med("W3", on) / med("W3", off);
    tgt.push(`- history on, ${LABEL[on]}: W3 ≥ 0.80x native: ${fx(w3)} → ${yes(w3 >= 0.8)}; within 10% of history off: ${fx(keep)} → ${yes(keep >= 0.9)}; W1 ≤ 0.50x native: ${fx(med("W1", on) / med("W1", BASE))} → ${yes(med("W1", on) / med("W1", BASE) <= 0.5)}`);
  }
  tgt.push(`- W3 ${REPL_LABEL} ≥ 0.75x native: ${fx(replW3)} → ${yes(replW3 >= 0.75)} (Replication, above)`);
  const w2reads = DOSQL.map((c) => `${LABEL[c]} ${st("W2", c)?.get_calls ?? "?"}`).join(", ");
  tgt.push(`- W2 warm, zero storage reads: ${w2reads} → ${yes(DOSQL.every((c) => st("W2", c)?.get_calls === 0))}`);
  const shapes = [...DOSQL, ...Object.keys(NO_HISTORY)].map((c) => {
    const s = st("W3", c);
    const pw = R.extra.W3?.[c]?.pages_written;
    return s !== undefined && commitShape(c, s, pw);
  });
  tgt.push(`- every commit one atomic write of exactly the dirty pages plus meta and its log record (W3, all dosql variants): ${yes(shapes.every(Boolean))}`);
  for (const w of ["W1", "W2", "W5"]) {
    const r = inner("wasm-sync-4k", w) / floor("rusqlite", w);
    tgt.push(`- engine cost ${w}: dosql wasm inner time / native rusqlite = ${fx(r)} → ${yes(r <= 2)}`);
  }
  const cold = DOSQL.map((c) => {
    const b = st("W4", c);
    const s = st("W4 small", c);
    return `${LABEL[c]} ${b?.get_keys ?? "?"} keys (${W4_MB} MB) vs ${s?.get_keys ?? "?"} (${W4_SMALL_MB} MB)`;
  }).join("; ");
  const prop = DOSQL.every((c) => (st("W4", c)?.get_keys ?? 1e9) <= (st("W4 small", c)?.get_keys ?? 0) + 3);
  tgt.push(`- W4 storage reads proportional to pages touched, not database size: ${cold} → ${yes(prop)}`);
  for (const c of [d, ds]) {
    const r = med("W4", c) / med("W4", BASE);
    tgt.push(`- W4 ${LABEL[c]} first query on the ${W4_MB} MB database ≤ 2x native (warm-up on): ${fx(r)} (off: ${fx(med("W4 (no warm-up)", c) / med("W4 (no warm-up)", BASE))}) → ${yes(r <= 2)}; the class's first request ≤ 15 ms: ${f(med("W4 first", c))} ms (off: ${f(med("W4 first (no warm-up)", c))}) → ${yes(med("W4 first", c) <= 15)}`);
  }
  tgt.push(`- W4 the warm-up's cost at start-up (spawn to first answer, medians over every restart): on ${f(median(Object.values(R.t["W4 start-up"] ?? {}).flat()))} ms, off ${f(median(Object.values(R.t["W4 start-up (no warm-up)"] ?? {}).flat()))} ms`);
  tgt.push(`- default wasm under 1 MiB gzipped: ${kb(Object.values(R.sizes)[0].gzip)} → ${yes(Object.values(R.sizes)[0].gzip < 1 << 20)}`);
  lines.push(...tgt, "");

  lines.push("## Page size (dosql, W1-W5 medians; ms, W3 req/s)", "");
  lines.push("| | W1 | W2 | W3 req/s | W4 cold (keys read) | W5 |", "|---|---:|---:|---:|---:|---:|");
  for (const c of DOSQL) {
    lines.push(`| ${LABEL[c]} | ${f(med("W1", c))} | ${f(med("W2", c))} | ${f(med("W3", c), 0)} | ${f(med("W4", c))} (${st("W4", c)?.get_keys ?? "–"}) | ${f(med("W5", c))} |`);
  }
  lines.push("");
  lines.push("## Every sample (Durable Objects over HTTP, in run order)", "");
  lines.push("Medians hide bimodal results: e.g. a contender that sometimes pays for a garbage collection or a storage flush inside its request. All of them:", "");
  const sampled = [...W13, ...Object.keys(PROBES), REPL];
  lines.push("| | " + sampled.map((c) => LABEL[c] ?? NO_HISTORY[c] ?? (c === REPL ? REPL_LABEL : c)).join(" | ") + " |", "|---|" + sampled.map(() => "---").join("|") + "|");
  for (const w of Object.keys(R.t)) {
    lines.push(`| ${w} | ${sampled.map((c) => (R.t[w][c] ?? []).map((x) => (x >= 100 ? x.toFixed(0) : x.toFixed(1))).join(" ")).join(" | ")} |`);
  }
  lines.push("", "bench/dist/results.json has these and the in-process samples.", "");
  return lines.join("\n");
}

main().catch(async (err) => {
  console.error(err);
  await stopWorkerd();
  process.exit(1);
});
