//! The target side: batches of commands, the [`Fanout`] that hands a shard's commands to each
//! target's [`Dispatcher`], which sends each command to the writer of the node that owns it,
//! the [`Targets`] registry with its slot router, the [`TargetWriter`] actor that pipelines
//! into one node, and the cross-slot fallback.

pub mod clear;
pub mod coalesce;
pub mod crossslot;
pub mod dispatch;
pub mod error;
pub mod exact;
pub mod exact_fences;
pub mod exact_many;
pub mod exact_slots;
pub mod fanout;
pub mod repair;
pub mod selection;
pub mod targets;
pub mod txn_hold;
pub mod wire;
pub mod writer;

use std::sync::Arc;

use crate::cmd::DbCmd;
use crate::observe::progress::{ShardState, Ticket};

pub use dispatch::Dispatcher;
pub use error::SinkError;
pub use fanout::Fanout;
pub use targets::Targets;
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
    /// The commands already encoded (RDB batches, see [`wire`]); `None` after any change of
    /// `cmds`.
    pub wire: Option<wire::Wire>,
    /// Exactly-once on a cluster: this group is the head of its slot's detour (see
    /// `writer::detour`); dropping it lets the slot's next group go.
    pub detour: Option<writer::DetourToken>,
}

impl Batch {
    /// Appends the RESP encoding of `cmds[i]` to `out`: a copy of its pre-encoded bytes when
    /// the batch has them.
    pub fn encode_cmd(&self, i: usize, out: &mut bytes::BytesMut) {
        if let Some(w) = &self.wire
            && w.len() == self.cmds.len()
            && let Some(b) = w.command(i)
        {
            out.extend_from_slice(b);
        } else if let Some(c) = self.cmds.get(i) {
            c.cmd.encode(out);
        }
    }
}
