// PageStorage (src/storage.ts) on its own, over an in-memory Durable Object storage: which
// keys a commit writes, that pages carried inside `meta` read back, and that records written
// by older versions (formats 1 and 2) still read. The end-to-end tests (crates/e2e) cover the
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
const { PageStorage, pageKey, INLINE_MAX_BYTES, isPageValue } = storage;
assert.ok(INLINE_MAX_BYTES >= 2048, "a one-row commit (page 1 and a compressed leaf) fits");

/** Durable Object storage in memory, both APIs: classic get/put/delete and synchronous kv.
 *  Values are cloned in and out, as storage serializes them. */
function memoryStorage(initial = {}) {
  const data = new Map(Object.entries(initial).map(([k, v]) => [k, structuredClone(v)]));
  const log = [];
  return {
    data,
    log,
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
  const kind = sync ? "SQLite-backed (kv)" : "classic";

  test(`${kind}: a small commit is one key, and its pages read back from meta`, async () => {
    const mem = memoryStorage();
    const pages = new PageStorage(mem, { sync });
    await pages.loadMeta(4096);
    pages.commit(2, [[1, value(100, 1)], [2, value(300, 2)]]);
    assert.deepEqual(mem.log, [["put", "meta"]]);
    assert.equal(pages.stats.meta_pages, 2);
    // Counted: the pages' bytes and meta's few fields.
    assert.ok(pages.stats.bytes_written >= 400 && pages.stats.bytes_written < 400 + 200, String(pages.stats.bytes_written));

    const cold = new PageStorage(mem, { sync });
    await cold.loadMeta(4096);
    const read = sync ? cold.readPagesSync([1, 2]) : await cold.readPages([1, 2]);
    assert.deepEqual(read.map((v) => v.byteLength), [100, 300]);
    assert.equal(cold.stats.get_keys, 1, "only meta was read");
  });

  test(`${kind}: a page the next commit does not rewrite leaves meta for its key in that commit`, async () => {
    const mem = memoryStorage();
    const pages = new PageStorage(mem, { sync });
    await pages.loadMeta(4096);
    pages.commit(3, [[1, value(100, 1)], [2, value(300, 2)]]);
    pages.commit(3, [[1, value(100, 3)], [2, value(300, 4)]]);
    mem.log.length = 0;
    pages.commit(3, [[1, value(100, 5)], [3, value(300, 6)]]);
    assert.deepEqual(mem.log, [["put", pageKey(2)], ["put", "meta"]]);
    assert.equal(pages.stats.evicted_pages, 1);
    assert.deepEqual(mem.data.get("meta").inline_nos, [1, 3]);

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
    const meta = mem.data.get("meta");
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
    assert.deepEqual(mem.log, [["put", pageKey(1)], ["put", "meta"]]);
    assert.deepEqual(mem.data.get("meta").inline_nos, [2]);
    assert.equal(pages.stats.meta_pages, 1);
  });

  test(`${kind}: shrinking drops inline pages and deletes keys past the end`, async () => {
    const mem = memoryStorage();
    const pages = new PageStorage(mem, { sync });
    await pages.loadMeta(4096);
    pages.commit(6, Array.from({ length: 6 }, (_, i) => [i + 1, value(1500, i + 1)]));
    pages.commit(2, [[1, value(100, 9)]]);
    const meta = mem.data.get("meta");
    assert.ok(meta.inline_nos.every((no) => no <= 2), JSON.stringify(meta.inline_nos));
    for (let no = 3; no <= 6; no++) assert.ok(!mem.data.has(pageKey(no)), `page ${no} key left behind`);
    const read = await pages.readPages([1, 2, 3]);
    assert.deepEqual(read.map((v) => v?.[0] ?? null), [9, 2, null]);
  });
}

test("a format 2 record (page 1 as page1) reads, and the next commit writes format 3", async () => {
  const mem = memoryStorage({
    meta: { format: 2, page_size: 4096, page_count: 2, txid: 7, page1: value(50, 1) },
    [pageKey(2)]: value(60, 2),
  });
  const pages = new PageStorage(mem, { sync: true });
  await pages.loadMeta(4096);
  assert.deepEqual(bytes(pages.readPagesSync([1])[0]), bytes(value(50, 1)));
  assert.deepEqual(bytes(pages.readPagesSync([2])[0]), bytes(value(60, 2)));
  mem.log.length = 0;
  pages.commit(2, [[2, value(70, 3)]]);
  const meta = mem.data.get("meta");
  assert.equal(meta.format, 3);
  assert.equal(meta.txid, 8);
  assert.equal(meta.page1, undefined);
  // Page 1 was in the old meta and is not rewritten: it moves to its key.
  assert.deepEqual(mem.log, [["put", pageKey(1)], ["put", "meta"]]);
  assert.deepEqual(meta.inline_nos, [2]);
  const cold = new PageStorage(mem, { sync: true });
  await cold.loadMeta(4096);
  assert.deepEqual(cold.readPagesSync([1, 2]).map((v) => v.byteLength), [50, 70]);
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
    { format: 4, page_size: 4096, page_count: 1, txid: 1 },
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
