#!/usr/bin/env bash
# One command, one table: full sync vs a native replica (quiet and beside a CPU-bound process),
# `load-rdb` vs redis-server's own boot load of the same RDB, the parser alone vs
# redis-check-rdb, and `redis-cli --pipe` of the same keys as SETs and as MSETs of 100.
#
#   bash bench/run.sh                              # 1,000,000 64-byte strings, 2 runs each
#   KEYS=200000 RUNS=1 bash bench/run.sh
#   BASE_BIN=/tmp/shardsync-old bash bench/run.sh  # also rows for another build, interleaved
#
# Environment:
#   KEYS=1000000   keys in the source       MIX=strings   strings | mixed (see full_sync.sh)
#   RUNS=2         runs of each measured row (min and max are shown)
#   BUSY=1         repeat the full-sync rows beside one busy loop (`while :; do :; done`); 0 skips
#   LOADRDB=1      load-rdb / boot-load / parser rows; 0 skips
#   INCR=4000000   SETs of the redis-benchmark burst (-P 16 -c 50) followed by shardsync and a
#                  native replica at the same time; the lag is marker write -> marker on the follower; 0 skips
#   BIG=5000000    a second source of BIG keys: full sync, native vs shardsync, for the RSS; 0 skips
#   SHARDSYNC_BIN= the binary to measure (default: target/release/shardsync, built here)
#   BASE_BIN=      a second binary measured in the same runs (e.g. the previous commit's build)
#   TIMEOUT=600    seconds before a run is declared stuck
#
# CPU columns are user+sys seconds: shardsync from /proc/<pid>/stat (run) or getrusage via
# /usr/bin/time (load-rdb); servers from their INFO cpu. Peak RSS is VmHWM / time's %M.
# Output: the table on stdout and in bench-out/run.md; logs in bench-out/logs/.
#   CLUSTER=1000000  keys in a 3-master cluster source synced into a 3-master cluster target,
#                  against 3 native replicas (one per source master) syncing in parallel; 0 skips
#   BIGHASH=5000000  fields of one hash: full sync, native vs shardsync, shardsync's peak RSS; 0 skips
#   BIGSTR=500     MiB of one random string (raw in the RDB); BIGSTRZ=500 MiB of one compressible
#                  string (LZF in the RDB); 0 skips
#   CEIL_RATES="25000 50000 100000 200000 400000"  the incremental ceiling: paced SETs at each rate
#                  for CEIL_SECS=10 s, shardsync and a native replica following; the highest rate
#                  each catches up within 1 s of the end of the writes; "" skips
#   --quick        small sizes of everything (for CI): KEYS=100000 RUNS=1 BIG=300000 CLUSTER=100000
#                  BIGHASH=200000 BIGSTR=BIGSTRZ=32 INCR=200000 CEIL_RATES="20000 50000" CEIL_SECS=3
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ "${1:-}" = "--quick" ]; then
  : "${KEYS:=100000}" "${RUNS:=1}" "${BIG:=300000}" "${CLUSTER:=100000}" "${BIGHASH:=200000}"
  : "${BIGSTR:=32}" "${BIGSTRZ:=32}" "${INCR:=200000}" "${CEIL_RATES:=20000 50000}" "${CEIL_SECS:=3}"
  : "${TIMEOUT:=180}"
fi

KEYS="${KEYS:-1000000}"
MIX="${MIX:-strings}"
RUNS="${RUNS:-2}"
BUSY="${BUSY:-1}"
LOADRDB="${LOADRDB:-1}"
INCR="${INCR:-4000000}"
BIG="${BIG:-5000000}"
TIMEOUT="${TIMEOUT:-600}"
CLUSTER="${CLUSTER:-1000000}"
BIGHASH="${BIGHASH:-5000000}"
BIGSTR="${BIGSTR:-500}"
BIGSTRZ="${BIGSTRZ:-500}"
CEIL_RATES="${CEIL_RATES-25000 50000 100000 200000 400000}"
CEIL_SECS="${CEIL_SECS:-10}"
export POLL_MS="${POLL_MS:-10}"

