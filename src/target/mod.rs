//! The target side: batches of commands, the [`Dispatcher`] that sends each command to the
//! writer of the node that owns it, and the [`TargetWriter`] actor that pipelines them into one
//! target node, checks every reply and reports what was applied.

pub mod dispatch;
pub mod writer;

use std::sync::Arc;

use crate::cmd::DbCmd;
use crate::progress::{ShardState, Ticket};

pub use dispatch::Dispatcher;
pub use writer::TargetWriter;

/// A run of commands from one source shard, in stream order, for one target node.
#[derive(Debug)]
pub struct Batch {
    pub shard: Arc<ShardState>,
    /// The run this batch is a part of; the writer marks its part done when acknowledged.
    pub ticket: Arc<Ticket>,
    pub cmds: Vec<DbCmd>,
    /// Send `ASKING` before each command (the slot is being imported by this node).
    pub asking: bool,
}
