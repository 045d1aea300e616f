// A warm-up of dosql.wasm when the isolate starts: V8 compiles a wasm function on its first
// call, so the isolate's first request used to pay for compiling SQLite's query, commit and
// read paths (43-47 ms in workerd). The wasm runs a database's requests once, through the very
// functions a real database runs, on storage of its own in wasm memory (crates/wasm/src/
// warmup.rs; no host storage call), at module scope: no Durable Object, 400 ms of CPU allowed.
// Workers forbid random values at module scope, so the instance's WASI random_get answers a
// fixed stream; the instance is then dropped, and every real instance gets real randomness.
// DOSQL_WARMUP=off turns it off, and the spare instance with it (workerd config, wrangler.toml).

import { DosqlInstance } from "./dosql";

export interface WarmupReport {
  /** Whether it ran (false: turned off, or it failed). */
  ran: boolean;
  /** Why it did not run or failed. */
  note?: string;
  /** Requests it ran, and the storage reads and writes they made (in wasm memory). */
  requests?: number;
  reads?: number;
  writes?: number;
}

/** Runs the warm-up in an instance of `module` of its own. Never throws: a failed warm-up
 *  costs nothing but time. */
export function warmUp(module: WebAssembly.Module, setting: string | null | undefined): WarmupReport {
  if (setting === "off" || setting === "0" || setting === "false") return { ran: false, note: "DOSQL_WARMUP is off" };
  try {
    const res = DosqlInstance.instantiateSync(module, { maxMemoryBytes: 32 * 1024 * 1024 }, { fixedRandomness: true }).warmUp();
    const body = new TextDecoder().decode(res.body);
    if (res.status !== 200) throw new Error(`${res.status} ${body}`);
    return { ran: true, ...(JSON.parse(body) as object) };
  } catch (err) {
    const note = err instanceof Error ? err.message : String(err);
    console.error(`dosql: the warm-up failed (${note}); requests will compile what they use`);
    return { ran: false, note };
  }
}
