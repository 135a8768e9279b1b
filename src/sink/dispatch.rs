//! [`Dispatcher`]: hands one source shard's commands to the target writers. A standalone target
//! has one writer; on a cluster target each command goes to the writer of the node owning its
//! key's slot (the routing policy is in [`crate::router`]): multi-key commands are split per
//! slot where that keeps their meaning, `MULTI`/`EXEC` blocks stay whole when they touch one slot,
//! and commands that span slots and cannot be split run through the gather fallback
//! ([`super::crossslot`]) after every earlier write of the shard is applied. Every run of
//! commands gets one [`crate::observe::progress::Ticket`] over all its parts, so the shard's applied
//! offset only moves when every node has acknowledged the run.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Batch;
use super::crossslot::CrossSlot;
use super::repair::Repairer;
use super::targets::{Routing, Targets};
use crate::cmd::{Cmd, DbCmd};
use crate::config::SyncSettings;
use crate::observe::progress::ShardState;
use crate::router::{self, Routed, Scope, TxRouted};

/// The writers' queues were closed: the process is stopping.
#[derive(Debug, thiserror::Error)]
#[error("the writer queue is closed (shutting down)")]
pub struct WriterGone;

/// A batch whose writer queue is closed: its ticket part is released so the shard's applied
/// offset is not blocked forever; the commands themselves come again, because the link's
/// handed-out offset did not pass them and it resumes from there.
fn undelivered(b: Batch) -> WriterGone {
    b.shard.part_done(&b.ticket);
    WriterGone
}

/// What a run of commands is, for its ticket.
#[derive(Clone, Copy, Debug)]
pub struct RunInfo {
    pub epoch: u64,
    pub offset: Option<u64>,
    pub completes_full_sync: bool,
}

/// What kind of run is sent ([`Dispatcher::feed`]), for what happens before it is split.
#[derive(Clone, Copy, Debug)]
pub enum Feed<'a> {
    /// RDB batches: plain SETs become MSETs, per slot on a cluster (see `super::coalesce`).
    Rdb,
    /// Stream commands, `ends[i]` the source offset after `cmds[i]`: key repairs first (see
    /// [`Dispatcher::send_stream`]).
    Stream(&'a [u64]),
    /// As they are (e.g. the marker that completes a full sync).
    Plain,
}

/// A piece of a run: commands per writer index, or one command needing the cross-slot fallback.
enum Segment {
    Parts(Vec<Vec<DbCmd>>),
    CrossSlot(Cmd),
}

/// Sends one shard's runs of commands to the writers. Each link (and each RDB load) owns one:
/// it keeps the open `MULTI` block between runs. Cloning gives a fresh dispatcher.
pub struct Dispatcher {
    targets: Arc<Targets>,
    sync: Arc<SyncSettings>,
    /// Body of an open `MULTI` block (cluster targets only).
    tx: Option<Vec<Cmd>>,
    crossslot: CrossSlot,
    /// Copies keys the target rejected writes to from the source (see [`super::repair`]).
    repair: Option<Repairer>,
    /// Exactly-once mode (standalone target): `(settings, target holds a partial full sync)`.
    exact: Option<(Arc<super::exact::Exact>, bool)>,
    /// Exactly-once mode: the tail of a source transaction not yet closed by its `EXEC`.
    hold: super::txn_hold::TxnHold,
    /// Exactly-once on a cluster: skips replayed commands the target committed (see
    /// [`super::exact_slots`]).
    replay: Option<super::exact_slots::SharedReplay>,
    /// The routing snapshot the previous run was split with (see [`Dispatcher::routing`]).
    routed_with: Option<Arc<super::targets::Routing>>,
}

impl Clone for Dispatcher {
    fn clone(&self) -> Dispatcher {
        let mut d = Dispatcher::new(self.targets.clone(), self.sync.clone());
        d.repair = self.repair.clone();
        d.exact = self.exact.clone();
        d.replay = self.replay.clone();
        d
    }
}

