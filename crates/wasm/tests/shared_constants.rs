//! Values the Worker's TypeScript and the Rust crates must agree on, read from the TypeScript
//! sources and compared with the Rust constants: the wasm's operation codes and initial
//! memory, the request body limit, Hrana's stream timeout, Durable Object storage's limits
//! and the head table's name, and the largest answer.

use std::path::PathBuf;

fn source(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../worker/src")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of `const NAME = <expression>;` (`export const` too): a product of integer
/// literals (`2 * 1000 * 1000`, `10_000`) or a string literal.
fn constant(file: &str, name: &str) -> String {
    let text = source(file);
    let line = text
        .lines()
        .find(|l| {
            let l = l.trim_start().trim_start_matches("export ");
            l.starts_with(&format!("const {name} = ")) || l.starts_with(&format!("const {name}: "))
        })
        .unwrap_or_else(|| panic!("worker/src/{file} has no const {name}"));
    let expr = line
        .split_once('=')
        .unwrap()
        .1
        .trim()
        .trim_end_matches(';')
        .trim();
    if let Some(s) = expr.strip_prefix('"') {
        return s.trim_end_matches('"').to_owned();
    }
    expr.split('*')
        .map(|n| {
            n.trim()
                .replace('_', "")
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name} = {expr}"))
        })
        .product::<u64>()
        .to_string()
}

fn n(file: &str, name: &str) -> u64 {
    constant(file, name).parse().unwrap()
}

#[test]
fn operation_codes_and_memory_agree() {
    use dosql_wasm::op;
    for (name, code) in [
        ("OP_QUERY", op::QUERY),
        ("OP_BATCH", op::BATCH),
        ("OP_STATS", op::STATS),
        ("OP_HRANA", op::HRANA),
        ("OP_LIMITS", op::LIMITS),
        ("OP_TRANSFER", op::TRANSFER),
        ("OP_HEAD", op::HEAD),
    ] {
        assert_eq!(n("dosql.ts", name), u64::from(code), "{name}");
    }
    assert_eq!(
        n("dosql.ts", "WASM_INITIAL_PAGES") * 65536,
        u64::from(dosql_wasm::INITIAL_MEMORY_BYTES)
    );
}

#[test]
fn limits_and_names_agree() {
    assert_eq!(
        n("index.ts", "MAX_BODY_BYTES"),
        dosql_api::transfer::MAX_BODY_BYTES as u64
    );
    assert_eq!(
        n("hrana.ts", "DEFAULT_STREAM_TIMEOUT_MS"),
        dosql_api::hrana::DEFAULT_STREAM_TIMEOUT.as_millis() as u64
    );
    assert_eq!(
        n("budget.ts", "MAX_ANSWER_BYTES"),
        dosql_api::Limits::DEFAULT_MAX_ANSWER_BYTES as u64
    );
    use dosql_layout::StorageKind;
    let (classic, sqlite) = (
        StorageKind::Classic.limits(),
        StorageKind::SqliteBacked.limits(),
    );
    assert_eq!(
        n("kv.ts", "MAX_KEYS_PER_CALL"),
        classic.max_keys_per_call as u64
    );
    assert_eq!(n("kv.ts", "MAX_KEY_BYTES"), classic.max_key_bytes as u64);
    assert_eq!(
        n("kv.ts", "MAX_VALUE_BYTES_CLASSIC"),
        classic.max_value_bytes as u64
    );
    assert_eq!(
        n("kv.ts", "MAX_VALUE_BYTES_SQLITE"),
        sqlite.max_value_bytes as u64
    );
    assert_eq!(
        n("kv.ts", "VALUE_OVERHEAD_BYTES"),
        dosql_layout::value::VALUE_OVERHEAD_BYTES as u64
    );
    assert_eq!(constant("kv.ts", "HEAD_TABLE"), dosql_layout::HEAD_TABLE);
}
