#!/usr/bin/env bash
# Full-sync benchmark: shardsync vs a native Redis replica vs `redis-cli --pipe`.
#
#   bash bench/full_sync.sh                      # 1,000,000 64-byte strings
#   KEYS=200000 MIX=mixed RUNS=1 bash bench/full_sync.sh
#
# Environment:
#   KEYS=1000000       keys in the source
#   MIX=strings        strings | mixed (80 % strings, some with TTL; 10 % hashes; 5 % lists; 5 % zsets)
#   RUNS=2             repetitions of the main native and shardsync runs (best is reported, all are printed)
#   CROSS=6.0          target of the cross-version run (7.0 source -> this target; plain commands,
#                      no RESTORE); "valkey-9.1" works too; "none" skips it
#   DISKLESS=1         also run native + shardsync with repl-diskless-sync yes on the source; 0 skips
#   PIPE=1             measure redis-cli --pipe into an empty server; 0 skips
#   SHARDSYNC_CONFIG=  TOML file passed with --config (e.g. a [sync] section to try batch sizes)
#   LOG_LEVEL=info     shardsync --log-level
#   TIMEOUT=600        seconds before a run is declared stuck
#   POLL_MS=10         probe interval of the DBSIZE / INFO poller (one persistent connection)
#
# shardsync runs with --heartbeat-key "" so the source and target hold exactly KEYS keys.
# Output: a table on stdout, the same as markdown in bench-out/full_sync.md, shardsync's logs in
# bench-out/logs/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

KEYS="${KEYS:-1000000}"
MIX="${MIX:-strings}"
RUNS="${RUNS:-2}"
CROSS="${CROSS:-6.0}"
DISKLESS="${DISKLESS:-1}"
PIPE="${PIPE:-1}"
LOG_LEVEL="${LOG_LEVEL:-info}"
TIMEOUT="${TIMEOUT:-600}"
export POLL_MS="${POLL_MS:-10}"
case "$MIX" in strings|mixed) ;; *) echo "MIX must be strings or mixed" >&2; exit 2 ;; esac

helper="$root/bench/bench_helper.py"
bin="$root/.deps/bin"
out="$root/bench-out"
ss="$root/target/release/shardsync"

bash scripts/install-deps.sh >&2
echo "bench: cargo build --release" >&2
cargo build --release --quiet
mkdir -p "$out/logs"

work="$(mktemp -d /tmp/shardsync-bench.XXXXXX)"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

server_bin() { # 7.0 | 6.0 | valkey-9.1
  case "$1" in
    valkey-*) echo "$bin/valkey-server-${1#valkey-}" ;;
    *) echo "$bin/redis-server-$1" ;;
  esac
}

# start_server NAME VERSION [extra args...] -> sets $port and $spid
start_server() {
  local name="$1" ver="$2"; shift 2
  port="$(python3 "$helper" free-port)"
  mkdir -p "$work/$name"
  "$(server_bin "$ver")" --port "$port" --bind 127.0.0.1 --dir "$work/$name" --save '' --appendonly no \
    --repl-diskless-sync-delay 0 --logfile "$work/$name/server.log" --daemonize no "$@" &
  spid=$!
  pids+=("$spid")
  for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "bench: $name ($ver) did not start on $port" >&2
  cat "$work/$name/server.log" >&2
  exit 1
}

server_cpu() { # PORT -> user+sys CPU seconds of the server (main process and threads)
  redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/{s+=$2} END{printf "%.2f", s}'
}

