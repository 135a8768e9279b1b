#!/usr/bin/env bash
# Long run of the differential fuzzer (tests/it/diff_fuzz.rs): random write sequences on a real
# source with a native replica (the oracle) while shardsync replicates it into a target; stops
# at the first divergence and prints the minimal sequence.
#
#   scripts/fuzz-diff.sh --minutes N [--pair SRC:DST] [--seed S]
#
# SRC/DST: 6.0, 6.2, 7.0, valkey (default 7.0:7.0). Needs the servers of scripts/install-deps.sh
# (or SHARDSYNC_BIN_DIR). Exit status 0 means no divergence in N minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=1
pair=7.0:7.0
seed=""
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --pair) pair="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
export SHARDSYNC_FUZZ_MINUTES="$minutes" SHARDSYNC_FUZZ_PAIR="$pair"
[ -n "$seed" ] && export SHARDSYNC_FUZZ_SEED="$seed"
echo "fuzz-diff: pair $pair for $minutes min${seed:+, seed $seed}"
exec cargo test --test it diff_fuzz::long -- --ignored --exact --nocapture
