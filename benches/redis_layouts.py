#!/usr/bin/env python3
"""What a decision costs Redis under candidate log layouts (issue #14 item 2; docs/storage.md,
"Next: one packed log per partition").

    python3 benches/redis_layouts.py [--items 100000] [--batch 50] [--fsync always|no]

Starts its own redis-server on a free port (append-only file with `appendfsync always`, or no
append-only file with `--fsync no`), then replays the same stream of appends in each layout and
prints Redis's own CPU (`INFO cpu`, user + sys) per appended command. Each script call carries
`--batch` commands for distinct orgs out of 1,000, as a sidecar's group commit does; "2
replicas" alternates two callers, so each call finds the other's entries to return.

Layouts:
- per-org (schema 1, before session 10): that schema's `APPEND` script (kept below; the helpers
  are read from crates/tiergate-store/src/redis_log.rs), one stream per org: `XADD`, then `HGET`
  of the snapshot's id and `XRANGE` of what the caller missed;
- per-org XADD only: the floor of any layout with one stream entry per command;
- per-org + XSETID: `XSETID key <after>` succeeds only when nothing follows the caller's last
  entry, so the `HGET` and `XRANGE` are skipped then;
- packed, P partitions: the commands of a call packed into one entry per partition (org hash
  mod P), with the partition's `XADD` and `XRANGE`.
No client library: a minimal RESP client over a socket.
"""
import argparse, os, random, re, socket, subprocess, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Resp:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.s.makefile("rb")

    def _read(self):
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2].decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def send(self, *commands):
        """Sends `commands` (each a tuple of arguments) without reading their replies."""
        out = []
        for args in commands:
            out.append(b"*%d\r\n" % len(args))
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))

    def call(self, *args):
        self.send(args)
        return self._read()

    def pipeline(self, commands):
        """Sends `commands` at once, then reads their replies, in order."""
        self.send(*commands)
        return [self._read() for _ in commands]


def rust_lua(name, path=os.path.join(ROOT, "crates/tiergate-store/src/redis_log.rs")):
    """A Lua script's text from a `redis_log.rs` (the repository's, unless `path` is given)."""
    src = open(path).read()
    return re.search(r'const %s: &str = r#"(.*?)"#;' % name, src, re.S).group(1)


def redis_server(*conf):
    """A redis-server of its own on a free port, with `conf` (its command-line options), and a
    client connected to it: `(process, Resp)`. The caller terminates the process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                               "--dir", tempfile.mkdtemp(), *conf], stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            return server, Resp(port)
        except OSError:
            time.sleep(0.05)
    server.terminate()
    raise RuntimeError("redis-server did not start")


HELPERS = rust_lua("HELPERS")
# Schema 1's `APPEND` (one stream per org, `e2a72df`'s redis_log.rs), kept here since the store's
# own script now appends packed entries (schema 2) and takes other arguments.
APPEND = r"""
local replica, page = ARGV[1], ARGV[2]
local out, last = {}, {}
for i = 1, #KEYS / 2 do
  local key, snap = KEYS[2 * i - 1], KEYS[2 * i]
  local at, cmd, after = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  if after == '' then after = last[key] or '0-0' end
  local ok, id = xadd(key, after, at, replica, cmd)
  if not ok then
    id = append_at_latest(key, replica, cmd)
  end
  if not id or last[key] == 'lost' then
    last[key] = 'lost'
    out[i] = {'lost', false}
  else
    last[key] = id
    local sid = redis.call('HGET', snap, 'id')
    if sid and id_less(after, sid) then
      out[i] = {id, false}
    else
      out[i] = {id, redis.call('XRANGE', key, '(' .. after, '(' .. id, 'COUNT', page)}
    end
  end
end
return out
"""
XADD_ONLY = HELPERS + r"""
local replica = ARGV[1]
local out = {}
for i = 1, #KEYS / 2 do
  out[i] = {redis.call('XADD', KEYS[2 * i - 1], ARGV[3 * i] .. '-*', 'r', replica, 'c', ARGV[3 * i + 1]), {}}
