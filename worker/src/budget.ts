// One memory budget for every dosql instance in an isolate.
//
// Cloudflare runs many Durable Objects of one class in one isolate, of 128 MB in all. A wasm
// instance's memory only grows, so the budget is kept by dropping idle instances, least
// recently used first, when the sum of their memories would pass it. A dropped instance is
// garbage for V8; its database is rebuilt from storage on its next request (storage holds
// only committed transactions: nothing is lost; its Hrana streams end).
//
// A database that needs an instance takes the one of the least recently used idle database
// when starting a new one would take the others past half the budget: its memory is reused,
// not left for V8's collector (which may take its time: garbage instances held workerd's
// resident memory up by ~100 MB in the 100-database test). The instance serving a request
// gets a share: the budget minus what the others hold, made at least half the budget by
// dropping idle instances. The wasm sets its limits (page cache, transaction size, SQLite
// heap, answer size) from the share so that it stays within it (crates/wasm: MemoryLimits::
// for_share); its memory's maximum is the whole budget, so that even a bug cannot grow one
// instance past it.

import { DEFAULT_BUDGET_BYTES, MIN_BUDGET_BYTES } from "./constants";

/** What the budget needs of a database object that holds an instance of type `I`. */
export interface Tenant<I> {
  /** Which instances it can use: only instances of its own kind are handed to it. */
  readonly kind: string;
  /** Bytes of wasm memory its instance holds now (0 when it has none). */
  memoryBytes(): number;
  /** Whether a call is in progress or queued (such an instance is never taken). */
  busy(): boolean;
  /** Gives up its instance (its database is rebuilt from storage on its next request) and
   *  returns it for another database, or null when it has none or it cannot be reused. */
  surrender(): I | null;
}

/** What the budget needs of an instance it holds for later (a spare). */
export type Sized = { memoryBytes(): number };

export class MemoryBudget<I extends Sized = Sized> {
  /** Tenants with an instance, least recently used first (a Map keeps insertion order). */
  private readonly tenants = new Map<Tenant<I>, true>();
  /** Instances no database holds, ready to be adopted (by kind): those made at start-up and
   *  after one was taken (worker/src/index.ts: spareAhead). */
  private readonly spares: Array<{ kind: string; instance: I }> = [];
  /** Instances given up to keep the budget (their memory left for V8 to collect). */
  dropped = 0;
  /** Instances handed from an idle database to another one. */
  reused = 0;

  constructor(readonly budgetBytes: number) {}

  /** Bytes of wasm memory every live instance holds (spares included). */
  total(): number {
    let n = 0;
    for (const t of this.tenants.keys()) n += t.memoryBytes();
    for (const s of this.spares) n += s.instance.memoryBytes();
    return n;
  }

  /** Keeps instances `make` makes, which serve no database, for the next databases of their
   *  `kind`, until `count` are kept or another's `bytes` would take the total past half the
   *  budget. Returns how many it made. */
  offer(kind: string, bytes: number, make: () => I, count = 1): number {
    let made = 0;
    while (this.spares.filter((s) => s.kind === kind).length < count && this.total() + bytes <= this.budgetBytes / 2) {
      this.spares.push({ kind, instance: make() });
      made++;
    }
    return made;
  }

  /** Spare instances of `kind` kept now. */
  sparesOf(kind: string): number {
    return this.spares.filter((s) => s.kind === kind).length;
  }

  /** Live instances. */
  get instances(): number {
    return this.tenants.size;
  }

  /**
   * `t` is about to run a request: it becomes the most recently used, and idle instances are
   * given up (least recently used first) until the others hold at most half the budget.
   * Returns `t`'s share: the budget minus what the others hold.
   */
  use(t: Tenant<I>): number {
    this.tenants.delete(t);
    this.tenants.set(t, true);
    // A spare nobody took by the time memory is short is the first to go.
    if (this.spares.length > 0 && this.total() > this.budgetBytes / 2) this.spares.length = 0;
    let others = this.total() - t.memoryBytes();
    for (const other of this.tenants.keys()) {
      if (others <= this.budgetBytes / 2) break;
      if (other === t || other.busy()) continue;
      others -= other.memoryBytes();
      this.drop(other);
    }
    return Math.max(this.budgetBytes - others, 0);
  }

