//! Link arguments for the wasm module: it imports its memory, so that the host can give every
//! instance its own maximum (the isolate's memory budget: worker/src/budget.ts), and asks for
//! exactly `INITIAL_MEMORY_BYTES` (src/lib.rs) to start with, which the host provides.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=--import-memory");
        // Keep in step with INITIAL_MEMORY_BYTES in src/lib.rs (a unit test checks).
        println!("cargo:rustc-link-arg-cdylib=--initial-memory=2097152");
    }
}
