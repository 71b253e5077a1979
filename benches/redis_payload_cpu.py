#!/usr/bin/env python3
"""Redis's CPU per APPEND script call for one round of sends as JSON (what builds before
`command_codec.rs` wrote) against the same round in binary (what it writes), alternately, on a
redis-server of its own (append-only file, `appendfsync` as given: `always` by default).

    python3 benches/redis_payload_cpu.py [always|everysec|no]

Each round appends 87 sends (what a round carries at 256 calls in flight) two rounds behind its
own cursor, naming its previous entry as its own, as `redis_append_cpu.py` does; only the `c`
argument differs. Prints the bytes of each form and Redis's CPU (`INFO cpu`, user + sys) per
round, per pass, and the median.
"""
import json, statistics, sys

from redis_layouts import cpu, redis_server, rust_lua

SCRIPT = "crates/tiergate-store/src/redis_log.rs"
ROUNDS, PASSES, SENDS = 2000, 5, 87
SEND = {"cmd": "decide", "org": "lg-798", "phone": "1000000798", "recipient": "4910000649767",
        "template": "loadgen", "category": "UTILITY", "key": None}


def leb(s):
    b, n = s.encode(), len(s)
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out) + b


def binary_send(c):
    # command_codec.rs: record DECIDE (1), category (UTILITY = 2), flags (no user id, no key),
    # then org, phone, recipient, template.
    return bytes([1, 2, 0]) + b"".join(leb(c[k]) for k in ("org", "phone", "recipient", "template"))


FORMS = {
    "json": json.dumps([SEND] * SENDS, separators=(",", ":")).encode(),
    "binary": bytes([1, SENDS]) + binary_send(SEND) * SENDS,  # tag, count (< 128: one byte)
}


def rounds(r, sha, key, cmds):
    before = cpu(r)
    for n in range(ROUNDS):
        at = 1000 + n
        after = f"{at - 2}-0" if n >= 2 else "0-0"
        known = f"{at - 1}-0" if n >= 1 else ""
        r.call("EVALSHA", sha, 1, key, "bench", 64, key, key + ":ckpt", at, cmds, after, known)
    used = cpu(r) - before
    r.call("DEL", key)
    return used / ROUNDS * 1e6


def main():
    fsync = sys.argv[1] if len(sys.argv) > 1 else "always"
    server, r = redis_server("--appendonly", "yes", "--appendfsync", fsync)
    try:
        sha = r.call("SCRIPT", "LOAD", rust_lua("HELPERS", SCRIPT) + rust_lua("APPEND", SCRIPT))
        got = {f: [] for f in FORMS}
        for p in range(PASSES):
            for f, cmds in FORMS.items():
                got[f].append(rounds(r, sha, f"bench:{p}:{f}", cmds))
        print(f"appendfsync {fsync}, {SENDS} sends a round, Redis CPU µs per round:")
        for f, v in got.items():
            print(f"  {f}: {len(FORMS[f])} bytes, median {statistics.median(v):.1f} "
                  f"({' / '.join(f'{x:.0f}' for x in v)})")
    finally:
        server.kill()


if __name__ == "__main__":
    main()
