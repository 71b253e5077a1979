#!/usr/bin/env bash
# The sidecar's own CPU per call on one store, with the load generator as a separate process.
#
#   cargo build --release --bin tiergate
#   bash benches/sidecar_cpu.sh target/release/tiergate embedded [LOADGEN_BIN]
#
# Starts `BIN serve --store STORE` (memory or embedded; a fresh data directory) on free ports,
# registers 1,000 orgs with `loadgen --setup`, then runs `LOADGEN_BIN loadgen --orgs 1000
# --concurrency $INFLIGHT --duration $SECS` (256 and 8 s unless set; `RATE=N` holds the offered
# rate at N calls/s). Prints calls/s and the sidecar's CPU (user + system, /proc/<pid>/stat) per
# call, its context switches, and, on the embedded store, the facts per group commit.
# LOADGEN_BIN (default BIN) lets two server builds be compared under the same load generator.
set -euo pipefail
BIN=$1
STORE=$2
LOADGEN=${3:-$BIN}
. "$(dirname "$0")/sidecar.sh"
DIR=$(mktemp -d)
trap 'kill ${PID:-} 2>/dev/null || true; rm -rf "$DIR"' EXIT
start_sidecar "$BIN" "$DIR" --store "$STORE" --data-dir "$DIR/data"
"$LOADGEN" loadgen --addr "http://127.0.0.1:$GRPC" --orgs 1000 --setup --requests 2000 --json >/dev/null
switches() { cat /proc/$PID/task/*/status | awk '/ctxt_switches/{s+=$2} END{print s}'; }
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
curl -fs "http://127.0.0.1:$HTTP/metrics" >"$DIR/metrics0.txt"
SW0=$(switches)
T0=$(cpu)
"$LOADGEN" loadgen --addr "http://127.0.0.1:$GRPC" --orgs 1000 --concurrency "${INFLIGHT:-256}" \
  ${RATE:+--rate "$RATE"} --duration "${SECS:-8}s" --seed 3 --json >"$DIR/run.json"
T1=$(cpu)
SW1=$(switches)
curl -fs "http://127.0.0.1:$HTTP/metrics" >"$DIR/metrics.txt"
python3 - "$T0" "$T1" "$SW0" "$SW1" "$DIR" "$STORE" <<'PY'
import json, os, re, sys
t0, t1, sw0, sw1, d, store = sys.argv[1:]
run = json.load(open(f"{d}/run.json"))
calls = run["allowed"] + run["denied"] + run["errors"]
hz = os.sysconf("SC_CLK_TCK")
def metric(file, name):
    found = re.search(rf"^{name} (\S+)", open(f"{d}/{file}").read(), re.M)
    return float(found.group(1)) if found else 0.0
def during(name):
    return metric("metrics.txt", name) - metric("metrics0.txt", name)
commits, facts = during("tiergate_store_commit_seconds_count"), during("tiergate_store_facts_total")
per_commit = f", {facts / commits:.1f} facts per commit" if commits else ""
print(f"{store}: {run['throughput_rps']:.0f} calls/s, "
      f"{(int(t1) - int(t0)) / hz * 1e6 / calls:.1f} µs of sidecar CPU per call, "
      f"{(int(sw1) - int(sw0)) / calls:.2f} context switches per call{per_commit} "
      f"(allowed {run['allowed']}, denied {run['denied']}, errors {run['errors']})")
PY
