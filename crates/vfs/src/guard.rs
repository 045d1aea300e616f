//! What SQL may do to a dosql database: the policy every client connection runs under.
//!
//! A dosql database is reached by untrusted SQL over HTTP, and one bad statement must not be
//! able to corrupt it, break the VFS's assumptions or exhaust the memory of the isolate that
//! hosts it. [`Database::connect`](crate::Database::connect) therefore opens every connection
//! with
//! - `SQLITE_DBCONFIG_DEFENSIVE` (no `writable_schema` edits of `sqlite_schema`, no
//!   `journal_mode=OFF`, no writes to shadow tables), as workerd's own SQL does;
//! - SQLite's run-time limits set to [`LIMITS`];
//! - an authorizer that asks [`decide`] about every pragma, `ATTACH` and function call while
//!   a statement is prepared. A refusal fails the prepare with `SQLITE_AUTH`, and
//!   [`take_refusal`] says what was refused and why (the API answers it as a 403).
//!
//! The pragma policy is an allowlist: a pragma dosql does not know is refused, so a new
//! SQLite cannot widen what clients may do without this list changing.

use std::cell::{Cell, RefCell};
use std::fmt;

use rusqlite::limits::Limit;

/// SQLite's run-time limits on every client connection, with why each value was chosen.
/// (The README's limits section lists them; a test checks that they are in force.)
pub const LIMITS: &[(Limit, i32, &str)] = &[
    // A value (or a table row) of over 4 MiB cannot be answered within the default answer
    // size (8 MiB, as base64 or text JSON), and SQLite would hold several copies while
    // building it: `zeroblob(500000000)` is refused instead of filling the isolate.
    (
        Limit::SQLITE_LIMIT_LENGTH,
        4 * 1024 * 1024,
        "bytes in a string, blob or row",
    ),
    // A request body is at most 1 MiB, so no SQL text is longer.
    (
        Limit::SQLITE_LIMIT_SQL_LENGTH,
        1024 * 1024,
        "bytes of SQL text in one statement",
    ),
    (
        Limit::SQLITE_LIMIT_COLUMN,
        2000,
        "columns in a table, index, view or result",
    ),
    // Each level of expression nesting costs the parser and code generator stack in the
    // wasm's 1 MiB shadow stack; SQLite's default of 1000 is kept (the fuzzer checks it).
    (
        Limit::SQLITE_LIMIT_EXPR_DEPTH,
        1000,
        "levels of expression nesting",
    ),
    (
        Limit::SQLITE_LIMIT_COMPOUND_SELECT,
        500,
        "terms of a compound SELECT",
    ),
    (
        Limit::SQLITE_LIMIT_FUNCTION_ARG,
        127,
        "arguments to one function",
    ),
    // Only `:memory:` can be attached (see `decide`); three are plenty.
    (Limit::SQLITE_LIMIT_ATTACHED, 3, "attached databases"),
    (
        Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH,
        50_000,
        "bytes in a LIKE or GLOB pattern",
    ),
    (
        Limit::SQLITE_LIMIT_VARIABLE_NUMBER,
        32_766,
        "bound parameters in one statement",
    ),
    // Recursive triggers keep a VDBE frame per level in memory.
    (
        Limit::SQLITE_LIMIT_TRIGGER_DEPTH,
        100,
        "levels of trigger recursion",
    ),
    (
        Limit::SQLITE_LIMIT_WORKER_THREADS,
        0,
        "sorter worker threads",
    ),
];

/// The most bytes a string, blob or row may hold ([`LIMITS`]' `SQLITE_LIMIT_LENGTH`).
pub fn max_length() -> i32 {
    LIMITS
        .iter()
        .find(|(limit, _, _)| matches!(limit, Limit::SQLITE_LIMIT_LENGTH))
        .map_or(1_000_000_000, |&(_, value, _)| value)
}

/// Something a statement asked for that the policy does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What was asked for, as SQL spells it: `PRAGMA writable_schema = 1`, `ATTACH 'x.db'`.
    pub what: String,
    /// Why dosql refuses it.
    pub why: &'static str,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not allowed: {}", self.what, self.why)
    }
}

/// What the authorizer is asked about (the parts of SQLite's authorizer actions the policy
/// looks at).
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    /// `PRAGMA name` (`arg` None) or `PRAGMA name = arg` / `PRAGMA name(arg)`.
    Pragma {
        /// The pragma's name, without a schema prefix.
        name: &'a str,
        /// Its argument, if it has one.
        arg: Option<&'a str>,
    },
    /// `ATTACH <file> AS ...`; `file` is None when it is not a string literal.
    Attach {
        /// The file name, when SQLite can tell it at prepare time.
        file: Option<&'a str>,
    },
    /// A call of the SQL function `name`.
    Function {
        /// The function's name.
        name: &'a str,
    },
    /// A change to the schema or rows of database `db` (`main`, `temp`, an attached one):
    /// `what` as SQL spells it (`INSERT INTO t`). Refused on a read replica when `db` is
    /// `main`.
    Write {
        /// What the statement changes.
        what: &'a str,
        /// The schema it changes, when SQLite says.
        db: Option<&'a str>,
    },
    /// Anything else: allowed.
    Other,
}

