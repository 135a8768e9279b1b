//! The target side: batches of commands and the [`TargetWriter`] actor that pipelines them into
//! one target node, checks every reply and reports what was applied.

pub mod writer;

use std::sync::Arc;

use crate::cmd::DbCmd;
use crate::progress::ShardState;

pub use writer::TargetWriter;

/// A run of commands from one source shard, in stream order.
#[derive(Debug)]
pub struct Batch {
    pub shard: Arc<ShardState>,
    /// The shard's epoch when the batch was made (see [`ShardState::epoch`]).
    pub epoch: u64,
    pub cmds: Vec<DbCmd>,
    /// Source replication offset after the batch's last command (`None` during an RDB load).
    pub offset: Option<u64>,
    /// The last batch of a full sync: once acknowledged, the shard's position is resumable.
    pub completes_full_sync: bool,
}
