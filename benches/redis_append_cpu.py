#!/usr/bin/env python3
"""Redis's CPU per APPEND script call, without the sidecar: the script of each given
`redis_log.rs`, alternately, on a redis-server of its own (`appendfsync no`, so that the `fsync`,
which costs every version alike, does not drown the difference).

    git show <rev>:crates/tiergate-store/src/redis_log.rs > /tmp/before.rs
    python3 benches/redis_append_cpu.py [--pipeline N] /tmp/before.rs crates/tiergate-store/src/redis_log.rs

By default each call waits for its reply before the next is sent, as a sidecar's batcher does:
Redis then pays its per-iteration costs (its event loop, the socket, its append-only file's
`write`) on every call. `--pipeline N` sends N calls at a time, so that those costs are shared
and the script's own work stands out.

Each round appends 90 send commands (what a round carries at 256 calls in flight; as ~10 KB of
JSON, the form builds before session 19 sent: `redis_payload_cpu.py` compares it with the binary
form sent since) two rounds behind its own cursor, naming its previous entry as its own: the shape of a
busy replica's rounds with no other replica writing. (With another replica's entries between
its own, the script makes one `XRANGE` more per own entry named; that case is not measured
here.) Prints Redis's CPU (`INFO cpu`, user + sys) per round for each file, per pass, and the
median. The client and the server's start are `redis_layouts.py`'s.
"""
import argparse, json, statistics

from redis_layouts import cpu, redis_server, rust_lua

ROUNDS, PASSES = 4000, 5
CMD = {"cmd": "decide", "org": "org-00000042", "phone": "15550000042",
       "recipient": "14155550123", "template": "order_update", "category": "UTILITY", "key": None}
CMDS = json.dumps([CMD] * 90, separators=(",", ":"))


def rounds(r, sha, key, pipeline):
    """Redis's CPU seconds for ROUNDS appends to a new log `key`, `pipeline` calls at a time."""
    def call(n):
        at = 1000 + n
        after = f"{at - 2}-0" if n >= 2 else "0-0"
        known = f"{at - 1}-0" if n >= 1 else ""
        return ("EVALSHA", sha, 1, key, "bench", 64, key, key + ":ckpt", at, CMDS, after, known)

    before = cpu(r)
    for start in range(0, ROUNDS, pipeline):
        r.pipeline([call(n) for n in range(start, min(start + pipeline, ROUNDS))])
    used = cpu(r) - before
    r.call("DEL", key)
    return used


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pipeline", type=int, default=1)
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    files = a.files
    server, r = redis_server("--appendonly", "yes", "--appendfsync", "no")
    try:
        shas = [r.call("SCRIPT", "LOAD", rust_lua("HELPERS", f) + rust_lua("APPEND", f))
                for f in files]
        per_round = {f: [] for f in files}
        for p in range(PASSES):
            for i, (f, sha) in enumerate(zip(files, shas)):
                per_round[f].append(rounds(r, sha, f"bench:{p}:{i}", a.pipeline) / ROUNDS * 1e6)
        for f in files:
            runs = " / ".join(f"{x:.1f}" for x in per_round[f])
            print(f"{f}: {runs} µs per round (median {statistics.median(per_round[f]):.1f})")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
