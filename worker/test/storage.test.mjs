// PageStorage (src/storage.ts) on its own, over an in-memory Durable Object storage: which
// keys a commit writes, that pages carried inside `meta` read back, where SQLite-backed
// storage keeps the head (a row of HEAD_TABLE), and that records written by older versions
// (formats 1 to 3) still read. The end-to-end tests (crates/e2e) cover the
// same code on workerd; these pin the layout itself.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const { build } = createRequire(import.meta.url)("esbuild");

const bundle = await build({
  entryPoints: [join(here, "..", "src", "storage.ts")],
  bundle: true,
  format: "esm",
  platform: "neutral",
  write: false,
});
const storage = await import(`data:text/javascript;base64,${Buffer.from(bundle.outputFiles[0].text).toString("base64")}`);
const { PageStorage, pageKey, INLINE_MAX_BYTES, HEAD_TABLE, isPageValue } = storage;
assert.ok(INLINE_MAX_BYTES >= 2048, "a one-row commit (page 1 and a compressed leaf) fits");

/** Durable Object storage in memory, every API PageStorage uses: classic get/put/delete,
 *  synchronous kv, and of the SQL API the statements PageStorage runs on HEAD_TABLE (anything
 *  else throws). Values are cloned in and out, as storage serializes them. A head row write
 *  is logged as ["head"]. */
function memoryStorage(initial = {}) {
  const data = new Map(Object.entries(initial).map(([k, v]) => [k, structuredClone(v)]));
  const log = [];
  /** HEAD_TABLE's rows by id, once the table exists. */
  let table = null;
  const cursor = (rows) => ({ toArray: () => rows });
  const sql = {
    exec(query, ...params) {
      if (/^SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = \?$/.test(query)) {
        return cursor(table !== null && params[0] === HEAD_TABLE ? [{ 1: 1 }] : []);
      }
      if (query.startsWith(`CREATE TABLE IF NOT EXISTS ${HEAD_TABLE}(`)) {
        table ??= new Map();
        return cursor([]);
      }
      if (table === null) throw new Error(`no such table: ${HEAD_TABLE}`);
      if (query === `SELECT head, inline FROM ${HEAD_TABLE} WHERE id = 0`) {
        return cursor(table.has(0) ? [structuredClone(table.get(0))] : []);
      }
      if (query === `INSERT OR REPLACE INTO ${HEAD_TABLE}(id, head, inline) VALUES (0, ?, ?)`) {
        assert.equal(typeof params[0], "string");
        assert.ok(params[1] === null || params[1] instanceof ArrayBuffer);
        log.push(["head"]);
        table.set(0, structuredClone({ head: params[0], inline: params[1] }));
        return cursor([]);
      }
      throw new Error(`unexpected SQL: ${query}`);
    },
  };
  return {
    data,
    log,
    sql,
    /** The head record as PageStorage wrote it: the "meta" key, or HEAD_TABLE's row decoded. */
    head() {
      const row = table?.get(0);
      if (row === undefined) return data.get("meta");
      const { inline_lens: lens, ...meta } = JSON.parse(row.head);
      if (lens !== undefined) {
        let off = 0;
        meta.inline = lens.map((n) => row.inline.slice(off, (off += n)));
      }
      return meta;
    },
    setHeadRow(row) {
      table ??= new Map();
      table.set(0, row);
    },
    async get(keys) {
      return new Map(keys.filter((k) => data.has(k)).map((k) => [k, structuredClone(data.get(k))]));
    },
    async put(entries) {
      for (const [k, v] of Object.entries(entries)) {
        log.push(["put", k]);
        data.set(k, structuredClone(v));
      }
    },
    async delete(keys) {
      for (const k of keys) {
        log.push(["delete", k]);
        data.delete(k);
      }
    },
    kv: {
      get: (k) => structuredClone(data.get(k)),
      put(k, v) {
        log.push(["put", k]);
        data.set(k, structuredClone(v));
      },
      delete(k) {
        log.push(["delete", k]);
        data.delete(k);
      },
    },
  };
}