/// Why a write is refused on a read replica (the API answers such a refusal by forwarding the
/// request to the primary).
pub const REPLICA_WHY: &str = "this database is a read replica; writes go to its primary";

/// Pragmas that write to the database when given an argument.
const WRITING_PRAGMAS: &[&str] = &[
    "application_id",
    "auto_vacuum",
    "incremental_vacuum",
    "optimize",
    "user_version",
];

thread_local! {
    /// Whether statements on this thread may change the main database: off on a read
    /// replica (one database per wasm instance, so per thread).
    static READ_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Makes statements prepared on this thread from now on refuse writes to the main database
/// (`true`, a read replica) or allow them.
pub fn set_read_only(on: bool) {
    READ_ONLY.with(|r| r.set(on));
}

/// Whether writes are refused (see [`set_read_only`]).
pub fn read_only() -> bool {
    READ_ONLY.with(Cell::get)
}

/// Pragmas allowed with or without an argument: queries of the schema and the database, and
/// per-connection switches that cannot damage data or exceed the memory budget.
const ALLOWED_PRAGMAS: &[&str] = &[
    "analysis_limit",
    "application_id",
    "auto_vacuum",
    "automatic_index",
    "busy_timeout",
    "cache_spill",
    "case_sensitive_like",
    "cell_size_check",
    "collation_list",
    "compile_options",
    "data_version",
    "database_list",
    "defer_foreign_keys",
    "encoding",
    "foreign_key_check",
    "foreign_key_list",
    "foreign_keys",
    "freelist_count",
    "function_list",
    "ignore_check_constraints",
    "incremental_vacuum",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "journal_size_limit",
    "legacy_alter_table",
    "max_page_count",
    "mmap_size",
    "module_list",
    "optimize",
    "page_count",
    "pragma_list",
    "query_only",
    "quick_check",
    "recursive_triggers",
    "reverse_unordered_selects",
    "shrink_memory",
    "synchronous",
    "table_info",
    "table_list",
    "table_xinfo",
    "temp_store",
    "threads",
    "trusted_schema",
    "user_version",
];

/// Pragmas that may be read but not set, and why setting them is refused.
const READ_ONLY_PRAGMAS: &[(&str, &str)] = &[
    (
        "writable_schema",
        "it lets SQL rewrite sqlite_schema, which can leave the database unreadable",
    ),
    (
        "schema_version",
        "writing the schema cookie can leave the database unreadable",
    ),
    (
        "page_size",
        "a dosql database's page size is fixed when it is created",
    ),
    (
        "journal_mode",
        "dosql commits each transaction to its page store itself; journals live in memory",
    ),
    (
        "locking_mode",
        "exclusive locking would lock the database's other connections (Hrana streams) out",
    ),
    (
        "secure_delete",
        "dosql zeroes deleted content so that it does not linger in storage",
    ),
    (
        "cache_size",
        "dosql sizes SQLite's page cache from the isolate's memory budget",
    ),
    (
        "soft_heap_limit",
        "dosql sets SQLite's heap limit from the isolate's memory budget",
    ),
    (
        "hard_heap_limit",
        "dosql sets SQLite's heap limit from the isolate's memory budget",
    ),
];

/// The one SQL-level decision: `Ok` to allow `action`, or what is refused and why.
pub fn decide(action: Action<'_>) -> Result<(), Refusal> {
    match action {
        Action::Write { what, db } => match db {
            Some(d) if !d.eq_ignore_ascii_case("main") => Ok(()),
            _ if read_only() => Err(Refusal {
                what: what.to_owned(),
                why: REPLICA_WHY,
            }),
            _ => Ok(()),
        },
        Action::Pragma { name, arg } => {
            let lower = name.to_ascii_lowercase();
            // These two write with no argument too.
            let writes =
                arg.is_some() || matches!(lower.as_str(), "incremental_vacuum" | "optimize");
            if writes && read_only() && WRITING_PRAGMAS.contains(&lower.as_str()) {
                return Err(Refusal {
                    what: format!("PRAGMA {lower} = {}", arg.unwrap_or_default()),
                    why: REPLICA_WHY,
                });
            }
            if ALLOWED_PRAGMAS.contains(&lower.as_str()) {
                return Ok(());
            }
            if let Some((_, why)) = READ_ONLY_PRAGMAS.iter().find(|(p, _)| *p == lower) {
                return match arg {
                    None => Ok(()),
                    Some(arg) => Err(Refusal {
                        what: format!("PRAGMA {lower} = {arg}"),
                        why,
                    }),
                };
            }
            Err(Refusal {
                what: format!("PRAGMA {lower}"),
                why: "dosql allows the pragmas listed in its README (schema and database \
                      queries, and switches that cannot damage the database)",
            })
        }
        Action::Attach { file } => match file {
            Some(":memory:") | Some("") => Ok(()),
            Some(file) => Err(Refusal {
                what: format!("ATTACH '{file}'"),
                why: "a dosql database is one Durable Object; only ATTACH ':memory:' (or '') \
                      is possible",
            }),
            None => Err(Refusal {
                what: "ATTACH of a computed file name".to_owned(),
                why: "only ATTACH ':memory:' (or ''), written as a literal, is possible",
            }),
        },
        Action::Function { name } if name.eq_ignore_ascii_case("load_extension") => Err(Refusal {
            what: "load_extension()".to_owned(),
            why: "dosql runs no extension code",
        }),
        Action::Function { .. } | Action::Other => Ok(()),
    }
}

thread_local! {
    /// The last refusal on this thread: the authorizer runs inside `sqlite3_prepare` on the
    /// thread that prepares, which reads it right after the prepare fails.
    static LAST_REFUSAL: RefCell<Option<Refusal>> = const { RefCell::new(None) };
}

/// Records `refusal` for [`take_refusal`].
pub(crate) fn note_refusal(refusal: Refusal) {
    LAST_REFUSAL.with(|r| *r.borrow_mut() = Some(refusal));
}

/// What the policy refused last on this thread, if anything since the last call. A caller
/// whose statement failed with `SQLITE_AUTH` asks this for the reason.
pub fn take_refusal() -> Option<Refusal> {
    LAST_REFUSAL.with(|r| r.borrow_mut().take())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma(name: &str, arg: Option<&str>) -> Result<(), Refusal> {
        decide(Action::Pragma { name, arg })
    }

    #[test]
    fn pragmas_are_an_allowlist_with_read_only_entries() {
        assert!(pragma("table_info", Some("t")).is_ok());
        assert!(pragma("FOREIGN_KEYS", Some("off")).is_ok());
        assert!(pragma("integrity_check", None).is_ok());
        assert!(pragma("page_size", None).is_ok());
        let e = pragma("writable_schema", Some("1")).unwrap_err();
        assert_eq!(e.what, "PRAGMA writable_schema = 1");
        assert!(e.to_string().contains("not allowed"), "{e}");
        assert!(pragma("journal_mode", Some("wal")).is_err());
        assert!(pragma("locking_mode", Some("exclusive")).is_err());
        assert!(pragma("cache_size", Some("-1000000")).is_err());
        assert!(pragma("temp_store_directory", Some("/tmp")).is_err());
        assert!(pragma("no_such_pragma", None).is_err());
    }

    #[test]
    fn a_read_replica_refuses_writes_to_main_only() {
        let write = |db| {
            decide(Action::Write {
                what: "INSERT INTO t",
                db,
            })
        };
        assert!(write(Some("main")).is_ok());
        set_read_only(true);
        assert_eq!(write(Some("main")).unwrap_err().why, REPLICA_WHY);
        assert_eq!(write(None).unwrap_err().why, REPLICA_WHY);
        assert!(write(Some("temp")).is_ok());
        assert!(pragma("user_version", Some("5")).is_err());
        assert!(pragma("user_version", None).is_ok());
        assert!(pragma("table_info", Some("t")).is_ok());
        assert!(pragma("optimize", None).is_err());
        assert!(pragma("incremental_vacuum", None).is_err());
        set_read_only(false);
        assert!(write(Some("main")).is_ok());
        assert!(pragma("user_version", Some("5")).is_ok());
    }

    #[test]
    fn only_memory_databases_attach() {
        assert!(
            decide(Action::Attach {
                file: Some(":memory:")
            })
            .is_ok()
        );
        assert!(decide(Action::Attach { file: Some("") }).is_ok());
        let e = decide(Action::Attach {
            file: Some("other.db"),
        })
        .unwrap_err();
        assert_eq!(e.what, "ATTACH 'other.db'");
        assert!(decide(Action::Attach { file: None }).is_err());
    }

    #[test]
    fn load_extension_is_refused_and_other_functions_allowed() {
        assert!(
            decide(Action::Function {
                name: "LOAD_EXTENSION"
            })
            .is_err()
        );
        assert!(decide(Action::Function { name: "upper" }).is_ok());
    }

    #[test]
    fn lists_do_not_overlap() {
        for (p, _) in READ_ONLY_PRAGMAS {
            assert!(!ALLOWED_PRAGMAS.contains(p), "{p} is in both lists");
        }
    }
}
