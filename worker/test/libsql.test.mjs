// @libsql/client, unchanged, against dosql on workerd: Hrana over HTTP (crates/api/src/hrana.rs,
// worker/src/hrana.ts). Starts its own workerd through scripts/run.sh on a free port with a
// temporary data directory, and a short stream timeout so that the abandoned-transaction test
// is quick.
//
//   make worker && cd worker && node --test test/

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { createClient, LibsqlBatchError, LibsqlError } from "@libsql/client";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** HRANA_STREAM_TIMEOUT_MS for this workerd: long enough for every other test's pauses. */
const STREAM_TIMEOUT_MS = 2000;

let server;
let base;
const clients = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts workerd through scripts/run.sh on a free port with a fresh data directory and waits
 * until it answers. `env` adds to (or, with undefined values, removes from) the environment.
 */
async function startWorkerd(env) {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), "dosql-libsql-"));
  const fullEnv = { ...process.env, PORT: String(port), DATA_DIR: dataDir, DOSQL_TOKEN: "", ...env };
  for (const [k, v] of Object.entries(fullEnv)) if (v === undefined) delete fullEnv[k];
  const proc = spawn("bash", [join(root, "scripts", "run.sh")], { env: fullEnv, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  proc.stdout.on("data", (d) => (output += d));
  proc.stderr.on("data", (d) => (output += d));
  let exited = null;
  proc.once("exit", (code, signal) => (exited = `exited (${code ?? signal})`));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise((resolve) => proc.once("exit", resolve));
      // run.sh execs workerd, so this is workerd's pid.
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
      await gone;
      clearTimeout(t);
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(`workerd ${exited} before answering:\n${output}`);
    }
    try {
      const res = await fetch(`${url}/`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`workerd did not answer within 60 s:\n${output}`);
    }
    await sleep(100);
  }
  return { url, stop };
}

before(async () => {
  server = await startWorkerd({ HRANA_STREAM_TIMEOUT_MS: String(STREAM_TIMEOUT_MS) });
  base = server.url;
});

after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

/** A client for database `name` (the URL ends in "/"). */
function client(name, options = {}) {
  const c = createClient({ url: `${base}/db/${name}/`, ...options });
  clients.push(c);
  return c;
}

async function count(db, table = "t") {
  const r = await db.execute(`SELECT count(*) AS n FROM ${table}`);
  return r.rows[0].n;
}

/** Asserts that `promise` rejects with a LibsqlError of `code`; returns the error. */
async function rejectsWith(promise, code) {
  let error;
  await assert.rejects(promise, (e) => {
    error = e;
    return true;
  });
  assert.ok(error instanceof LibsqlError, `not a LibsqlError: ${error?.stack ?? error}`);
  assert.equal(error.code, code, error.message);
  return error;
}

test("execute with positional and named arguments", async () => {
  const db = client("exec");
  await db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL)");
  let r = await db.execute({ sql: "INSERT INTO t(name, score) VALUES (?, ?)", args: ["ann", 1.5] });
  assert.equal(r.rowsAffected, 1);
  assert.equal(r.lastInsertRowid, 1n);
  r = await db.execute("INSERT INTO t(name, score) VALUES (?, ?)", ["bob", 2]);
  assert.equal(r.lastInsertRowid, 2n);
  // Names without their prefix, and with any of SQLite's three prefixes.
  await db.execute({ sql: "INSERT INTO t(name, score) VALUES (:name, $score)", args: { name: "cy", score: 3 } });
  await db.execute({ sql: "INSERT INTO t(name, score) VALUES (@name, :score)", args: { "@name": "di", ":score": 4.25 } });
  r = await db.execute({ sql: "SELECT id, name, score FROM t WHERE score >= :min ORDER BY id", args: { min: 2 } });
  assert.deepEqual(r.columns, ["id", "name", "score"]);
  assert.deepEqual(r.columnTypes, ["INTEGER", "TEXT", "REAL"]);
  assert.deepEqual(
    r.rows.map((row) => [row.id, row.name, row.score]),
    [
      [2, "bob", 2],
      [3, "cy", 3],
      [4, "di", 4.25],
    ],
  );
  assert.equal(r.rowsAffected, 0);
  // Rows are also arrays.
  assert.deepEqual([...Object.values(r.rows[0])], [2, "bob", 2]);
  assert.equal(r.rows[0][1], "bob");
  // Argument mistakes are the statement's error.
  await rejectsWith(db.execute("SELECT ?, ?", [1]), "ARGS_INVALID");
  await rejectsWith(db.execute({ sql: "SELECT :a", args: { b: 1 } }), "ARGS_INVALID");
});

