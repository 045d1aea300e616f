// The deploy config (wrangler.toml) must describe the same Worker that workerd runs locally
// (config.capnp): what is tested is what is deployed. wrangler itself cannot run here (it
// needs Node 22 past 4.86 and the network), so this checks the parts that must agree.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
// Comments (`#` in both formats) say things like "not new_sqlite_classes": drop them.
const uncommented = (file) =>
  readFileSync(join(here, "..", file), "utf8")
    .split("\n")
    .map((line) => line.replace(/#.*$/, ""))
    .join("\n");
const wrangler = uncommented("wrangler.toml");
const capnp = uncommented("config.capnp");

/** `key = "value"` pairs of one `[table]` of a TOML file (flat tables only). */
function tomlTable(text, table) {
  const out = {};
  let inside = false;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("[")) inside = line === `[${table}]`;
    else if (inside) {
      const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"(.*)"$/.exec(line);
      if (m) out[m[1]] = m[2];
    }
  }
  return out;
}

test("wrangler.toml and config.capnp bind the same Durable Object classes", () => {
  const bindings = Object.fromEntries(
    [...capnp.matchAll(/\(name = "(\w+)", durableObjectNamespace = "(\w+)"\)/g)].map((m) => [m[1], m[2]]),
  );
  // DB: classic (KV-backed) storage; DB_SQL: SQLite-backed. Nothing else.
  assert.deepEqual(bindings, { DB: "DosqlDatabase", DB_SQL: "DosqlSqlDatabase" });
  const wranglerBindings = Object.fromEntries(
    [...wrangler.matchAll(/name = "(\w+)"\s*\nclass_name = "(\w+)"/g)].map((m) => [m[1], m[2]]),
  );
  assert.deepEqual(wranglerBindings, bindings);

  // Locally: the classic class without enableSql, the SQLite one with it.
  const namespaces = Object.fromEntries(
    [...capnp.matchAll(/\(className = "(\w+)", uniqueKey = "([\w-]+)"(, enableSql = true)?\)/g)].map((m) => [m[1], m]),
  );
  assert.deepEqual(Object.keys(namespaces).sort(), ["DosqlDatabase", "DosqlSqlDatabase"]);
  assert.equal(namespaces.DosqlDatabase[3], undefined, "DosqlDatabase must not have enableSql");
  assert.equal(namespaces.DosqlSqlDatabase[3], ", enableSql = true");
  assert.notEqual(namespaces.DosqlDatabase[2], namespaces.DosqlSqlDatabase[2], "each class has its own uniqueKey");
  assert.equal([...capnp.matchAll(/enableSql/g)].length, 1);

  // Deployed: v1 created the classic class, v2 the SQLite-backed one; neither in the other list.
  const migrations = [...wrangler.matchAll(/\[\[migrations\]\]\s*\ntag = "(\w+)"\s*\n(new_classes|new_sqlite_classes) = \[([^\]]*)\]/g)]
    .map((m) => [m[1], m[2], m[3]]);
  assert.deepEqual(migrations, [
    ["v1", "new_classes", '"DosqlDatabase"'],
    ["v2", "new_sqlite_classes", '"DosqlSqlDatabase"'],
  ]);
});

test("DOSQL_STORAGE picks SQLite-backed storage by default", () => {
  assert.equal(tomlTable(wrangler, "vars").DOSQL_STORAGE, "sqlite");
  assert.match(capnp, /\(name = "DOSQL_STORAGE", fromEnvironment = "DOSQL_STORAGE"\)/);
});

test("every setting has the same default in both configs", () => {
  const vars = tomlTable(wrangler, "vars");
  const text = Object.fromEntries([...capnp.matchAll(/\(name = "(\w+)", text = "([^"]*)"\)/g)].map((m) => [m[1], m[2]]));
  const fromEnv = [...capnp.matchAll(/\(name = "(\w+)", fromEnvironment = "\w+"\)/g)].map((m) => m[1]);
  for (const [name, value] of Object.entries(text)) assert.equal(vars[name], value, `${name} in wrangler.toml [vars]`);
  for (const name of Object.keys(vars)) {
    assert.ok(name in text || fromEnv.includes(name), `${name} of wrangler.toml is not in config.capnp`);
  }
  // The token is a secret: never a plain var in the deploy config.
  assert.ok(!("DOSQL_TOKEN" in vars), "DOSQL_TOKEN must be a secret (wrangler secret put), not a var");
});

test("both configs load the bundle and the wasm module the build writes", () => {
  assert.match(wrangler, /^main = "dist\/worker\.js"$/m);
  assert.match(wrangler, /type = "CompiledWasm"/);
  assert.match(wrangler, /^no_bundle = true$/m);
  assert.match(capnp, /esModule = embed "dist\/worker\.js"/);
  assert.match(capnp, /wasm = embed "dist\/dosql\.wasm"/);
  const date = (re, text) => re.exec(text)?.[1];
  assert.equal(date(/compatibility_date = "([\d-]+)"/, wrangler), date(/compatibilityDate = "([\d-]+)"/, capnp));
});