end
return out
"""
XSETID = HELPERS + r"""
local replica, page = ARGV[1], ARGV[2]
local out = {}
for i = 1, #KEYS / 2 do
  local key, snap = KEYS[2 * i - 1], KEYS[2 * i]
  local at, cmd, after = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  local quiet = after ~= '0-0' and pcall(redis.call, 'XSETID', key, after)
  local ok, id = xadd(key, after, at, replica, cmd)
  if not ok then id = append_at_latest(key, replica, cmd) end
  if quiet then out[i] = {id, {}}
  else
    local sid = redis.call('HGET', snap, 'id')
    if sid and id_less(after, sid) then out[i] = {id, false}
    else out[i] = {id, redis.call('XRANGE', key, '(' .. after, '(' .. id, 'COUNT', page)} end
  end
end
return out
"""
PACKED = r"""
local replica, out = ARGV[1], {}
for i = 1, #KEYS do
  local after, blob, at = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local ok, id = pcall(redis.call, 'XADD', KEYS[i], at .. '-*', 'r', replica, 'c', blob)
  if not ok then id = redis.call('XADD', KEYS[i], '*', 'r', replica, 'c', blob) end
  out[i] = {id, redis.call('XRANGE', KEYS[i], '(' .. after, '(' .. id, 'COUNT', 512)}
end
return out
"""
CMD = ('{"cmd":"decide","org":"org-%04d","phone":"1555000%04d","recipient":"+1555%07d",'
       '"template":"promo_fall","category":"MARKETING","key":null}')


def cpu(r):
    info = dict(l.split(":", 1) for l in r.call("INFO", "cpu").split("\r\n") if ":" in l)
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run(r, layout, partitions, replicas, items, batch):
    r.call("FLUSHALL")
    sha = r.call("SCRIPT", "LOAD", {"per-org": HELPERS + APPEND, "xadd-only": XADD_ONLY,
                                    "xsetid": XSETID, "packed": PACKED}[layout])
    rnd, after = random.Random(1), [dict() for _ in range(replicas)]

    def calls(n):
        done, who = 0, 0
        while done < n:
            who = (who + 1) % replicas
            mine, now = after[who], int(time.time() * 1000)
            orgs = rnd.sample(range(1000), batch)
            if layout == "packed":
                parts = {}
                for o in orgs:
                    parts.setdefault(o % partitions, []).append(CMD % (o, o, rnd.randrange(10**7)))
                keys, args = [f"tg:{{p{p}}}:log" for p in parts], [f"r{who}"]
                for p, cmds in parts.items():
                    args += [mine.get(p, "0-0"), "\n".join(cmds), now]
                for p, res in zip(parts, r.call("EVALSHA", sha, len(keys), *keys, *args)):
                    mine[p] = res[0]
            else:
                keys, args = [], [f"r{who}", 512]
                for o in orgs:
                    keys += [f"tg:{{org-{o:04d}}}:log", f"tg:{{org-{o:04d}}}:snap"]
                    args += [now, CMD % (o, o, rnd.randrange(10**7)), mine.get(o, "0-0")]
                for o, res in zip(orgs, r.call("EVALSHA", sha, len(keys), *keys, *args)):
                    mine[o] = res[0]
            done += batch

    calls(20_000)  # every org's log exists before the count
    before = cpu(r)
    calls(items)
    return (cpu(r) - before) / items * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--fsync", choices=["always", "no"], default="always")
    a = ap.parse_args()
    aof = ["--appendonly", "yes", "--appendfsync", "always"] if a.fsync == "always" else ["--appendonly", "no"]
    server, r = redis_server(*aof)
    try:
        print(f"Redis CPU µs per command, {a.items} commands, {a.batch} per call, 1,000 orgs, "
              f"appendfsync {a.fsync}")
        print("| layout | 1 replica | 2 replicas |\n| --- | ---: | ---: |")
        for layout, p in [("per-org", 0), ("xadd-only", 0), ("xsetid", 0), ("packed", 1), ("packed", 16)]:
            name = f"packed, P = {p}" if layout == "packed" else layout
            one, two = (run(r, layout, p, n, a.items, a.batch) for n in (1, 2))
            print(f"| {name} | {one:.1f} | {two:.1f} |", flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
