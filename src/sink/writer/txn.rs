//! The writer's exactly-once transactions (standalone target, `sync.exactly_once`): each batch
//! of the command stream is sent as `MULTI`, its commands, `SET <progress key> <replid>:<offset>`,
//! `EXEC` — pipelined like any batch (the next one goes out before this `EXEC` is answered).
//! Data and position commit together, so a crash of shardsync (or of the target, restarted from
//! its AOF) never leaves a write applied without its position or the reverse.
//!
//! - The source's own `MULTI`/`EXEC` are folded into the batch's transaction (never nested; the
//!   dispatcher never cuts a source transaction between two batches, see
//!   [`crate::sink::txn_hold`]).
//! - A database probe (`SELECT n` not yet verified on the connection) is sent *before* `MULTI`:
//!   refused inside a transaction it would only abort that transaction. A `SELECT` inside the
//!   transaction moves the connection's database only if `EXEC` runs, so after an `EXEC` whose
//!   body changed the database, the final database is selected again outside the transaction.
//! - `EXECABORT` (a command refused at queue time, e.g. unknown to an older target): the refused
//!   commands are reported like any rejected write (counted, handed to the repairs) and the
//!   batch is sent again without them, counted in `shardsync_exec_aborts_total`. Batches
//!   pipelined behind it were applied first: when any of them exists, the retried commands'
//!   keys are also handed to the repairs (copied from the source), and the retry writes no
//!   position (a later batch's is higher).
//! - Runtime errors inside `EXEC` (`WRONGTYPE`…) are per-command replies in the `EXEC` array,
//!   handled as the plain pipeline handles an error reply.
//! - After a reconnect, the progress keys are read first: batches whose position the target
//!   already holds were applied (their `EXEC` reply was lost) and are not sent again.

use bytes::{Bytes, BytesMut};

use super::{INTERNAL_SLOT, InFlight, PROBE_SLOT, Pipeline, command_reply};
use crate::cmd::DbCmd;
use crate::net::RespConn;
use crate::resp::Frame;
use crate::sink::Batch;

/// Reply slot of the transaction's `MULTI`.
const MULTI_SLOT: u32 = u32::MAX - 2;
/// Reply slot of the transaction's `EXEC`.
const EXEC_SLOT: u32 = u32::MAX - 3;
/// Reply slot of the progress `SET`.
const PROGRESS_SLOT: u32 = u32::MAX - 4;
/// Reply slot of an `ASKING` sent before `MULTI` (a group redirected by `ASK`; the flag holds
/// for the whole transaction).
const ASKING_SLOT: u32 = u32::MAX - 5;
/// Reply slot of the `EXISTS` that reads the keys of the slot's unanswered transactions (see
/// [`super::detour`]).
const TOUCH_SLOT: u32 = u32::MAX - 6;
/// A batch aborted this many times is sent without a transaction (it cannot be made to pass).
const MAX_ATTEMPTS: u32 = 2;

/// The transaction state of one batch on the current connection.
#[derive(Debug, Default)]
pub(super) struct TxnState {
    /// Progress key, value and position written with the batch (`None`: a retry behind later
    /// batches, which carry a higher position).
    progress: Option<(Bytes, Bytes, crate::sink::exact::Pos)>,
    /// `MULTI` was encoded on this connection.
    open: bool,
    /// The connection's database when `MULTI` was encoded.
    start_db: u32,
    /// `EXEC` was answered (replies after it are outside the transaction).
    exec_seen: bool,
    /// Slots whose command was queued, in order: the `EXEC` array answers them one by one.
    queued: Vec<u32>,
    /// Slots refused at queue time, with the error.
    refused: Vec<(u32, Bytes)>,
    /// Transactions of this batch aborted so far.
    attempt: u32,
    /// Cluster: the slot of the group (the slot of its progress key).
    pub(super) slot: Option<u16>,
}

impl TxnState {
    /// A transaction writing `(key, value, offset)` (a cluster slot group, see
    /// [`crate::sink::exact_slots`]).
    pub(in crate::sink) fn with_progress((key, value, offset): (Bytes, Bytes, u64)) -> TxnState {
        TxnState {
            slot: Some(crate::router::key_slot(&key)),
            progress: Some((key, value, (offset, 0))),
            ..Default::default()
        }
    }

