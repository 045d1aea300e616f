# workerd config for local runs and tests: `scripts/run.sh` (or `make run`) serves it with
#   workerd serve worker/config.capnp --socket-addr http=127.0.0.1:$PORT \
#                                     --directory-path dosql-data=$DATA_DIR
# Paths in `embed` are relative to this file: run `node worker/build.mjs` first.
# Production runs on Cloudflare from wrangler.toml; keep the two in step (class, binding, vars).
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "dosql", worker = .dosqlWorker),
    # Where DO storage lives; run.sh points it at $DATA_DIR. One workerd version per data
    # directory: a newer workerd's files can crash an older one.
    (name = "dosql-data", disk = (path = "data", writable = true)),
  ],
  sockets = [
    (name = "http", address = "127.0.0.1:8787", http = (), service = "dosql"),
  ],
);

const dosqlWorker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "dist/worker.js"),
    (name = "dosql.wasm", wasm = embed "dist/dosql.wasm"),
  ],
  # JSPI (WebAssembly.Suspending / promising) needs no flag on this workerd.
  compatibilityDate = "2026-11-01",
  bindings = [
    (name = "DB", durableObjectNamespace = "DosqlDatabase"),
    (name = "DB_SQL", durableObjectNamespace = "DosqlSqlDatabase"),
    # Which class serves the databases: "sqlite" (unset or empty: the default, faster) or
    # "classic" (KV-backed storage; reads await under JSPI).
    (name = "DOSQL_STORAGE", fromEnvironment = "DOSQL_STORAGE"),
    (name = "PAGE_SIZE", text = "4096"),
    # The wasm page cache: a byte budget (CACHE_PAGES, if set, counts pages instead).
    (name = "CACHE_BYTES", text = "33554432"),
    (name = "READ_AHEAD", text = "0"),
    # Bytes of wasm memory all dosql instances of the isolate may hold together; unset or
    # empty = 64 MiB (worker/src/budget.ts). Idle instances are dropped to keep it.
    (name = "DOSQL_MEMORY_BUDGET", fromEnvironment = "DOSQL_MEMORY_BUDGET"),
    # "off": no warm-up of the wasm when the isolate starts (worker/src/warmup.ts).
    (name = "DOSQL_WARMUP", fromEnvironment = "DOSQL_WARMUP"),
    # The bearer token every request must carry; unset or empty = open (local development).
    (name = "DOSQL_TOKEN", fromEnvironment = "DOSQL_TOKEN"),
    # Hrana (libSQL client) streams idle this long are rolled back and closed; unset = 10000.
    (name = "HRANA_STREAM_TIMEOUT_MS", fromEnvironment = "HRANA_STREAM_TIMEOUT_MS"),
    # History (restore, branch, LTX): "off" turns it off; kept HISTORY_RETENTION_MS (unset:
    # 7 days) within HISTORY_MAX_BYTES (unset: 256 MiB) per database.
    (name = "HISTORY", fromEnvironment = "HISTORY"),
    (name = "HISTORY_RETENTION_MS", fromEnvironment = "HISTORY_RETENTION_MS"),
    (name = "HISTORY_MAX_BYTES", fromEnvironment = "HISTORY_MAX_BYTES"),
    # When a database's background work (pruning, checksums, garbage) first runs after its
    # first write, in ms; unset = 60000. Tests make it short.
    (name = "DOSQL_MAINTAIN_DELAY_MS", fromEnvironment = "DOSQL_MAINTAIN_DELAY_MS"),
    # How often a read replica asks its primary for commits besides being told of them, in
    # ms; unset = 10000.
    (name = "DOSQL_REPLICA_POLL_MS", fromEnvironment = "DOSQL_REPLICA_POLL_MS"),
    # The least time between two pushes of commits to a primary's replicas, in ms (commits
    # made meanwhile go together); unset = 25.
    (name = "DOSQL_REPLICA_PUSH_MS", fromEnvironment = "DOSQL_REPLICA_PUSH_MS"),
    # Tests only: seeded faults between primaries and replicas ("seed=7,drop=0.1,dup=0.2,
    # reorder=0.2,delay_ms=5"; crates/api/src/replica.rs).
    (name = "DOSQL_TEST_REPLICATION_FAULTS", fromEnvironment = "DOSQL_TEST_REPLICATION_FAULTS"),
  ],
  durableObjectNamespaces = [
    # Classic (KV-backed) storage: no enableSql. DO NOT change uniqueKey: object ids and the
    # data directory's layout derive from it.
    (className = "DosqlDatabase", uniqueKey = "dosql-3f9c2a7e5b1d4c08a6e2f0b9d7c41e53"),
    # SQLite-backed storage (DOSQL_STORAGE=sqlite). DO NOT change uniqueKey either.
    (className = "DosqlSqlDatabase", uniqueKey = "dosql-sql-8d41b6e0c2a94f7e9b3c5a1d6e0f2b47", enableSql = true),
  ],
  durableObjectStorage = (localDisk = "dosql-data"),
);
