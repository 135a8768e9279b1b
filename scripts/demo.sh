#!/usr/bin/env bash
# Demo on a fresh machine: starts a source and a target Redis on free loopback ports, fills the
# source with typed data, runs shardsync between them while a writer keeps changing the source,
# and prints what reached the target. Runs until Ctrl-C (or DEMO_SECONDS seconds).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-deps.sh
cargo build --release --quiet
bin="$root/.deps/bin"
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
src_port=$(free_port); dst_port=$(free_port)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
for side in src dst; do
  port=$src_port; [ "$side" = dst ] && port=$dst_port
  mkdir -p "$work/$side"
  "$bin/redis-server-7.0" --port "$port" --bind 127.0.0.1 --dir "$work/$side" --save '' \
    --repl-diskless-sync-delay 0 --enable-debug-command local \
    --logfile "$work/$side/redis.log" --daemonize no &
  pids+=($!)
done
for port in $src_port $dst_port; do
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
echo "demo: source 127.0.0.1:$src_port, target 127.0.0.1:$dst_port"
redis-cli -p "$src_port" debug populate 100000 demo:str 64 >/dev/null
redis-cli -p "$src_port" rpush demo:list a b c >/dev/null
redis-cli -p "$src_port" hset demo:hash f1 v1 f2 v2 >/dev/null
redis-cli -p "$src_port" zadd demo:zset 1 one 2 two >/dev/null
redis-cli -p "$src_port" xadd demo:stream '*' field value >/dev/null
redis-cli -p "$src_port" set demo:ttl expiring EX 3600 >/dev/null
"$root/target/release/shardsync" run --source "redis://127.0.0.1:$src_port" --target "redis://127.0.0.1:$dst_port" \
  --state-dir "$work/state" --metrics-addr 127.0.0.1:0 &
pids+=($!)
( i=0; while true; do redis-cli -p "$src_port" incr demo:counter >/dev/null; i=$((i+1)); sleep 0.2; done ) &
pids+=($!)
end=$(( $(date +%s) + ${DEMO_SECONDS:-1000000000} ))
while [ "$(date +%s)" -lt "$end" ]; do
  sleep 2
  echo "demo: source keys=$(redis-cli -p "$src_port" dbsize) counter=$(redis-cli -p "$src_port" get demo:counter) | target keys=$(redis-cli -p "$dst_port" dbsize) counter=$(redis-cli -p "$dst_port" get demo:counter)"
done
