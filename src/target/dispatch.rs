//! [`Dispatcher`]: hands a shard's commands to the target writers. A standalone target has one
//! writer; a cluster target has one per master, and each command goes to the writer of the node
//! that owns its key's slot. Every run of commands gets one [`Ticket`] over all its parts, so the
//! shard's applied offset only moves when every node has acknowledged the run.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Batch;
use crate::cmd::DbCmd;
use crate::progress::ShardState;

/// The writers' queue was closed: the process is stopping.
#[derive(Debug, thiserror::Error)]
#[error("the writer queue is closed (shutting down)")]
pub struct WriterGone;

/// Sends runs of commands to the writers. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    writers: Arc<Vec<mpsc::Sender<Batch>>>,
}

/// What a run of commands is, for its ticket.
#[derive(Clone, Copy, Debug)]
pub struct RunInfo {
    pub epoch: u64,
    pub offset: Option<u64>,
    pub completes_full_sync: bool,
}

impl Dispatcher {
    /// A dispatcher for a standalone target with one writer.
    pub fn single(writer: mpsc::Sender<Batch>) -> Dispatcher {
        Dispatcher {
            writers: Arc::new(vec![writer]),
        }
    }

    /// Splits `cmds` per writer, in order.
    fn split(&self, cmds: Vec<DbCmd>) -> Vec<(usize, Vec<DbCmd>)> {
        if cmds.is_empty() {
            return Vec::new();
        }
        vec![(0, cmds)]
    }

    fn batches(
        &self,
        shard: &Arc<ShardState>,
        run: RunInfo,
        cmds: Vec<DbCmd>,
    ) -> Vec<(usize, Batch)> {
        let parts = self.split(cmds);
        let ticket = shard.issue(run.epoch, run.offset, run.completes_full_sync, parts.len());
        parts
            .into_iter()
            .map(|(w, cmds)| {
                (
                    w,
                    Batch {
                        shard: shard.clone(),
                        ticket: ticket.clone(),
                        cmds,
                        asking: false,
                    },
                )
            })
            .collect()
    }

    /// Sends a run, waiting while a writer's queue is full (back-pressure).
    pub async fn send(
        &self,
        shard: &Arc<ShardState>,
        run: RunInfo,
        cmds: Vec<DbCmd>,
    ) -> Result<(), WriterGone> {
        for (w, b) in self.batches(shard, run, cmds) {
            self.writers[w].send(b).await.map_err(|_| WriterGone)?;
        }
        Ok(())
    }

    /// Like [`Dispatcher::send`], from a blocking thread (the RDB loader).
    pub fn blocking_send(
        &self,
        shard: &Arc<ShardState>,
        run: RunInfo,
        cmds: Vec<DbCmd>,
    ) -> Result<(), WriterGone> {
        for (w, b) in self.batches(shard, run, cmds) {
            self.writers[w].blocking_send(b).map_err(|_| WriterGone)?;
        }
        Ok(())
    }
}
