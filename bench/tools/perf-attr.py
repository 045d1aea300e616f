#!/usr/bin/env python3
"""CPU per request of each benchmark contender, from one `perf record` of workerd.

  perf record -k CLOCK_MONOTONIC -F 4000 -g -p <workerd pid> -o w3.data &   # then:
  node bench/tools/w3-drive.mjs 8 native-sql dosql-sync probe-sync; kill -INT %1
  perf script -i w3.data > w3.txt
  python3 bench/tools/perf-attr.py w3.txt w3-segments.json summary
  python3 bench/tools/perf-attr.py w3.txt w3-segments.json diff dosql-sync probe-sync
  python3 bench/tools/perf-attr.py w3.txt w3-segments.json inclusive dosql-sync 'SyncKvStorage::put' fsync

Samples are attributed to the contender whose time window (w3-drive.mjs's segments) holds
them, and shown as microseconds of workerd CPU per request. SKIP=k ignores the first k
segments (V8 tiers the wasm up over the first few thousand requests). Start workerd with
`v8Flags = ["--perf-basic-prof"]` in the config to name JavaScript and wasm frames.
"""
import collections, json, os, re, sys

CATEGORIES = [
    ("gc", r"Scaveng|GlobalHandles|Heap::Collect|MarkCompact|Sweeper|ResetRoot|detachFromShim|unlinkFromTracer|IsUnmodifiedApiObject|WeakHandles|GCTracer|Evacuat|Marking"),
    ("wasm", r"wasm-function|-turbofan|-liftoff|WasmLiftoff"),
    ("js", r"JS:"),
    ("v8 compiler", r"compiler::|turboshaft"),
    ("kernel", r"\[kernel"),
    ("workerd sqlite", r"sqlite3|Sqlite"),
    ("malloc", r"tcmalloc|TCMalloc"),
    ("v8 builtins", r"Builtins_"),
    ("v8", r"v8::"),
    ("workerd/jsg", r"workerd::|jsg::|cppgc"),
    ("kj", r"kj::|kj_|capnp"),
]


# COMM=workerd keeps the samples of workerd's main thread (the one that serves requests) and
# drops V8's background threads (compilers, GC helpers), which W4's restarts keep busy.
COMM = os.environ.get("COMM")


def load(script, segfile):
    segs = json.load(open(segfile))[int(os.environ.get("SKIP", 0)):]
    samples = collections.defaultdict(list)
    period = 1
    for block in open(script).read().split("\n\n"):
        lines = block.strip().split("\n")
        m = re.search(r"\s(\d+\.\d+):\s+(\d+) cpu-clock", lines[0]) if len(lines) > 1 else None
        if not m or (COMM and lines[0].split()[0] != COMM):
            continue
        t = float(m.group(1)) * 1e9
        period = int(m.group(2))
        seg = next((g for g in segs if g["s"] <= t <= g["e"]), None)
        if seg is not None:
            samples[seg["n"]].append([re.sub(r"^\s*[0-9a-f]+ ", "", l) for l in lines[1:]])
    reqs = collections.Counter()
    for g in segs:
        reqs[g["n"]] += g["reqs"]
    per_req = {n: period / 1e3 / reqs[n] for n in samples}  # µs per sample per request
    return samples, per_req


def name(frame):
    f = frame.split(" (")[0]
    f = re.sub(r"\+0x[0-9a-f]+$", "", f)
    return re.sub(r"<.*>", "<>", f)[:100]


def category(frame):
    return next((c for c, p in CATEGORIES if re.search(p, frame)), "other")


def main():
    samples, us = load(sys.argv[1], sys.argv[2])
    cmd, args = sys.argv[3], sys.argv[4:]
    if cmd == "summary":
        names = list(samples)
        table = {n: collections.Counter(category(s[0]) for s in samples[n]) for n in names}
        cats = sorted({c for t in table.values() for c in t}, key=lambda c: -max(table[n][c] * us[n] for n in names))
        print("µs/request".ljust(16) + "".join(n[:16].rjust(17) for n in names))
        print("total".ljust(16) + "".join(f"{len(samples[n]) * us[n]:17.1f}" for n in names))
        for c in cats:
            print(c.ljust(16) + "".join(f"{table[n][c] * us[n]:17.1f}" for n in names))
    elif cmd == "diff":
        a, b = args[0], args[1]
        ca, cb = (collections.Counter(name(s[0]) for s in samples[x]) for x in (a, b))
        rows = sorted(set(ca) | set(cb), key=lambda k: -(ca[k] * us[a] - cb[k] * us[b]))
        print(f"{'diff':>7} {a[:9]:>9} {b[:9]:>9}  (µs/request, by leaf function)")
        for k in rows[: int(os.environ.get("TOP", 40))]:
            print(f"{ca[k] * us[a] - cb[k] * us[b]:7.1f} {ca[k] * us[a]:9.1f} {cb[k] * us[b]:9.1f}  {k}")
    elif cmd == "inclusive":
        who = args[0]
        for p in args[1:]:
            n = sum(1 for s in samples[who] if any(re.search(p, f) for f in s))
            print(f"{n * us[who]:8.1f} µs/request under {p}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
