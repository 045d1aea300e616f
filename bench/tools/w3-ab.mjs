// W3 alone, two (or more) source trees side by side, for telling a regression from this
// machine's noise: each tree's bench build (node bench/build.mjs in that tree, with its own
// node_modules or links to these) is served by its own workerd on its own port, one tree after
// the other, and W3 (1,000 single-insert requests) runs on dosql sync 4K and native in turn,
// 3 runs after a warm-up. Prints req/s per run and dosql's ratio to native for each tree;
// repeat the command to interleave trees over time.
//
//   node bench/tools/w3-ab.mjs <tree> <port> [<tree> <port>]...
//   e.g. git worktree add /tmp/old <commit>; (build there); node bench/tools/w3-ab.mjs /tmp/old 8781 $PWD 8782
import { spawn } from "node:child_process";
import http from "node:http";
import { mkdirSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";

const pairs = process.argv.slice(2);
for (let i = 0; i < pairs.length; i += 2) await runTree(resolve(pairs[i]), Number(pairs[i + 1]));

async function runTree(tree, port) {
  const W = await import(join(tree, "bench/workloads.mjs"));
  const DATA = `/tmp/w3ab-${port}`;
  rmSync(DATA, { recursive: true, force: true }); mkdirSync(DATA, { recursive: true });
  const agent = new http.Agent({ keepAlive: true });
  const request = (method, path, body) => new Promise((res0, rej) => {
    const data = body === undefined ? undefined : Buffer.from(typeof body === "string" ? body : JSON.stringify(body));
    const req = http.request({ host: "127.0.0.1", port, path, method, agent, headers: data ? { "content-type": "application/json", "content-length": data.length } : {} }, (r) => { const ch = []; r.on("data", (c) => ch.push(c)); r.on("end", () => res0({ status: r.statusCode, text: Buffer.concat(ch).toString() })); });
    req.on("error", rej); if (data) req.write(data); req.end();
  });
  const p = spawn(join(tree, "worker/node_modules/.bin/workerd"), ["serve", join(tree, "bench/config.capnp"), "--socket-addr", `http=127.0.0.1:${port}`, "--directory-path", `bench-data=${DATA}`], { stdio: "ignore" });
  const exited = new Promise((r) => p.on("exit", r));
  for (let tries = 0; ; tries++) {
    try {
      if ((await request("GET", "/ping")).status === 200) break;
    } catch {
      // not listening yet
    }
    if (p.exitCode !== null || tries > 1500) throw new Error(`${tree}: workerd did not come up on port ${port} (built? port free?)`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const out = {};
  for (const c of ["dosql-sync", "native-sql"]) for (const b of W.w3Setup()) await request("POST", `/c/${c}/w3/query`, b);
  for (let rep = 0; rep < 4; rep++) for (const c of ["dosql-sync", "native-sql"]) {
    const bodies = W.w3(rep).map((b) => JSON.stringify(b));
    const t0 = performance.now();
    for (const b of bodies) await request("POST", `/c/${c}/w3/query`, b);
    if (rep > 0) (out[c] ??= []).push(Math.round(bodies.length / (performance.now() - t0) * 1000));
  }
  agent.destroy();
  p.kill("SIGTERM");
  await exited;
  console.log(tree, JSON.stringify(out), "ratio", (out["dosql-sync"].reduce((a, b) => a + b) / out["native-sql"].reduce((a, b) => a + b)).toFixed(2));
}