    /// `MULTI` was sent on this connection.
    pub(super) fn is_open(&self) -> bool {
        self.open
    }

    /// Where the batch ends in the source stream, when it writes its position.
    pub(super) fn position(&self) -> Option<crate::sink::exact::Pos> {
        self.progress.as_ref().map(|p| p.2)
    }

    fn reset_connection(&mut self) {
        self.open = false;
        self.exec_seen = false;
        self.queued.clear();
        self.refused.clear();
    }
}

impl Pipeline {
    /// Gives a new batch its transaction when exactly-once mode applies to it: a standalone
    /// target, a batch of the current epoch that ends at a source position.
    pub(super) fn txn_init(&self, f: &mut InFlight) {
        let Some(exact) = &self.settings.exact else {
            return;
        };
        let b = &f.batch;
        // A whole run ends at a source offset; a piece of one command (a large `RESTORE`
        // rewritten) at "the offset before it, plus k pieces".
        let (offset, piece) = match (b.ticket.offset, b.ticket.piece) {
            (Some(o), _) => (o, 0),
            (None, Some((before, k))) => (before, k),
            (None, None) => return,
        };
        if self.targets.is_some()
            || b.ticket.epoch != b.shard.epoch.load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        let replid = b.shard.replid();
        if replid.is_empty() {
            return;
        }
        f.txn = Some(TxnState {
            progress: Some((
                exact.key(&b.shard.name),
                crate::sink::exact::value_at(&replid, (offset, piece), b.ticket.source_db),
                (offset, piece),
            )),
            ..Default::default()
        });
    }

    /// True when batch `i`, not started, must wait for replies (serial mode, see
    /// [`super::refusals`]): nothing goes behind an unanswered transaction, and a transaction
    /// goes behind nothing unanswered. Plain batches (the full sync's) still pipeline.
    pub(super) fn txn_must_wait(&mut self, i: usize) -> bool {
        let f = &self.pending[i];
        if f.txn.as_ref().is_some_and(|t| t.open) || f.encoded > f.resume_at {
            return false;
        }
        if let Some(slot) = f.txn.as_ref().and_then(|t| t.slot)
            && self.targets.is_some()
            && self.open_slots.must_wait(slot)
        {
            // Too many keys to touch: the slot's earlier transactions are answered first.
            self.touch_blocked = true;
            return true;
        }
        if !self.serial {
            return false;
        }
        let is_txn = f.txn.is_some();
        self.pending
            .iter()
            .take(i)
            .any(|f| !f.done() && (is_txn || f.txn.is_some()))
    }