/** A stored page value of `n` bytes, each `fill`. */
const value = (n, fill) => new Uint8Array(n).fill(fill).buffer;
const bytes = (v) => (v === null ? null : [...new Uint8Array(v)]);

for (const sync of [false, true]) {
  const kind = sync ? "SQLite-backed" : "classic";
  /** How a commit's head write shows in the log. */
  const HEAD = sync ? ["head"] : ["put", "meta"];

  test(`${kind}: a small commit is one key, and its pages read back from meta`, async () => {
    const mem = memoryStorage();
    const pages = new PageStorage(mem, { sync });
    await pages.loadMeta(4096);
    pages.commit(2, [[1, value(100, 1)], [2, value(300, 2)]]);
    // SQLite-backed: the head row, and (once) the pointer to it under "meta".
    assert.deepEqual(mem.log, sync ? [HEAD, ["put", "meta"]] : [HEAD]);
    if (sync) assert.deepEqual(mem.data.get("meta"), { format: 4, head: HEAD_TABLE });
    assert.equal(mem.head().format, sync ? 4 : 3);
    mem.log.length = 0;
    pages.commit(2, [[1, value(100, 1)], [2, value(300, 2)]]);
    assert.deepEqual(mem.log, [HEAD], "the next commit writes the head alone");
    assert.equal(pages.stats.meta_pages, 4);
    // Counted: the pages' bytes and meta's few fields.
    assert.ok(pages.stats.bytes_written >= 800 && pages.stats.bytes_written < 800 + 400, String(pages.stats.bytes_written));

    const cold = new PageStorage(mem, { sync });
    await cold.loadMeta(4096);
    const read = sync ? cold.readPagesSync([1, 2]) : await cold.readPages([1, 2]);
    assert.deepEqual(read.map((v) => v.byteLength), [100, 300]);
    assert.equal(cold.stats.get_keys, 1, "only the head was read");
  });

  test(`${kind}: a page the next commit does not rewrite leaves meta for its key in that commit`, async () => {
    const mem = memoryStorage();
    const pages = new PageStorage(mem, { sync });
    await pages.loadMeta(4096);
    pages.commit(3, [[1, value(100, 1)], [2, value(300, 2)]]);
    pages.commit(3, [[1, value(100, 3)], [2, value(300, 4)]]);
    mem.log.length = 0;
    pages.commit(3, [[1, value(100, 5)], [3, value(300, 6)]]);
    assert.deepEqual(mem.log, [["put", pageKey(2)], HEAD]);
    assert.equal(pages.stats.evicted_pages, 1);
    assert.deepEqual(mem.head().inline_nos, [1, 3]);

    const cold = new PageStorage(mem, { sync });
    await cold.loadMeta(4096);
    const read = await cold.readPages([1, 2, 3, 4]);
    assert.deepEqual(read.map((v) => v?.[0] ?? null), [5, 4, 6, null]);
  });

  test(`${kind}: a commit over the budget keeps its last pages in meta and puts the rest under keys`, async () => {
    const mem = memoryStorage();
    const pages = new PageStorage(mem, { sync });
    await pages.loadMeta(4096);
    const all = Array.from({ length: 40 }, (_, i) => [i + 1, value(1000, i + 1)]);
    pages.commit(40, all);
    const meta = mem.head();
    assert.ok(meta.inline.reduce((n, v) => n + v.byteLength, 0) <= INLINE_MAX_BYTES);
    assert.equal(meta.inline_nos.at(-1), 40);
    // Page 1 stays: a cold start reads it first.
    assert.equal(meta.inline_nos[0], 1);
    for (let no = 1; no <= 40; no++) {
      assert.equal(mem.data.has(pageKey(no)), !meta.inline_nos.includes(no), `page ${no}`);
    }
    const cold = new PageStorage(mem, { sync });
    await cold.loadMeta(4096);
    const read = await cold.readPages(all.map(([no]) => no));
    assert.deepEqual(read.map((v) => v[0]), all.map(([no]) => no));
  });

  test(`${kind}: a page 1 over the budget by itself leaves meta, the other pages stay`, async () => {
    const mem = memoryStorage();
    const pages = new PageStorage(mem, { sync });
    await pages.loadMeta(16384);
    pages.commit(2, [[1, value(INLINE_MAX_BYTES + 1, 1)], [2, value(100, 2)]]);
    assert.deepEqual(mem.log.slice(0, 2), [["put", pageKey(1)], HEAD]);
    assert.deepEqual(mem.head().inline_nos, [2]);
    assert.equal(pages.stats.meta_pages, 1);
  });

  test(`${kind}: shrinking drops inline pages and deletes keys past the end`, async () => {
    const mem = memoryStorage();
    const pages = new PageStorage(mem, { sync });
    await pages.loadMeta(4096);
    pages.commit(6, Array.from({ length: 6 }, (_, i) => [i + 1, value(1500, i + 1)]));
    pages.commit(2, [[1, value(100, 9)]]);
    const meta = mem.head();
    assert.ok(meta.inline_nos.every((no) => no <= 2), JSON.stringify(meta.inline_nos));
    for (let no = 3; no <= 6; no++) assert.ok(!mem.data.has(pageKey(no)), `page ${no} key left behind`);
    const read = await pages.readPages([1, 2, 3]);
    assert.deepEqual(read.map((v) => v?.[0] ?? null), [9, 2, null]);
  });
}

