// SQLite-backed Durable Object storage in memory, for the warm-up (warmup.ts), tests and the
// benchmark's in-process contenders: what KvBridge (kv.ts) uses of it, the synchronous kv API,
// the head row's three statements and the commit log rows' four.

import type { Storage } from "./kv";

export class MemoryStorage implements Storage {
  readonly data = new Map<string, unknown>();
  row: { head: string; inline: ArrayBuffer | null } | null = null;
  private table = false;
  /** Reads and writes it served (the warm-up must exercise both). */
  reads = 0;
  writes = 0;

  readonly kv = {
    get: (k: string): unknown => {
      this.reads++;
      return this.data.get(k);
    },
    put: (k: string, v: unknown): void => {
      this.writes++;
      this.data.set(k, v);
    },
    delete: (k: string): boolean => this.data.delete(k),
  };

  /** The commit log's rows (table dosql_log), by id. */
  readonly logRows = new Map<number, ArrayBuffer>();
  private logTable = false;

  readonly sql = {
    exec: (query: string, ...params: unknown[]) => {
      const cursor = (rows: unknown[]) => ({ toArray: () => rows });
      const log = /dosql_log/.test(query);
      if (query.startsWith("CREATE TABLE IF NOT EXISTS")) {
        if (log) this.logTable = true;
        else this.table = true;
        return cursor([]);
      }
      if (!(log ? this.logTable : this.table)) throw new Error("no such table");
      if (log) {
        const id = params[0] as number;
        if (query.startsWith("SELECT")) {
          this.reads++;
          const record = this.logRows.get(id);
          return cursor(record === undefined ? [] : [{ record }]);
        }
        this.writes++;
        if (query.startsWith("DELETE")) this.logRows.delete(id);
        else this.logRows.set(id, params[1] as ArrayBuffer);
        return cursor([]);
      }
      if (query.startsWith("SELECT")) {
        this.reads++;
        return cursor(this.row === null ? [] : [this.row]);
      }
      this.writes++;
      this.row = { head: params[0] as string, inline: params[1] as ArrayBuffer | null };
      return cursor([]);
    },
  } as unknown as NonNullable<Storage["sql"]>;

  get = async (keys: string[]): Promise<Map<string, unknown>> => new Map(keys.filter((k) => this.data.has(k)).map((k) => [k, this.data.get(k)]));
  put = async (entries: Record<string, unknown>): Promise<void> => {
    for (const [k, v] of Object.entries(entries)) this.data.set(k, v);
  };
  delete = async (keys: string[]): Promise<number> => keys.filter((k) => this.data.delete(k)).length;
}