helper="$root/bench/bench_helper.py"
bin="$root/.deps/bin"
out="$root/bench-out"
mkdir -p "$out/logs"

bash scripts/install-deps.sh >&2
if [ -z "${SHARDSYNC_BIN:-}" ]; then
  echo "bench: cargo build --release" >&2
  cargo build --release --quiet
  SHARDSYNC_BIN="$root/target/release/shardsync"
fi
bins=("new:$SHARDSYNC_BIN")
if [ -n "${BASE_BIN:-}" ]; then bins=("base:$BASE_BIN" "${bins[@]}"); fi
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time (GNU time) is needed" >&2; exit 1; }

work="$(mktemp -d /tmp/shardsync-bench.XXXXXX)"
pids=()
busy_pid=""
cleanup() {
  local p
  [ -n "$busy_pid" ] && kill "$busy_pid" 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_server NAME [extra args...] -> sets $port and $spid (redis 7.0)
start_server() {
  local name="$1"; shift
  port="$(python3 "$helper" free-port)"
  mkdir -p "$work/$name"
  "$bin/redis-server-7.0" --port "$port" --bind 127.0.0.1 --dir "$work/$name" --save '' --appendonly no \
    --repl-diskless-sync-delay 0 --logfile "$work/$name/server.log" --daemonize no "$@" &
  spid=$!
  pids+=("$spid")
  for _ in $(seq 600); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.01
  done
  echo "bench: $name did not start on $port" >&2; cat "$work/$name/server.log" >&2; exit 1
}
server_cpu() {
  redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/{s+=$2} END{printf "%.2f", s}'
}
stop_server() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# results: label -> space-separated values per column
declare -A WALL SCPU TCPU RSS LOAD
INCR_RATES=""
add() { # KEY WALL SS_CPU TARGET_CPU RSS  (and the 1-minute load average now)
  WALL[$1]+="$2 "; SCPU[$1]+="$3 "; TCPU[$1]+="$4 "; RSS[$1]+="$5 "
  LOAD[$1]+="$(cut -d' ' -f1 /proc/loadavg) "
}

busy_on() { bash -c 'while :; do :; done' & busy_pid=$!; }
busy_off() { [ -n "$busy_pid" ] && { kill "$busy_pid"; wait "$busy_pid" 2>/dev/null || true; busy_pid=""; }; }

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench: generating $KEYS keys (MIX=$MIX)" >&2
python3 "$helper" gen "$KEYS" "$MIX" "$work/data.resp"
start_server src --repl-diskless-sync no --repl-backlog-size 256mb
src_port=$port
redis-cli -p "$src_port" --pipe < "$work/data.resp" >"$work/fill.log"
[ "$(redis-cli -p "$src_port" dbsize)" = "$KEYS" ] || { echo "bench: source fill failed" >&2; exit 1; }

native_run() { # KEY
  start_server "native"
  local t; t="$(python3 "$helper" replicate "$port" "$src_port" "$KEYS" "$TIMEOUT")"
  add "$1" "$t" "—" "$(server_cpu "$port")" "—"
  redis-cli -p "$port" replicaof no one >/dev/null
  stop_server "$spid"; rm -rf "$work/native"
}

ss_run() { # KEY BIN
  local key="$1" ss="$2" tport tpid t0 pid log rc
  start_server "target"; tport=$port; tpid=$spid
  log="$out/logs/run-$key.log"
  t0="$EPOCHREALTIME"
  "$ss" run --source "redis://127.0.0.1:$src_port" --target "redis://127.0.0.1:$tport" \
    --state-dir "$work/state" --metrics-addr off --heartbeat-key "" --log-level warn 2>"$log" &
  pid=$!; pids+=("$pid")
  local t; t="$(python3 "$helper" wait-dbsize "$tport" "$KEYS" "$t0" "$TIMEOUT")" \
    || { echo "bench: shardsync $key failed:" >&2; tail -n 20 "$log" >&2; exit 1; }
  local hwm cpu
  hwm="$(awk '/^VmHWM/{printf "%.0f", $2/1024}' "/proc/$pid/status")"
  cpu="$(awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/t}' "/proc/$pid/stat")"
  add "$key" "$t" "$cpu" "$(server_cpu "$tport")" "$hwm"
  kill -TERM "$pid"; rc=0; wait "$pid" || rc=$?; stop_server "$pid"
  [ "$rc" = 0 ] || { echo "bench: shardsync $key exited $rc after SIGTERM" >&2; tail -n 20 "$log" >&2; exit 1; }
  stop_server "$tpid"; rm -rf "$work/target" "$work/state"
}

fullsync_round() { # SUFFIX
  local i b
  for i in $(seq "$RUNS"); do
    native_run "native$1"
    for b in "${bins[@]}"; do ss_run "${b%%:*}$1" "${b#*:}"; done
    echo "bench:   full sync$1 round $i done" >&2
  done
}

echo "bench: full sync, quiet" >&2
fullsync_round ""
if [ "$BUSY" = 1 ]; then
  echo "bench: full sync beside a busy loop" >&2
  busy_on
  fullsync_round "-busy"
  busy_off
fi

# redis-cli --pipe: SETs and MSETs of 100 (strings only: the MSET file is built from the SETs)
pipe_run() { # KEY FILE
  start_server pipe
  local t0; t0="$EPOCHREALTIME"
  redis-cli -p "$port" --pipe < "$2" >/dev/null
  add "$1" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.3f", b-a}')" "—" "$(server_cpu "$port")" "—"
  stop_server "$spid"; rm -rf "$work/pipe"
}
if [ "$MIX" = strings ]; then
  python3 "$helper" mset "$work/data.resp" 100 "$work/mset.resp"
  for i in $(seq "$RUNS"); do pipe_run pipe-set "$work/data.resp"; pipe_run pipe-mset "$work/mset.resp"; done
fi

if [ "$LOADRDB" = 1 ]; then
  echo "bench: load-rdb" >&2
  redis-cli -p "$src_port" save >/dev/null
  rdb="$work/src/dump.rdb"
  rdb_mib="$(awk -v b="$(stat -c %s "$rdb")" 'BEGIN{printf "%.1f", b/1048576}')"
  for i in $(seq "$RUNS"); do
    # redis-server loading the file at boot: launch -> answers DBSIZE = N
    mkdir -p "$work/boot"; cp "$rdb" "$work/boot/dump.rdb"
    port="$(python3 "$helper" free-port)"
    t0="$EPOCHREALTIME"
    "$bin/redis-server-7.0" --port "$port" --bind 127.0.0.1 --dir "$work/boot" --save '' --appendonly no \
      --logfile "$work/boot/server.log" --daemonize no &
    spid=$!; pids+=("$spid")
    t="$(python3 "$helper" wait-dbsize "$port" "$KEYS" "$t0" "$TIMEOUT")"
    add boot "$t" "—" "$(server_cpu "$port")" "—"
    stop_server "$spid"; rm -rf "$work/boot"
    for b in "${bins[@]}"; do
      start_server target; tport=$port; tpid=$spid
      t0="$EPOCHREALTIME"
      /usr/bin/time -f "%U %S %M" -o "$work/time.txt" "${b#*:}" load-rdb --file "$rdb" \
        --target "redis://127.0.0.1:$tport" --log-level warn 2>"$out/logs/load-rdb-${b%%:*}.log"
      t="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.3f", b-a}')"
      [ "$(redis-cli -p "$tport" dbsize)" = "$KEYS" ] || { echo "bench: load-rdb loaded the wrong count" >&2; exit 1; }
      read -r u s m <"$work/time.txt"
      add "load-${b%%:*}" "$t" "$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}')" "$(server_cpu "$tport")" "$((m / 1024))"
      stop_server "$tpid"; rm -rf "$work/target"
    done
    # the parser alone (examples/rdb_dump, when built) vs redis-check-rdb
    if [ -x "$root/target/release/examples/rdb_dump" ]; then
      /usr/bin/time -f "%e %U %S" -o "$work/time.txt" "$root/target/release/examples/rdb_dump" "$rdb" >/dev/null 2>&1 || true
      read -r e u s <"$work/time.txt"; add parse "$e" "$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}')" "—" "—"
    fi
    /usr/bin/time -f "%e %U %S" -o "$work/time.txt" redis-check-rdb "$rdb" >/dev/null 2>&1 || true
    read -r e u s <"$work/time.txt"; add checkrdb "$e" "—" "$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}')" "—"
  done
