// W3 alone against a running benchmark workerd (bench/config.capnp on BENCH_PORT, default
// 8788), with each contender's time window recorded for `perf` attribution (perf-attr.py).
//
//   node bench/tools/w3-drive.mjs <reps> <contender>...     e.g. 8 native-sql dosql-sync probe-sync
//
// The contender dosql-sync-2-replicas runs W3 on a database with two read replicas attached.
//
// Each contender gets a fresh database (DB, default w3-<time>), a table and 100 warm-up
// inserts; then per rep, contenders in rotating order, N (1000) sequential one-row inserts.
// Prints median req/s and the ratio to the first contender; writes SEGS (default
// w3-segments.json): [{n, s, e, reqs}] with s/e in CLOCK_MONOTONIC nanoseconds, the clock of
// `perf record -k CLOCK_MONOTONIC`.
import http from "node:http";
import { writeFileSync } from "node:fs";

const [reps, ...names] = process.argv.slice(2);
if (!reps || names.length === 0) {
  console.error("usage: node bench/tools/w3-drive.mjs <reps> <contender>...");
  process.exit(2);
}
const port = Number(process.env.BENCH_PORT ?? 8788);
const N = Number(process.env.N ?? 1000);
const db = process.env.DB ?? `w3-${Date.now() % 1_000_000}`;
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

function post(path, body) {
  return new Promise((resolve, reject) => {
    const r = http.request({ host: "127.0.0.1", port, path, method: "POST", agent, headers: { "content-type": "application/json" } }, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve([res.statusCode, text]));
    });
    r.on("error", reject);
    r.end(body);
  });
}
// dosql-sync-2-replicas is dosql-sync's class: a database name of its own.
const dbOf = (n) => (n === "dosql-sync-2-replicas" ? `${db}-repl` : db);
const insert = (n, i, v) => post(`/c/${n}/${dbOf(n)}/query`, JSON.stringify({ sql: "INSERT INTO w3(v, t) VALUES (?, ?)", params: [v, i] }));

for (const n of names) {
  const [status, text] = await post(`/c/${n}/${dbOf(n)}/batch`, JSON.stringify([{ sql: "CREATE TABLE IF NOT EXISTS w3(id INTEGER PRIMARY KEY, v TEXT NOT NULL, t INTEGER NOT NULL)" }]));
  if (status !== 200 && !n.startsWith("probe")) throw new Error(`${n}: ${status} ${text}`);
  // The replication contender (bench/run.mjs: REPL): its database gets two read replicas.
  if (n === "dosql-sync-2-replicas") {
    for (const r of [`${dbOf(n)}-r1`, `${dbOf(n)}-r2`]) {
      const [st, tx] = await post(`/c/${n}/${dbOf(n)}/replicas`, JSON.stringify({ name: r }));
      if (st !== 201) throw new Error(`${n}: attaching ${r}: ${st} ${tx}`);
    }
  }
  for (let i = 0; i < 100; i++) await insert(n, i, "warm");
}
const rates = Object.fromEntries(names.map((n) => [n, []]));
const segments = [];
for (let rep = 0; rep < Number(reps); rep++) {
  const order = names.slice(rep % names.length).concat(names.slice(0, rep % names.length));
  for (const n of order) {
    const s = process.hrtime.bigint();
    for (let j = 0; j < N; j++) {
      const [status, text] = await insert(n, j, `value-${rep}-${j}`);
      if (status !== 200) throw new Error(`${n}: ${status} ${text}`);
    }
    const e = process.hrtime.bigint();
    rates[n].push(N / (Number(e - s) / 1e9));
    segments.push({ n, s: Number(s), e: Number(e), reqs: N });
  }
}
writeFileSync(process.env.SEGS ?? "w3-segments.json", JSON.stringify(segments));
const median = (a) => a.slice().sort((x, y) => x - y)[a.length >> 1];
const base = median(rates[names[0]]);
for (const n of names) {
  console.log(`${n.padEnd(18)} ${median(rates[n]).toFixed(0).padStart(6)} req/s ${(median(rates[n]) / base).toFixed(3)}x   ${rates[n].map((r) => r.toFixed(0)).join(" ")}`);
}
