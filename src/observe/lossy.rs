//! Lossy conversions: parts of the source's data the target cannot hold (hash-field TTLs on a
//! target without them, see [`crate::convert::loss`]) are never dropped quietly. Each loss is
//! counted in `shardsync_lossy_conversions_total{shard,kind}` and in the shard's
//! `lossy_conversions` of `/status`, and warned about with the key (rate-limited per shard and
//! kind by [`crate::observe::lograte`]).

use std::sync::atomic::Ordering;

use crate::observe::progress::ShardState;

/// Records `n` losses of `kind` (one of [`crate::convert::loss::KINDS`]) on `key`; `during` says
/// where (`full sync` or `live stream`).
pub fn record(shard: &ShardState, kind: &'static str, n: u64, key: &[u8], during: &'static str) {
    if n == 0 {
        return;
    }
    shard.lossy_conversions.fetch_add(n, Ordering::Relaxed);
    metrics::counter!(crate::observe::telemetry::LOSSY_CONVERSIONS, "shard" => shard.name.clone(), "kind" => kind)
        .increment(n);
    if let Some(suppressed) = crate::observe::lograte::allow(&shard.name, kind) {
        tracing::warn!(shard = %shard.name, kind, count = n, key = %crate::escape::quoted(key), during, suppressed,
            "the target cannot hold this (e.g. hash field TTLs need Valkey >= 9 or Redis >= 7.4): the values are written without it; counted in shardsync_lossy_conversions_total");
    }
}