fi

if [ "$INCR" -gt 0 ]; then
  echo "bench: incremental burst of $INCR SETs" >&2
  for i in $(seq "$RUNS"); do
    start_server native; nport=$port; npid=$spid
    redis-cli -p "$nport" replicaof 127.0.0.1 "$src_port" >/dev/null
    start_server target; tport=$port; tpid=$spid
    "$SHARDSYNC_BIN" run --source "redis://127.0.0.1:$src_port" --target "redis://127.0.0.1:$tport" \
      --state-dir "$work/state" --metrics-addr off --heartbeat-key "" --log-level warn 2>"$out/logs/incr.log" &
    sspid=$!; pids+=("$sspid")
    python3 "$helper" wait-dbsize "$tport" "$(redis-cli -p "$src_port" dbsize)" "$EPOCHREALTIME" "$TIMEOUT" >/dev/null
    python3 "$helper" wait-dbsize "$nport" "$(redis-cli -p "$src_port" dbsize)" "$EPOCHREALTIME" "$TIMEOUT" >/dev/null
    python3 "$helper" marker "$src_port" "$TIMEOUT" "$tport" "$nport" >/dev/null
    c0="$(awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/t}' "/proc/$sspid/stat")"
    tc0="$(server_cpu "$tport")"; nc0="$(server_cpu "$nport")"
    rate="$(redis-benchmark -p "$src_port" -t set -n "$INCR" -P 16 -c 50 -r "$KEYS" -d 64 -q 2>/dev/null \
      | tr '\r' '\n' | awk '/^SET: [0-9.]+ requests per second/{r=$2} END{printf "%.0f", r}')"
    read -r lag_ss lag_nat < <(python3 "$helper" marker "$src_port" "$TIMEOUT" "$tport" "$nport")
    c1="$(awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/t}' "/proc/$sspid/stat")"
    hwm="$(awk '/^VmHWM/{printf "%.0f", $2/1024}' "/proc/$sspid/status")"
    add incr-native "$lag_nat" "—" "$(awk -v a="$nc0" -v b="$(server_cpu "$nport")" 'BEGIN{printf "%.2f", b-a}')" "—"
    add incr-new "$lag_ss" "$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", b-a}')" \
      "$(awk -v a="$tc0" -v b="$(server_cpu "$tport")" 'BEGIN{printf "%.2f", b-a}')" "$hwm"
    INCR_RATES+="$rate "
    kill -TERM "$sspid"; wait "$sspid" || true; stop_server "$sspid"
    stop_server "$tpid"; stop_server "$npid"; rm -rf "$work/target" "$work/native" "$work/state"
  done