test("every value type keeps its type, integers beyond 2^53 with intMode bigint", async () => {
  const db = client("values", { intMode: "bigint" });
  await db.execute("CREATE TABLE v(i INTEGER, r REAL, s TEXT, b BLOB, n)");
  const big = 2n ** 53n + 1n;
  const rows = [
    [big, 3.25, "héllo ✓ \u{1F600}", new Uint8Array([0, 1, 2, 255]), null],
    [9223372036854775807n, -0.5, "", new Uint8Array([]), null],
    [-9223372036854775808n, 1e300, "x".repeat(10_000), new Uint8Array(70_000).fill(7), null],
  ];
  for (const args of rows) await db.execute({ sql: "INSERT INTO v VALUES (?, ?, ?, ?, ?)", args });
  const r = await db.execute("SELECT i, r, s, b, n, typeof(i), typeof(r), typeof(s), typeof(b), typeof(n) FROM v ORDER BY rowid");
  for (const [k, want] of rows.entries()) {
    const row = r.rows[k];
    assert.equal(typeof row.i, "bigint");
    assert.equal(row.i, want[0]);
    assert.equal(row.r, want[1]);
    assert.equal(row.s, want[2]);
    assert.ok(row.b instanceof ArrayBuffer);
    assert.deepEqual(new Uint8Array(row.b), want[3]);
    assert.equal(row.n, null);
    assert.deepEqual([row[5], row[6], row[7], row[8], row[9]], ["integer", "real", "text", "blob", "null"]);
  }
  // JS numbers travel as floats (the protocol's choice): 2 is stored as REAL in an untyped column.
  const s = await db.execute("SELECT ?, typeof(?), ?, ?, 1e999, -1e999, 2.0", [2, 2, true, new Date(0)]);
  const cells = Array.from({ length: s.rows[0].length }, (_, i) => s.rows[0][i]);
  assert.deepEqual(cells, [2, "real", 1n, 0, Infinity, -Infinity, 2]);

  // The default intMode "number" refuses what it cannot hold exactly; "string" gives digits.
  const asNumber = client("values");
  await assert.rejects(asNumber.execute("SELECT i FROM v ORDER BY rowid LIMIT 1"), RangeError);
  assert.equal((await asNumber.execute("SELECT 42 AS x")).rows[0].x, 42);
  const asString = client("values", { intMode: "string" });
  assert.equal((await asString.execute("SELECT i FROM v ORDER BY rowid LIMIT 1")).rows[0].i, big.toString());
});

test("batch in each transaction mode", async () => {
  const db = client("batch");
  await db.execute("CREATE TABLE t(x INTEGER UNIQUE)");
  let next = 1;
  for (const mode of ["write", "deferred"]) {
    const results = await db.batch(
      [
        { sql: "INSERT INTO t VALUES (?)", args: [next++] },
        ["INSERT INTO t VALUES (?)", [next++]],
        "SELECT count(*) AS n FROM t",
      ],
      mode,
    );
    assert.equal(results.length, 3);
    assert.equal(results[0].rowsAffected, 1);
    assert.equal(results[1].lastInsertRowid, BigInt(next - 1));
    assert.equal(results[2].rows[0].n, next - 1);
  }
  // "read": reads see committed data; a write inside fails and nothing changes.
  const results = await db.batch(["SELECT count(*) AS n FROM t", "SELECT max(x) AS m FROM t"], "read");
  assert.deepEqual([results[0].rows[0].n, results[1].rows[0].m], [4, 4]);
  const e = await rejectsWith(db.batch(["SELECT 1", "INSERT INTO t VALUES (100)"], "read"), "SQLITE_READONLY");
  assert.ok(e instanceof LibsqlBatchError);
  assert.equal(e.statementIndex, 1);
  assert.equal(await count(db), 4);
  // The default mode is "deferred".
  await db.batch(["INSERT INTO t VALUES (5)"]);
  assert.equal(await count(db), 5);
});

