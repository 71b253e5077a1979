#!/usr/bin/env bash
# Sidecar and Redis CPU per call on one Redis, the CLI way (issue #14 item 2).
#
#   cargo build --release --bin tiergate && bash benches/redis_cpu.sh [binary]
#
# Starts its own redis-server (append-only file, `appendfsync ${FSYNC:-always}`) and
# `tiergate serve --store redis` on free ports, registers 1,000 orgs with `loadgen --setup`,
# warms up for 2 s, then runs `loadgen --concurrency ${CONC:-256}` for ${DUR:-8} s and prints
# calls/s, the sidecar's CPU (user + sys from /proc/<pid>/stat) per call and Redis's per call.
# Builds are compared by running this alternately with each binary.
set -euo pipefail
BIN=${1:-target/release/tiergate}
CONC=${CONC:-256}
DUR=${DUR:-8}
FSYNC=${FSYNC:-always}
. "$(dirname "$0")/sidecar.sh"
DIR=$(mktemp -d)
trap 'kill ${PID:-} ${RP:-} 2>/dev/null || true; wait 2>/dev/null; rm -rf "$DIR"' EXIT
start_redis "$DIR" "$FSYNC"
start_sidecar "$BIN" "$DIR" --store redis --redis-url "redis://127.0.0.1:$RPORT"
SP=$PID
"$BIN" loadgen --addr "http://127.0.0.1:$GRPC" --orgs 1000 --setup --requests 1000 >/dev/null
"$BIN" loadgen --addr "http://127.0.0.1:$GRPC" --orgs 1000 --concurrency "$CONC" --duration 2s >/dev/null
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
S0=$(cpu $SP)
R0=$(cpu $RP)
"$BIN" loadgen --addr "http://127.0.0.1:$GRPC" --orgs 1000 --concurrency "$CONC" --duration "${DUR}s" \
  --json >"$DIR/run.json"
S1=$(cpu $SP)
R1=$(cpu $RP)
python3 - "$DIR/run.json" "$S0" "$S1" "$R0" "$R1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
s0, s1, r0, r1, hz = (float(x) for x in sys.argv[2:])
calls = run["allowed"] + run["denied"] + run["errors"]
print(f"{run['throughput_rps']:.0f} calls/s; sidecar CPU {(s1 - s0) / hz / calls * 1e6:.1f} µs per call; "
      f"Redis CPU {(r1 - r0) / hz / calls * 1e6:.1f} µs per call ({calls} calls, {run['errors']} errors)")
PY