    /// Encodes batch `i` as one transaction (after a database probe when one is needed).
    pub(super) fn encode_txn(&mut self, i: usize, out: &mut BytesMut) {
        let Pipeline {
            pending,
            verified,
            refused,
            probing,
            conn_db,
            known,
            node,
            settings,
            targets,
            open_slots,
            ..
        } = self;
        // Commands the target would refuse at queue time: not sent (see [`super::known`]).
        let mut not_sent: Vec<(usize, Bytes)> = Vec::new();
        let f = &mut pending[i];
        let Some(t) = f.txn.as_mut() else {
            return;
        };
        if !t.open {
            let unverified = (f.encoded..f.batch.cmds.len())
                .filter(|&at| !f.skip.as_ref().is_some_and(|s| s[at]))
                .map(|at| f.batch.cmds[at].db)
                .find(|db| !verified.contains(db) && !refused.contains(db));
            if let Some(db) = unverified {
                crate::cmd!["SELECT", db].encode(out);
                f.slots.push(PROBE_SLOT);
                *probing = Some(db);
                return;
            }
            if f.batch.asking {
                crate::cmd!["ASKING"].encode(out);
                f.slots.push(ASKING_SLOT);
            }
            crate::cmd!["MULTI"].encode(out);
            f.slots.push(MULTI_SLOT);
            t.open = true;
            t.start_db = *conn_db;
            if let Some(slot) = t.slot
                && targets.is_some()
            {
                // Keys of the slot's unanswered transactions: refused with them (see
                // [`super::detour`]).
                if *conn_db == 0 && open_slots.encode_touch(slot, out) {
                    f.slots.push(TOUCH_SLOT);
                }
                open_slots.opened(slot, &f.batch.cmds[f.encoded..]);
            }
        }
        while f.encoded < f.batch.cmds.len() {
            let at = f.encoded;
            f.encoded += 1;
            if f.skip.as_ref().is_some_and(|s| s[at]) {
                continue;
            }
            let DbCmd { db, cmd } = &f.batch.cmds[at];
            if cmd.is("MULTI") || cmd.is("EXEC") {
                continue; // folded into the batch's transaction
            }
            if let Some(e) = known.as_ref().and_then(|k| k.refusal(cmd)) {
                let n = f.batch.cmds.len();
                f.skip.get_or_insert_with(|| vec![false; n])[at] = true;
                not_sent.push((at, e));
                continue;
            }
            if *db != *conn_db {
                if refused.contains(db) {
                    let n = f.batch.cmds.len();
                    f.skip.get_or_insert_with(|| vec![false; n])[at] = true;
                    super::count_refused(&f.batch.shard, 1);
                    continue;
                }
                crate::cmd!["SELECT", *db].encode(out);
                f.slots.push(INTERNAL_SLOT);
                *conn_db = *db;
            }
            cmd.encode(out);
            f.slots.push(at as u32);
        }
        let (progress, start_db) = (t.progress.clone(), t.start_db);
        // Keys handed to the repairs (by earlier replies, or refused just above) are recorded
        // on the target in this transaction (see `exact_fences`): a crash before their repair
        // then still repairs them.
        for (at, e) in not_sent.drain(..) {
            command_reply(node, settings, f, at, &Frame::Error(e));
        }
        if let Some(cmd) = settings
            .repairs
            .as_ref()
            .and_then(|q| q.pending_record(&f.batch.shard))
        {
            let at = f.batch.cmds.len();
            f.batch.cmds.push(DbCmd { db: 0, cmd });
            f.batch.wire = None;
            if let Some(s) = f.skip.as_mut() {
                s.push(false);
            }
            if *conn_db != 0 {
                crate::cmd!["SELECT", 0u32].encode(out);
                f.slots.push(INTERNAL_SLOT);
                *conn_db = 0;
            }
            f.batch.cmds[at].cmd.encode(out);
            f.slots.push(at as u32);
            f.encoded += 1;
        }
        if let Some((key, value, _)) = &progress {
            if *conn_db != 0 {
                crate::cmd!["SELECT", 0u32].encode(out);
                f.slots.push(INTERNAL_SLOT);
                *conn_db = 0;
            }
            crate::cmd!["SET", key.clone(), value.clone()].encode(out);
            f.slots.push(PROGRESS_SLOT);
        }
        crate::cmd!["EXEC"].encode(out);
        f.slots.push(EXEC_SLOT);
        if *conn_db != start_db {
            // Whether EXEC runs or aborts, the connection is in `conn_db` after this.
            crate::cmd!["SELECT", *conn_db].encode(out);
            f.slots.push(INTERNAL_SLOT);
        }
    }

    /// A reply to batch `fi`'s transaction.
    pub(super) fn txn_reply(
        &mut self,
        fi: usize,
        slot: u32,
        frame: Frame,
        out: &mut BytesMut,
    ) -> Result<(), super::ReplyError> {
        let f = &mut self.pending[fi];
        let Some(t) = f.txn.as_mut() else {
            return Ok(());
        };
        match slot {
            ASKING_SLOT => {
                if let Frame::Error(e) = &frame {
                    return Err(super::ReplyError::internal("ASKING", e));
                }
            }
            MULTI_SLOT => {
                if let Frame::Error(e) = &frame {
                    return Err(super::ReplyError::internal("MULTI", e));
                }
            }
            EXEC_SLOT => {
                t.exec_seen = true;
                let slot = t.slot;
                if let Some(slot) = slot {
                    self.open_slots.answered(slot);
                }
                self.on_exec(fi, frame, out);
                if let Some(slot) = slot {
                    // After a refusal was queued behind the slot's detour, not before.
                    self.detour_undefer(slot, out);
                }
            }
            _ if t.exec_seen => {
                // The SELECT after EXEC.
                if let Frame::Error(e) = &frame {
                    return Err(super::ReplyError::internal("SELECT", e));
                }
            }
            _ => match frame {
                Frame::Error(e) => t.refused.push((slot, e)),
                _ => t.queued.push(slot),
            },
        }
        Ok(())
    }

