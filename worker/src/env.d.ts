// Types the runtime has but @cloudflare/workers-types does not declare.

// The wasm is a module of the bundle (workerd's `wasm` module type, wrangler's CompiledWasm
// rule): importing it yields a compiled `WebAssembly.Module`.
declare module "*.wasm" {
  const module: WebAssembly.Module;
  export default module;
}

// JSPI (JavaScript Promise Integration), available in workerd without a flag.
declare namespace WebAssembly {
  /** Wraps an async host function so that a wasm import may suspend on its promise. */
  class Suspending {
    constructor(fn: (...args: never[]) => Promise<unknown>);
  }
  /** Wraps a wasm export so that calling it returns a promise (resolved when it returns). */
  function promising<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => Promise<R>;
}
