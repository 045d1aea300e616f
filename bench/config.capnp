# workerd config of the benchmark (bench/run.mjs serves it): ONE workerd process, every
# contender a Durable Object class of one Worker. Paths are relative to this file; build
# first with `node bench/build.mjs`. Storage: --directory-path bench-data=<dir>.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "bench", worker = .benchWorker),
    (name = "bench-data", disk = (path = "dist/data", writable = true)),
  ],
  sockets = [
    (name = "http", address = "127.0.0.1:8788", http = (), service = "bench"),
  ],
);

const benchWorker :Workerd.Worker = (
  modules = [
    (name = "bench.js", esModule = embed "dist/bench.js"),
    (name = "dosql.wasm", wasm = embed "dist/dosql.wasm"),
    (name = "dosql-asyncify.wasm", wasm = embed "dist/dosql-asyncify.wasm"),
    (name = "wasm_sqlite.wasm", wasm = embed "dist/wasm_sqlite.wasm"),
  ],
  compatibilityDate = "2026-11-01",
  bindings = [
    (name = "JSPI_4K", durableObjectNamespace = "DosqlJspi4k"),
    (name = "JSPI_16K", durableObjectNamespace = "DosqlJspi16k"),
    (name = "JSPI_64K", durableObjectNamespace = "DosqlJspi64k"),
    (name = "SYNC_4K", durableObjectNamespace = "DosqlSync4k"),
    (name = "SYNC_16K", durableObjectNamespace = "DosqlSync16k"),
    (name = "SYNC_64K", durableObjectNamespace = "DosqlSync64k"),
    (name = "ASYNCIFY_4K", durableObjectNamespace = "DosqlAsyncify4k"),
    (name = "NATIVE_SQL", durableObjectNamespace = "NativeSql"),
    (name = "PRIOR_ART", durableObjectNamespace = "PriorArt"),
    (name = "PROBE_SYNC", durableObjectNamespace = "ProbeSync"),
    (name = "PROBE_CLASSIC", durableObjectNamespace = "ProbeClassic"),
    (name = "PROBE_SYNC_LOG_KV", durableObjectNamespace = "ProbeSyncLogKv"),
    (name = "PROBE_SYNC_LOG_ROW", durableObjectNamespace = "ProbeSyncLogRow"),
    (name = "JSPI_4K_NO_HISTORY", durableObjectNamespace = "DosqlJspi4kNoHistory"),
    (name = "SYNC_4K_NO_HISTORY", durableObjectNamespace = "DosqlSync4kNoHistory"),
    # Read replicas (bench/README.md, Replication): a dosql database reaches its replicas and
    # its primary through DB_SQL (SQLite-backed classes) or DB (classic), as in production
    # (worker/config.capnp). Here they are the 4K classes: only dosql sync 4K databases are
    # given replicas, which are then objects of their own class.
    (name = "DB_SQL", durableObjectNamespace = "DosqlSync4k"),
    (name = "DB", durableObjectNamespace = "DosqlJspi4k"),
    # Replicas catch up by the primary's pushes alone: a poll alarm (10 s by default) would
    # wake them, and through them their primary, during W4's cold starts.
    (name = "DOSQL_REPLICA_POLL_MS", text = "86400000"),
    # dosql's production settings (worker/config.capnp); PAGE_SIZE is set per class.
    (name = "CACHE_BYTES", text = "33554432"),
    (name = "READ_AHEAD", text = "0"),
    # Every contender runs in this one isolate, where in production each class has isolates
    # of its own: a budget that never binds, so that no contender's warm instance is given up
    # for another's (the budget's bookkeeping still runs on every request).
    (name = "DOSQL_MEMORY_BUDGET", text = "1073741824"),
    # W4 runs with dosql's warm-up on and off (bench/run.mjs sets it per restart).
    (name = "DOSQL_WARMUP", fromEnvironment = "DOSQL_WARMUP"),
  ],
  # Objects stay in memory between requests (workerd would evict one idle for 10 s, which would
  # turn a contender's warm cache cold while the others run); W4 restarts workerd for cold.
  durableObjectNamespaces = [
    (className = "DosqlJspi4k", uniqueKey = "bench-dosql-jspi-4k", preventEviction = true),
    (className = "DosqlJspi16k", uniqueKey = "bench-dosql-jspi-16k", preventEviction = true),
    (className = "DosqlJspi64k", uniqueKey = "bench-dosql-jspi-64k", preventEviction = true),
    (className = "DosqlSync4k", uniqueKey = "bench-dosql-sync-4k", preventEviction = true, enableSql = true),
    (className = "DosqlSync16k", uniqueKey = "bench-dosql-sync-16k", preventEviction = true, enableSql = true),
    (className = "DosqlSync64k", uniqueKey = "bench-dosql-sync-64k", preventEviction = true, enableSql = true),
    (className = "DosqlAsyncify4k", uniqueKey = "bench-dosql-asyncify-4k", preventEviction = true),
    (className = "NativeSql", uniqueKey = "bench-native-sql", preventEviction = true, enableSql = true),
    (className = "PriorArt", uniqueKey = "bench-prior-art", preventEviction = true),
    (className = "ProbeSync", uniqueKey = "bench-probe-sync", preventEviction = true, enableSql = true),
    (className = "ProbeClassic", uniqueKey = "bench-probe-classic", preventEviction = true),
    (className = "ProbeSyncLogKv", uniqueKey = "bench-probe-sync-log-kv", preventEviction = true, enableSql = true),
    (className = "ProbeSyncLogRow", uniqueKey = "bench-probe-sync-log-row", preventEviction = true, enableSql = true),
    (className = "DosqlJspi4kNoHistory", uniqueKey = "bench-dosql-jspi-4k-no-history", preventEviction = true),
    (className = "DosqlSync4kNoHistory", uniqueKey = "bench-dosql-sync-4k-no-history", preventEviction = true, enableSql = true),
  ],
  durableObjectStorage = (localDisk = "bench-data"),
);
