#!/usr/bin/env bash
# Issue #16's memory figure: RSS per allowed, unreported send in a real process.
#
#   cargo build --release --bin tiergate && bash benches/rss_per_send.sh
#
# Starts `tiergate serve --store memory` on free ports, registers 100 orgs (TIER_UNLIMITED) with
# `loadgen --setup` and 1,000 warm-up calls, reads the server's RSS, drives 1,000,000 Acquire
# calls (1,000,000 uniform recipients, none reported), reads the RSS again and prints the growth
# per allowed send, with the window entries /metrics reports (tiergate_org_window_fill).
set -euo pipefail
BIN=${1:-target/release/tiergate}
REQUESTS=${REQUESTS:-1000000}
. "$(dirname "$0")/sidecar.sh"
DIR=$(mktemp -d)
trap 'kill ${PID:-} 2>/dev/null || true; rm -rf "$DIR"' EXIT
start_sidecar "$BIN" "$DIR" --store memory
"$BIN" loadgen --addr "http://127.0.0.1:$GRPC" --orgs 100 --setup --requests 1000 --json >/dev/null
RSS0=$(awk '/VmRSS/{print $2}' "/proc/$PID/status")
"$BIN" loadgen --addr "http://127.0.0.1:$GRPC" --orgs 100 --requests "$REQUESTS" --seed 2 \
  --json >"$DIR/run.json"
RSS1=$(awk '/VmRSS/{print $2}' "/proc/$PID/status")
curl -fs "http://127.0.0.1:$HTTP/metrics" >"$DIR/metrics.txt"
python3 - "$RSS0" "$RSS1" "$DIR" <<'PY'
import json, re, sys
rss0, rss1, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
run = json.load(open(f"{d}/run.json"))
m = open(f"{d}/metrics.txt").read()
window = sum(float(v) for v in re.findall(r"^tiergate_org_window_fill\{[^}]*\} (\S+)", m, re.M))
allowed = run["allowed"]
print(f"allowed {allowed}, denied {run['denied']}, errors {run['errors']}, "
      f"{run['throughput_rps']:.0f} calls/s")
print(f"RSS {rss0} KiB -> {rss1} KiB: {(rss1 - rss0) * 1024 / allowed:.1f} bytes per allowed send "
      f"({window:.0f} recipients in windows)")
PY