impl Dispatcher {
    pub fn new(targets: Arc<Targets>, sync: Arc<SyncSettings>) -> Dispatcher {
        let crossslot = CrossSlot::new(targets.clone());
        Dispatcher {
            targets,
            sync,
            tx: None,
            crossslot,
            repair: None,
            exact: None,
            hold: Default::default(),
            replay: None,
            routed_with: None,
        }
    }

    /// Enables exactly-once mode (see [`super::exact`]); `dirty`: the target holds a partial
    /// full sync of this shard (a repeated full sync must clear it first).
    pub fn with_exact(mut self, exact: Arc<super::exact::Exact>, dirty: bool) -> Dispatcher {
        self.exact = Some((exact, dirty));
        self
    }

    /// Exactly-once on a cluster target: the shard's replay filter.
    pub fn with_replay(mut self, replay: super::exact_slots::SharedReplay) -> Dispatcher {
        self.replay = Some(replay);
        self
    }

    /// True when the target was found holding a partial full sync of this shard at start.
    pub fn exact_dirty(&self) -> bool {
        self.exact.as_ref().is_some_and(|e| e.1)
    }

    /// Exactly-once mode: writes the full-sync mark into the shard's progress key, before any
    /// key of the RDB (a restart then knows the target holds a partial copy).
    pub async fn mark_full_sync(&self, shard: &ShardState) -> Result<(), super::SinkError> {
        let Some((exact, _)) = &self.exact else {
            return Ok(());
        };
        if let Some(r) = &self.replay
            && let Ok(mut g) = r.lock()
        {
            *g = None; // offsets of an earlier history filter nothing of the new one
        }
        if let Some(r) = &self.repair {
            super::exact_fences::clear(r.queue(), &self.targets, &shard.name).await;
        }
        if self.targets.cluster {
            return super::exact_slots::mark_full_sync(
                &self.targets,
                exact,
                &shard.name,
                self.replay.as_ref(),
            )
            .await;
        }
        let key = exact.key(&shard.name);
        for ep in self.targets.master_endpoints() {
            super::exact::mark_full_sync(&ep, &key).await?;
        }
        Ok(())
    }

    /// While a source transaction is held (exactly-once mode): the offset before it.
    pub fn handed_before_hold(&self) -> Option<(u64, u32)> {
        self.hold.handed_before()
    }

    /// Drops writes of progress keys (some shardsync upstream of our source wrote them), with
    /// their entries in `ends` when given.
    fn drop_progress_writes(&self, cmds: &mut Vec<DbCmd>, ends: Option<&mut Vec<u64>>) {
        let prefix = self.sync.progress_prefix.as_bytes();
        let keep: Vec<bool> = cmds
            .iter()
            .map(|c| !super::exact::is_progress_write(prefix, &c.cmd))
            .collect();
        if keep.iter().all(|k| *k) {
            return;
        }
        let mut it = keep.iter();
        cmds.retain(|_| *it.next().unwrap_or(&true));
        if let Some(e) = ends {
            let mut it = keep.iter();
            e.retain(|_| *it.next().unwrap_or(&true));
        }
    }

    /// Enables repairs of rejected writes (the stream path, [`Dispatcher::send_stream`]).
    pub fn with_repair(mut self, repair: Repairer) -> Dispatcher {
        self.repair = Some(repair);
        self
    }

