// Types the runtime has but @cloudflare/workers-types does not declare.

// The wasm is a module of the bundle (workerd's `wasm` module type, wrangler's CompiledWasm
// rule): importing it yields a compiled `WebAssembly.Module`.
declare module "*.wasm" {
  const module: WebAssembly.Module;
  export default module;
}

// JSPI (JavaScript Promise Integration), available in workerd without a flag: an import that
// may suspend the wasm on its promise, and an export whose call returns a promise.
declare namespace WebAssembly {
  class Suspending {
    constructor(fn: (...args: never[]) => Promise<unknown>);
  }
  function promising<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => Promise<R>;
}