for (const sync of [false, true]) {
  const writes = sync ? 4 : 3;
  test(`a format 2 record (page 1 as page1) reads, and the next commit writes format ${writes}`, async () => {
    const mem = memoryStorage({
      meta: { format: 2, page_size: 4096, page_count: 2, txid: 7, page1: value(50, 1) },
      [pageKey(2)]: value(60, 2),
    });
    const pages = new PageStorage(mem, { sync });
    await pages.loadMeta(4096);
    const read = (p, nos) => (sync ? p.readPagesSync(nos) : p.readPages(nos));
    assert.deepEqual(bytes((await read(pages, [1]))[0]), bytes(value(50, 1)));
    assert.deepEqual(bytes((await read(pages, [2]))[0]), bytes(value(60, 2)));
    mem.log.length = 0;
    pages.commit(2, [[2, value(70, 3)]]);
    const meta = mem.head();
    assert.equal(meta.format, writes);
    assert.equal(meta.txid, 8);
    assert.equal(meta.page1, undefined);
    // Page 1 was in the old meta and is not rewritten: it moves to its key. SQLite-backed
    // storage replaces the old record under "meta" with the pointer to the head row.
    assert.deepEqual(mem.log, sync ? [["put", pageKey(1)], ["head"], ["put", "meta"]] : [["put", pageKey(1)], ["put", "meta"]]);
    assert.deepEqual(meta.inline_nos, [2]);
    const cold = new PageStorage(mem, { sync });
    await cold.loadMeta(4096);
    assert.deepEqual((await read(cold, [1, 2])).map((v) => v.byteLength), [50, 70]);
  });
}

test("SQLite-backed: code that does not know the head table refuses the database, never reads it as empty", async () => {
  const mem = memoryStorage();
  const pages = new PageStorage(mem, { sync: true });
  await pages.loadMeta(4096);
  pages.commit(1, [[1, value(100, 1)]]);
  // A format-3 reader takes "meta" as the head: it holds a format it does not know.
  assert.equal(mem.data.get("meta").format, 4);
  assert.equal(mem.data.get("meta").page_count, undefined);
  // So does this code without the SQL API (a classic object over the same keys).
  await assert.rejects(new PageStorage(mem).loadMeta(4096), /head is in table dosql_head/);
});

