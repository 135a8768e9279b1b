//! [`TargetWriter`]: one actor per target node. It takes [`Batch`]es from a bounded queue (and
//! redirected commands from other writers), pipelines them over one connection (writing and
//! reading replies at the same time), checks every reply, and marks each batch's part of its
//! [`crate::observe::progress::Ticket`] done when acknowledged. Batches stay in memory until acknowledged;
//! when the connection drops it reconnects with backoff and resends what was not acknowledged,
//! so nothing is lost (at-least-once). On a cluster, `MOVED`/`ASK` replies send the command to
//! the right node and refresh the slot table; `TRYAGAIN`/`CLUSTERDOWN` retry after a pause. In
//! exactly-once mode a slot's transactions keep their stream order through those redirects
//! ([`detour`]).
//!
//! Databases: the first `SELECT n` of a connection for each database is a *probe* — nothing is
//! pipelined behind it until its reply arrives, so a target that refuses the index (its
//! `databases` is smaller than the source's) never runs those commands in another database.
//! A refused database is remembered for the writer's life: its commands are skipped, counted
//! (`shardsync_db_refused_writes_total`) and the shard is reported `failed` with the fix.
//! Verified databases are pipelined freely (a `SELECT` that succeeded once on a connection
//! cannot fail later on it). Cost: one round trip per database per connection.
//!
//! Deadlines: when the target leaves a reply outstanding for `reply_timeout`, the writer reports
//! a stall (log, `shardsync_target_stalls_total`, the shards' `last_error` in `/status`) and
//! reconnects, resending what was not acknowledged.
//!
//! Rejected writes that the source accepted are handed to [`super::repair`] (when enabled),
//! which copies the affected keys from the source.
//!
//! Exactly-once mode (standalone target): each stream batch goes inside `MULTI`/`EXEC` with
//! the `SET` of its shard's progress key (see [`txn`] and [`super::exact`]).

mod detour;
mod known;
mod ready;
mod refusals;
mod reply_error;
mod txn;

pub use detour::DetourToken;
use reply_error::ReplyError;

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::Batch;
use super::repair::RepairQueue;
use super::targets::{Held, Targets};
use crate::cmd::{Cmd, DbCmd};
use crate::config::Endpoint;
use crate::net::RespConn;
use crate::net::backoff::Backoff;
use crate::observe::progress::ShardState;
use crate::resp::{self, Frame};

/// Reply slot of a command the writer inserted itself (`SELECT` of a verified db, `ASKING`).
const INTERNAL_SLOT: u32 = u32::MAX;
/// Reply slot of a probing `SELECT` (nothing is pipelined behind it).
const PROBE_SLOT: u32 = u32::MAX - 1;
/// Stop taking new batches while this many bytes are waiting to be written…
const OUT_HIGH_WATER: usize = 4 << 20;
/// …or this many commands are awaiting replies…
const MAX_INFLIGHT_CMDS: usize = 32 * 1024;
/// …or the commands awaiting replies hold this much memory ([`DbCmd::mem_bytes`]; they are kept
/// for a resend). Without it a target that reads but does not answer let a writer hold up to
/// 32k many-element commands (a 1.5M-field hash: 290 MiB). One batch is always taken when none
/// is in flight, whatever its size.
const MAX_INFLIGHT_BYTES: usize = 32 << 20;
/// Pause before retrying a command the cluster answered `TRYAGAIN`/`CLUSTERDOWN` to.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Capacity of a writer's redirect queue, in batches (a redirected batch is one command).
///
/// Why bounded cannot deadlock: a writer never waits for room with its loop stopped. When the
/// queue of the node it redirects to is full, the batch waits in the sender's `held` list and the
/// sender stops taking *new* batches from its own (bounded) queue until the batch goes through;
/// it keeps reading replies, writing, and taking redirects from others. So every writer always
/// drains its redirect queue as fast as its own node acknowledges, whatever the other writers
/// do: there is no cycle of writers waiting on each other, and the back-pressure reaches the
/// links through the primary queues. `held` grows only from replies to commands in flight
/// (at most [`MAX_INFLIGHT_CMDS`] while no new batch is taken).
pub const REDIRECT_QUEUE: usize = 1024;
/// Pause before reconnecting to a target that is still loading its data (no growing backoff:
/// writes resume soon after the load, however long it took).
const NOT_READY_PAUSE: Duration = Duration::from_millis(250);
/// Default of `target.reply_timeout_ms`.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of one writer.
#[derive(Clone, Debug)]
pub struct WriterSettings {
    pub endpoint: Endpoint,
    /// Base name of this instance's heartbeat keys: a `SET` of one carries the source time and
    /// gives the lag (another instance's heartbeat keys are data, see [`crate::heartbeat`]).
    pub heartbeat_key: Bytes,
    /// A reply outstanding longer than this is a stall: report it and reconnect.
    pub reply_timeout: Duration,
    /// Where rejected writes go to be repaired from the source (`None`: only reported).
    pub repairs: Option<Arc<RepairQueue>>,
    /// Exactly-once mode (standalone targets): batches commit with their progress key.
    pub exact: Option<Arc<super::exact::Exact>>,
}

