// dosql's page layout (worker/src/storage.ts: "p:0000000001"... and "meta") in a SQLite-backed
// Durable Object, through the SYNCHRONOUS `ctx.storage.kv` API: reads never suspend, so the
// wasm runs with plain imports (DosqlInstance.createSync), no JSPI, no asyncify.
//
// A commit runs inside `ctx.storage.transactionSync`, so its puts and deletes are one SQLite
// transaction. Values in SQLite-backed storage may be up to 2 MB; pages are at most 64 KiB.
// Counters are kept in the shape of PageStorage.stats (/_storage_stats).

import type { Meta } from "../../worker/src/storage";
import type { CommittedPages, SyncPageSource } from "../../worker/src/dosql";
import { type Counters, newCounters } from "./common";

export const pageKey = (no: number): string => `p:${String(no).padStart(10, "0")}`;

function isPageSize(n: number): boolean {
  return Number.isInteger(n) && n >= 512 && n <= 65536 && (n & (n - 1)) === 0;
}

export class KvPageStorage implements SyncPageSource {
  readonly stats: Counters & { put_keys_max: number } = { ...newCounters(), put_keys_max: 0 };
  meta: Meta = { format: 1, page_size: 4096, page_count: 0, txid: 0 };
  private readonly kv: SyncKvStorage;

  constructor(private readonly storage: DurableObjectStorage) {
    this.kv = storage.kv;
  }

  loadMeta(newPageSize: number): Meta {
    this.stats.get_calls++;
    this.stats.get_keys++;
    const stored = this.kv.get<Meta>("meta");
    if (stored === undefined) {
      if (!isPageSize(newPageSize)) throw new Error(`PAGE_SIZE ${newPageSize} is not a power of two in 512..65536`);
      this.meta = { format: 1, page_size: newPageSize, page_count: 0, txid: 0 };
    } else {
      if (stored.format !== 1 || !isPageSize(stored.page_size)) throw new Error(`unsupported meta ${JSON.stringify(stored)}`);
      this.meta = { ...stored };
    }
    return this.meta;
  }

  readPagesSync(nos: readonly number[]): (Uint8Array | null)[] {
    const size = this.meta.page_size;
    return nos.map((no) => {
      if (no < 1 || no > this.meta.page_count) return null;
      this.stats.get_calls++;
      this.stats.get_keys++;
      const v = this.kv.get(pageKey(no));
      if (v === undefined) return null;
      const bytes = v instanceof ArrayBuffer ? new Uint8Array(v)
        : ArrayBuffer.isView(v) ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : null;
      if (bytes === null || bytes.byteLength !== size) throw new Error(`page ${no}: stored value is not ${size} bytes`);
      this.stats.bytes_read += size;
      return bytes;
    });
  }

  commit(pageCount: number, pages: CommittedPages): void {
    const prev = this.meta;
    if (!Number.isInteger(pageCount) || pageCount < 0) throw new Error(`bad page count ${pageCount}`);
    for (const [no, bytes] of pages) {
      if (no < 1 || no > pageCount) throw new Error(`commit writes page ${no} outside 1..${pageCount}`);
      if (bytes.byteLength !== prev.page_size) throw new Error(`page ${no} is ${bytes.byteLength} bytes`);
    }
    const next: Meta = { format: 1, page_size: prev.page_size, page_count: pageCount, txid: prev.txid + 1 };
    this.storage.transactionSync(() => {
      for (const [no, bytes] of pages) this.kv.put(pageKey(no), bytes);
      this.kv.put("meta", next);
      for (let no = pageCount + 1; no <= prev.page_count; no++) this.kv.delete(pageKey(no));
    });
    const s = this.stats;
    // One transaction: counted as one put call of all its keys.
    s.put_calls++;
    s.put_keys += pages.length + 1;
    s.put_keys_max = Math.max(s.put_keys_max, pages.length + 1);
    s.bytes_written += pages.length * prev.page_size;
    const dropped = Math.max(0, prev.page_count - pageCount);
    if (dropped > 0) {
      s.delete_calls++;
      s.delete_keys += dropped;
    }
    s.commits++;
    this.meta = next;
  }
}