test("a failing statement inside a batch rolls the whole batch back", async () => {
  const db = client("batch-fail");
  await db.execute("CREATE TABLE t(x INTEGER UNIQUE)");
  await db.execute("INSERT INTO t VALUES (1)");
  for (const mode of ["write", "deferred"]) {
    let e = await rejectsWith(
      db.batch(["INSERT INTO t VALUES (2)", "INSERT INTO nope VALUES (3)", "INSERT INTO t VALUES (4)"], mode),
      "SQLITE_ERROR",
    );
    assert.ok(e instanceof LibsqlBatchError);
    assert.equal(e.statementIndex, 1);
    assert.match(e.message, /no such table: nope/);
    e = await rejectsWith(db.batch(["INSERT INTO t VALUES (5)", "INSERT INTO t VALUES (1)"], mode), "SQLITE_CONSTRAINT");
    assert.equal(e.statementIndex, 1);
    assert.match(e.message, /UNIQUE constraint failed/);
    assert.deepEqual((await db.execute("SELECT x FROM t")).rows.map((r) => r.x), [1]);
  }
  // The database is usable afterwards, also by a plain dosql request.
  const res = await fetch(`${base}/db/batch-fail/query`, { method: "POST", body: JSON.stringify({ sql: "INSERT INTO t VALUES (9)" }) });
  assert.equal(res.status, 200, await res.text());
  assert.equal(await count(db), 2);
});

test("an interactive transaction commits across requests", async () => {
  const db = client("tx-commit");
  await db.execute("CREATE TABLE t(x)");
  const tx = await db.transaction("write");
  const r1 = await tx.execute({ sql: "INSERT INTO t VALUES (?)", args: ["a"] });
  assert.equal(r1.lastInsertRowid, 1n);
  await sleep(300); // a pause between requests, well within the stream timeout
  await tx.batch(["INSERT INTO t VALUES ('b')", "INSERT INTO t VALUES ('c')"]);
  assert.equal((await tx.execute("SELECT count(*) AS n FROM t")).rows[0].n, 3);
  // Not visible outside before the commit.
  assert.equal(await count(db), 0);
  await tx.commit();
  assert.equal(tx.closed, true);
  assert.equal(await count(db), 3);
  // A statement error inside a transaction does not end it.
  const tx2 = await db.transaction("write");
  await tx2.execute("INSERT INTO t VALUES ('d')");
  await rejectsWith(tx2.execute("INSERT INTO nope VALUES (1)"), "SQLITE_ERROR");
  await tx2.execute("INSERT INTO t VALUES ('e')");
  await tx2.commit();
  assert.equal(await count(db), 5);
});

test("an interactive transaction rolls back", async () => {
  const db = client("tx-rollback");
  await db.execute("CREATE TABLE t(x)");
  await db.execute("INSERT INTO t VALUES (1)");
  const tx = await db.transaction("deferred");
  await tx.execute("INSERT INTO t VALUES (2)");
  await tx.execute("DELETE FROM t WHERE x = 1");
  assert.deepEqual((await tx.execute("SELECT x FROM t")).rows.map((r) => r.x), [2]);
  await tx.rollback();
  assert.deepEqual((await db.execute("SELECT x FROM t")).rows.map((r) => r.x), [1]);
  // close() without commit rolls back too.
  const tx2 = await db.transaction("write");
  await tx2.execute("INSERT INTO t VALUES (3)");
  tx2.close();
  await sleep(100); // close() sends its request without waiting
  assert.deepEqual((await db.execute("SELECT x FROM t")).rows.map((r) => r.x), [1]);
  // A read transaction refuses writes.
  const rtx = await db.transaction("read");
  assert.equal((await rtx.execute("SELECT count(*) AS n FROM t")).rows[0].n, 1);
  await rejectsWith(rtx.execute("INSERT INTO t VALUES (4)"), "SQLITE_READONLY");
  await rtx.commit();
  await db.execute("INSERT INTO t VALUES (4)");
  assert.equal(await count(db), 2);
});