  /**
   * An instance for `t`, which has none and needs `initialBytes` to start one: the instance of
   * the least recently used idle database of its kind when a new one would take the others
   * past half the budget (reusing memory that exists already is cheaper than leaving it to
   * V8's collector and growing another), else null (start a new one).
   */
  adopt(t: Tenant<I>, initialBytes: number): I | null {
    const spare = this.spares.findIndex((s) => s.kind === t.kind);
    if (spare >= 0) return this.spares.splice(spare, 1)[0].instance;
    if (this.total() - t.memoryBytes() + initialBytes <= this.budgetBytes / 2) return null;
    for (const other of this.tenants.keys()) {
      if (other === t || other.kind !== t.kind || other.busy() || this.bloated(other.memoryBytes())) continue;
      this.tenants.delete(other);
      const instance = other.surrender();
      if (instance !== null) {
        this.reused++;
        return instance;
      }
    }
    return null;
  }

  /** After `t`'s request: gives up idle instances (not `t`'s) while the total is over budget. */
  settle(t: Tenant<I>): void {
    let total = this.total();
    for (const other of this.tenants.keys()) {
      if (total <= this.budgetBytes) break;
      if (other === t || other.busy()) continue;
      total -= other.memoryBytes();
      this.drop(other);
    }
  }

  /**
   * Whether an instance of `bytes` grew past three quarters of its maximum (the budget). Wasm
   * memory never shrinks: an instance a heavy request grew stays that size, mostly free, with
   * little room under its ceiling, where a later allocation the limits did not foresee fails
   * and traps (the HTTP fuzzer found one: three databases handed in turn one 61 MB instance
   * of 64, then an 8 KiB allocation failed). Such an instance is never handed on (adopt) and
   * is given up after its request (shed).
   */
  private bloated(bytes: number): boolean {
    return bytes * 4 > this.budgetBytes * 3;
  }

  /** After `t`'s request: gives up its instance when it grew near its ceiling (bloated); its
   *  database opens a fresh one from storage next time. */
  shed(t: Tenant<I>): void {
    if (this.bloated(t.memoryBytes())) this.drop(t);
  }

  /** `t` no longer has an instance (a trap, an import's switch): it no longer counts. */
  forget(t: Tenant<I>): void {
    this.tenants.delete(t);
  }

  private drop(t: Tenant<I>): void {
    this.tenants.delete(t);
    t.surrender();
    this.dropped++;
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
let shared: MemoryBudget<any> | null = null;

/** DOSQL_MEMORY_BUDGET's value in bytes (unset, null or empty: DEFAULT_BUDGET_BYTES); throws
 *  for anything that is not an integer of at least MIN_BUDGET_BYTES. */
export function budgetSetting(setting: string | null | undefined): number {
  // workerd's fromEnvironment binding is null when the variable is unset.
  const n = setting === undefined || setting === null || setting === "" ? DEFAULT_BUDGET_BYTES : Number(setting);
  if (!Number.isInteger(n) || n < MIN_BUDGET_BYTES) {
    throw new Error(`DOSQL_MEMORY_BUDGET must be an integer of at least ${MIN_BUDGET_BYTES} bytes, not ${JSON.stringify(setting)}`);
  }
  return n;
}

/** The isolate's budget (module scope: every object of every class in the isolate shares it),
 *  made on first use with `bytes` (see budgetSetting). */
export function isolateBudget<I extends Sized>(bytes: number): MemoryBudget<I> {
  shared ??= new MemoryBudget<I>(bytes);
  return shared as MemoryBudget<I>;
}
