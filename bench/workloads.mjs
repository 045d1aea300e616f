// The benchmark's workloads as request bodies, in dosql's API shape: a query body is
// {"sql", "params"}, a batch body is [{"sql", "params"}, ...] (one transaction). Every contender
// receives exactly these bytes; bench/run.mjs also writes them to files for the native floor
// (crates/bench) and the in-Node wasm timing (src/inner.ts).

export const W1_ROWS = 10_000;
export const W2_SELECTS = 1_000;
export const W3_REQUESTS = 1_000;
export const W5_ROWS = 100_000;
export const W6_ROWS = 10_000;

const q = (sql, params) => (params === undefined ? { sql } : { sql, params });

/** W1: CREATE TABLE + 10,000 inserts, one batch (one transaction), on a fresh database. */
export function w1() {
  const stmts = [q("CREATE TABLE w1(id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL NOT NULL)")];
  for (let i = 1; i <= W1_ROWS; i++) stmts.push(q("INSERT INTO w1(id, name, score) VALUES (?, ?, ?)", [i, `name-${i}`, i + 0.25]));
  return stmts;
}

/** W2: 1,000 point selects by primary key in one batch, on W1's table. */
export function w2() {
  const stmts = [];
  for (let j = 0; j < W2_SELECTS; j++) stmts.push(q("SELECT id, name, score FROM w1 WHERE id = ?", [((j * 7919) % W1_ROWS) + 1]));
  return stmts;
}

/** W3: its table, then 1,000 single-row inserts, one request (one transaction) each. */
export const w3Setup = () => [q("CREATE TABLE IF NOT EXISTS w3(id INTEGER PRIMARY KEY, v TEXT NOT NULL, t INTEGER NOT NULL)")];
export function w3(rep) {
  const bodies = [];
  for (let j = 0; j < W3_REQUESTS; j++) bodies.push(q("INSERT INTO w3(v, t) VALUES (?, ?)", [`value-${rep}-${j}`, j]));
  return bodies;
}

const series = (from, to, select) =>
  `WITH RECURSIVE c(i) AS (SELECT ${from} UNION ALL SELECT i + 1 FROM c WHERE i < ${to}) ${select}`;

/** W5: 100,000 rows (setup, one statement), then an aggregate with GROUP BY over all. */
export const w5Setup = () => [
  q("CREATE TABLE w5(id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, v REAL NOT NULL, s TEXT NOT NULL)"),
  q(series(1, W5_ROWS, "INSERT INTO w5(id, grp, v, s) SELECT i, i % 100, (i * 7919 % 1000) / 10.0, 'row-' || i FROM c")),
];
export const w5 = () =>
  q("SELECT grp, COUNT(*) AS n, SUM(v) AS total, AVG(v) AS mean, MIN(s) AS lo, MAX(s) AS hi FROM w5 GROUP BY grp ORDER BY grp");

/** W4: a database of about `mb` MB (rows of ~1 KB), built in requests of ~5 MB each. */
export function w4Setup(mb) {
  const rows = Math.max(1, Math.round(mb * 960));
  const bodies = [q("CREATE TABLE w4(id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, payload TEXT NOT NULL)")];
  for (let from = 1; from <= rows; from += 4800) {
    const to = Math.min(rows, from + 4799);
    bodies.push(q(series(from, to, "INSERT INTO w4(id, grp, payload) SELECT i, i % 1000, hex(randomblob(500)) FROM c")));
  }
  return { rows, bodies };
}
/** W4's timed request: the first point query after a restart. */
export const w4 = (rows) => q("SELECT id, grp, substr(payload, 1, 16) AS head FROM w4 WHERE id = ?", [Math.ceil(rows / 2)]);

/** W6: the table (setup), then the mixed requests of 16 clients: 75% point reads, 25% updates. */
export const w6Setup = () => [
  q("CREATE TABLE w6(id INTEGER PRIMARY KEY, k INTEGER NOT NULL, v TEXT NOT NULL)"),
  q(series(1, W6_ROWS, "INSERT INTO w6(id, k, v) SELECT i, 0, 'v-' || i FROM c")),
];
const w6Select = (id) => q("SELECT id, k, v FROM w6 WHERE id = ?", [id]);
export function w6Request(rand) {
  const id = 1 + Math.floor(rand() * W6_ROWS);
  return rand() < 0.75
    ? { write: false, body: w6Select(id) }
    : { write: true, body: q("UPDATE w6 SET k = k + 1, v = ? WHERE id = ?", [`u-${Math.floor(rand() * 1e9)}`, id]) };
}
/** W6's read alone (the replication rows: reads sent to a replica, its primary, native). */
export const w6Read = (rand) => w6Select(1 + Math.floor(rand() * W6_ROWS));

/** A small deterministic PRNG (mulberry32), so every contender gets the same request mix. */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