    fn on_exec(&mut self, fi: usize, frame: Frame, out: &mut BytesMut) {
        let node = self.node.clone();
        let f = &mut self.pending[fi];
        let Some(t) = f.txn.as_mut() else {
            return;
        };
        let items = match frame {
            Frame::Array(items) => items,
            other => {
                let why = match &other {
                    Frame::Error(e) => crate::escape::text(e),
                    _ => "EXEC returned nil".to_string(),
                };
                self.on_abort(fi, why, out);
                return;
            }
        };
        let queued = std::mem::take(&mut t.queued);
        f.resume_at = f.batch.cmds.len();
        for (slot, item) in queued.iter().zip(items.iter()) {
            if (*slot as usize) < f.batch.cmds.len() {
                command_reply(&node, &self.settings, f, *slot as usize, item);
            } else if *slot == TOUCH_SLOT {
                // The read of the slot's keys (see [`super::detour`]).
            } else if let Frame::Error(e) = item {
                // SELECT or the progress SET failed at run time: the batch's data is applied,
                // its position not; a crash before the next batch would replay it.
                tracing::error!(node = %node, error = %crate::escape::text(e), "the progress key write failed inside a transaction");
            }
        }
    }

    /// `EXEC` refused (`EXECABORT`): reports the refused commands, then sends the batch again
    /// without them.
    fn on_abort(&mut self, fi: usize, why: String, out: &mut BytesMut) {
        metrics::counter!(crate::observe::telemetry::EXEC_ABORTS, "node" => self.node.clone())
            .increment(1);
        let node = self.node.clone();
        let f = &mut self.pending[fi];
        let Some(t) = f.txn.as_mut() else {
            return;
        };
        let refused = std::mem::take(&mut t.refused);
        let attempt = t.attempt + 1;
        let progress = t.progress.clone();
        let slot = t.slot;
        f.resume_at = f.batch.cmds.len();
        let len = f.batch.cmds.len();
        if let Some(targets) = self.targets.clone()
            && let Some(r) = refused
                .iter()
                .find_map(|(_, e)| super::parse_redirect(e))
                // `EXEC` itself redirected: the keys moved between queueing and `EXEC` (the
                // transaction was discarded). Before, this took the `EXECABORT` path and the
                // group was sent again without its slot key (issue 12).
                .or_else(|| super::parse_redirect(why.as_bytes()))
        {
            // Cluster: the slot moved (or is moving). The whole group, with its progress key
            // (which lives in that slot), goes to the node that serves it now.
            let cmds: Vec<DbCmd> = (0..len)
                .filter(|i| !f.skipped(*i))
                .map(|i| f.batch.cmds[i].clone())
                .collect();
            let mut again = Batch {
                shard: f.batch.shard.clone(),
                ticket: f.batch.ticket.clone(),
                cmds,
                asking: matches!(r, super::Redirect::Ask(_)),
                wire: None,
                // The head of the slot's detour stays the head wherever it goes.
                detour: f.batch.detour.take(),
            };
            again.ticket.add_part();
            let kind = r.kind();
            super::count_redirect(&node, &r);
            if let Some(suppressed) = crate::observe::lograte::allow(&node, "txn-redirect") {
                tracing::info!(node = %node, kind, commands = again.cmds.len(), suppressed,
                    "a slot's write transaction was redirected (the slot is moving); sent whole to the node that serves it");
            }
            if again.detour.is_none()
                && let Some(slot) = slot
            {
                if self.detours.busy(slot) {
                    // A later group of a slot whose head is away: it goes after the head (see
                    // [`super::detour`]), from this writer.
                    if matches!(r, super::Redirect::Moved(_)) {
                        targets.request_refresh();
                    }
                    again.asking = false;
                    tracing::debug!(node = %node, slot, offset = ?progress.as_ref().map(|p| p.2), kind,
                        "a slot group refused behind its slot's detour head waits its turn");
                    let mut wait = InFlight::new(again);
                    wait.txn = Some(TxnState {
                        progress,
                        slot: Some(slot),
                        ..Default::default()
                    });
                    self.detours.wait(slot, wait);
                    return;
                }
                again.detour = Some(self.detours.start(slot));
            }
            tracing::debug!(node = %node, slot = ?slot, offset = ?progress.as_ref().map(|p| p.2), kind,
                head = again.detour.is_some(), "a slot group goes where the cluster says");
            self.send_redirected(&targets, r, again);
            return;
        }
        if !self.serial {
            // A refusal the command table did not predict: nothing more is pipelined past an
            // unanswered transaction (see [`super::refusals`]).
            tracing::info!(node = %node, "a write transaction was refused at queue time; sending one write transaction at a time from now on");
            self.serial = true;
        }
        let f = &mut self.pending[fi];
        let mut drop = vec![false; len];
        for (slot, e) in &refused {
            if (*slot as usize) < len {
                command_reply(
                    &node,
                    &self.settings,
                    f,
                    *slot as usize,
                    &Frame::Error(e.clone()),
                );
                drop[*slot as usize] = true;
            }
        }
        let cmds: Vec<DbCmd> = f
            .batch
            .cmds
            .iter()
            .enumerate()
            .filter(|(i, _)| !drop[*i] && !f.skip.as_ref().is_some_and(|s| s[*i]))
            .map(|(_, c)| c.clone())
            .collect();
        let shard = f.batch.shard.clone();
        let ticket = f.batch.ticket.clone();
        // Nothing sent behind it (one transaction at a time, see [`super::refusals`]): the
        // retry takes its place, with its position. Else it goes last, and `later` says whether
        // transactions writing the same progress key (one per shard on a standalone target, one
        // per slot of a shard on a cluster) run before it.
        let in_place = self.pending.iter().skip(fi + 1).all(|g| g.slots.is_empty());
        let key = progress.as_ref().map(|p| p.0.clone());
        let later = !in_place
            && self.pending.iter().skip(fi + 1).any(|g| {
                g.txn
                    .as_ref()
                    .and_then(|t| t.progress.as_ref())
                    .is_some_and(|p| Some(&p.0) == key.as_ref())
            });
        if let Some(suppressed) = crate::observe::lograte::allow(&node, "execabort") {
            tracing::warn!(node = %node, shard = %shard.name, refused = refused.len(), commands = cmds.len(),
                attempt, error = %why, suppressed, "target aborted a write transaction; sending it again without the refused commands");
        }
        if later && let Some(q) = &self.settings.repairs {
            // Batches behind it were applied first: the keys of the retried commands are copied
            // from the source, which undoes any reordering.
            for c in &cmds {
                q.request(
                    &shard,
                    c.db,
                    &c.cmd,
                    "applied after later writes (EXECABORT retry)",
                );
            }
        }
        ticket.add_part();
        let detour = self.pending[fi].batch.detour.take();
        let mut retry = InFlight::new(Batch {
            shard,
            ticket,
            cmds,
            asking: false,
            wire: None,
            detour,
        });
        if attempt < MAX_ATTEMPTS && (!refused.is_empty() || later) {
            retry.txn = Some(TxnState {
                progress: if later { None } else { progress },
                attempt,
                slot,
                ..Default::default()
            });
        } else {
            tracing::error!(node = %node, "a write transaction cannot pass; its commands go without a transaction (a crash before the next batch may apply them twice)");
        }
        if in_place {
            self.pending_mem += retry.mem;
            self.pending.insert(fi + 1, retry);
        } else {
            self.push_pending(retry);
        }
        self.encode_pending(out);
    }