test("two clients interleave on two streams", async () => {
  const a = client("interleave");
  const b = client("interleave");
  await a.execute("CREATE TABLE t(who TEXT)");
  const ta = await a.transaction("write");
  await ta.execute("INSERT INTO t VALUES ('a1')");
  // B's stream reads the committed state: A's uncommitted row is invisible to it.
  const tb = await b.transaction("deferred");
  assert.equal((await tb.execute("SELECT count(*) AS n FROM t")).rows[0].n, 0);
  assert.equal((await ta.execute("SELECT count(*) AS n FROM t")).rows[0].n, 1);
  // A holds the write lock: B's write fails at once instead of waiting.
  await rejectsWith(tb.execute("INSERT INTO t VALUES ('b1')"), "SQLITE_BUSY");
  await rejectsWith(b.execute("INSERT INTO t VALUES ('b0')"), "SQLITE_BUSY");
  // B ends its read; A commits; B sees A's row.
  await tb.commit();
  await ta.execute("INSERT INTO t VALUES ('a2')");
  await ta.commit();
  assert.deepEqual((await b.execute("SELECT who FROM t ORDER BY who")).rows.map((r) => r.who), ["a1", "a2"]);
  // And the other way round, steps alternating between the two.
  const tb2 = await b.transaction("write");
  const ta2 = await a.transaction("read");
  await tb2.execute("INSERT INTO t VALUES ('b1')");
  assert.equal((await ta2.execute("SELECT count(*) AS n FROM t")).rows[0].n, 2);
  await tb2.execute("INSERT INTO t VALUES ('b2')");
  assert.equal((await ta2.execute("SELECT count(*) AS n FROM t WHERE who LIKE 'b%'")).rows[0].n, 0);
  // The reader holds its snapshot until it ends (rollback-journal mode): end it, then commit.
  await ta2.commit();
  await tb2.commit();
  assert.deepEqual((await a.execute("SELECT who FROM t ORDER BY who")).rows.map((r) => r.who), ["a1", "a2", "b1", "b2"]);
  // Many concurrent executes from one client (each its own stream) all land.
  await Promise.all(Array.from({ length: 25 }, (_, i) => a.execute("INSERT INTO t VALUES (?)", [`c${i}`])));
  assert.equal(await count(b), 29);
});

test("last_insert_rowid and rows_affected", async () => {
  const db = client("counts");
  await db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, x)");
  let r = await db.execute("INSERT INTO t(x) VALUES (1), (2), (3)");
  assert.deepEqual([r.rowsAffected, r.lastInsertRowid], [3, 3n]);
  r = await db.execute("INSERT INTO t(id, x) VALUES (9007199254740993, 4)");
  assert.equal(r.lastInsertRowid, 9007199254740993n);
  r = await db.execute("UPDATE t SET x = x * 10 WHERE x >= 2");
  assert.equal(r.rowsAffected, 3);
  r = await db.execute("DELETE FROM t WHERE x > 100");
  assert.equal(r.rowsAffected, 0);
  r = await db.execute("DELETE FROM t WHERE x >= 20");
  assert.equal(r.rowsAffected, 3);
  r = await db.execute("SELECT * FROM t");
  assert.equal(r.rowsAffected, 0);
  const results = await db.batch(["INSERT INTO t(x) VALUES (5)", "UPDATE t SET x = 0"], "write");
  assert.deepEqual([results[0].rowsAffected, results[0].lastInsertRowid, results[1].rowsAffected], [1, 2n, 2]);
  // toJSON, as apps log it.
  assert.equal(JSON.parse(JSON.stringify(r)).rowsAffected, 0);
});

