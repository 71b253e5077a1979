# Sourced by the benches' shell scripts: a free port, a sidecar and a redis-server started on free ports.

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_sidecar BIN DIR [SERVE_ARGS...]: runs `BIN serve SERVE_ARGS` on two free ports (its log
# in DIR/server.log) and waits until /readyz answers. Sets GRPC, HTTP and PID.
start_sidecar() {
  local bin=$1 dir=$2
  shift 2
  GRPC=$(free_port)
  HTTP=$(free_port)
  "$bin" serve "$@" --grpc-addr "127.0.0.1:$GRPC" --http-addr "127.0.0.1:$HTTP" \
    >"$dir/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$HTTP/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the sidecar did not answer /readyz; see $dir/server.log" >&2
  return 1
}

# start_redis DIR [FSYNC]: a redis-server of its own on a free port, its files and log in DIR
# (append-only file, `appendfsync FSYNC`, `always` unless given), once it answers PING. Sets
# RPORT and RP (its pid); the caller kills it.
start_redis() {
  local dir=$1 fsync=${2:-always}
  RPORT=$(free_port)
  redis-server --port "$RPORT" --dir "$dir" --appendonly yes --appendfsync "$fsync" --save '' \
    >"$dir/redis.log" 2>&1 &
  RP=$!
  for _ in $(seq 50); do
    redis-cli -p "$RPORT" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "redis-server did not answer; see $dir/redis.log" >&2
  return 1
}