    /// After connecting: reads the progress keys of the shards with transactions waiting, and
    /// marks those the target already committed as done (their `EXEC` reply was lost).
    pub(super) async fn skip_committed(
        &mut self,
        conn: &mut RespConn,
    ) -> Result<(), super::ConnEnd> {
        for f in self.pending.iter_mut() {
            if let Some(t) = f.txn.as_mut() {
                t.reset_connection();
            }
        }
        let fail = |e: String| super::ConnEnd::Failed(format!("exactly-once fencing: {e}"));
        if let Some(exact) = &self.settings.exact {
            // Name this connection, then close any other of this run (a previous connection's
            // pipelined transactions must not commit after the keys are read; other runs'
            // connections were closed by the start-up fence, `exact::fence`).
            let name = exact.client_name();
            let ask = |r: Frame| match r {
                Frame::Error(e) => Err(fail(crate::escape::text(&e))),
                f => Ok(f),
            };
            ask(conn
                .request(&crate::cmd!["CLIENT", "SETNAME", name.clone()])
                .await
                .map_err(|e| fail(e.to_string()))?)?;
            let own = ask(conn
                .request(&crate::cmd!["CLIENT", "ID"])
                .await
                .map_err(|e| fail(e.to_string()))?)?;
            let own = match own {
                Frame::Integer(i) => i as u64,
                _ => 0,
            };
            // What the target refuses at queue time is kept out of transactions.
            if self.known.is_none() {
                let table = conn
                    .request(&crate::cmd!["COMMAND"])
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                self.known = super::known::KnownCommands::parse(&table);
            }
            let list = ask(conn
                .request(&crate::cmd!["CLIENT", "LIST"])
                .await
                .map_err(|e| fail(e.to_string()))?)?;
            let text = list
                .as_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            for id in crate::sink::exact::ids_named(&text, &name) {
                if id != own {
                    let _ = conn
                        .request(&crate::cmd!["CLIENT", "KILL", "ID", id])
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                }
            }
            // Nothing is pipelined into a target still loading its data (see [`super::ready`]).
            let key = super::ready::probe_key(exact, self.targets.as_deref(), &self.node);
            match super::ready::check(conn, key).await.map_err(fail)? {
                super::ready::Readiness::Ready => {}
                super::ready::Readiness::Loading(e) => {
                    return Err(super::ConnEnd::NotReady(format!(
                        "target not ready: {e}; reconnecting before sending any write"
                    )));
                }
                super::ready::Readiness::Refused(e) => return Err(fail(e)),
            }
            if !self.serial
                && let Some(why) = super::refusals::unpredictable(conn).await.map_err(fail)?
            {
                tracing::info!(node = %self.node, reason = %why,
                    "the target may refuse queued writes unpredictably; sending one write transaction at a time");
                self.serial = true;
            }
        }
        let mut keys: Vec<Bytes> = Vec::new();
        for f in &self.pending {
            if let Some((k, _, _)) = f.txn.as_ref().and_then(|t| t.progress.as_ref())
                && !keys.contains(k)
            {
                keys.push(k.clone());
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        for key in keys {
            let reply = conn
                .request(&crate::cmd!["GET", key.clone()])
                .await
                .map_err(|e| fail(e.to_string()))?;
            let stored = match &reply {
                // Cluster: the slot moved; its groups are redirected when they are refused.
                Frame::Error(e) if super::parse_redirect(e).is_some() => continue,
                Frame::Error(e) => return Err(fail(crate::escape::text(e))),
                f => crate::sink::exact::pos_of(f.as_bytes().map(|b| &b[..])),
            };
            let Some(stored) = stored else { continue };
            let mut skipped = 0usize;
            for f in self.pending.iter_mut() {
                let applied = f
                    .txn
                    .as_ref()
                    .and_then(|t| t.progress.as_ref())
                    .is_some_and(|(k, _, off)| *k == key && *off <= stored);
                if applied && f.resume_at < f.batch.cmds.len() {
                    f.resume_at = f.batch.cmds.len();
                    skipped += 1;
                }
            }
            if skipped > 0 {
                tracing::info!(node = %self.node, batches = skipped, offset = stored.0, piece = stored.1,
                    "the target had committed batches whose reply was lost; not sending them again");
            }
        }
        Ok(())
    }
}
