// How a page is stored as a value (meta format 2): a SQLite B-tree page keeps its header and
// cell pointers at the front and its cells at the back, with the unallocated space between them
// zero-filled (fresh pages are zeros; SQLite zeroes the gap when it defragments a page, and on
// every delete under secure_delete, which dosql turns on). Storing that gap is writing zeros:
// a half-full 4 KiB leaf is 2 KiB of them, and page 1 of a small database is nearly all of it.
//
// So a page whose longest run of zero bytes is at least MIN_HOLE long is stored as
//
//     page[0 .. start] ‖ page[end .. size] ‖ start (u32, little-endian)
//
// which is always shorter than the page; any other page is stored as its `size` raw bytes. The
// length tells the two apart: a value of exactly `size` bytes is raw (format 1 stored only those,
// so every older value still decodes), a shorter one is elided and its hole is `size` minus the
// value's length minus 4 bytes long. Runs are found on 4-byte words (pages are 512..65536 bytes,
// a multiple of 4), which keeps the scan to size/4 steps and costs at most 6 bytes of a hole.

/** The shortest hole worth eliding: below this the raw page is stored. */
export const MIN_HOLE = 64;
const TRAILER = 4;

/** The value to store for `page` (a whole page, `byteLength` a multiple of 4): a new buffer. */
export function encodePage(page: Uint8Array): ArrayBuffer {
  const size = page.byteLength;
  const [start, end] = longestZeroRun(page);
  if (end - start < MIN_HOLE) return page.slice().buffer;
  const out = new Uint8Array(size - (end - start) + TRAILER);
  out.set(page.subarray(0, start), 0);
  out.set(page.subarray(end), start);
  new DataView(out.buffer).setUint32(out.byteLength - TRAILER, start, true);
  return out.buffer;
}

/**
 * The page of `size` bytes that `value` stores, written into `out` (exactly `size` bytes; its
 * previous contents do not matter). Throws on a value no encoder produced.
 */
export function decodePageInto(value: Uint8Array, size: number, out: Uint8Array): void {
  const n = value.byteLength;
  if (n === size) {
    out.set(value);
    return;
  }
  if (n < TRAILER || n > size) throw new Error(`a stored page value is ${n} bytes, page size ${size}`);
  const body = n - TRAILER;
  const start = new DataView(value.buffer, value.byteOffset, n).getUint32(body, true);
  if (start > body) throw new Error(`a stored page value's hole starts at ${start}, past its ${body} bytes`);
  const end = start + (size - body);
  out.set(value.subarray(0, start), 0);
  out.fill(0, start, end);
  out.set(value.subarray(start, body), end);
}

/** `decodePageInto` a new buffer. */
export function decodePage(value: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  decodePageInto(value, size, out);
  return out;
}

/** [start, end) of the longest run of zero 4-byte words in `page` ([0, 0] if none). */
function longestZeroRun(page: Uint8Array): [number, number] {
  const words = page.byteOffset % 4 === 0
    ? new Uint32Array(page.buffer, page.byteOffset, page.byteLength >>> 2)
    : new Uint32Array(page.slice().buffer);
  let best = 0;
  let bestStart = 0;
  let runStart = -1;
  for (let i = 0; i <= words.length; i++) {
    if (i < words.length && words[i] === 0) {
      if (runStart < 0) runStart = i;
    } else if (runStart >= 0) {
      if (i - runStart > best) {
        best = i - runStart;
        bestStart = runStart;
      }
      runStart = -1;
    }
  }
  return [bestStart * 4, (bestStart + best) * 4];
}