fi

# quiet, then (BUSY=1) beside the busy loop: FN SUFFIX for "" and "-busy"
quiet_and_busy() { # FN
  "$1" ""
  if [ "$BUSY" = 1 ]; then busy_on; "$1" "-busy"; busy_off; fi
}

if [ "$BIG" -gt 0 ]; then
  echo "bench: $BIG keys" >&2
  redis-cli -p "$src_port" flushall >/dev/null
  python3 "$helper" gen "$BIG" "$MIX" "$work/data.resp"
  redis-cli -p "$src_port" --pipe < "$work/data.resp" >"$work/fill.log"
  rm -f "$work/data.resp"
  small_keys=$KEYS; KEYS=$BIG
  big_round() { native_run "native-big$1"; ss_run "new-big$1" "$SHARDSYNC_BIN"; }
  quiet_and_busy big_round
  KEYS=$small_keys
fi

# ---- generic runs: any source/target ports, a readiness spec (see bench_helper.py wait-ready) ----
cpu_sum() { # PORTS(comma) -> summed INFO cpu
  local p t=0
  for p in ${1//,/ }; do t="$(awk -v a="$t" -v b="$(server_cpu "$p")" 'BEGIN{printf "%.2f", a+b}')"; done
  echo "$t"
}
ss_generic() { # KEY SRC_URL TARGET_URL TARGET_PORTS SPEC
  local key="$1" t0 pid rc log t hwm cpu
  log="$out/logs/run-$key.log"
  t0="$EPOCHREALTIME"
  "$SHARDSYNC_BIN" run --source "$2" --target "$3" --state-dir "$work/state" --metrics-addr off \
    --heartbeat-key "" --log-level warn 2>"$log" &
  pid=$!; pids+=("$pid")
  t="$(python3 "$helper" wait-ready "$4" "$5" "$t0" "$TIMEOUT")" \
    || { echo "bench: shardsync $key failed:" >&2; tail -n 20 "$log" >&2; exit 1; }
  hwm="$(awk '/^VmHWM/{printf "%.0f", $2/1024}' "/proc/$pid/status")"
  cpu="$(awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/t}' "/proc/$pid/stat")"
  add "$key" "$t" "$cpu" "$(cpu_sum "$4")" "$hwm"
  kill -TERM "$pid"; rc=0; wait "$pid" || rc=$?; stop_server "$pid"
  [ "$rc" = 0 ] || { echo "bench: shardsync $key exited $rc after SIGTERM" >&2; tail -n 20 "$log" >&2; exit 1; }
  rm -rf "$work/state"
}
native_generic() { # KEY REPLICA_PORTS SRC_PORTS NS (comma lists)
  local t; t="$(python3 "$helper" replicate "$2" "$3" "$4" "$TIMEOUT")"
  add "$1" "$t" "—" "$(cpu_sum "$2")" "—"
}

# ---- 3-master cluster -> 3-master cluster, against 3 native replicas in parallel ---------------
start_cluster() { # NAME -> CL_PORTS (comma list), CL_PIDS
  local i addrs=() ps=()
  CL_PIDS=()
  for i in 1 2 3; do
    port="$(python3 "$helper" free-port cluster)"
    mkdir -p "$work/$1-$i"
    "$bin/redis-server-7.0" --port "$port" --bind 127.0.0.1 --dir "$work/$1-$i" --save '' --appendonly no \
      --repl-diskless-sync-delay 0 --repl-diskless-sync no --repl-backlog-size 256mb \
      --cluster-enabled yes --cluster-config-file nodes.conf \
      --logfile "$work/$1-$i/server.log" --daemonize no &
    pids+=("$!"); CL_PIDS+=("$!"); ps+=("$port"); addrs+=("127.0.0.1:$port")
  done
  for port in "${ps[@]}"; do
    for _ in $(seq 600); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.01; done
  done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$work/$1-create.log" 2>&1 \
    || { cat "$work/$1-create.log" >&2; exit 1; }
  for port in "${ps[@]}"; do
    for _ in $(seq 1000); do
      redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' && break; sleep 0.01
    done
  done
  CL_PORTS="$(IFS=,; echo "${ps[*]}")"
}
if [ "$CLUSTER" -gt 0 ]; then
  echo "bench: cluster of 3 -> cluster of 3, $CLUSTER keys" >&2
  start_cluster csrc; csrc_ports="$CL_PORTS"
  python3 "$helper" gen-cluster "$CLUSTER" "$MIX" "$work/cdata.resp" "${csrc_ports%%,*}"
  ns=()
  for p in ${csrc_ports//,/ }; do
    redis-cli -p "$p" --pipe < "$work/cdata.resp.$p" >"$work/fill.log"; rm -f "$work/cdata.resp.$p"
    ns+=("$(redis-cli -p "$p" dbsize)")
  done
  csrc_ns="$(IFS=,; echo "${ns[*]}")"
  cluster_round() {
    local i reps=() rpids=()
    for i in 1 2 3; do start_server "crep$i"; reps+=("$port"); rpids+=("$spid"); done
    native_generic "native-cluster$1" "$(IFS=,; echo "${reps[*]}")" "$csrc_ports" "$csrc_ns"
    for i in 0 1 2; do stop_server "${rpids[$i]}"; done; rm -rf "$work"/crep*
    start_cluster ctgt
    ss_generic "new-cluster$1" "redis://127.0.0.1:${csrc_ports%%,*}" "redis://127.0.0.1:${CL_PORTS%%,*}" \
      "$CL_PORTS" "dbsize:$CLUSTER"
    for p in "${CL_PIDS[@]}"; do stop_server "$p"; done; rm -rf "$work"/ctgt-*
  }
  quiet_and_busy cluster_round
fi

# ---- big keys: one hash of BIGHASH fields, one random string, one compressible string ----------
big_key_round() { # SUFFIX NAME KEY SPEC
  start_server native; native_generic "native-$2$1" "$port" "$src_port" 1; stop_server "$spid"; rm -rf "$work/native"
  start_server target
  ss_generic "new-$2$1" "redis://127.0.0.1:$src_port" "redis://127.0.0.1:$port" "$port" "$4"
  stop_server "$spid"; rm -rf "$work/target"
}
big_key() { # NAME KEY SPEC (the source holds just that key)
  local name="$1" key="$2" spec="$3"
  bk_round() { big_key_round "$1" "$name" "$key" "$spec"; }
  quiet_and_busy bk_round
}
if [ "$BIGHASH" -gt 0 ]; then
  echo "bench: a hash of $BIGHASH fields" >&2
  redis-cli -p "$src_port" flushall >/dev/null
  python3 "$helper" big-hash bighash "$BIGHASH" "$work/big.resp"
  redis-cli -p "$src_port" --pipe < "$work/big.resp" >"$work/fill.log"; rm -f "$work/big.resp"
  big_key bighash bighash "hlen:bighash:$BIGHASH"
fi
if [ "$BIGSTR" -gt 0 ]; then
  echo "bench: a random string of $BIGSTR MiB" >&2
  redis-cli -p "$src_port" flushall >/dev/null
  python3 "$helper" big-string bigstr "$BIGSTR" "$work/big.resp"
  redis-cli -p "$src_port" --pipe < "$work/big.resp" >"$work/fill.log"; rm -f "$work/big.resp"
  big_key bigstr bigstr "strlen:bigstr:$((BIGSTR << 20))"
fi
if [ "$BIGSTRZ" -gt 0 ]; then
  echo "bench: a compressible string of $BIGSTRZ MiB" >&2
  redis-cli -p "$src_port" flushall >/dev/null
  # zeros with a random 1 KiB stamp every MiB: LZF-compressed in the RDB
  redis-cli -p "$src_port" setrange bigstrz "$(((BIGSTRZ << 20) - 1))" "!" >/dev/null
  for ((i = 0; i < BIGSTRZ; i++)); do
    printf 'SETRANGE bigstrz %d %s\n' "$((i << 20))" "$(head -c 768 /dev/urandom | base64 -w0)"
  done | redis-cli -p "$src_port" >/dev/null
  big_key bigstrz bigstrz "strlen:bigstrz:$((BIGSTRZ << 20))"
fi

# ---- incremental ceiling: paced writes at each rate, shardsync and a native replica following --
CEIL_ROWS=()
ceil_round() { # SUFFIX
  local rate nport npid tport tpid sspid st got c r best_n="—" best_s="—"
  redis-cli -p "$src_port" flushall >/dev/null
  start_server native; nport=$port; npid=$spid
  redis-cli -p "$nport" replicaof 127.0.0.1 "$src_port" >/dev/null
  start_server target; tport=$port; tpid=$spid
  st="127.0.0.1:$(python3 "$helper" free-port)"
  "$SHARDSYNC_BIN" run --source "redis://127.0.0.1:$src_port" --target "redis://127.0.0.1:$tport" \
    --state-dir "$work/state" --metrics-addr "$st" --heartbeat-key "" --log-level warn 2>"$out/logs/ceil$1.log" &
  sspid=$!; pids+=("$sspid")
  python3 "$helper" marker "$src_port" "$TIMEOUT" "$tport" "$nport" >/dev/null
  for rate in $CEIL_RATES; do
    python3 "$helper" pace "$src_port" "$rate" "$CEIL_SECS" >"$work/pace.txt" &
    local wpid=$!
    read -r c_n c_s < <(python3 "$helper" follow "$src_port" "$CEIL_SECS" "$nport" "$st")
    wait "$wpid"; got="$(cat "$work/pace.txt")"
    CEIL_ROWS+=("| incremental$1 at $rate/s for ${CEIL_SECS} s | $got | $c_n | $c_s | $(cut -d' ' -f1 /proc/loadavg) |")
    # bounded lag: caught up within 1 s of the end of the writes, at >= 90 % of the asked rate
    if awk -v g="$got" -v r="$rate" 'BEGIN{exit !(g >= 0.9 * r)}'; then
      awk -v c="$c_n" 'BEGIN{exit !(c <= 1)}' && best_n="$rate"
      awk -v c="$c_s" 'BEGIN{exit !(c <= 1)}' && best_s="$rate"
    fi
  done
  CEIL_BEST+=("| incremental ceiling$1 | native replica: $best_n/s | shardsync: $best_s/s |")
  kill -TERM "$sspid"; wait "$sspid" || true; stop_server "$sspid"
  stop_server "$tpid"; stop_server "$npid"; rm -rf "$work/target" "$work/native" "$work/state"
}
CEIL_BEST=()
if [ -n "$CEIL_RATES" ]; then
  echo "bench: incremental ceiling at $CEIL_RATES writes/s" >&2
  quiet_and_busy ceil_round
fi

# ---- report: min–max of each column ------------------------------------------------------------
range() { # values... -> "a" or "a–b"
  local v=("$@")
  [ "${#v[@]}" = 0 ] && { echo "—"; return; }
  [ "${v[0]}" = "—" ] && { echo "—"; return; }
  printf '%s\n' "${v[@]}" | sort -g | awk 'NR==1{a=$1} {b=$1} END{if (a==b) print a; else print a "–" b}'
}
lo() { printf '%s\n' $1 | sort -g | head -n1; }
row() { # KEY LABEL REFKEY NOTE
  local k="$1"
  [ -n "${WALL[$k]:-}" ] || return 0
  local ratio="—"
  if [ -n "$3" ] && [ -n "${WALL[$3]:-}" ]; then
    ratio="$(awk -v a="$(lo "${WALL[$k]}")" -v b="$(lo "${WALL[$3]}")" 'BEGIN{if (b > 0) printf "%.2f×", a/b; else print "—"}')"
  fi
  # shellcheck disable=SC2086
  echo "| $2 | $(range ${WALL[$k]}) | $ratio | $(range ${SCPU[$k]}) | $(range ${TCPU[$k]}) | $(range ${RSS[$k]}) | $(range ${LOAD[$k]}) | $4 |"
}
per_key() { # KEY -> µs of shardsync CPU per key (best run)
  awk -v c="$(lo "${SCPU[$1]}")" -v n="$KEYS" 'BEGIN{printf "%.2f µs/key", c*1e6/n}'
}
{
  echo "### shardsync performance: $KEYS keys, MIX=$MIX"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), $(nproc) CPUs; Redis 7.0 source, target and native replica"
  echo "on loopback. Load average before / after: $load_before / $(cut -d' ' -f1-3 /proc/loadavg). Each cell is"
  echo "the min–max of $RUNS runs; ratios compare best runs. \"server CPU\" is the target (shardsync rows),"
  echo "the native replica, the booting server, or the --pipe target. \"base\" rows: ${BASE_BIN:-none}."
  echo
  echo "| work | wall s | vs reference | shardsync CPU s | server CPU s | shardsync peak RSS MiB | load (1 min) | notes |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|"
  row native "full sync: native replica" "" "reference"
  [ -n "${BASE_BIN:-}" ] && row base "full sync: shardsync base" native "$(per_key base)"
  row new "full sync: shardsync" native "$(per_key new)"
  row native-busy "full sync + busy loop: native replica" "" "reference"
  [ -n "${BASE_BIN:-}" ] && row base-busy "full sync + busy loop: shardsync base" native-busy ""
  row new-busy "full sync + busy loop: shardsync" native-busy ""
  row boot "redis-server boot load of the RDB (${rdb_mib:-?} MiB)" "" "reference"
  [ -n "${BASE_BIN:-}" ] && row load-base "load-rdb: shardsync base" boot "validates the file, then loads"
  row load-new "load-rdb: shardsync" boot "validates the file, then loads"
  row parse "parser alone (examples/rdb_dump)" checkrdb ""
  row checkrdb "redis-check-rdb" "" ""
  row incr-native "incremental: native replica lag after the burst" "" "burst of $INCR SETs at $(range $INCR_RATES) writes/s (source, redis-benchmark -P 16 -c 50); same run as the next row"
  row incr-new "incremental: shardsync lag after the burst" incr-native "CPU: during the burst"
  for b in "" -busy; do
    w=""; [ "$b" = -busy ] && w=" + busy loop"
    row "native-big$b" "full sync of $BIG keys$w: native replica" "" "reference"
    row "new-big$b" "full sync of $BIG keys$w: shardsync" "native-big$b" "compare its peak RSS with the $KEYS-key rows"
    row "native-cluster$b" "cluster 3 → cluster 3, $CLUSTER keys$w: 3 native replicas in parallel" "" "reference: until the last replica is done; server CPU summed"
    row "new-cluster$b" "cluster 3 → cluster 3, $CLUSTER keys$w: shardsync" "native-cluster$b" "server CPU: the 3 target masters"
    row "native-bighash$b" "one hash of $BIGHASH fields$w: native replica" "" "reference"
    row "new-bighash$b" "one hash of $BIGHASH fields$w: shardsync" "native-bighash$b" "until HLEN matches"
    row "native-bigstr$b" "one random string of $BIGSTR MiB$w: native replica" "" "reference"
    row "new-bigstr$b" "one random string of $BIGSTR MiB$w: shardsync" "native-bigstr$b" "raw in the RDB; SET + APPENDs of 1 MiB; until STRLEN matches"
    row "native-bigstrz$b" "one compressible string of $BIGSTRZ MiB$w: native replica" "" "reference"
    row "new-bigstrz$b" "one compressible string of $BIGSTRZ MiB$w: shardsync" "native-bigstrz$b" "LZF in the RDB, inflated part by part"
  done
  row pipe-set "redis-cli --pipe: SETs" "" "the most a command loader gets"
  row pipe-mset "redis-cli --pipe: MSETs of 100" pipe-set ""
  if [ "${#CEIL_ROWS[@]}" -gt 0 ]; then
    echo
    echo "Incremental ceiling: paced pipelined SETs (64-byte values) into the source for ${CEIL_SECS} s at each"
    echo "rate while a native replica and shardsync follow it; catch-up = from the end of the writes until"
    echo "the follower holds the source's offset of that moment (replica: master_repl_offset; shardsync:"
    echo "applied_offset in /status). Bounded lag: caught up within 1 s, at >= 90 % of the asked rate."
    echo
    echo "| paced writes | achieved writes/s | native catch-up s | shardsync catch-up s | load (1 min) |"
    echo "|---|---:|---:|---:|---:|"
    printf '%s\n' "${CEIL_ROWS[@]}"
    echo
    echo "| | highest rate with bounded lag | |"
    echo "|---|---|---|"
    printf '%s\n' "${CEIL_BEST[@]}"
  fi
} >"$out/run.md"
echo
cat "$out/run.md"
