// The storage bridge (src/kv.ts) on its own, with the built dosql.wasm: it issues the wasm's
// write plans as Durable Object storage takes them (at most 128 keys per classic call, one
// key per SQLite-backed call, the head row through SQL, all in one synchronous stretch),
// refuses a plan past a limit before issuing anything, and what this code writes is refused,
// not misread, by the storage code of the last release before the layout moved into Rust.

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
const { OP_LIMITS, OP_QUERY } = await load("constants.ts");
const { KvBridge, LimitError } = await load("kv.ts");
const { MemoryStorage } = await load("memory-storage.ts");
const old = await import("./fixtures/storage-12121ec.mjs");
const module = new WebAssembly.Module(readFileSync(join(here, "..", "dist", "dosql.wasm")));

/** MemoryStorage with a log of the calls issued, and the SQL the release of 12121ec ran. */
class LoggedStorage extends MemoryStorage {
  log = [];
  constructor() {
    super();
    const kv = this.kv;
    this.kv = {
      get: (k) => kv.get(k),
      put: (k, v) => { this.log.push(["kv.put", k]); kv.put(k, structuredClone(v)); },
      delete: (k) => { this.log.push(["kv.delete", k]); return kv.delete(k); },
    };
    const sql = this.sql;
    this.sql = {
      exec: (query, ...params) => {
        if (/FROM sqlite_master/.test(query)) return { toArray: () => (this.row === null ? [] : [{ 1: 1 }]) };
        const table = /dosql_(head|log|pages)/.exec(query)?.[1];
        if (query.startsWith("INSERT")) this.log.push(table === "head" ? ["sql.head"] : [`sql.${table}`, params[0]]);
        if (query.startsWith("DELETE")) this.log.push([`sql.${table}.delete`, params[0]]);
        return sql.exec(query, ...params);
      },
    };
  }
  get = async (keys) => { assert.ok(keys.length <= 128, `${keys.length} keys in one get`); return new Map(keys.filter((k) => this.data.has(k)).map((k) => [k, structuredClone(this.data.get(k))])); };
  put = async (entries) => { const n = Object.keys(entries).length; assert.ok(n <= 128); this.log.push(["put", n]); for (const [k, v] of Object.entries(entries)) this.data.set(k, structuredClone(v)); };
  delete = async (keys) => { assert.ok(keys.length <= 128); this.log.push(["delete", keys.length]); for (const k of keys) this.data.delete(k); return keys.length; };
}

const enc = (v) => new TextEncoder().encode(JSON.stringify(v));
const opts = { newPageSize: 4096, cachePages: 64, readAhead: 0, maxMemoryBytes: 64 << 20 };

function open(storage, sqlite) {
  // The synchronous bridge for both kinds in Node (no JSPI here: classic storage's reads go
  // through the fake's kv, which it has); classic storage's writes are its put()/delete().
  const bridge = new KvBridge(storage, sqlite);
  return { bridge, db: DosqlInstance.createSync(module, bridge, opts) };
}

const run = (db, sql) => {
  const r = db.execSync(OP_QUERY, enc({ sql }));
  return { status: r.status, body: JSON.parse(new TextDecoder().decode(r.body)) };
};