impl WriterSettings {
    /// Settings with the default deadline and no repair.
    pub fn new(endpoint: Endpoint, heartbeat_key: Bytes) -> WriterSettings {
        WriterSettings {
            endpoint,
            heartbeat_key,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            repairs: None,
            exact: None,
        }
    }
}

/// The sending sides of a writer's inputs.
#[derive(Clone, Debug)]
pub struct WriterHandle {
    /// `host:port` of the node.
    pub addr: String,
    /// Bounded: the memory bound and back-pressure of the data path.
    pub tx: mpsc::Sender<Batch>,
    /// Commands redirected by other writers (bounded: [`REDIRECT_QUEUE`]).
    pub redirect: mpsc::Sender<Batch>,
}

/// Pipelines batches into one target node. Stops (and signals `done`) when its queues are
/// closed and every batch is acknowledged.
pub struct TargetWriter {
    settings: WriterSettings,
    inputs: Option<(mpsc::Receiver<Batch>, mpsc::Receiver<Batch>)>,
    targets: Option<Arc<Targets>>,
    done: Option<oneshot::Sender<()>>,
}

impl TargetWriter {
    /// Creates the writer, its handle (`capacity` batches of queue) and its "done" signal.
    /// `targets` enables cluster redirects.
    pub fn new(
        settings: WriterSettings,
        capacity: usize,
        targets: Option<Arc<Targets>>,
    ) -> (TargetWriter, WriterHandle, oneshot::Receiver<()>) {
        let (tx, rx) = mpsc::channel(capacity);
        let (rtx, rrx) = mpsc::channel(REDIRECT_QUEUE);
        let (done_tx, done_rx) = oneshot::channel();
        let handle = WriterHandle {
            addr: settings.endpoint.to_string(),
            tx,
            redirect: rtx,
        };
        (
            TargetWriter {
                settings,
                inputs: Some((rx, rrx)),
                targets,
                done: Some(done_tx),
            },
            handle,
            done_rx,
        )
    }
}

impl Actor for TargetWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some((rx, rrx)) = self.inputs.take() else {
            ctx.stop();
            return;
        };
        // observability: the node's series exist (at 0) from the writer's start.
        crate::observe::telemetry::register_node(&self.settings.endpoint.to_string());
        let (detours, drx) = detour::Detours::new();
        let pipeline = Pipeline {
            settings: self.settings.clone(),
            node: self.settings.endpoint.to_string(),
            pending: VecDeque::new(),
            pending_mem: 0,
            targets: self.targets.take(),
            redirects_closed: false,
            held: VecDeque::new(),
            conn_db: 0,
            verified: HashSet::new(),
            refused: BTreeSet::new(),
            probing: None,
            flagged: Vec::new(),
            known: None,
            serial: false,
            answered: false,
            detours,
            open_slots: detour::OpenSlots::default(),
            touch_blocked: false,
        };
        ctx.spawn(
            pipeline
                .run(rx, rrx, drx)
                .into_actor(self)
                .map(|_, act, ctx| {
                    if let Some(d) = act.done.take() {
                        let _ = d.send(());
                    }
                    ctx.stop();
                }),
        );
    }
}

/// A batch that was sent (or is about to be) and is not fully acknowledged.
struct InFlight {
    batch: Batch,
    /// For each reply expected on the current connection: the command index, or a marker slot.
    slots: Vec<u32>,
    /// Replies received on the current connection.
    seen: usize,
    /// Next command to encode on the current connection.
    encoded: usize,
    /// Where a resend starts: after the last acknowledged command.
    resume_at: usize,
    /// Commands not to send (their database was refused), when any.
    skip: Option<Vec<bool>>,
    started: Instant,
    /// Exactly-once mode: the batch's transaction (`None`: sent as plain pipelined commands).
    txn: Option<txn::TxnState>,
    /// The memory the batch's commands hold, counted in [`Pipeline::pending_mem`].
    mem: usize,
}

