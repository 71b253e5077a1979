#!/usr/bin/env bash
# Sidecar and Redis CPU per call on one Redis, the CLI way (issue #14 item 2).
#
#   cargo build --release --bin tiergate && bash benches/redis_cpu.sh [binary] [SERVE_ARGS...]
#
# Starts its own redis-server (append-only file, `appendfsync ${FSYNC:-always}`) and
# `tiergate serve --store redis SERVE_ARGS` on free ports (e.g. `--set
# server.redis_fill_wait_ms=0`), registers 1,000 orgs with `loadgen --setup`, warms up for 2 s,
# then runs `loadgen --concurrency ${CONC:-256}` for ${DUR:-8} s (`RATE=N` holds the offered rate
# at N calls/s) and prints calls/s, the sidecar's CPU (user + sys from /proc/<pid>/stat) per
# call, Redis's per call, the calls per script call (`INFO commandstats`: EVALSHA and EVAL) and
# the calls' p50 and p99. Builds or settings are compared by running this alternately.
set -euo pipefail
BIN=${1:-target/release/tiergate}
shift || true
CONC=${CONC:-256}
DUR=${DUR:-8}
FSYNC=${FSYNC:-always}
. "$(dirname "$0")/sidecar.sh"
DIR=$(mktemp -d)
trap 'kill ${PID:-} ${RP:-} 2>/dev/null || true; wait 2>/dev/null; rm -rf "$DIR"' EXIT
start_redis "$DIR" "$FSYNC"
start_sidecar "$BIN" "$DIR" --store redis --redis-url "redis://127.0.0.1:$RPORT" "$@"
SP=$PID
"$BIN" loadgen --addr "http://127.0.0.1:$GRPC" --orgs 1000 --setup --requests 1000 >/dev/null
"$BIN" loadgen --addr "http://127.0.0.1:$GRPC" --orgs 1000 --concurrency "$CONC" --duration 2s >/dev/null
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Script calls so far: the `calls=` right after the command's name (not `failed_calls=`).
scripts() {
  redis-cli -p "$RPORT" info commandstats | tr -d '\r' |
    awk -F'[:=,]' '/^cmdstat_(evalsha|eval):/ {n += $3} END {print n + 0}'
}
S0=$(cpu $SP)
R0=$(cpu $RP)
E0=$(scripts)
"$BIN" loadgen --addr "http://127.0.0.1:$GRPC" --orgs 1000 --concurrency "$CONC" \
  ${RATE:+--rate "$RATE"} --duration "${DUR}s" --json >"$DIR/run.json"
S1=$(cpu $SP)
R1=$(cpu $RP)
E1=$(scripts)
python3 - "$DIR/run.json" "$S0" "$S1" "$R0" "$R1" "$(getconf CLK_TCK)" "$E0" "$E1" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
s0, s1, r0, r1, hz, e0, e1 = (float(x) for x in sys.argv[2:9])
calls = run["allowed"] + run["denied"] + run["errors"]
print(f"{run['throughput_rps']:.0f} calls/s; sidecar CPU {(s1 - s0) / hz / calls * 1e6:.1f} µs per call; "
      f"Redis CPU {(r1 - r0) / hz / calls * 1e6:.2f} µs per call; {calls / max(e1 - e0, 1):.0f} calls "
      f"per script call; p50 {run['p50_us']} µs, p99 {run['p99_us']} µs ({calls} calls, {run['errors']} errors)")
PY
