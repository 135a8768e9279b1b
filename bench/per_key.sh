#!/usr/bin/env bash
# Per-key cost of shardsync, exact and repeatable on a shared host: instructions per key
# (valgrind --tool=callgrind) of a full sync (`run`) and of `load-rdb`, then CPU-seconds
# (user+sys, getrusage via GNU time) and peak RSS of the same work without valgrind, several runs.
#
#   bash bench/per_key.sh                        # 100,000 keys of 64-byte strings
#   KEYS=1000000 CG=0 RUNS=3 bash bench/per_key.sh   # CPU-seconds only, 1M keys
#   SHARDSYNC_BIN=/tmp/old bash bench/per_key.sh     # another build
#
# Environment: KEYS (100000), MIX (strings|mixed), CG=1 callgrind rows, RUNS=2 CPU rows,
# SHARDSYNC_BIN (default target/release/shardsync; not built here).
set -euo pipefail
KEYS="${KEYS:-100000}"
MIX="${MIX:-strings}"
CG="${CG:-1}"
RUNS="${RUNS:-2}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${SHARDSYNC_BIN_DIR:-$root/.deps/bin}"
helper="$root/bench/bench_helper.py"
ss="${SHARDSYNC_BIN:-$root/target/release/shardsync}"
[ -x "$ss" ] || { echo "per_key: $ss not built (cargo build --release)" >&2; exit 1; }
work="$(mktemp -d /tmp/shardsync-perkey.XXXXXX)"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

start_server() { # NAME [args] -> $port $spid
  local name="$1"; shift
  port="$(python3 "$helper" free-port)"
  mkdir -p "$work/$name"
  "$bin/redis-server-7.0" --port "$port" --bind 127.0.0.1 --dir "$work/$name" --save '' --appendonly no \
    --repl-diskless-sync-delay 0 --logfile "$work/$name/server.log" --daemonize no "$@" &
  spid=$!; pids+=("$spid")
  for _ in $(seq 600); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.01
  done
  echo "per_key: $name did not start" >&2; exit 1
}
stop_server() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
server_cpu() {
  redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/{s+=$2} END{printf "%.2f", s}'
}
cg_total() { # callgrind.out -> total Ir
  callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1; exit}'
}

python3 "$helper" gen "$KEYS" "$MIX" "$work/data.resp"
start_server src --repl-diskless-sync no
src_port=$port
redis-cli -p "$src_port" --pipe <"$work/data.resp" >/dev/null
redis-cli -p "$src_port" save >/dev/null
rdb="$work/src/dump.rdb"

# run_full WRAP... -> prints "cpu rss target_cpu" of one full sync (shardsync stopped by SIGTERM
# once the target holds every key)
run_full() {
  start_server target; local tport=$port tpid=$spid
  local t0="$EPOCHREALTIME"
  /usr/bin/time -f "%U %S %M" -o "$work/time.txt" "$@" "$ss" run --source "redis://127.0.0.1:$src_port" \
    --target "redis://127.0.0.1:$tport" --state-dir "$work/state" --metrics-addr off \
    --heartbeat-key "" --log-level warn 2>"$work/run.log" &
  local pid=$!; pids+=("$pid")
  python3 "$helper" wait-dbsize "$tport" "$KEYS" "$t0" 3600 >/dev/null
  local tc; tc="$(server_cpu "$tport")"
  # $pid is GNU time: signal the process it runs (shardsync, or valgrind running it)
  pkill -TERM -P "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  stop_server "$tpid"; rm -rf "$work/target" "$work/state"
  awk -v tc="$tc" '{printf "%.2f %.0f %s\n", $1+$2, $3/1024, tc}' "$work/time.txt"
}
load_rdb() { # WRAP... -> "cpu rss target_cpu"
  start_server target; local tport=$port tpid=$spid
  /usr/bin/time -f "%U %S %M" -o "$work/time.txt" "$@" "$ss" load-rdb --file "$rdb" \
    --target "redis://127.0.0.1:$tport" --log-level warn >/dev/null 2>"$work/load.log"
  [ "$(redis-cli -p "$tport" dbsize)" = "$KEYS" ] || { echo "per_key: load-rdb loaded the wrong count" >&2; exit 1; }
  local tc; tc="$(server_cpu "$tport")"
  stop_server "$tpid"; rm -rf "$work/target"
  awk -v tc="$tc" '{printf "%.2f %.0f %s\n", $1+$2, $3/1024, tc}' "$work/time.txt"
}

echo "### shardsync per key: $KEYS keys, MIX=$MIX, $(date -u +%F' '%H:%M) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| work | instructions per key | CPU s (runs) | µs CPU per key (best) | peak RSS MiB | target CPU s |"
echo "|---|---:|---:|---:|---:|---:|"
row() { # NAME FUNC
  local name="$1" f="$2" ir="—" cpus="" best="" rss="" tcs="" i r
  if [ "$CG" = 1 ]; then
    "$f" valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" >/dev/null
    ir="$(cg_total "$work/cg.out")"
    ir="$(awk -v a="$ir" -v n="$KEYS" 'BEGIN{printf "%d", a/n}')"
  fi
  for i in $(seq "$RUNS"); do
    r="$("$f")"
    set -- $r
    cpus+="${cpus:+ / }$1"; rss="$2"; tcs+="${tcs:+ / }$3"
    if [ -z "$best" ] || awk -v a="$1" -v b="$best" 'BEGIN{exit !(a<b)}'; then best="$1"; fi
  done
  echo "| $name | $ir | $cpus | $(awk -v c="$best" -v n="$KEYS" 'BEGIN{printf "%.2f", c*1e6/n}') | $rss | $tcs |"
}
row "full sync (\`run\`)" run_full
row "\`load-rdb\`" load_rdb