stop_server() { # PID: stops it and forgets it (so cleanup never signals a reused pid)
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- source ------------------------------------------------------------------------------------
echo "bench: generating $KEYS keys (MIX=$MIX)" >&2
python3 "$helper" gen "$KEYS" "$MIX" "$work/data.resp"
start_server src 7.0 --repl-diskless-sync no --repl-backlog-size 256mb
src_port=$port
echo "bench: filling source on $src_port" >&2
redis-cli -p "$src_port" --pipe < "$work/data.resp" >"$work/fill.log"
n="$(redis-cli -p "$src_port" dbsize)"
[ "$n" = "$KEYS" ] || { echo "bench: source has $n keys, expected $KEYS" >&2; cat "$work/fill.log" >&2; exit 1; }
src_mem="$(redis-cli -p "$src_port" info memory | awk -F: '/^used_memory_human/{gsub("\r","",$2); print $2}')"
echo "bench: source ready: $n keys, used_memory $src_mem" >&2

# ---- runs (functions set globals: no subshells, so every pid stays known to cleanup) ------------
# native_run LABEL -> NAT_T (seconds from REPLICAOF to link up + all keys)
native_run() {
  local label="$1"
  start_server "native-$label" 7.0
  NAT_T="$(python3 "$helper" replicate "$port" "$src_port" "$KEYS" "$TIMEOUT")"
  NAT_CPU="$(server_cpu "$port")"
  redis-cli -p "$port" replicaof no one >/dev/null
  stop_server "$spid"
  rm -rf "$work/native-$label"
}

# shardsync_run LABEL TARGET_VERSION -> SS_T (launch → target has all keys), SS_RSS (MiB),
# SS_STARTED / SS_HANDED (seconds after launch of "full sync started" / "RDB received and handed to
# the writers"), SS_RDB (RDB bytes)
shardsync_run() {
  local label="$1" ver="$2" tport tpid t0 pid hwm rc log
  start_server "target-$label" "$ver"
  tport=$port; tpid=$spid
  log="$out/logs/shardsync-$label.log"
  local args=(run --source "redis://127.0.0.1:$src_port" --target "redis://127.0.0.1:$tport"
    --state-dir "$work/state-$label" --metrics-addr off --heartbeat-key "" --log-level "$LOG_LEVEL")
  if [ -n "${SHARDSYNC_CONFIG:-}" ]; then args+=(--config "$SHARDSYNC_CONFIG"); fi
  t0="$EPOCHREALTIME"
  "$ss" "${args[@]}" 2>"$log" &
  pid=$!
  pids+=("$pid")
  if ! SS_T="$(python3 "$helper" wait-dbsize "$tport" "$KEYS" "$t0" "$TIMEOUT")"; then
    echo "bench: shardsync run $label failed; log tail:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
  hwm="$(awk '/^VmHWM/{print $2}' "/proc/$pid/status")"
  SS_RSS="$(awk -v h="$hwm" 'BEGIN{printf "%.1f", h/1024}')"
  SS_CPU="$(awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/t}' "/proc/$pid/stat")"
  SS_TCPU="$(server_cpu "$tport")"
  kill -TERM "$pid"
  rc=0; wait "$pid" || rc=$?
  stop_server "$pid"
  if [ "$rc" != 0 ]; then
    echo "bench: shardsync ($label) exited $rc after SIGTERM (expected 0); log tail:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
  read -r SS_STARTED SS_HANDED SS_RDB < <(python3 "$helper" log-times "$log" "$t0")
  if grep -E '^[^ ]+ +(ERROR|WARN) ' "$log" | grep -qv 'check="source backlog"'; then
    echo "bench: shardsync ($label) logged warnings/errors (see $log):" >&2
    grep -E '^[^ ]+ +(ERROR|WARN) ' "$log" | head -n 5 >&2
  fi
  stop_server "$tpid"
  rm -rf "$work/target-$label" "$work/state-$label"
  echo "bench:   shardsync $label: ${SS_T}s (full sync started at ${SS_STARTED}s, RDB parsed and queued at ${SS_HANDED}s), peak RSS ${SS_RSS} MiB, CPU ${SS_CPU}s, target CPU ${SS_TCPU}s" >&2
}

pipe_s=""
if [ "$PIPE" = 1 ]; then
  start_server pipe 7.0
  t0="$EPOCHREALTIME"
  redis-cli -p "$port" --pipe < "$work/data.resp" >"$work/pipe.log"
  pipe_s="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.3f", b-a}')"
  [ "$(redis-cli -p "$port" dbsize)" = "$KEYS" ] || { echo "bench: --pipe loaded the wrong count" >&2; exit 1; }
  stop_server "$spid"
  rm -rf "$work/pipe"
  echo "bench: redis-cli --pipe into an empty 7.0: ${pipe_s}s" >&2
fi

# rows: "sync|native s|shardsync s|started at|handed at|rss|shardsync cpu|target cpu|native cpu|notes"
rows=()
min() { printf '%s\n' "$@" | sort -g | head -n1; }