    /// Like [`Dispatcher::send`] for a run of the command stream, where `ends[i]` is the source
    /// offset after `cmds[i]`: queued key repairs are applied first and commands whose keys
    /// were copied from the source at a later offset are skipped (see [`super::repair`]).
    pub async fn send_stream(
        &mut self,
        shard: &Arc<ShardState>,
        run: RunInfo,
        cmds: Vec<DbCmd>,
        ends: &[u64],
    ) -> Result<(), WriterGone> {
        let mut cmds = cmds;
        let mut owned_ends = ends.to_vec();
        self.drop_progress_writes(&mut cmds, Some(&mut owned_ends));
        if let Some(r) = &self.replay {
            super::exact_slots::filter_replay(r, &mut cmds, &mut owned_ends);
        }
        let (cmds, owned_ends, run) = if self.exact.is_some() {
            let (c, e, offset) = self.hold.cut(cmds, &owned_ends, run.offset);
            if offset != run.offset
                && let Some(last) = c.last()
            {
                // Cut before a MULTI: the position is after `last`, in its database.
                shard
                    .run_db
                    .store(last.db, std::sync::atomic::Ordering::Release);
            }
            (c, e, RunInfo { offset, ..run })
        } else {
            (cmds, owned_ends, run)
        };
        let (mut cmds, mut owned_ends) = (cmds, owned_ends);
        if self.targets.cluster
            && let Some((exact, _)) = self.exact.clone()
        {
            // Exactly-once on a cluster: a flush is a barrier (see `exact_slots::apply_flush`).
            while let Some(i) = super::exact_slots::flush_at(&cmds, &owned_ends) {
                let rest = cmds.split_off(i + 1);
                let rest_ends = owned_ends.split_off(i + 1);
                let (end, db) = (owned_ends[i], cmds[i].db);
                let flush = cmds.pop().map(|c| c.cmd);
                owned_ends.pop();
                if let Some(&before) = owned_ends.last() {
                    let db_before = cmds.last().map_or(db, |c| c.db);
                    let run_db = shard
                        .run_db
                        .swap(db_before, std::sync::atomic::Ordering::AcqRel);
                    let head = RunInfo {
                        offset: Some(before),
                        completes_full_sync: false,
                        ..run
                    };
                    self.send_piece(shard, head, cmds, &owned_ends).await?;
                    shard
                        .run_db
                        .store(run_db, std::sync::atomic::Ordering::Release);
                }
                if let Some(flush) = flush {
                    let after = crate::source::handshake::ReplPosition {
                        replid: shard.replid(),
                        offset: end,
                        db,
                    };
                    let applied = super::exact_slots::apply_flush(
                        &self.targets,
                        &exact,
                        shard,
                        &flush,
                        &after,
                    )
                    .await;
                    if let Err(e) = applied {
                        Self::refuse(shard, &flush, &format!("the flush failed: {e}"));
                    }
                    // The flush's position, in its database, once everything before it is
                    // retired (a ticket of no parts).
                    let run_db = shard.run_db.swap(db, std::sync::atomic::Ordering::AcqRel);
                    shard.issue(run.epoch, Some(end), false, 0);
                    shard
                        .run_db
                        .store(run_db, std::sync::atomic::Ordering::Release);
                }
                (cmds, owned_ends) = (rest, rest_ends);
            }
        }
        self.send_piece(shard, run, cmds, &owned_ends).await
    }

    /// [`Dispatcher::send_stream`] after its cuts: queued repairs first, then the run.
    async fn send_piece(
        &mut self,
        shard: &Arc<ShardState>,
        run: RunInfo,
        cmds: Vec<DbCmd>,
        ends: &[u64],
    ) -> Result<(), WriterGone> {
        if cmds.is_empty() && run.offset.is_none() {
            return Ok(());
        }
        let cmds = match (&mut self.repair, run.offset) {
            (Some(r), Some(end)) if r.busy(shard) => {
                r.process(shard, run.epoch, end, cmds, ends).await
            }
            _ => cmds,
        };
        self.send(shard, run, cmds).await
    }

    /// True when the target is a cluster.
    pub fn cluster(&self) -> bool {
        self.targets.cluster
    }

    /// The routing snapshot for the next run. When the cluster's slot table changed since the
    /// previous run (a `MOVED` during a resharding or a failover), it first waits until every
    /// earlier write of the shard is applied: a write sent to the old owner and redirected from
    /// there must land before later writes of its slot that now go to the new owner directly,
    /// or the two would apply out of order (`APPEND`s in another order, a `SET` undone by an
    /// older one). One wait per table change.
    async fn routing(&mut self, shard: &ShardState) -> Arc<super::targets::Routing> {
        let mut routing = self.targets.routing();
        while let Some(prev) = &self.routed_with
            && prev.table.is_some()
            && !Arc::ptr_eq(prev, &routing)
        {
            shard.drained().await;
            // The table may have changed again meanwhile: wait until it holds still.
            self.routed_with = Some(routing);
            routing = self.targets.routing();
        }
        self.routed_with = Some(routing.clone());
        routing
    }