test("errors carry SQLite's code and message", async () => {
  const db = client("errors");
  await db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY)");
  let e = await rejectsWith(db.execute("SELEC 1"), "SQLITE_ERROR");
  assert.match(e.message, /syntax error/);
  await db.execute("INSERT INTO t VALUES (1)");
  e = await rejectsWith(db.execute("INSERT INTO t VALUES (1)"), "SQLITE_CONSTRAINT");
  assert.match(e.message, /UNIQUE constraint failed: t\.id/);
  await rejectsWith(db.execute("SELECT 1; SELECT 2"), "SQL_MANY_STATEMENTS");
  // executeMultiple runs a script (Hrana's "sequence"), and migrate a batch.
  await db.executeMultiple("CREATE TABLE u(x); INSERT INTO u VALUES (1); INSERT INTO u VALUES (2);");
  assert.equal(await count(db, "u"), 2);
  await db.migrate(["CREATE TABLE w(x)", "INSERT INTO w VALUES (1)"]);
  assert.equal(await count(db, "w"), 1);
});

test("a URL without its trailing slash fails loudly", async () => {
  const db = createClient({ url: `${base}/db/noslash` });
  clients.push(db);
  const e = await rejectsWith(db.execute("SELECT 1"), "URL_NEEDS_TRAILING_SLASH");
  assert.match(e.message, /trailing slash/);
  // The endpoints it would hit, and a v3 client's version probe, all answer the same 400.
  for (const [method, path] of [
    ["POST", "/db/v2/pipeline"],
    ["POST", "/db/v3/pipeline"],
    ["POST", "/db/v3/cursor"],
    ["GET", "/db/v3-protobuf"],
    ["GET", "/db/v2"],
  ]) {
    const res = await fetch(`${base}${path}`, { method, body: method === "POST" ? "{}" : undefined });
    assert.equal(res.status, 400, path);
    const body = await res.json();
    assert.equal(body.code, "URL_NEEDS_TRAILING_SLASH");
    assert.equal(body.error.code, "URL_NEEDS_TRAILING_SLASH");
  }
  // A database that happens to be named "v2" still works through dosql's own routes and
  // through its own (slashed) libSQL URL.
  const res = await fetch(`${base}/db/v2/query`, { method: "POST", body: JSON.stringify({ sql: "SELECT 7 AS x" }) });
  assert.equal(res.status, 200);
  assert.equal((await client("v2").execute("SELECT 8 AS x")).rows[0].x, 8);
});

test("the server speaks Hrana 2 and 3 over JSON", async () => {
  for (const v of ["v2", "v3"]) assert.equal((await fetch(`${base}/db/proto/${v}`)).status, 200);
  // No Protobuf: the probe fails, and clients that probe fall back to JSON.
  assert.equal((await fetch(`${base}/db/proto/v3-protobuf`)).status, 404);
  const post = (path, body) => fetch(`${base}/db/proto/${path}`, { method: "POST", body: JSON.stringify(body) });
  let res = await post("v3/pipeline", {
    baton: null,
    requests: [{ type: "execute", stmt: { sql: "BEGIN" } }, { type: "get_autocommit" }],
  });
  const body = await res.json();
  assert.equal(body.results[1].response.is_autocommit, false);
  res = await post("v3/cursor", { baton: body.baton, batch: { steps: [{ stmt: { sql: "SELECT 1 AS one" } }] } });
  assert.equal(res.headers.get("content-type"), "text/plain");
  const lines = (await res.text()).trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(typeof lines[0].baton, "string");
  assert.deepEqual(lines.slice(1).map((l) => l.type), ["step_begin", "row", "step_end"]);
  res = await post("v2/pipeline", { baton: lines[0].baton, requests: [{ type: "close" }] });
  assert.deepEqual(await res.json(), { baton: null, base_url: null, results: [{ type: "ok", response: { type: "close" } }] });
  // A used or unknown baton (e.g. from before a restart) is an error, not a new stream.
  res = await post("v2/pipeline", { baton: lines[0].baton, requests: [] });
  assert.equal(res.status, 400);
  assert.equal((await res.json()).code, "BATON_INVALID");
  assert.equal((await fetch(`${base}/db/proto/v2/pipeline`)).status, 405);
});

