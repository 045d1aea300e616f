// dosql.wasm under memory pressure, in Node: an instance's memory has the maximum its host
// gives it (the isolate's budget), and a statement that needs more fails with SQLITE_NOMEM,
// never a trap: the instance keeps answering. Also the budget's bookkeeping (src/budget.ts):
// idle instances are handed on or given up, least recently used first.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const { build } = createRequire(import.meta.url)("esbuild");

async function load(entry) {
  const bundle = await build({ entryPoints: [join(here, "..", "src", entry)], bundle: true, format: "esm", platform: "neutral", write: false });
  return import(`data:text/javascript;base64,${Buffer.from(bundle.outputFiles[0].text).toString("base64")}`);
}
const { DosqlInstance } = await load("dosql.ts");
const { OP_QUERY, OP_LIMITS } = await load("constants.ts");
const { MemoryBudget } = await load("budget.ts");
const module = new WebAssembly.Module(readFileSync(join(here, "..", "dist", "dosql.wasm")));

const { MemoryStorage } = await load("memory-storage.ts");
const { KvBridge } = await load("kv.ts");

/** SQLite-backed Durable Object storage in memory, as the wasm reaches it. */
const memoryStorage = () => new KvBridge(new MemoryStorage(), true);

const enc = (v) => new TextEncoder().encode(JSON.stringify(v));
const run = (db, op, body) => {
  const r = db.execSync(op, enc(body));
  return { status: r.status, body: JSON.parse(new TextDecoder().decode(r.body)) };
};

test("a statement that needs more memory than the instance may grow to fails with SQLITE_NOMEM, not a trap", () => {
  const max = 24 * 1024 * 1024;
  const db = DosqlInstance.createSync(module, memoryStorage(), { newPageSize: 4096, cachePages: 64, readAhead: 0, maxMemoryBytes: max });
  // No SQLite heap limit: the memory's maximum is what stops the statement (a failed
  // memory.grow is a failed malloc inside SQLite).
  assert.equal(run(db, OP_LIMITS, { cache_pages: 64, max_txn_bytes: 8 << 20, heap_bytes: 0, max_answer_bytes: 1 << 20 }).status, 200);
  assert.equal(run(db, OP_QUERY, { sql: "CREATE TABLE t(x); INSERT INTO t VALUES (42)" }).status, 200);
  const sort = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<100000) "
    + "SELECT count(*), max(b) FROM (SELECT x, randomblob(1000) AS b FROM c ORDER BY b LIMIT 99999)";
  const r = run(db, OP_QUERY, { sql: sort });
  assert.equal(r.status, 400, JSON.stringify(r.body));
  assert.equal(r.body.error.code, "SQLITE_NOMEM");
  assert.ok(db.memoryBytes() <= max, `${db.memoryBytes()} bytes`);
  // The instance still works, and so does a statement within its means.
  assert.deepEqual(run(db, OP_QUERY, { sql: "SELECT x FROM t" }).body.rows, [[42]]);
  assert.equal(run(db, OP_QUERY, { sql: "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<1000) SELECT count(*) FROM (SELECT randomblob(1000) b FROM c ORDER BY b)" }).status, 200);
});

test("with its limits from a share, the heap limit answers before memory runs out", () => {
  const max = 32 * 1024 * 1024;
  const db = DosqlInstance.createSync(module, memoryStorage(), { newPageSize: 4096, cachePages: 64, readAhead: 0, maxMemoryBytes: max });
  const set = run(db, OP_LIMITS, { share_bytes: max });
  assert.equal(set.status, 200);
  assert.equal(set.body.heap_bytes, Math.floor(max / 5), "a fifth of the share for SQLite's heap");
  const r = run(db, OP_QUERY, { sql: "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<100000) SELECT count(*) FROM (SELECT randomblob(1000) b FROM c ORDER BY b LIMIT 99999)" });
  assert.equal(r.body.error?.code, "SQLITE_NOMEM", JSON.stringify(r.body));
  assert.ok(db.memoryBytes() < max * 0.6, `${db.memoryBytes()} bytes: the heap limit stopped it well before the maximum`);
});