    /// The sync settings (the RDB loader reads the database selection and filters).
    pub fn sync(&self) -> &SyncSettings {
        &self.sync
    }

    /// Applies `sync.dbs` / `sync.filter` to a run of source stream commands before they are
    /// converted (see [`super::selection`]); `ends[i]` is the source offset after `cmds[i]`.
    pub fn filter_stream(
        &self,
        shard: &ShardState,
        cmds: Vec<DbCmd>,
        ends: Vec<u64>,
    ) -> (Vec<DbCmd>, Vec<u64>) {
        if self.sync.filter.is_noop() && self.sync.db_map.is_empty() {
            return (cmds, ends);
        }
        let cluster = self.targets.routing().table.is_some();
        super::selection::filter_run(&self.sync, cluster, self.repair.as_ref(), shard, cmds, ends)
    }

    /// Removes the keys of a shard from the target (see [`super::clear`]).
    pub async fn clear_shard(&self, slots: Option<&[(u16, u16)]>) -> Result<u64, super::SinkError> {
        let filter = &self.sync.filter;
        if filter.is_noop() {
            let keep = self.sync.progress_prefix.as_bytes();
            return super::clear::clear_shard(&self.targets, slots, keep).await;
        }
        let cluster = self.targets.cluster;
        let dbs = filter.dbs().map(|d| {
            let mut v: Vec<u32> = d
                .iter()
                .filter_map(|&s| self.sync.target_db(s, cluster))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        });
        super::clear::clear_selected(&self.targets, slots, filter, dbs).await
    }

