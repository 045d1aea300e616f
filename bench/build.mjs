// Builds what the benchmark runs, into bench/dist (gitignored):
//   bench.js               src/worker.ts bundled (every contender's Durable Object class)
//   inner.mjs              src/inner.ts bundled for Node (the wasm's inner time)
//   inner-ab.mjs           src/inner-ab.ts bundled for Node (A/B timing of wasm builds)
//   dosql.wasm             the default build (make wasm), copied
//   dosql-asyncify.wasm    the same, through `wasm-opt --asyncify` (cached by input hash: 40-100 s)
//   wasm_sqlite.wasm       the prior art's module, from node_modules
//
//   node bench/build.mjs   (DOSQL_WASM=path overrides the input wasm; WASM_OPT the wasm-opt binary)
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..");
const dist = join(here, "dist");
// esbuild is the worker's (one copy, one version: worker/package-lock.json).
const require = createRequire(join(root, "worker", "package.json"));
const { build } = require("esbuild");

const wasm = resolve(process.env.DOSQL_WASM ?? join(root, "target", "wasm", "dosql.wasm"));
if (!existsSync(wasm)) {
  console.error(`bench/build.mjs: ${wasm} is missing; run make wasm first`);
  process.exit(1);
}
mkdirSync(dist, { recursive: true });

const common = { bundle: true, format: "esm", target: "es2022", sourcemap: false, logLevel: "warning" };
await build({
  ...common,
  entryPoints: [join(here, "src", "worker.ts")],
  outfile: join(dist, "bench.js"),
  platform: "neutral",
  mainFields: ["module", "main"],
  external: ["*.wasm", "cloudflare:*"],
});
for (const name of ["inner", "inner-ab"]) {
  await build({
    ...common,
    entryPoints: [join(here, "src", `${name}.ts`)],
    outfile: join(dist, `${name}.mjs`),
    platform: "node",
    external: ["*.wasm"],
  });
}

copyFileSync(wasm, join(dist, "dosql.wasm"));
copyFileSync(join(here, "node_modules", "@rkusa", "wasm-sqlite", "dist", "wasm_sqlite.wasm"), join(dist, "wasm_sqlite.wasm"));

// Asyncify: only read_pages may unwind; -O2 as Binaryen recommends after the transform.
const input = readFileSync(wasm);
const hash = createHash("sha256").update(input).digest("hex");
const out = join(dist, "dosql-asyncify.wasm");
const stamp = `${out}.sha256`;
if (!existsSync(out) || !existsSync(stamp) || readFileSync(stamp, "utf8") !== hash) {
  const wasmOpt = process.env.WASM_OPT ?? "wasm-opt";
  const started = Date.now();
  console.log(`bench/build.mjs: ${wasmOpt} --asyncify (40-100 s) ...`);
  execFileSync(wasmOpt, [
    wasm, "--enable-bulk-memory", "--enable-sign-ext", "--enable-mutable-globals", "--enable-nontrapping-float-to-int",
    "--asyncify", "--pass-arg=asyncify-imports@dosql.kv_get", "-O2", "-o", out,
  ], { stdio: "inherit" });
  writeFileSync(stamp, hash);
  writeFileSync(join(dist, "asyncify-build-seconds"), String((Date.now() - started) / 1000));
}
console.log("bench/build.mjs: dist/bench.js, dist/inner.mjs, dist/dosql.wasm, dist/dosql-asyncify.wasm, dist/wasm_sqlite.wasm");