test("an abandoned transaction times out and releases its locks", async () => {
  const a = client("abandon");
  const b = client("abandon");
  await a.execute("CREATE TABLE t(x)");
  const tx = await a.transaction("write");
  await tx.execute("INSERT INTO t VALUES ('abandoned')");
  // The abandoned stream holds the write lock for now.
  await rejectsWith(b.execute("INSERT INTO t VALUES ('b')"), "SQLITE_BUSY");
  const res = await fetch(`${base}/db/abandon/query`, { method: "POST", body: JSON.stringify({ sql: "INSERT INTO t VALUES ('q')" }) });
  assert.equal(res.status, 409, "dosql's own writes wait for it too");
  await sleep(STREAM_TIMEOUT_MS + 500);
  // The next request expires it first: its transaction is rolled back, the lock is free.
  await b.execute("INSERT INTO t VALUES ('b')");
  assert.deepEqual((await b.execute("SELECT x FROM t")).rows.map((r) => r.x), ["b"]);
  const e = await rejectsWith(tx.execute("SELECT 1"), "STREAM_EXPIRED");
  assert.match(e.message, /expired/);
  assert.equal(tx.closed, true);
});

test("without HRANA_STREAM_TIMEOUT_MS the default timeout applies", async () => {
  const other = await startWorkerd({ HRANA_STREAM_TIMEOUT_MS: undefined });
  try {
    const db = createClient({ url: `${other.url}/db/defaults/` });
    try {
      await db.execute("CREATE TABLE t(x)");
      const tx = await db.transaction("write");
      await tx.execute("INSERT INTO t VALUES (1)");
      await sleep(STREAM_TIMEOUT_MS + 500); // past this file's short timeout, well within 10 s
      await tx.commit();
      assert.equal((await db.execute("SELECT count(*) AS n FROM t")).rows[0].n, 1);
    } finally {
      db.close();
    }
  } finally {
    await other.stop();
  }
});

test("a read replica gives @libsql/client read-your-writes through a fetch that carries bookmarks", async () => {
  const primary = client("rw-primary");
  await primary.execute("CREATE TABLE t(x)");
  const res = await fetch(`${base}/db/rw-primary/replicas`, { method: "POST", body: JSON.stringify({ name: "rw-replica" }) });
  assert.equal(res.status, 201, await res.text());
  // The README's recipe: remember each answer's x-dosql-bookmark, send it with each request.
  let bookmark = null;
  const newer = (a, b) => a.split(":")[0] !== b.split(":")[0] || Number(a.split(":")[1]) > Number(b.split(":")[1]);
  const carrying = async (input, init) => {
    const req = new Request(input, init);
    if (bookmark !== null) req.headers.set("x-dosql-bookmark", bookmark);
    const answer = await fetch(req);
    const b = answer.headers.get("x-dosql-bookmark");
    // Keep the newest: an answer to a request sent earlier may come back later.
    if (b !== null && (bookmark === null || newer(b, bookmark))) bookmark = b;
    return answer;
  };
  const writer = client("rw-primary", { fetch: carrying });
  const reader = client("rw-replica", { fetch: carrying });
  for (let i = 0; i < 15; i++) {
    await writer.execute({ sql: "INSERT INTO t VALUES (?)", args: [i] });
    assert.equal(await count(reader), i + 1);
  }
  assert.match(bookmark, /^[0-9a-f]{16}:[0-9]+$/);
  // Hrana writes go to the primary's URL: a replica refuses them, saying why.
  await assert.rejects(reader.execute("INSERT INTO t VALUES (99)"), /read replica/);
});