impl InFlight {
    fn new(batch: Batch) -> InFlight {
        InFlight {
            slots: Vec::new(),
            seen: 0,
            encoded: 0,
            resume_at: 0,
            skip: None,
            started: Instant::now(),
            txn: None,
            mem: batch.cmds.iter().map(DbCmd::mem_bytes).sum(),
            batch,
        }
    }

    fn done(&self) -> bool {
        self.encoded == self.batch.cmds.len() && self.seen == self.slots.len()
    }

    fn skipped(&self, i: usize) -> bool {
        self.skip.as_ref().is_some_and(|s| s[i])
    }

    fn mark_skipped(&mut self, i: usize) {
        let n = self.batch.cmds.len();
        self.skip.get_or_insert_with(|| vec![false; n])[i] = true;
    }
}

/// Why a connection ended.
enum ConnEnd {
    Failed(String),
    /// The target is still loading its data (`LOADING`): retried after [`NOT_READY_PAUSE`].
    NotReady(String),
    /// No reply for the deadline while `waiting` replies were outstanding.
    Stalled {
        waiting: usize,
    },
}

/// The connection loop's state.
struct Pipeline {
    settings: WriterSettings,
    node: String,
    pending: VecDeque<InFlight>,
    /// The memory held by `pending` (see [`MAX_INFLIGHT_BYTES`]).
    pending_mem: usize,
    targets: Option<Arc<Targets>>,
    redirects_closed: bool,
    /// Redirected batches waiting for room in another writer's redirect queue (see
    /// [`REDIRECT_QUEUE`]); while any waits, no new batch is taken.
    held: VecDeque<Held>,
    /// Database the connection is in after the last encoded command.
    conn_db: u32,
    /// Databases a `SELECT` succeeded for on this connection.
    verified: HashSet<u32>,
    /// Databases the target refused (for the writer's life).
    refused: BTreeSet<u32>,
    /// The database of an outstanding probing `SELECT`: encoding waits for its reply.
    probing: Option<u32>,
    /// Shards whose `last_error` this writer set (stall / connection), with the text it set.
    flagged: Vec<(Arc<ShardState>, String)>,
    /// Exactly-once: the target's command table, read at connect ([`known`]).
    known: Option<known::KnownCommands>,
    /// Exactly-once: one transaction at a time, because the target may refuse queued writes
    /// unpredictably ([`refusals`]); set at connect or by an `EXECABORT`, kept for good.
    serial: bool,
    /// The current connection got replies (the reconnect backoff starts over after it fails).
    answered: bool,
    /// Exactly-once on a cluster: slots whose groups wait for a head sent elsewhere
    /// ([`detour`]).
    detours: detour::Detours,
    /// Exactly-once on a cluster: the unanswered transactions per slot on this connection.
    open_slots: detour::OpenSlots,
    /// A transaction waits for its slot's earlier ones to be answered ([`detour`]): encoding
    /// resumes after replies.
    touch_blocked: bool,
}

/// What a cluster error reply asks the writer to do.
enum Redirect {
    Moved(String),
    Ask(String),
    Retry,
}

impl Redirect {
    /// The `kind` label of `shardsync_target_redirects_total`.
    fn kind(&self) -> &'static str {
        match self {
            Redirect::Moved(_) => "moved",
            Redirect::Ask(_) => "ask",
            Redirect::Retry => "tryagain",
        }
    }
}

fn parse_redirect(e: &[u8]) -> Option<Redirect> {
    let text = std::str::from_utf8(e).ok()?;
    let mut w = text.split_whitespace();
    match w.next()? {
        "MOVED" => Some(Redirect::Moved(w.nth(1)?.to_string())),
        "ASK" => Some(Redirect::Ask(w.nth(1)?.to_string())),
        "TRYAGAIN" | "CLUSTERDOWN" => Some(Redirect::Retry),
        _ => None,
    }
}

