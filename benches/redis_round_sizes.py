#!/usr/bin/env python3
"""Redis's CPU per APPEND script call by how many sends the round carries (1, 40, 87, 175), on
a redis-server of its own (append-only file, `appendfsync` as given: `always` by default).

    python3 benches/redis_round_sizes.py [always|everysec|no]

Each round is a binary entry as `command_codec.rs` writes it (the load generator's send, as in
`redis_payload_cpu.py`), appended two rounds behind its own cursor; the sizes run in turn, five
passes. Prints Redis's CPU (`INFO cpu`, user + sys) per round and per send, medians. It shows
what a round costs whatever it carries (BENCHMARKS.md, "Redis: a round waits for the wave").
"""
import statistics, sys

import redis_payload_cpu as payload
from redis_layouts import redis_server, rust_lua

SIZES, PASSES = (1, 40, 87, 175), 5


def entry(n):
    count = bytes([n]) if n < 128 else bytes([0x80 | (n & 0x7F), n >> 7])  # LEB128, n < 16,384
    return bytes([1]) + count + payload.binary_send(payload.SEND) * n


def main():
    fsync = sys.argv[1] if len(sys.argv) > 1 else "always"
    server, r = redis_server("--appendonly", "yes", "--appendfsync", fsync)
    try:
        sha = r.call("SCRIPT", "LOAD", rust_lua("HELPERS", payload.SCRIPT) + rust_lua("APPEND", payload.SCRIPT))
        got = {n: [] for n in SIZES}
        for p in range(PASSES):
            for n in SIZES:
                got[n].append(payload.rounds(r, sha, f"bench:{p}:{n}", entry(n)))
        print(f"appendfsync {fsync}, Redis CPU µs per round (median of {PASSES} passes):")
        for n, v in got.items():
            med = statistics.median(v)
            print(f"  {n:4} sends: {med:.1f} µs a round, {med / n:.2f} µs a send "
                  f"({' / '.join(f'{x:.0f}' for x in v)})")
    finally:
        server.kill()


if __name__ == "__main__":
    main()