    /// True while a `MULTI` block is open (its commands are held until `EXEC`).
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some() || self.hold.holding()
    }

    /// Reports a command that cannot be written (logged with its key, counted).
    fn refuse(shard: &ShardState, cmd: &Cmd, why: &str) {
        crate::observe::events::Emit::emit(crate::observe::events::WriteRefused {
            shard,
            cmd,
            why,
        });
    }

    fn split(&mut self, shard: &ShardState, cmds: Vec<DbCmd>, routing: &Routing) -> Vec<Segment> {
        let n = routing.writers.len().max(1);
        let mut segs = Vec::new();
        let mut parts: Vec<Vec<DbCmd>> = vec![Vec::new(); n];
        let cluster = routing.table.is_some();
        let fallback = routing.writer_index(None).unwrap_or(0);
        for DbCmd { db, cmd } in cmds {
            let Some(db) = super::exact_fences::target_db(&self.sync, db, cluster) else {
                Self::refuse(
                    shard,
                    &cmd,
                    &format!(
                        "source database {db} has no target database (a cluster has only db 0): set sync.db_map"
                    ),
                );
                continue;
            };
            if !cluster {
                parts[fallback].push(DbCmd { db, cmd });
                continue;
            }
            if cmd.is("MULTI") {
                self.tx = Some(Vec::new());
                continue;
            }
            if cmd.is("EXEC") {
                let body = self.tx.take().unwrap_or_default();
                match router::route_transaction(body) {
                    TxRouted::SingleSlot { slot, cmds } => {
                        let w = routing.writer_index(Some(slot)).unwrap_or(fallback);
                        parts[w].push(DbCmd {
                            db: 0,
                            cmd: crate::cmd!["MULTI"],
                        });
                        parts[w].extend(cmds.into_iter().map(|cmd| DbCmd { db: 0, cmd }));
                        parts[w].push(DbCmd {
                            db: 0,
                            cmd: crate::cmd!["EXEC"],
                        });
                    }
                    TxRouted::Split(routed) => {
                        for r in routed {
                            self.place(shard, r, routing, &mut parts, &mut segs);
                        }
                    }
                }
                continue;
            }
            if let Some(tx) = &mut self.tx {
                tx.push(cmd);
                continue;
            }
            let r = router::route(cmd);
            self.place(shard, r, routing, &mut parts, &mut segs);
        }
        if parts.iter().any(|p| !p.is_empty()) {
            segs.push(Segment::Parts(parts));
        }
        segs
    }

    fn place(
        &self,
        shard: &ShardState,
        r: Routed,
        routing: &Routing,
        parts: &mut Vec<Vec<DbCmd>>,
        segs: &mut Vec<Segment>,
    ) {
        let fallback = routing.writer_index(None).unwrap_or(0);
        let at = |slot: u16| routing.writer_index(Some(slot)).unwrap_or(fallback);
        match r {
            Routed::Single { slot, cmd } => parts[at(slot)].push(DbCmd { db: 0, cmd }),
            Routed::PerSlot(v) => {
                for (slot, cmd) in v {
                    parts[at(slot)].push(DbCmd { db: 0, cmd });
                }
            }
            Routed::NoKey { cmd, scope } => match scope {
                Scope::AllNodes => {
                    for w in routing.all_writers() {
                        parts[w].push(DbCmd {
                            db: 0,
                            cmd: cmd.clone(),
                        });
                    }
                }
                Scope::AnyNode => parts[fallback].push(DbCmd { db: 0, cmd }),
                Scope::Control => {}
                Scope::Unsupported => Self::refuse(
                    shard,
                    &cmd,
                    "command cannot run on a cluster target (databases other than 0)",
                ),
                Scope::Malformed => {
                    Self::refuse(shard, &cmd, "command with malformed key arguments")
                }
            },
            Routed::CrossSlot { cmd, .. } => {
                let n = parts.len();
                segs.push(Segment::Parts(std::mem::replace(
                    parts,
                    vec![Vec::new(); n],
                )));
                segs.push(Segment::CrossSlot(cmd));
            }
        }
    }

    fn batches(
        shard: &Arc<ShardState>,
        run: RunInfo,
        parts: Vec<Vec<DbCmd>>,
        routing: &Routing,
    ) -> Vec<(usize, Batch)> {
        let parts: Vec<(usize, Vec<DbCmd>)> = parts
            .into_iter()
            .enumerate()
            .filter(|(w, p)| !p.is_empty() && routing.writers.get(*w).is_some_and(Option::is_some))
            .collect();
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
                        wire: None,
                        detour: None,
                    },
                )
            })
            .collect()
    }

    /// Splits a run into its steps, each with the run information its ticket gets: only the
    /// last step carries the run's offset, and none while a `MULTI` block is still open.
    fn plan(
        &mut self,
        shard: &Arc<ShardState>,
        run: RunInfo,
        cmds: Vec<DbCmd>,
        routing: &Routing,
    ) -> Vec<(Segment, RunInfo)> {
        let segs = self.split(shard, cmds, routing);
        let run = RunInfo {
            offset: if self.tx.is_some() { None } else { run.offset },
            ..run
        };
        if segs.is_empty() {
            shard.issue(run.epoch, run.offset, run.completes_full_sync, 0);
        }
        let n = segs.len();
        let partial = RunInfo {
            offset: None,
            completes_full_sync: false,
            ..run
        };
        segs.into_iter()
            .enumerate()
            .map(|(i, seg)| (seg, if i + 1 == n { run } else { partial }))
            .collect()
    }

    /// Sends a run, waiting while a writer's queue is full (back-pressure).
    pub async fn send(
        &mut self,
        shard: &Arc<ShardState>,
        run: RunInfo,
        cmds: Vec<DbCmd>,
    ) -> Result<(), WriterGone> {
        self.send_as(shard, run, cmds, false).await
    }

    /// [`Dispatcher::send`]; `pack`: each batch is encoded here, on the caller's thread (see
    /// [`super::wire`]).
    async fn send_as(
        &mut self,
        shard: &Arc<ShardState>,
        run: RunInfo,
        cmds: Vec<DbCmd>,
        pack: bool,
    ) -> Result<(), WriterGone> {
        let mut cmds = cmds;
        if run.completes_full_sync && cmds.is_empty() && self.exact.is_some() {
            // Exactly-once: a batch of its own carries the first position to the target,
            // behind every key of the RDB (the writer adds the progress `SET` around it).
            cmds.push(DbCmd {
                db: 0,
                cmd: crate::cmd!["PING"],
            });
        }
        let routing = self.routing(shard).await;
        let plan = self.plan(shard, run, cmds, &routing);
        for step in steps(shard, plan, &routing) {
            match step {
                Step::Write(tx, mut b) => {
                    if pack {
                        b.wire = super::wire::pack(&mut b.cmds);
                    }
                    tx.send(b).await.map_err(|e| undelivered(e.0))?
                }
                Step::CrossSlot(cmd, this) => {
                    // Everything before it must be on the target: the fallback reads it.
                    shard.drained().await;
                    if let Err(e) = self.crossslot.execute(&cmd).await {
                        let why = format!("cross-slot fallback failed: {e}");
                        Self::refuse(shard, &cmd, &why);
                        if let Some(r) = &self.repair {
                            r.queue().request(shard, 0, &cmd, &why);
                        }
                    }
                    shard.issue(this.epoch, this.offset, this.completes_full_sync, 0);
                }
            }
        }
        if run.completes_full_sync
            && self.targets.cluster
            && let (Some((exact, _)), Some(offset)) = (&self.exact, run.offset)
        {
            // Exactly-once on a cluster: once every node has the RDB, the shard key holds the
            // position the stream starts at (until then a restart repeats the full sync).
            shard.drained().await;
            let pos = crate::source::handshake::ReplPosition {
                replid: shard.replid(),
                offset,
                db: shard.run_db.load(std::sync::atomic::Ordering::Acquire),
            };
            if let Err(e) =
                super::exact_slots::mark_synced(&self.targets, exact, &shard.name, &pos).await
            {
                tracing::warn!(shard = %shard.name, error = %e, "could not write the progress key after the full sync; a restart will repeat the full sync");
            }
        }
        Ok(())
    }

    /// Sends a run of `kind` (see [`Feed`]), waiting while a writer's queue is full.
    pub async fn feed(
        &mut self,
        shard: &Arc<ShardState>,
        run: RunInfo,
        cmds: Vec<DbCmd>,
        kind: Feed<'_>,
    ) -> Result<(), WriterGone> {
        match kind {
            Feed::Rdb => {
                let mut cmds = cmds;
                self.drop_progress_writes(&mut cmds, None);
                // An MSET of one slot is routed whole.
                let cluster = self.targets.routing().table.is_some();
                let cmds = super::coalesce::batch(cmds, cluster);
                self.send_as(shard, run, cmds, true).await
            }
            Feed::Stream(ends) => self.send_stream(shard, run, cmds, ends).await,
            Feed::Plain => {
                // A piece of a large `RESTORE` the target already committed (a target ahead
                // of the resume point, see `exact_many`): skipped like its stream command.
                let piece = shard.piece_of.lock().ok().and_then(|p| *p);
                if let (Some(r), Some(before)) = (&self.replay, piece)
                    && super::exact_slots::replayed_piece(r, before)
                {
                    return Ok(());
                }
                self.send(shard, run, cmds).await
            }
        }
    }
}

/// One thing to do for a run: hand a batch to a writer's queue, or run a cross-slot command.
enum Step {
    Write(mpsc::Sender<Batch>, Batch),
    CrossSlot(Cmd, RunInfo),
}

/// The steps of a plan, in order. Lazy: a segment's tickets are issued only when its first
/// step is taken, so a cross-slot step's wait for earlier writes never waits for later ones.
fn steps<'a>(
    shard: &'a Arc<ShardState>,
    plan: Vec<(Segment, RunInfo)>,
    routing: &'a Routing,
) -> impl Iterator<Item = Step> + 'a {
    plan.into_iter().flat_map(move |(seg, this)| match seg {
        Segment::Parts(parts) => Dispatcher::batches(shard, this, parts, routing)
            .into_iter()
            .filter_map(|(w, b)| Some(Step::Write(routing.writers[w].as_ref()?.tx.clone(), b)))
            .collect(),
        Segment::CrossSlot(cmd) => vec![Step::CrossSlot(cmd, this)],
    })
}