test("spares: up to the count asked for, of their kind, within half the budget; adopted first", () => {
  const mib = 1 << 20;
  const budget = new MemoryBudget(64 * mib);
  let made = 0;
  const make = () => ({ id: ++made, memoryBytes: () => 2 * mib });
  assert.equal(budget.offer("sync", 2 * mib, make, 2), 2);
  assert.equal(budget.offer("sync", 2 * mib, make, 2), 0, "two kept already");
  assert.equal(budget.sparesOf("sync"), 2);
  assert.equal(budget.sparesOf("jspi"), 0);
  assert.equal(budget.adopt(tenant("j", 0, "jspi"), 2 * mib), null, "no spare of another kind");
  assert.equal(budget.adopt(tenant("t", 0), 2 * mib).id, 1);
  assert.equal(budget.adopt(tenant("u", 0), 2 * mib).id, 2);
  assert.equal(budget.sparesOf("sync"), 0);
  // Never past half the budget: 14 spares of 2 MiB beside 4 MiB in use make 32 MiB.
  const full = new MemoryBudget(64 * mib);
  full.use(tenant("big", 4 * mib));
  assert.equal(full.offer("sync", 2 * mib, make, 100), 14);
  assert.equal(full.total(), 32 * mib);
});

test("an instance grown past three quarters of the budget is given up after its request, and never handed on", () => {
  const mib = 1 << 20;
  const budget = new MemoryBudget(64 * mib);
  const [a, b] = [tenant("a", 50 * mib), tenant("b", 40 * mib)];
  budget.use(a);
  budget.shed(a);
  assert.equal(a.instance, null, "a grew to 50 MiB of 64: given up");
  assert.equal(budget.dropped, 1);
  budget.use(b);
  budget.shed(b);
  assert.notEqual(b.instance, null, "40 MiB is within three quarters");
  // An idle bloated instance (its request did not shed it) is not adopted by another.
  b.bytes = 49 * mib;
  const c = tenant("c", 0);
  c.instance = null;
  assert.equal(budget.adopt(c, 2 * mib), null);
  assert.notEqual(b.instance, null);
  assert.equal(budget.reused, 0);
});

/** A tenant for MemoryBudget: `bytes` of memory, `busy`, an instance id. */
function tenant(name, bytes, kind = "sync") {
  return {
    name, kind, bytes, isBusy: false, instance: { of: name },
    memoryBytes() { return this.instance === null ? 0 : this.bytes; },
    busy() { return this.isBusy; },
    surrender() { const i = this.instance; this.instance = null; return i; },
  };
}

test("the budget keeps the others under half, least recently used first, never a busy one", () => {
  const mib = 1 << 20;
  const budget = new MemoryBudget(64 * mib);
  const [a, b, c, d] = ["a", "b", "c", "d"].map((n) => tenant(n, 10 * mib));
  for (const t of [a, b, c, d]) budget.use(t);
  assert.equal(budget.total(), 40 * mib);
  assert.equal(budget.dropped, 0);
  a.isBusy = true;
  b.bytes = 15 * mib;
  // c runs again: the others hold 35 MiB, over half; a is the least recently used but busy,
  // so b goes, and then they hold 20 MiB.
  const share = budget.use(c);
  assert.notEqual(a.instance, null);
  assert.equal(b.instance, null);
  assert.notEqual(d.instance, null);
  assert.equal(share, 64 * mib - 20 * mib);
  assert.equal(budget.dropped, 1);
  // After a request that grew c past the budget, idle others go until the total fits.
  c.bytes = 50 * mib;
  budget.settle(c);
  assert.equal(d.instance, null, "d, idle, went");
  assert.notEqual(a.instance, null, "a is busy");
  assert.equal(budget.total(), 60 * mib);
});

test("a database without an instance adopts an idle one of its kind when there is no room", () => {
  const mib = 1 << 20;
  const budget = new MemoryBudget(64 * mib);
  const a = tenant("a", 20 * mib);
  const b = tenant("b", 20 * mib, "jspi");
  budget.use(a);
  budget.use(b);
  const c = tenant("c", 0);
  c.instance = null;
  // 40 MiB + 2 MiB > 32 MiB: a's instance (the only idle one of c's kind) is handed on.
  assert.deepEqual(budget.adopt(c, 2 * mib), { of: "a" });
  assert.equal(a.instance, null);
  assert.equal(budget.reused, 1);
  // With room, a new instance is made instead.
  const small = new MemoryBudget(64 * mib);
  small.use(tenant("e", 4 * mib));
  assert.equal(small.adopt(tenant("f", 0), 2 * mib), null);
});
