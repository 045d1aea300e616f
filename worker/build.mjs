// Builds what workerd and wrangler load: dist/worker.js (src/index.ts bundled by esbuild as
// one ES module) and dist/dosql.wasm (copied from the cargo build; imported by the bundle as
// "./dosql.wasm", a wasm module of the config, never compiled at run time).
//
//   node worker/build.mjs            # from anywhere
//   DOSQL_WASM=path/to.wasm node worker/build.mjs
import { build } from "esbuild";
import { copyFileSync, existsSync, mkdirSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
const wasm = resolve(process.env.DOSQL_WASM ?? join(here, "..", "target", "wasm", "dosql.wasm"));

if (!existsSync(wasm)) {
  console.error(`build.mjs: ${wasm} is missing; build it first:
  make wasm  (cargo build through scripts/wasm-build.sh, then wasm-opt)`);
  process.exit(1);
}
mkdirSync(dist, { recursive: true });

await build({
  entryPoints: [join(here, "src", "index.ts")],
  outfile: join(dist, "worker.js"),
  bundle: true,
  format: "esm",
  platform: "neutral",
  target: "es2022",
  // Left as imports for the runtime to resolve: the wasm module and workerd's built-ins.
  external: ["*.wasm", "cloudflare:*"],
  sourcemap: false,
  logLevel: "warning",
});
copyFileSync(wasm, join(dist, "dosql.wasm"));

const size = (f) => `${(statSync(join(dist, f)).size / 1024).toFixed(0)} KiB`;
console.log(`build.mjs: dist/worker.js (${size("worker.js")}), dist/dosql.wasm (${size("dosql.wasm")}) from ${wasm}`);