echo "bench: disk-based sync (repl-diskless-sync no)" >&2
nat=(); natcpu=""
for i in $(seq "$RUNS"); do
  native_run "disk-$i"
  nat+=("$NAT_T")
  if [ "$NAT_T" = "$(min "${nat[@]}")" ]; then natcpu="$NAT_CPU"; fi
  echo "bench:   native replica run $i: ${NAT_T}s (replica CPU ${NAT_CPU}s)" >&2
done
sst=(); best=""
for i in $(seq "$RUNS"); do
  shardsync_run "disk-$i" 7.0
  sst+=("$SS_T")
  if [ -z "$best" ] || awk -v a="$SS_T" -v b="${best%%|*}" 'BEGIN{exit !(a<b)}'; then
    best="$SS_T|$SS_STARTED|$SS_HANDED|$SS_RSS|$SS_CPU|$SS_TCPU"
  fi
done
rdb_bytes="$SS_RDB"
IFS='|' read -r t st h r c tc <<<"$best"
rows+=("disk, 7.0→7.0 (RESTORE)|$(min "${nat[@]}")|$t|$st|$h|$r|$c|$tc|$natcpu|best of $RUNS; native ${nat[*]}; shardsync ${sst[*]}")

if [ "$CROSS" != none ]; then
  echo "bench: cross-version 7.0 → $CROSS" >&2
  shardsync_run "cross-$CROSS" "$CROSS"
  rows+=("disk, 7.0→$CROSS (plain commands)|—|$SS_T|$SS_STARTED|$SS_HANDED|$SS_RSS|$SS_CPU|$SS_TCPU|—|no native replica across versions")
fi

if [ "$DISKLESS" = 1 ]; then
  echo "bench: diskless sync (repl-diskless-sync yes)" >&2
  redis-cli -p "$src_port" config set repl-diskless-sync yes >/dev/null
  native_run diskless
  echo "bench:   native replica: ${NAT_T}s (replica CPU ${NAT_CPU}s)" >&2
  shardsync_run diskless 7.0
  rows+=("diskless, 7.0→7.0 (RESTORE)|$NAT_T|$SS_T|$SS_STARTED|$SS_HANDED|$SS_RSS|$SS_CPU|$SS_TCPU|$NAT_CPU|one run each")
  redis-cli -p "$src_port" config set repl-diskless-sync no >/dev/null
fi

# ---- report ------------------------------------------------------------------------------------
cpu="$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
{
  echo "### shardsync full sync: $KEYS keys, MIX=$MIX"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), $(nproc) CPUs ($cpu); source: redis 7.0,"
  echo "used_memory $src_mem, RDB $(awk -v b="$rdb_bytes" 'BEGIN{printf "%.1f", b/1048576}') MiB.${SHARDSYNC_CONFIG:+ shardsync config: $SHARDSYNC_CONFIG.}"
  echo "Native: REPLICAOF → \`master_link_status:up\` and DBSIZE = N. shardsync: process launch → target DBSIZE = N"
  echo "(\"started\" / \"RDB done\": when shardsync logged \"full sync started\" / \"RDB received and handed to the"
  echo "writers\", seconds after launch). redis-cli --pipe: the same keys as commands into an empty 7.0."
  echo "CPU columns: user+sys seconds of shardsync, of its target server, and of the native replica server."
  echo "Load average before / after: $load_before / $(cut -d' ' -f1-3 /proc/loadavg) (other work on the host skews all times)."
  echo
  echo "| sync | native replica s | shardsync s | shardsync / native | redis-cli --pipe s | started s | RDB done s | peak RSS MiB | keys/s | shardsync CPU s | target CPU s | native replica CPU s | notes |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  for row in "${rows[@]}"; do
    IFS='|' read -r v nt t st h r c tc nc note <<<"$row"
    ratio="—"
    if [ "$nt" != "—" ]; then ratio="$(awk -v a="$t" -v b="$nt" 'BEGIN{printf "%.2f×", a/b}')"; fi
    kps="$(awk -v n="$KEYS" -v t="$t" 'BEGIN{printf "%.0f", n/t}')"
    echo "| $v | $nt | $t | $ratio | ${pipe_s:-—} | $st | $h | $r | $kps | $c | $tc | $nc | $note |"
  done
} >"$out/full_sync.md"
echo
cat "$out/full_sync.md"
