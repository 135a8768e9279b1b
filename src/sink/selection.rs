//! The stream side of `sync.dbs` / `sync.filter`: runs [`crate::router::filter::Filter::apply`]
//! over a run of source commands (keeping each command's source offset aligned), queues the
//! key copies it asks for on the shard's repair queue, flags the shard for commands that cannot
//! be applied (a `SWAPDB` across the selection), and counts every rule per shard.

use std::sync::Arc;

use crate::cmd::DbCmd;
use crate::config::SyncSettings;
use crate::observe::progress::ShardState;
use crate::router::filter::{Effects, Rule};

use super::repair::Repairer;

/// Filters `cmds` (`ends[i]`: the source offset after `cmds[i]`). Returns the commands to send
/// and their offsets.
pub fn filter_run(
    sync: &Arc<SyncSettings>,
    cluster_target: bool,
    repair: Option<&Repairer>,
    shard: &ShardState,
    cmds: Vec<DbCmd>,
    ends: Vec<u64>,
) -> (Vec<DbCmd>, Vec<u64>) {
    let filter = &sync.filter;
    let map = |db: u32| sync.target_db(db, cluster_target);
    let mut out = Vec::with_capacity(cmds.len());
    let mut out_ends = Vec::with_capacity(ends.len());
    let mut fx = Effects::default();
    for (dc, end) in cmds.into_iter().zip(ends) {
        let before = out.len();
        filter.apply(dc, &map, &mut out, &mut fx);
        out_ends.extend(std::iter::repeat_n(end, out.len() - before));
    }
    for (db, key) in std::mem::take(&mut fx.repairs) {
        let shown = crate::escape::quoted(&key);
        match (repair, map(db)) {
            (Some(r), Some(tdb)) => r.queue().request_key(
                shard,
                tdb,
                key,
                "a command moved data across the database selection or filters",
            ),
            _ => {
                if let Some(suppressed) =
                    crate::observe::lograte::allow(&shard.name, "filter_repair")
                {
                    tracing::error!(shard = %shard.name, key = %shown, db, suppressed,
                        "a command crossing the database selection or filters needs this key copied from the source, but no repair path is available here; the target keeps what it has");
                }
            }
        }
    }
    for why in fx.refused.drain(..) {
        if let Some(suppressed) = crate::observe::lograte::allow(&shard.name, "filter_refused") {
            tracing::error!(shard = %shard.name, suppressed, "{why}");
        }
        shard.mark_degraded(why);
    }
    for rule in Rule::ALL {
        let n = fx.counts[rule as usize];
        if n > 0 {
            metrics::counter!(crate::observe::telemetry::FILTERED_COMMANDS, "shard" => shard.name.clone(), "rule" => rule.name())
                .increment(n);
        }
    }
    (out, out_ends)
}
