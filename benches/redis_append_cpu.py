#!/usr/bin/env python3
"""Redis's CPU per APPEND script call, without the sidecar: the script of each given
`redis_log.rs`, alternately, on a redis-server of its own (`appendfsync no`, so that the `fsync`,
which costs every version alike, does not drown the difference).

    git show <rev>:crates/tiergate-store/src/redis_log.rs > /tmp/before.rs
    python3 benches/redis_append_cpu.py /tmp/before.rs crates/tiergate-store/src/redis_log.rs

Each round appends 90 send commands (~10 KB of JSON, what a round carries at 256 calls in
flight) two rounds behind its own cursor, naming its previous entry as its own: the shape of a
busy replica's rounds with no other replica writing. (With another replica's entries between
its own, the script makes one `XRANGE` more per own entry named; that case is not measured
here.) Prints Redis's CPU (`INFO cpu`, user + sys) per round for each file, per pass, and the
median.
"""
import hashlib, json, os, re, socket, statistics, subprocess, sys, tempfile, time

ROUNDS, PASSES = 4000, 3


def script(path):
    s = open(path).read()
    helpers = re.search(r'const HELPERS: &str = r#"(.*?)"#;', s, re.S).group(1)
    append = re.search(r'pub const APPEND: &str = r#"(.*?)"#;', s, re.S).group(1)
    return helpers + append


def resp(*args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
    return b"".join(out)


def rounds(body, key):
    sha = hashlib.sha1(body.encode()).hexdigest()
    cmd = {"cmd": "decide", "org": "org-00000042", "phone": "15550000042",
           "recipient": "14155550123", "template": "order_update", "category": "UTILITY",
           "key": None}
    cmds = json.dumps([cmd] * 90, separators=(",", ":"))
    out = [resp("SCRIPT", "LOAD", body)]
    for r in range(ROUNDS):
        at = 1000 + r
        after = f"{at - 2}-0" if r >= 2 else "0-0"
        known = f"{at - 1}-0" if r >= 1 else ""
        out.append(resp("EVALSHA", sha, "1", key, "bench", "64", key, key + ":ckpt", str(at),
                        cmds, after, known))
    return b"".join(out)


def cli(port, *args, stdin=None):
    return subprocess.run(["redis-cli", "-p", str(port), *args], input=stdin,
                          capture_output=True, check=True).stdout.decode()


def cpu(port):
    info = cli(port, "INFO", "cpu")
    return sum(float(v) for k, v in re.findall(r"(used_cpu_(?:sys|user)):([\d.]+)", info))


def main():
    files = sys.argv[1:]
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    d = tempfile.mkdtemp()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--dir", d, "--appendonly",
                               "yes", "--appendfsync", "no", "--save", ""],
                              stdout=subprocess.DEVNULL)
    try:
        for _ in range(50):
            try:
                cli(port, "PING")
                break
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        results = {f: [] for f in files}
        for p in range(PASSES):
            for f in files:
                key = f"bench:{p}:{files.index(f)}"
                load = rounds(script(f), key)
                c0 = cpu(port)
                out = cli(port, "--pipe", stdin=load)
                c1 = cpu(port)
                if "errors: 0" not in out:
                    sys.exit(f"{f}: {out.strip()}")
                cli(port, "DEL", key)
                results[f].append((c1 - c0) / ROUNDS * 1e6)
        for f in files:
            per = " / ".join(f"{x:.1f}" for x in results[f])
            print(f"{f}: {per} µs per round (median {statistics.median(results[f]):.1f})")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
