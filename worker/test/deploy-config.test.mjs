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

test("wrangler.toml and config.capnp bind the same Durable Object class", () => {
  const [, binding, cls] = /\(name = "(\w+)", durableObjectNamespace = "(\w+)"\)/.exec(capnp) ?? [];
  assert.equal(binding, "DB");
  assert.match(wrangler, new RegExp(`name = "${binding}"\\s*\\nclass_name = "${cls}"`));
  assert.match(capnp, new RegExp(`className = "${cls}"`));
  // Classic storage in both: no SQLite-backed class in the migration, no enableSql locally.
  assert.match(wrangler, new RegExp(`new_classes = \\["${cls}"\\]`));
  assert.doesNotMatch(wrangler, /new_sqlite_classes/);
  assert.doesNotMatch(capnp, /enableSql/);
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
