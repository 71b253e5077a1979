#!/usr/bin/env bash
# Polls of a call's future, and task runs, per call: counted, so that they do not move with the
# machine's speed the way CPU per call does.
#
#   cargo build --release --bin tiergate
#   bash benches/polls_per_call.sh target/release/tiergate redis   # or memory, embedded
#
# Puts uprobes (`perf probe`, root) on `tonic::transport::server::SvcFuture::poll` (each poll of
# a call through the server's stack) and on tokio's `State::transition_to_running` (each task
# run) in BIN, starts `BIN serve --store STORE` (Redis: a redis-server of its own,
# `appendfsync always`), registers 1,000 orgs, runs `loadgen --concurrency ${INFLIGHT:-256}`
# (`RATE=N` holds the offered rate) for 8 s and counts both probes over 5 s of it with
# `perf stat`. Prints calls/s and each count per call. The probes are removed on exit.
set -euo pipefail
BIN=$(realpath "$1")
STORE=$2
. "$(dirname "$0")/sidecar.sh"
DIR=$(mktemp -d)
GROUP=tg_polls_$$
cleanup() {
  kill ${PID:-} ${RP:-} 2>/dev/null || true
  wait 2>/dev/null || true
  perf probe -q -d "$GROUP:*" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
# A symbol's address in the file: its virtual address less its segment's (vaddr - offset).
offset_of() {
  local addr seg
  addr=$(nm "$BIN" | grep -E "$1" | head -1 | awk '{print $1}')
  [ -n "$addr" ] || { echo "no symbol matching $1 in $BIN (stripped?)" >&2; exit 1; }
  seg=$(readelf -lW "$BIN" | awk '/LOAD/ && /R E/ {print $3, $2}')
  set -- $seg
  printf '0x%x' $((0x$addr - ($1 - $2)))
}
perf probe -q -x "$BIN" -a "$GROUP:poll=$(offset_of 'tonic..transport..server..SvcFuture.*4poll')"
perf probe -q -x "$BIN" -a "$GROUP:run=$(offset_of 'T .*State21transition_to_running')"
case "$STORE" in
  redis)
    start_redis "$DIR"
    start_sidecar "$BIN" "$DIR" --store redis --redis-url "redis://127.0.0.1:$RPORT"
    ;;
  *) start_sidecar "$BIN" "$DIR" --store "$STORE" --data-dir "$DIR/data" ;;
esac
"$BIN" loadgen --addr "http://127.0.0.1:$GRPC" --orgs 1000 --setup --requests 1000 >/dev/null
"$BIN" loadgen --addr "http://127.0.0.1:$GRPC" --orgs 1000 --concurrency "${INFLIGHT:-256}" \
  ${RATE:+--rate "$RATE"} --duration 8s --seed 3 --json >"$DIR/run.json" &
LG=$!
sleep 1
perf stat -x, -e "$GROUP:poll,$GROUP:run" -p "$PID" -o "$DIR/stat" -- sleep 5 >/dev/null 2>&1
wait $LG
python3 - "$DIR" "$STORE" <<'PY'
import json, sys
d, store = sys.argv[1:]
run = json.load(open(f"{d}/run.json"))
calls = run["throughput_rps"] * 5
counts = {}
for line in open(f"{d}/stat"):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].isdigit():
        counts[f[2].split(":")[1]] = int(f[0])
print(f"{store}: {run['throughput_rps']:.0f} calls/s; per call: "
      f"{counts.get('poll', 0) / calls:.2f} polls of a call, {counts.get('run', 0) / calls:.2f} task runs")
PY
