// SQLite-backed Durable Object storage in memory, for the warm-up (warmup.ts), tests and the
// benchmark's in-process contenders: what KvBridge (kv.ts) uses of it, the synchronous kv API,
// the head row's three statements and the four of each rows table (the commit log's, the
// pages').

import type { Storage } from "./kv";

export class MemoryStorage implements Storage {
  readonly data = new Map<string, unknown>();
  row: { head: string; inline: ArrayBuffer | null } | null = null;
  /** Reads and writes it served (the warm-up must exercise both), and of the reads those of
   *  kv keys and of page rows (a database's pages are one or the other). */
  reads = 0;
  writes = 0;
  keyReads = 0;
  pageRowReads = 0;

  readonly kv = {
    get: (k: string): unknown => {
      this.reads++;
      this.keyReads++;
      return this.data.get(k);
    },
    put: (k: string, v: unknown): void => {
      this.writes++;
      this.data.set(k, v);
    },
    delete: (k: string): boolean => this.data.delete(k),
  };

  /** The commit log's rows (table dosql_log) and the pages' (dosql_pages), by id. */
  readonly logRows = new Map<number, ArrayBuffer>();
  readonly pageRows = new Map<number, ArrayBuffer>();
  private readonly tables = new Set<string>();

  readonly sql = {
    exec: (query: string, ...params: unknown[]) => {
      const cursor = (rows: unknown[]) => ({ toArray: () => rows });
      const table = /dosql_(head|log|pages)/.exec(query)?.[0] ?? "";
      if (query.startsWith("CREATE TABLE IF NOT EXISTS")) {
        this.tables.add(table);
        return cursor([]);
      }
      if (!this.tables.has(table)) throw new Error(`no such table: ${table}`);
      if (table === "dosql_head") {
        if (query.startsWith("SELECT")) {
          this.reads++;
          return cursor(this.row === null ? [] : [this.row]);
        }
        this.writes++;
        this.row = { head: params[0] as string, inline: params[1] as ArrayBuffer | null };
        return cursor([]);
      }
      const rows = table === "dosql_log" ? this.logRows : this.pageRows;
      const id = params[0] as number;
      if (query.startsWith("SELECT")) {
        this.reads++;
        if (rows === this.pageRows) this.pageRowReads++;
        const record = rows.get(id);
        return cursor(record === undefined ? [] : [{ record }]);
      }
      this.writes++;
      if (query.startsWith("DELETE")) rows.delete(id);
      else rows.set(id, params[1] as ArrayBuffer);
      return cursor([]);
    },
  } as unknown as NonNullable<Storage["sql"]>;

  get = async (keys: string[]): Promise<Map<string, unknown>> => new Map(keys.filter((k) => this.data.has(k)).map((k) => [k, this.data.get(k)]));
  put = async (entries: Record<string, unknown>): Promise<void> => {
    for (const [k, v] of Object.entries(entries)) this.data.set(k, v);
  };
  delete = async (keys: string[]): Promise<number> => keys.filter((k) => this.data.delete(k)).length;
}