test("SQLite-backed: a format 3 database (head under \"meta\", pages inline) moves to the table with its next commit", async () => {
  const mem = memoryStorage({
    meta: { format: 3, page_size: 4096, page_count: 3, txid: 5, inline_nos: [1, 3], inline: [value(40, 1), value(50, 3)] },
    [pageKey(1)]: value(30, 9),
    [pageKey(2)]: value(60, 2),
  });
  const pages = new PageStorage(mem, { sync: true });
  await pages.loadMeta(4096);
  assert.deepEqual(pages.readPagesSync([1, 2, 3]).map((v) => v[0]), [1, 2, 3], "inline pages win over older keys");
  mem.log.length = 0;
  pages.commit(3, [[2, value(70, 4)]]);
  // Pages 1 and 3 leave the old head for their keys; the head row, then the pointer.
  assert.deepEqual(mem.log, [["put", pageKey(1)], ["put", pageKey(3)], ["head"], ["put", "meta"]]);
  assert.deepEqual(mem.data.get("meta"), { format: 4, head: HEAD_TABLE });
  const head = mem.head();
  assert.equal(head.format, 4);
  assert.equal(head.txid, 6);
  assert.deepEqual(head.inline_nos, [2]);
  const cold = new PageStorage(mem, { sync: true });
  await cold.loadMeta(4096);
  assert.deepEqual(cold.readPagesSync([1, 2, 3]).map((v) => [v[0], v.byteLength]), [[1, 40], [4, 70], [3, 50]]);
  // A reloaded instance knows the pointer is there: its commits write the row alone.
  mem.log.length = 0;
  cold.commit(3, [[2, value(70, 5)]]);
  assert.deepEqual(mem.log, [["head"]]);
});

test("SQLite-backed: an import into a database that never committed writes the pointer too", async () => {
  const mem = memoryStorage();
  const pages = new PageStorage(mem, { sync: true });
  await pages.loadMeta(4096);
  await pages.loadTransfer();
  pages.beginImport(4096, 1);
  pages.stagePages(1, [value(4096, 7)]);
  mem.log.length = 0;
  pages.switchToStaged();
  assert.deepEqual(mem.log, [["put", "transfer"], ["head"], ["put", "meta"]]);
  assert.deepEqual(mem.data.get("meta"), { format: 4, head: HEAD_TABLE });
  await assert.rejects(new PageStorage(mem).loadMeta(4096), /head is in table/);
});

test("SQLite-backed: a pointer without its head row, or a head row that does not add up, is refused", async () => {
  const lost = memoryStorage({ meta: { format: 4, head: HEAD_TABLE } });
  await assert.rejects(new PageStorage(lost, { sync: true }).loadMeta(4096), /holds no head/);
  const rows = [
    { head: "{", inline: null },
    { head: JSON.stringify({ format: 4, page_size: 4096, page_count: 1, txid: 1, inline_nos: [1], inline_lens: [10] }), inline: value(9, 1) },
    { head: JSON.stringify({ format: 4, page_size: 4096, page_count: 1, txid: 1, inline_nos: [1] }), inline: value(10, 1) },
    { head: JSON.stringify({ format: 4, page_size: 4096, page_count: 1, txid: 1, inline_nos: [1], inline_lens: [5, 5] }), inline: value(10, 1) },
    { head: JSON.stringify({ format: 3, page_size: 4096, page_count: 1, txid: 1 }), inline: null },
  ];
  for (const row of rows) {
    const mem = memoryStorage({ meta: { format: 4, head: HEAD_TABLE } });
    mem.setHeadRow(row);
    await assert.rejects(new PageStorage(mem, { sync: true }).loadMeta(4096), /unsupported (head row|meta record)/, row.head);
  }
});

