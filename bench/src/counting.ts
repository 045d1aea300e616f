// Counts the storage calls a contender makes: a wrapper around classic (KV-backed) Durable
// Object storage's async get/put/delete, handed to the contender in place of ctx.storage.

import type { Counters } from "./common";
import { byteLength } from "./common";

/** `storage` with get/put/delete counted into `c`; every other member passes through. */
export function countingStorage(storage: DurableObjectStorage, c: Counters): DurableObjectStorage {
  const get = async (keys: string | string[], opts?: DurableObjectGetOptions): Promise<unknown> => {
    c.get_calls++;
    if (Array.isArray(keys)) {
      c.get_keys += keys.length;
      const m = await storage.get(keys, opts);
      for (const v of m.values()) c.bytes_read += byteLength(v);
      return m;
    }
    c.get_keys++;
    const v = await storage.get(keys, opts);
    c.bytes_read += byteLength(v);
    return v;
  };
  const put = (a: string | Record<string, unknown>, b?: unknown, opts?: DurableObjectPutOptions): Promise<void> => {
    c.put_calls++;
    if (typeof a === "string") {
      c.put_keys++;
      c.bytes_written += byteLength(b);
      return storage.put(a, b, opts);
    }
    const values = Object.values(a);
    c.put_keys += values.length;
    for (const v of values) c.bytes_written += byteLength(v);
    return storage.put(a, b as DurableObjectPutOptions | undefined);
  };
  const del = (keys: string | string[], opts?: DurableObjectPutOptions): Promise<unknown> => {
    c.delete_calls++;
    c.delete_keys += Array.isArray(keys) ? keys.length : 1;
    return storage.delete(keys as string[], opts);
  };
  return new Proxy(storage, {
    get(target, prop) {
      if (prop === "get") return get;
      if (prop === "put") return put;
      if (prop === "delete") return del;
      const v = Reflect.get(target, prop);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/** `ctx` with its storage replaced by `storage`. */
export function withStorage(ctx: DurableObjectState, storage: DurableObjectStorage): DurableObjectState {
  return new Proxy(ctx, {
    get(target, prop) {
      if (prop === "storage") return storage;
      const v = Reflect.get(target, prop);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}
