// The stored form of a page (src/pagecodec.ts): every page comes back byte for byte, elided
// values are shorter than a page, and values no encoder wrote are refused, never misread.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = mkdtempSync(join(tmpdir(), "dosql-pagecodec-"));
await build({ entryPoints: [join(here, "..", "src", "pagecodec.ts")], outfile: join(out, "pagecodec.mjs"), format: "esm", logLevel: "error" });
const { encodePage, decodePage, decodePageInto, MIN_HOLE } = await import(pathToFileURL(join(out, "pagecodec.mjs")).href);
rmSync(out, { recursive: true });

/** A deterministic PRNG (mulberry32). */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A page shaped like a B-tree page: `head` bytes of header, `tail` bytes of cells at the end. */
function btreeLike(size, head, tail, rand) {
  const page = new Uint8Array(size);
  for (let i = 0; i < head; i++) page[i] = 1 + Math.floor(rand() * 255);
  for (let i = size - tail; i < size; i++) page[i] = Math.floor(rand() * 256);
  return page;
}

function roundTrip(page) {
  const stored = new Uint8Array(encodePage(page));
  assert.ok(stored.byteLength <= page.byteLength, "never longer than the page");
  assert.deepEqual(decodePage(stored, page.byteLength), page);
  // Into memory that held something else (the wasm's page buffer): the hole is written too.
  const dirty = new Uint8Array(page.byteLength).fill(0xff);
  decodePageInto(stored, page.byteLength, dirty);
  assert.deepEqual(dirty, page);
  return stored;
}

test("B-tree shaped pages of every size come back exactly, without their gap", () => {
  const rand = prng(1);
  for (const size of [512, 1024, 4096, 16384, 65536]) {
    for (let i = 0; i < 50; i++) {
      const head = Math.floor(rand() * size * 0.4);
      const tail = Math.floor(rand() * (size - head));
      const page = btreeLike(size, head, tail, rand);
      const stored = roundTrip(page);
      const gap = size - head - tail;
      // Runs are found on words, so up to 6 bytes of the gap may be stored.
      if (gap >= MIN_HOLE + 6) assert.ok(stored.byteLength <= size - gap + 6 + 4, `${size}: ${stored.byteLength} bytes stored for a ${gap}-byte gap`);
    }
  }
});

test("pages without a long zero run are stored raw; all-zero and random pages round-trip", () => {
  const rand = prng(2);
  const noisy = new Uint8Array(4096).map(() => 1 + Math.floor(rand() * 255));
  assert.equal(roundTrip(noisy).byteLength, 4096);
  const shortRuns = noisy.slice();
  for (let i = 100; i < 4000; i += 100) shortRuns.fill(0, i, i + MIN_HOLE - 8);
  assert.equal(roundTrip(shortRuns).byteLength, 4096);
  assert.equal(roundTrip(new Uint8Array(4096)).byteLength, 4);
  for (let i = 0; i < 200; i++) {
    // Sparse pages: several zero runs, the longest anywhere (also at either end).
    const page = new Uint8Array(4096).map(() => (rand() < 0.5 ? 0 : Math.floor(rand() * 256)));
    const a = Math.floor(rand() * 4096);
    page.fill(0, a, a + Math.floor(rand() * (4096 - a)));
    roundTrip(page);
  }
});

test("a view into a larger, unaligned buffer encodes the view only", () => {
  const backing = new Uint8Array(4096 + 3).fill(9);
  const page = backing.subarray(3);
  page.fill(0, 100, 4000);
  roundTrip(page);
});

test("raw values (format 1) decode as they are; values no encoder wrote are refused", () => {
  const raw = new Uint8Array(4096).fill(5);
  assert.deepEqual(decodePage(raw, 4096), raw);
  assert.throws(() => decodePage(new Uint8Array(4097), 4096), /4097 bytes/);
  assert.throws(() => decodePage(new Uint8Array(3), 4096), /3 bytes/);
  const bad = new Uint8Array(104);
  new DataView(bad.buffer).setUint32(100, 101, true);
  assert.throws(() => decodePage(bad, 4096), /hole starts at 101/);
});
