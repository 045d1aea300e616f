//! worker/src/constants.ts: the values the Worker's TypeScript shares with the Rust crates
//! (the wasm's operation codes and initial memory, and the limits the host keeps for it),
//! written from the Rust constants so that they are decided once. This test fails when the
//! file is stale; `DOSQL_BLESS=1 cargo test -p dosql-wasm --test generated_constants`
//! rewrites it.

use std::path::PathBuf;

use dosql_wasm::{INITIAL_MEMORY_BYTES, host, op};

fn render() -> String {
    let mut out = String::from(
        "// Generated from the Rust crates by crates/wasm/tests/generated_constants.rs: do not edit.\n\
         // After changing a constant there: DOSQL_BLESS=1 cargo test -p dosql-wasm --test generated_constants\n",
    );
    // One declaration per section, its documentation above it.
    let mut section = |doc: &str, items: &[(&str, u64)]| {
        let names: Vec<String> = items.iter().map(|(n, v)| format!("{n} = {v}")).collect();
        out.push_str(&format!(
            "/** {doc} */\nexport const {};\n",
            names.join(", ")
        ));
    };
    section(
        "Operation codes of dosql_exec (crates/wasm/src/lib.rs: op).",
        &[
            ("OP_QUERY", op::QUERY.into()),
            ("OP_BATCH", op::BATCH.into()),
            ("OP_STATS", op::STATS.into()),
            ("OP_HRANA", op::HRANA.into()),
            ("OP_LIMITS", op::LIMITS.into()),
            ("OP_ROUTE", op::ROUTE.into()),
            ("OP_HEAD", op::HEAD.into()),
        ],
    );
    section(
        "The memory an instance starts with, in 64 KiB wasm pages (INITIAL_MEMORY_BYTES).",
        &[(
            "WASM_INITIAL_PAGES",
            u64::from(INITIAL_MEMORY_BYTES / 65536),
        )],
    );
    section(
        "Limits the host keeps for the module (crates/wasm/src/lib.rs: host, where each is explained).",
        &[
            ("MAX_BODY_BYTES", host::MAX_BODY_BYTES as u64),
            ("MAX_DRAIN_BYTES", host::MAX_DRAIN_BYTES as u64),
            ("DEFAULT_STREAM_TIMEOUT_MS", host::DEFAULT_STREAM_TIMEOUT_MS),
            (
                "DEFAULT_BUDGET_BYTES",
                host::DEFAULT_MEMORY_BUDGET_BYTES as u64,
            ),
            ("MIN_BUDGET_BYTES", host::MIN_MEMORY_BUDGET_BYTES as u64),
            ("DEFAULT_CACHE_BYTES", host::DEFAULT_CACHE_BYTES as u64),
            ("MAINTAIN_DELAY_MS", host::MAINTAIN_DELAY_MS),
        ],
    );
    out
}

#[test]
fn worker_constants_are_generated_from_rust() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../worker/src/constants.ts");
    let want = render();
    if std::env::var_os("DOSQL_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is stale: run DOSQL_BLESS=1 cargo test -p dosql-wasm --test generated_constants\n\
         --- want ---\n{want}",
        path.display()
    );
}

#[test]
fn build_rs_asks_for_the_initial_memory_the_host_provides() {
    let build = include_str!("../build.rs");
    assert!(build.contains(&format!("--initial-memory={INITIAL_MEMORY_BYTES}")));
    assert_eq!(INITIAL_MEMORY_BYTES % 65536, 0);
}