test("SQLite-backed: an import's switch writes the head row with the transfer record", async () => {
  const mem = memoryStorage();
  const pages = new PageStorage(mem, { sync: true });
  await pages.loadMeta(4096);
  pages.commit(1, [[1, value(100, 1)]]);
  await pages.loadTransfer();
  pages.beginImport(4096, 2);
  pages.stagePages(1, [value(4096, 7), value(30, 8)]);
  mem.log.length = 0;
  const meta = pages.switchToStaged();
  assert.deepEqual(mem.log, [["put", "transfer"], ["head"]]);
  assert.deepEqual(mem.head(), { format: 4, page_size: 4096, page_count: 2, txid: 2, prefix: "g1:p:" });
  assert.equal(meta.prefix, "g1:p:");
  const cold = new PageStorage(mem, { sync: true });
  await cold.loadMeta(4096);
  assert.deepEqual(cold.readPagesSync([1, 2]).map((v) => v[0]), [7, 8]);
});

test("a format 1 record (raw pages under their keys) reads", async () => {
  const mem = memoryStorage({
    meta: { format: 1, page_size: 512, page_count: 2, txid: 3 },
    [pageKey(1)]: value(512, 1),
    [pageKey(2)]: value(512, 2),
  });
  const pages = new PageStorage(mem);
  await pages.loadMeta(4096);
  assert.deepEqual((await pages.readPages([1, 2])).map((v) => v[0]), [1, 2]);
  // Page 1 joins meta; its key (now older) is never read while it is there.
  pages.commit(2, [[1, value(20, 5)]]);
  assert.deepEqual((await pages.readPages([1, 2])).map((v) => v[0]), [5, 2]);
});

test("meta records that are not understood are refused", async () => {
  const bad = [
    { format: 5, page_size: 4096, page_count: 1, txid: 1 },
    { format: 3, page_size: 4096, page_count: 1, txid: 1, inline_nos: [2], inline: [value(10, 1)] },
    { format: 3, page_size: 4096, page_count: 2, txid: 1, inline_nos: [1, 1], inline: [value(10, 1), value(10, 1)] },
    { format: 3, page_size: 4096, page_count: 1, txid: 1, inline_nos: [1], inline: [] },
    { format: 3, page_size: 4096, page_count: 1, txid: 1, inline_nos: [1], inline: [value(4097, 1)] },
    { format: 3, page_size: 4096, page_count: 1, txid: 1, page1: value(10, 1) },
  ];
  for (const meta of bad) {
    const pages = new PageStorage(memoryStorage({ meta }));
    await assert.rejects(pages.loadMeta(4096), /unsupported meta record/, JSON.stringify(meta.inline_nos ?? meta.format));
  }
});

test("isPageValue: raw pages and LZ4 blocks that decode to exactly one page", () => {
  // Literal 13, a match of 4090 bytes at offset 1 (15 + 255 x 15 + 246, + 4), five zero
  // literals: 4096 bytes.
  const block = [0x1f, 13, 1, 0, ...new Array(15).fill(255), 246, 0x50, 0, 0, 0, 0, 0];
  const ok = (bytes, size = 4096) => isPageValue(new Uint8Array(bytes), size);
  assert.ok(ok(block));
  assert.ok(ok(new Array(4096).fill(7)), "a raw page");
  assert.ok(!ok(block, 8192), "decodes to less than the page");
  assert.ok(!ok(block.slice(0, -1)), "cut short in the last literals");
  assert.ok(!ok(block.slice(0, 3)), "cut short in the offset");
  assert.ok(!ok(block.slice(0, 10)), "cut short in the match length");
  assert.ok(!ok([0x1f, 13, 2, 0, ...block.slice(4)]), "a match before the start");
  assert.ok(!ok([0x1f, 13, 0, 0, ...block.slice(4)]), "offset 0");
  assert.ok(!ok([...block.slice(0, -6), 0x60, 0, 0, 0, 0, 0, 0]), "decodes past the page");
  assert.ok(!ok(new Array(20).fill(0x1f)), "noise");
  assert.ok(!ok([]), "empty");
  assert.ok(!ok(new Array(4097).fill(0)), "longer than a page");
});