impl Pipeline {
    fn pending_cmds(&self) -> usize {
        self.pending.iter().map(|f| f.slots.len() - f.seen).sum()
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Batch>,
        mut rrx: mpsc::Receiver<Batch>,
        mut drx: mpsc::UnboundedReceiver<u16>,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut closed = false;
        loop {
            let (why, not_ready) = match self
                .connection(&mut rx, &mut rrx, &mut drx, &mut closed)
                .await
            {
                Ok(()) => return,
                Err(ConnEnd::Failed(why)) => (why, false),
                Err(ConnEnd::NotReady(why)) => (why, true),
                Err(ConnEnd::Stalled { waiting }) => (
                    crate::observe::events::Emit::emit(crate::observe::events::TargetStall {
                        node: &self.node,
                        waiting,
                        timeout: self.settings.reply_timeout,
                    }),
                    false,
                ),
            };
            if std::mem::take(&mut self.answered) {
                // The connection worked: the next failure is a new one.
                backoff.reset();
            }
            if let Some(targets) = self.targets.clone() {
                // On a cluster, a node that stays unreachable may have been replaced
                // by a failover: once the slot table no longer lists it as a master,
                // its work goes to the masters that serve those slots now.
                targets.request_refresh();
                if !targets.serves(&self.node) {
                    self.hand_over(&targets, &mut rx, &mut rrx);
                    return;
                }
            }
            self.flag_shards(&why);
            let delay = if not_ready {
                NOT_READY_PAUSE
            } else {
                backoff.next_delay()
            };
            metrics::counter!(crate::observe::telemetry::TARGET_ERRORS, "node" => self.node.clone(), "kind" => "connection")
                .increment(1);
            if !not_ready || crate::observe::lograte::allow(&self.node, "not-ready").is_some() {
                tracing::warn!(node = %self.node, error = %why, retry_in_ms = delay.as_millis() as u64,
                    unacked_batches = self.pending.len(), "target connection failed; will reconnect and resend unacknowledged writes");
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// Shows a connection problem in `/status` on every shard with writes waiting here.
    fn flag_shards(&mut self, why: &str) {
        for f in &self.pending {
            let s = &f.batch.shard;
            if s.phase() == crate::observe::progress::Phase::Failed {
                continue;
            }
            s.set_error(Some(why.to_string()));
            match self.flagged.iter_mut().find(|(x, _)| Arc::ptr_eq(x, s)) {
                Some(e) => e.1 = why.to_string(),
                None => self.flagged.push((s.clone(), why.to_string())),
            }
        }
    }

    /// Clears what [`Pipeline::flag_shards`] set, once the target answers again (unless
    /// something else replaced the error meanwhile).
    fn unflag_shards(&mut self) {
        for (s, why) in self.flagged.drain(..) {
            let ours = s
                .last_error
                .lock()
                .map(|g| g.as_deref() == Some(why.as_str()))
                .unwrap_or(false);
            if ours {
                s.set_error(None);
            }
        }
    }

    /// Gives every unacknowledged command to the masters serving its slots now, then forgets
    /// this node.
    fn hand_over(
        &mut self,
        targets: &Arc<Targets>,
        rx: &mut mpsc::Receiver<Batch>,
        rrx: &mut mpsc::Receiver<Batch>,
    ) {
        targets.forget(&self.node);
        let mut moved = 0usize;
        self.pending_mem = 0;
        for f in self.pending.drain(..) {
            let InFlight {
                mut batch,
                resume_at,
                skip,
                ..
            } = f;
            let keep: Vec<DbCmd> = batch
                .cmds
                .drain(..)
                .enumerate()
                .filter(|(i, _)| *i >= resume_at && !skip.as_ref().is_some_and(|s| s[*i]))
                .map(|(_, c)| c)
                .collect();
            batch.cmds = keep;
            batch.wire = None;
            moved += batch.cmds.len();
            targets.reroute(batch);
        }
        for f in self.detours.drain() {
            moved += f.batch.cmds.len();
            targets.reroute(f.batch);
        }
        for h in self.held.drain(..) {
            moved += h.batch.cmds.len();
            targets.deliver_later(h);
        }
        while let Ok(b) = rrx.try_recv() {
            moved += b.cmds.len();
            targets.reroute(b);
        }
        rx.close();
        while let Ok(b) = rx.try_recv() {
            moved += b.cmds.len();
            targets.reroute(b);
        }
        tracing::warn!(node = %self.node, commands = moved, "target node is no longer a master (failover); its writes went to the new owners");
    }

    /// Runs one connection until the queues are closed and drained (`Ok`) or the connection fails.
    async fn connection(
        &mut self,
        rx: &mut mpsc::Receiver<Batch>,
        rrx: &mut mpsc::Receiver<Batch>,
        drx: &mut mpsc::UnboundedReceiver<u16>,
        closed: &mut bool,
    ) -> Result<(), ConnEnd> {
        let timeout = self.settings.reply_timeout;
        let conn =
            match tokio::time::timeout(timeout, RespConn::connect(&self.settings.endpoint)).await {
                Ok(r) => r.map_err(|e| ConnEnd::Failed(e.to_string()))?,
                Err(_) => {
                    return Err(ConnEnd::Failed(format!(
                        "connecting (or authenticating) took more than {:.1} s",
                        timeout.as_secs_f64()
                    )));
                }
            };
        let mut conn = conn;
        match tokio::time::timeout(timeout, self.skip_committed(&mut conn)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ConnEnd::Failed(format!(
                    "reading the progress keys took more than {:.1} s",
                    timeout.as_secs_f64()
                )));
            }
        }
        let RespConn {
            mut stream,
            buf: mut inbuf,
            dec: mut replies,
            ..
        } = conn;
        self.conn_db = 0;
        self.verified.clear();
        self.verified.insert(0);
        self.probing = None;
        self.open_slots.clear();
        let mut out = BytesMut::with_capacity(1 << 20);
        for f in self.pending.iter_mut() {
            f.slots.clear();
            f.seen = 0;
            f.encoded = f.resume_at;
        }
        self.encode_pending(&mut out);
        // Nothing is unanswered any more: detours that waited for this connection's replies go.
        for slot in self.detours.deferred() {
            self.detour_undefer(slot, &mut out);
        }
        let (mut rh, mut wh) = stream.split();
        // Since when a reply has been awaited without any byte from the target.
        let mut waiting_since: Option<tokio::time::Instant> = None;
        loop {
            if *closed
                && self.pending.is_empty()
                && out.is_empty()
                && self.held.is_empty()
                && self.detours.is_empty()
            {
                let _ = wh.flush().await;
                tracing::debug!(node = %self.node, "writer drained and stopped");
                return Ok(());
            }
            let outstanding = self.pending_cmds();
            if outstanding == 0 && out.is_empty() {
                waiting_since = None;
            } else if waiting_since.is_none() {
                waiting_since = Some(tokio::time::Instant::now());
            }
            let deadline = waiting_since.map(|t| t + timeout);
            let can_take = self.probing.is_none()
                && out.len() < OUT_HIGH_WATER
                && outstanding < MAX_INFLIGHT_CMDS
                && ((self.pending.is_empty() && self.detours.mem == 0)
                    || self.pending_mem + self.detours.mem < MAX_INFLIGHT_BYTES);
            let held_to = self.held.front().map(|h| h.to.redirect.clone());
            tokio::select! {
                biased;
                r = rh.read_buf(&mut inbuf) => {
                    match r {
                        Ok(0) => return Err(ConnEnd::Failed("connection closed by the target".into())),
                        Err(e) => return Err(ConnEnd::Failed(e.to_string())),
                        Ok(_) => {
                            waiting_since = Some(tokio::time::Instant::now());
                            self.answered = true;
                            if !self.flagged.is_empty() {
                                self.unflag_shards();
                            }
                            self.on_replies(&mut inbuf, &mut replies, &mut out).map_err(|e| ConnEnd::Failed(e.to_string()))?
                        }
                    }
                }
                r = wh.write_buf(&mut out), if !out.is_empty() => {
                    if let Err(e) = r {
                        return Err(ConnEnd::Failed(e.to_string()));
                    }
                }
                _ = sleep_until_opt(deadline) => {
                    return Err(ConnEnd::Stalled { waiting: self.pending_cmds().max(1) });
                }
                s = drx.recv() => {
                    if let Some(slot) = s {
                        self.detour_back(slot, &mut out);
                    }
                }
                b = rrx.recv(), if can_take && !self.redirects_closed => match b {
                    // Closed redirect channel: stop polling it (it would be ready forever).
                    None => self.redirects_closed = true,
                    Some(batch) => self.take(batch, &mut out),
                },
                p = reserve_opt(held_to.as_ref()), if held_to.is_some() => {
                    if let Some(h) = self.held.pop_front() {
                        match p {
                            Some(permit) => permit.send(h.batch),
                            None => super::targets::lost(&h.to.addr, &h.batch),
                        }
                    }
                }
                b = rx.recv(), if can_take && !*closed && self.held.is_empty() => match b {
                    None => {
                        tracing::debug!(node = %self.node, pending = self.pending.len(), "writer queue closed; draining");
                        *closed = true;
                    }
                    Some(batch) => self.take(batch, &mut out),
                },
            }
            if inbuf.capacity() - inbuf.len() < 8192 {
                inbuf.reserve(64 * 1024);
            }
        }
    }

    fn take(&mut self, mut batch: Batch, out: &mut BytesMut) {
        if let (Some(_), Some(exact)) = (&self.targets, &self.settings.exact) {
            // Exactly-once on a cluster: one transaction per slot (see `exact_slots`). The
            // head of a slot's detour keeps its token; other groups of a slot on a detour wait
            // behind it (see `detour`).
            let mut token = batch.detour.take();
            let parts = super::exact_slots::split_batch(batch, exact);
            let last = parts.len().saturating_sub(1);
            for (k, part) in parts.into_iter().enumerate() {
                let mut f = InFlight::new(part.batch);
                f.txn = part.progress.map(txn::TxnState::with_progress);
                if k == last {
                    f.batch.detour = token.take();
                }
                self.push_pending(f);
            }
            self.encode_pending(out);
            self.complete_front();
            return;
        }
        let mut f = InFlight::new(batch);
        self.txn_init(&mut f);
        self.push_pending(f);
        self.encode_pending(out);
        self.complete_front();
    }

    /// The head of `slot`'s detour was acknowledged (or lost): the slot's next group goes, as
    /// the new head (see [`detour`]).
    fn detour_back(&mut self, slot: u16, out: &mut BytesMut) {
        if self.open_slots.has(slot) {
            // Groups of the slot sent before the detour are still unanswered here: refused,
            // they go before the waiting ones; released once they are answered.
            self.detours.defer(slot);
            return;
        }
        if let Some(f) = self.detours.release(slot) {
            tracing::debug!(node = %self.node, slot, "the slot's detour head was acknowledged; its next group goes");
            self.push_pending(f);
            self.encode_pending(out);
        }
    }

    /// After the last unanswered transaction of `slot` here was answered: the release that
    /// waited for it (see [`Pipeline::detour_back`]).
    fn detour_undefer(&mut self, slot: u16, out: &mut BytesMut) {
        if self.detours.has_deferred() && !self.open_slots.has(slot) && self.detours.undefer(slot) {
            self.detour_back(slot, out);
        }
    }

    /// Group `i`, not sent yet, belongs to a slot on a detour: it leaves the pipeline and waits
    /// its turn (see [`detour`]). Returns whether it left.
    fn divert(&mut self, i: usize) -> bool {
        if self.detours.is_empty() {
            return false;
        }
        let f = &self.pending[i];
        let Some(slot) = f.txn.as_ref().filter(|t| !t.is_open()).and_then(|t| t.slot) else {
            return false;
        };
        if f.batch.detour.is_some() || f.encoded > f.resume_at || !self.detours.busy(slot) {
            return false;
        }
        let Some(f) = self.pending.remove(i) else {
            return false;
        };
        self.pending_mem = self.pending_mem.saturating_sub(f.mem);
        tracing::debug!(node = %self.node, slot, offset = ?f.txn.as_ref().and_then(|t| t.position()),
            "a slot group waits behind its slot's detour head");
        self.detours.wait(slot, f);
        true
    }

    /// Encodes every pending command not yet encoded on this connection, in order, until a
    /// database must be probed first.
    fn encode_pending(&mut self, out: &mut BytesMut) {
        let mut i = 0;
        while i < self.pending.len() && self.probing.is_none() {
            if self.pending[i].encoded < self.pending[i].batch.cmds.len() {
                if self.divert(i) {
                    continue;
                }
                if self.txn_must_wait(i) {
                    break;
                }
                self.encode_one(i, out);
            }
            i += 1;
        }
    }

    /// Appends batch `i`'s commands from its `encoded` position to `out`, inserting `SELECT`
    /// where the database changes (and `ASKING` before each command of an ASK redirect), and
    /// records which reply belongs to which command. Stops after a probing `SELECT`.
    fn encode_one(&mut self, i: usize, out: &mut BytesMut) {
        if self.pending[i].txn.is_some() {
            self.encode_txn(i, out);
            return;
        }
        let f = &mut self.pending[i];
        while f.encoded < f.batch.cmds.len() {
            let at = f.encoded;
            if f.skipped(at) {
                f.encoded += 1;
                continue;
            }
            let cdb = f.batch.cmds[at].db;
            if cdb != self.conn_db {
                if self.refused.contains(&cdb) {
                    f.mark_skipped(at);
                    count_refused(&f.batch.shard, 1);
                    f.encoded += 1;
                    continue;
                }
                crate::cmd!["SELECT", cdb].encode(out);
                if self.verified.contains(&cdb) {
                    f.slots.push(INTERNAL_SLOT);
                    self.conn_db = cdb;
                } else {
                    // Probe: nothing goes behind it until the target said yes or no.
                    f.slots.push(PROBE_SLOT);
                    self.probing = Some(cdb);
                    return;
                }
            }
            if f.batch.asking {
                crate::cmd!["ASKING"].encode(out);
                f.slots.push(INTERNAL_SLOT);
            }
            f.batch.encode_cmd(at, out);
            f.slots.push(at as u32);
            f.encoded += 1;
        }
    }

    /// The reply to a probing `SELECT db`: on success the database is verified for this
    /// connection; an error reply refuses it for good (never a connection failure).
    fn on_probe(&mut self, reply: &Frame, out: &mut BytesMut) {
        let Some(db) = self.probing.take() else {
            return;
        };
        // The batch waiting on the probe: the first one with commands left to encode.
        let Some(shard) = self
            .pending
            .iter()
            .find(|f| f.encoded < f.batch.cmds.len())
            .map(|f| f.batch.shard.clone())
        else {
            self.encode_pending(out);
            return;
        };
        match reply {
            Frame::Error(e) => {
                self.refused.insert(db);
                let text = crate::escape::text(e);
                let why = format!(
                    "target {} refused SELECT {db} ({text}): writes to target database {db} are not applied; \
                     raise `databases` on the target above {db} (then restart shardsync) or map the source \
                     database to an existing one with sync.db_map / --db-map",
                    self.node
                );
                metrics::counter!(crate::observe::telemetry::TARGET_ERRORS, "node" => self.node.clone(), "kind" => "db_refused")
                    .increment(1);
                tracing::error!(node = %self.node, shard = %shard.name, db, "{why}");
                // Every shard with writes for that database here cannot be a copy any more.
                let mut seen: Vec<Arc<ShardState>> = Vec::new();
                for f in &self.pending {
                    let s = &f.batch.shard;
                    if !seen.iter().any(|x| Arc::ptr_eq(x, s))
                        && f.batch.cmds[f.encoded.min(f.batch.cmds.len())..]
                            .iter()
                            .any(|c| c.db == db)
                    {
                        seen.push(s.clone());
                    }
                }
                if !seen.iter().any(|x| Arc::ptr_eq(x, &shard)) {
                    seen.push(shard);
                }
                for s in seen {
                    s.mark_degraded(why.clone());
                }
            }
            _ => {
                self.verified.insert(db);
                self.conn_db = db;
            }
        }
        self.encode_pending(out);
    }

    fn on_replies(
        &mut self,
        inbuf: &mut BytesMut,
        replies: &mut resp::Decoder,
        out: &mut BytesMut,
    ) -> Result<(), ReplyError> {
        // Replies come in order: the batch of the next one is never before the last one's
        // (batches are only popped after this loop), so the search resumes from there.
        let mut from = 0;
        loop {
            let frame = match replies.decode(inbuf) {
                Ok(Some((f, _))) => f,
                Ok(None) => break,
                Err(e) => return Err(ReplyError::NotResp(e.to_string())),
            };
            let Some(fi) = self
                .pending
                .iter()
                .skip(from)
                .position(|f| f.seen < f.slots.len())
                .map(|i| i + from)
            else {
                return Err(ReplyError::Unasked(crate::escape::text(
                    frame.to_text().as_bytes(),
                )));
            };
            if let Frame::Error(e) = &frame
                && reply_error::not_ready(e)
            {
                return Err(ReplyError::NotReady(crate::escape::text(e)));
            }
            from = fi;
            let front = &mut self.pending[fi];
            let slot = front.slots[front.seen];
            front.seen += 1;
            if slot == PROBE_SLOT {
                self.on_probe(&frame, out);
                continue;
            }
            if front.txn.is_some() {
                self.txn_reply(fi, slot, frame, out)?;
                continue;
            }
            if slot == INTERNAL_SLOT {
                if let Frame::Error(e) = &frame {
                    return Err(ReplyError::internal("SELECT/ASKING", e));
                }
                continue;
            }
            front.resume_at = slot as usize + 1;
            let dc = &front.batch.cmds[slot as usize];
            if let (Frame::Error(e), Some(targets)) = (&frame, &self.targets)
                && let Some(r) = parse_redirect(e)
            {
                let b = &front.batch;
                let again = Batch {
                    shard: b.shard.clone(),
                    ticket: b.ticket.clone(),
                    cmds: vec![dc.clone()],
                    asking: matches!(r, Redirect::Ask(_)),
                    wire: None,
                    detour: None,
                };
                b.ticket.add_part();
                count_redirect(&self.node, &r);
                let targets = targets.clone();
                self.send_redirected(&targets, r, again);
                continue;
            }
            command_reply(&self.node, &self.settings, front, slot as usize, &frame);
        }
        self.complete_front();
        if self.serial || std::mem::take(&mut self.touch_blocked) {
            // The next transaction waited for these replies.
            self.encode_pending(out);
        }
        Ok(())
    }

    /// Sends `again` where the cluster's answer `r` says (`MOVED` also refreshes the slot table;
    /// `TRYAGAIN`/`CLUSTERDOWN`: to this node after [`RETRY_PAUSE`]); kept in `held` while that
    /// writer's redirect queue is full.
    fn send_redirected(&mut self, targets: &Arc<Targets>, r: Redirect, again: Batch) {
        let held = match r {
            Redirect::Moved(addr) => {
                targets.request_refresh();
                targets.redirect(&addr, again, None)
            }
            Redirect::Ask(addr) => targets.redirect(&addr, again, None),
            Redirect::Retry => targets.redirect(&self.node, again, Some(RETRY_PAUSE)),
        };
        self.held.extend(held);
    }

    /// Queues `f` to be sent and acknowledged, counting its memory.
    fn push_pending(&mut self, f: InFlight) {
        self.pending_mem += f.mem;
        self.pending.push_back(f);
    }

    /// Pops fully acknowledged batches from the front, in order, marking their ticket parts done.
    fn complete_front(&mut self) {
        while self.pending.front().is_some_and(InFlight::done) {
            let Some(f) = self.pending.pop_front() else {
                break;
            };
            self.pending_mem = self.pending_mem.saturating_sub(f.mem);
            let b = &f.batch;
            b.shard.part_done(&b.ticket);
            metrics::counter!(crate::observe::telemetry::TARGET_WRITES, "node" => self.node.clone())
                .increment(b.cmds.len() as u64);
            metrics::histogram!(crate::observe::telemetry::WRITE_BATCH_SECONDS)
                .record(f.started.elapsed().as_secs_f64());
        }
    }
}

/// Checks the reply to `f.batch.cmds[at]`: counts and reports errors (handing the keys to the
/// repairs), or takes the lag from an applied heartbeat.
fn command_reply(node: &str, settings: &WriterSettings, f: &InFlight, at: usize, frame: &Frame) {
    let Some(dc) = f.batch.cmds.get(at) else {
        return;
    };
    let rejected = check_reply(node, &dc.cmd, frame);
    let shard = &f.batch.shard;
    if rejected > 0 {
        shard.rejected_writes.fetch_add(rejected, Ordering::Relaxed);
        if let Some(q) = &settings.repairs {
            q.rejected(shard, &f.batch.cmds, at, frame);
        }
    } else if let Some(ms) = heartbeat_ms(&settings.heartbeat_key, &dc.cmd) {
        // Lag gauges are published by `status::publish` from the shard's state.
        shard.heartbeat_applied(ms);
    }
}

/// Counts a redirect the node answered.
fn count_redirect(node: &str, r: &Redirect) {
    metrics::counter!(crate::observe::telemetry::TARGET_REDIRECTS, "node" => node.to_string(), "kind" => r.kind())
        .increment(1);
}

/// Room for one batch in `tx` (`None`: that writer is gone), or never when there is no `tx`.
async fn reserve_opt(tx: Option<&mpsc::Sender<Batch>>) -> Option<mpsc::Permit<'_, Batch>> {
    match tx {
        Some(tx) => tx.reserve().await.ok(),
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever when there is no deadline.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Counts writes skipped because their database was refused.
fn count_refused(shard: &ShardState, n: u64) {
    shard.rejected_writes.fetch_add(n, Ordering::Relaxed);
    metrics::counter!(crate::observe::telemetry::DB_REFUSED_WRITES, "shard" => shard.name.clone())
        .increment(n);
}

/// The source time carried by a `SET` of this instance's heartbeat key (see [`crate::heartbeat::own_ms`]).
fn heartbeat_ms(base: &Bytes, cmd: &Cmd) -> Option<u64> {
    crate::heartbeat::own_ms(base, cmd)
}

/// Counts and logs an error reply (also errors inside an `EXEC` result), naming the key.
/// Returns how many errors the reply held.
fn check_reply(node: &str, cmd: &Cmd, frame: &Frame) -> u64 {
    let report = |e: &Bytes| {
        let text = crate::escape::text(e);
        let kind = crate::observe::telemetry::error_kind(e);
        let key = crate::convert::functions::log_subject(cmd);
        metrics::counter!(crate::observe::telemetry::TARGET_ERRORS, "node" => node.to_string(), "kind" => kind).increment(1);
        if let Some(suppressed) = crate::observe::lograte::allow(node, kind) {
            tracing::error!(node, command = %cmd.name_upper(), key = %key, error = %text, suppressed, "target rejected a write");
        }
    };
    match frame {
        Frame::Error(e) => {
            report(e);
            // A coalesced `MSET` of the full sync stands for one write per key.
            super::coalesce::writes_in(cmd)
        }
        Frame::Array(items) if cmd.is("EXEC") => {
            let mut n = 0;
            for it in items {
                if let Frame::Error(e) = it {
                    report(e);
                    n += 1;
                }
            }
            n
        }
        _ => 0,
    }
}