for (const sqlite of [false, true]) {
  const kind = sqlite ? "SQLite-backed" : "classic";

  test(`${kind}: a one-row commit is the head alone, its log record beside it; a big one stays within 128 keys per call`, () => {
    const storage = new LoggedStorage();
    const { bridge, db } = open(storage, sqlite);
    run(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    storage.log.length = 0;
    assert.equal(run(db, "INSERT INTO t(v) VALUES ('one')").status, 200);
    // With history (the default), the commit's log record is one more key of the same write
    // on classic storage, a row of the log table (id txid × 10^6) on SQLite-backed storage.
    assert.deepEqual(storage.log, sqlite ? [["sql.log", 2_000_000], ["sql.head"]] : [["put", 2]]);
    const off = db.execSync(OP_LIMITS, enc({ share_bytes: 64 << 20, history: { enabled: "off" } }));
    assert.equal(off.status, 200);
    storage.log.length = 0;
    assert.equal(run(db, "INSERT INTO t(v) VALUES ('two')").status, 200);
    assert.deepEqual(storage.log, sqlite ? [["sql.head"]] : [["put", 1]], "without history: the head alone");
    storage.log.length = 0;
    const big = run(db, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<3000) INSERT INTO t(v) SELECT hex(randomblob(400)) FROM n");
    assert.equal(big.status, 200, JSON.stringify(big.body));
    if (sqlite) {
      // A new database's pages are rows (generation 2^20: ids 1 .. 2^32), never kv keys.
      assert.ok(storage.log.every(([op]) => op === "sql.pages" || op === "sql.head" || op === "sql.log"), JSON.stringify(storage.log.slice(0, 5)));
      assert.ok(storage.log.filter(([op]) => op === "sql.pages").length > 300);
      assert.ok(storage.log.every(([op, id]) => op !== "sql.pages" || (id >= 1 && id < 2 ** 32)));
      assert.equal(storage.data.size, 1, "kv holds the pointer alone");
    } else {
      assert.ok(storage.log.every(([op, n]) => op === "put" && n <= 128));
      assert.ok(storage.log.length >= 3, JSON.stringify(storage.log));
    }
    assert.ok(bridge.stats.put_keys_max <= 128);
    assert.equal(bridge.stats.commits, 4);
    assert.equal(bridge.stats.refused_calls, 0);
    assert.equal(run(db, "SELECT count(*) FROM t").body.rows[0][0], 3002);
  });

  test(`${kind}: a plan past a limit is refused before anything is issued`, () => {
    const storage = new LoggedStorage();
    const bridge = new KvBridge(storage, sqlite);
    // A plan by hand (crates/layout/src/wire.rs): one put of a value over the limit it states
    // (the production limit less 64 bytes of framing).
    const value = new Uint8Array((sqlite ? 2_000_000 : 128 * 1024) - 63);
    const key = new TextEncoder().encode("p:0000000001");
    const plan = new Uint8Array(17 + 3 + key.length + 4 + value.length + 3 + key.length);
    const dv = new DataView(plan.buffer);
    let at = 0;
    plan[at++] = 0; dv.setUint16(at, 0, true); at += 2; dv.setUint16(at, 0, true); at += 2;
    dv.setUint16(at, 128, true); at += 2; dv.setUint16(at, 2048, true); at += 2; dv.setUint32(at, value.length - 1, true); at += 4;
    dv.setUint32(at, 2, true); at += 4;
    plan[at++] = 3; dv.setUint16(at, key.length, true); at += 2; plan.set(key, at); at += key.length; // a delete first
    plan[at++] = 1; dv.setUint16(at, key.length, true); at += 2; plan.set(key, at); at += key.length;
    dv.setUint32(at, value.length, true); at += 4; plan.set(value, at);
    assert.throws(() => bridge.apply(plan.subarray(0, at + value.length)), LimitError);
    assert.deepEqual(storage.log, [], "nothing was issued");
    assert.equal(bridge.stats.refused_calls, 1);
  });

  if (sqlite) {
    test("SQLite-backed: log records are rows; a record an earlier release kept under its key is read from there until a row has its id, and deleted from both", () => {
      const storage = new LoggedStorage();
      const bridge = new KvBridge(storage, true);
      const key = "l:00000000000000000003";
      storage.data.set(key, Uint8Array.of(1, 2, 3).buffer);
      const te = new TextEncoder();
      // wire.rs by hand: limits, then items or ops.
      const bytes = (parts) => {
        const out = [];
        for (const [kind, v] of parts) {
          if (kind === "u8") out.push(v);
          if (kind === "u16") out.push(v & 0xff, v >> 8);
          if (kind === "u32") out.push(...new Uint8Array(Uint32Array.of(v).buffer));
          if (kind === "u64") out.push(...new Uint8Array(BigUint64Array.of(BigInt(v)).buffer));
          if (kind === "str") out.push(...bytes([["u16", te.encode(v).length]]), ...te.encode(v));
          if (kind === "blob") out.push(...bytes([["u32", v.length]]), ...v);
        }
        return Uint8Array.from(out);
      };
      const limits = [["u16", 128], ["u16", 2048], ["u32", 1_000_000]];
      const SELECT = "SELECT record FROM dosql_log WHERE id = ?";
      const read = () => bridge.readSync(bytes([...limits, ["u32", 1], ["u8", 2], ["str", SELECT], ["u64", 3_000_000], ["str", key]]));
      // No table yet: the key's value (tag 1, 3 bytes).
      assert.deepEqual([...read()], [1, 3, 0, 0, 0, 1, 2, 3]);
      const CREATE = "CREATE TABLE IF NOT EXISTS dosql_log(id INTEGER PRIMARY KEY, record BLOB NOT NULL)";
      const UPSERT = "INSERT OR REPLACE INTO dosql_log(id, record) VALUES (?, ?)";
      bridge.apply(bytes([["u8", 0], ["u16", 0], ["u16", 0], ...limits, ["u32", 1], ["u8", 5], ["str", CREATE], ["str", UPSERT], ["u64", 3_000_000], ["blob", [9, 9]]]));
      assert.deepEqual([...read()], [1, 2, 0, 0, 0, 9, 9], "the row, once there is one");
      assert.deepEqual([...new Uint8Array(storage.logRows.get(3_000_000))], [9, 9]);
      bridge.apply(bytes([["u8", 0], ["u16", 0], ["u16", 0], ...limits, ["u32", 1], ["u8", 6], ["str", "DELETE FROM dosql_log WHERE id = ?"], ["u64", 3_000_000], ["str", key]]));
      assert.equal(storage.logRows.size, 0);
      assert.equal(storage.data.has(key), false, "the earlier release's key is deleted too");
      assert.deepEqual([...read()], [0]);
    });
  }

  if (sqlite) {
    test("SQLite-backed: pages of a row generation are rows, read by kv_row's path (pageRow) as the general path reads them, with no kv key read or deleted", () => {
      const storage = new LoggedStorage();
      storage.data.set("p:0000000003", Uint8Array.of(6).buffer); // a kv page: never consulted
      const te = new TextEncoder();
      const u16 = (n) => [n & 0xff, n >> 8];
      const u64 = (n) => [...new Uint8Array(BigUint64Array.of(BigInt(n)).buffer)];
      const str = (v) => [...u16(te.encode(v).length), ...te.encode(v)];
      const limits = [...u16(128), ...u16(2048), 0x40, 0x42, 0x0f, 0];
      const SELECT = "SELECT value AS record FROM dosql_pages WHERE id = ?";
      const CREATE = "CREATE TABLE IF NOT EXISTS dosql_pages(id INTEGER PRIMARY KEY, value BLOB NOT NULL)";
      const UPSERT = "INSERT OR REPLACE INTO dosql_pages(id, value) VALUES (?, ?)";
      const item = (id) => [2, ...str(SELECT), ...u64(id), 0, 0];
      const request = (ids) => Uint8Array.from([...limits, ...new Uint8Array(Uint32Array.of(ids.length).buffer), ...ids.flatMap(item)]);
      const plan = (ops) => Uint8Array.from([0, 0, 0, 0, 0, ...limits, ...new Uint8Array(Uint32Array.of(ops.length).buffer), ...ops.flat()]);
      // No table yet: absent, not an error.
      assert.deepEqual([...new KvBridge(storage, true).readSync(request([3]))], [0]);
      const big = 2 ** 40 + 3; // generation 2^20 + 256, page 3: beyond 32 bits
      new KvBridge(storage, true).apply(plan([
        [5, ...str(CREATE), ...str(UPSERT), ...u64(3), 1, 0, 0, 0, 9],
        [5, ...str(CREATE), ...str(UPSERT), ...u64(big), 3, 0, 0, 0, 7, 8, 9],
      ]));
      assert.deepEqual(storage.log, [["sql.pages", 3], ["sql.pages", big]]);
      for (const [id, want] of [[3, [1, 1, 0, 0, 0, 9]], [big, [1, 3, 0, 0, 0, 7, 8, 9]], [4, [0]]]) {
        const one = new KvBridge(storage, true);
        const two = new KvBridge(storage, true);
        const blob = one.pageRow(SELECT, id);
        assert.deepEqual(blob === undefined ? [0] : [1, blob.byteLength, 0, 0, 0, ...new Uint8Array(blob)], want, `row ${id}`);
        // The general path (a read request) answers the same and counts the same.
        const a = two.readSync(request([id]));
        assert.deepEqual([...a], want, `row ${id}`);
        for (const [name, n] of Object.entries(one.stats)) assert.equal(two.stats[name], n, `${id}: ${name}`);
      }
      // A row that holds no blob is refused, not read as a page.
      storage.pageRows.set(5, "text");
      assert.throws(() => new KvBridge(storage, true).pageRow(SELECT, 5), /row 5 holds no blob/);
      storage.pageRows.delete(5);
      storage.log.length = 0;
      new KvBridge(storage, true).apply(plan([[6, ...str("DELETE FROM dosql_pages WHERE id = ?"), ...u64(3), 0, 0]]));
      assert.deepEqual(storage.log, [["sql.pages.delete", 3]], "the row alone: no key");
      assert.equal(storage.pageRows.has(3), false);
      assert.equal(storage.data.has("p:0000000003"), true);
    });
  }

  if (sqlite) {
    test("SQLite-backed: a cold instance reads its pages through kv_row, a blob past its buffer through kv_take, and a failed row read is the query's error", () => {
      for (const newPageSize of [4096, 65536]) {
        const storage = new MemoryStorage();
        const first = DosqlInstance.createSync(module, new KvBridge(storage, true), { ...opts, newPageSize });
        run(first, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
        // Random bytes do not compress: stored pages are as big as pages (past the 4 KiB the
        // first read's buffer holds, for 64 KiB pages).
        const fill = run(first, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<60) INSERT INTO t(v) SELECT randomblob(3000) FROM n");
        assert.equal(fill.status, 200, JSON.stringify(fill.body));
        const want = run(first, "SELECT id, hex(v) FROM t ORDER BY id").body.rows;
        const bridge = new KvBridge(storage, true);
        const cold = DosqlInstance.createSync(module, bridge, { ...opts, newPageSize });
        const [reads, rowReads] = [storage.reads, storage.pageRowReads];
        assert.deepEqual(run(cold, "SELECT id, hex(v) FROM t ORDER BY id").body.rows, want, `${newPageSize}`);
        assert.ok(storage.pageRowReads > rowReads, "pages read as rows");
        // Every read counted; the head's and the replication record's came before `reads`.
        assert.equal(bridge.stats.get_calls, storage.reads - reads + 2);
        assert.ok(bridge.stats.bytes_read > (newPageSize === 65536 ? 60_000 : 3000), `${bridge.stats.bytes_read}`);
        // A page row that is not a blob: the query fails with the host's reason; the instance
        // answers the next request.
        const again = DosqlInstance.createSync(module, new KvBridge(storage, true), { ...opts, newPageSize });
        const saved = new Map(storage.pageRows);
        for (const id of storage.pageRows.keys()) storage.pageRows.set(id, "not a page");
        const bad = run(again, "SELECT count(*) FROM t");
        assert.equal(bad.status, 500, JSON.stringify(bad.body));
        assert.match(JSON.stringify(bad.body), /kv_row: row \d+ holds no blob/);
        for (const [id, v] of saved) storage.pageRows.set(id, v);
        assert.deepEqual(run(again, "SELECT count(*) FROM t").body.rows, [[60]]);
      }
    });
  }

  if (sqlite) {
    test("SQLite-backed: a read of one key (its own short path) answers and counts as the general path does", () => {
      const storage = new MemoryStorage();
      storage.data.set("p:1", Uint8Array.of(7, 8, 9).buffer);
      storage.data.set("p:2", { a: 1, b: Uint8Array.of(1, 2).buffer });
      storage.data.set("p:3", new Uint8Array([5, 6, 7, 8]).subarray(1, 3));
      storage.data.set("p:big", new Uint8Array(70_000).fill(3).buffer);
      const te = new TextEncoder();
      const u16 = (n) => [n & 0xff, n >> 8];
      const request = (keys, keyBytes = 2048) => Uint8Array.from([...u16(128), ...u16(keyBytes), 0x40, 0x42, 0x0f, 0, ...new Uint8Array(Uint32Array.of(keys.length).buffer), ...keys.flatMap((k) => [0, ...u16(k.length), ...te.encode(k)])]);
      for (const key of ["p:1", "p:2", "p:3", "p:big", "p:none"]) {
        const one = new KvBridge(storage, true);
        const two = new KvBridge(storage, true);
        const a = one.readSync(request([key]));
        // Two items take the general path: its answer is the one item's twice.
        const b = two.readSync(request([key, key]));
        assert.equal(b.byteLength, 2 * a.byteLength, key);
        assert.deepEqual([...b.subarray(0, a.byteLength)], [...a], key);
        for (const [name, n] of Object.entries(one.stats)) assert.equal(two.stats[name], /_max$/.test(name) ? n : 2 * n, `${key}: ${name}`);
        assert.ok(one.stats.get_calls === 1 && one.stats.key_bytes_max === key.length, key);
      }
      assert.deepEqual([...new KvBridge(storage, true).readSync(request(["p:1"]))], [1, 3, 0, 0, 0, 7, 8, 9]);
      // A key past the stated limit is refused, as by the general path.
      assert.throws(() => new KvBridge(storage, true).readSync(request(["p:1"], 2)), LimitError);
    });
  }

  test(`${kind}: what this code writes, the release of 12121ec refuses instead of misreading`, async () => {
    const storage = new LoggedStorage();
    const { db } = open(storage, sqlite);
    run(db, "CREATE TABLE t(x); INSERT INTO t VALUES (42)");
    const pages = new old.PageStorage(storage, { sync: sqlite });
    await assert.rejects(pages.loadMeta(4096), /unsupported (meta record|head row)/);
    if (sqlite) assert.deepEqual(storage.data.get("meta"), { format: 4, head: "dosql_head" }, "the pointer for releases before 4");
    // Nothing was lost: this code still reads it.
    const again = open(storage, sqlite);
    assert.deepEqual(run(again.db, "SELECT x FROM t").body.rows, [[42]]);
  });
}
