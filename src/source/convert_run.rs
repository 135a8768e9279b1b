//! The command stream's conversion of one run of source commands: for each group of targets of
//! the link's [`Fanout`] (targets that get the same commands, see [`crate::sink::fanout`]) the
//! run is filtered with the group's selection and filters, rewritten for the group's target
//! server ([`crate::convert::rewrite_between`]; a large `RESTORE` the target cannot read is
//! decoded off the event loop) and sent to the group's targets. One group: no copy of the run.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::link::{LinkError, LinkSettings};
use crate::cmd::{Cmd, DbCmd};
use crate::convert::rewrite_between;
use crate::net::server_info::ServerInfo;
use crate::observe::progress::ShardState;
use crate::sink::Fanout;
use crate::sink::dispatch::{Feed, RunInfo};

/// `RESTORE` payloads above this size whose version the target cannot read are decoded on a
/// blocking thread ([`restore_off_loop`]); smaller ones inline.
const RESTORE_OFFLOAD_MIN: usize = 64 << 10;

/// Where a run of the stream sits: `(epoch, source offset before and after it, database
/// selected after it)`.
#[derive(Clone, Copy)]
struct RunAt {
    epoch: u64,
    start: u64,
    offset: u64,
    db: u32,
}

/// Filters, converts and sends one run of source commands (`ends[i]`: the source offset after
/// `cmds[i]`) for every group of targets of `writer` in turn; `(start, offset, db)`: the
/// source offset before the run, and where the source stands after it.
pub async fn each_group(
    settings: &LinkSettings,
    shard: &Arc<ShardState>,
    writer: &mut Fanout,
    run: (Vec<DbCmd>, Vec<u64>),
    epoch: u64,
    (start, offset, db): (u64, u64, u32),
) -> Result<(), LinkError> {
    let at = RunAt {
        epoch,
        start,
        offset,
        db,
    };
    let n = writer.groups();
    let mut run = Some(run);
    for g in 0..n {
        // The last group takes the run itself, the others a copy.
        let mine = if g + 1 == n { run.take() } else { run.clone() };
        let Some((cmds, ends)) = mine else { break };
        let (cmds, ends) = writer.filter_group(g, shard, cmds, ends);
        let target = writer.group_target(g).unwrap_or(&settings.target).clone();
        convert_and_send(settings, &target, shard, writer, g, (cmds, ends), at).await?;
    }
    Ok(())
}

/// Converts a filtered run for `target` and sends it to group `g`.
async fn convert_and_send(
    settings: &LinkSettings,
    target: &ServerInfo,
    shard: &Arc<ShardState>,
    writer: &mut Fanout,
    g: usize,
    (cmds, ends_in): (Vec<DbCmd>, Vec<u64>),
    at: RunAt,
) -> Result<(), LinkError> {
    let now = crate::now_ms() as i64;
    let mut out: Vec<DbCmd> = Vec::with_capacity(cmds.len());
    let mut ends = Vec::with_capacity(cmds.len());
    let mut rewritten = Vec::new();
    // Source offset after the last command of the run seen so far (filtered-out commands
    // between it and the next are filtered again when replayed from there).
    let mut last_end = at.start;
    for (dc, end) in cmds.into_iter().zip(ends_in) {
        let start_of_cmd = std::mem::replace(&mut last_end, end);
        let large = is_large_foreign_restore(&dc.cmd, target);
        if !large {
            // (A large RESTORE is counted off the event loop, in `restore_off_loop`.)
            let lost = crate::convert::loss::hash_field_ttls_dropped(&dc.cmd, target)
                + crate::convert::loss::restore_field_ttls_dropped(&dc.cmd, target);
            if lost > 0 {
                let key = dc.cmd.args.get(1).cloned().unwrap_or_default();
                crate::observe::events::Emit::emit(crate::observe::events::LossyConversion {
                    shard,
                    kind: crate::convert::loss::HASH_FIELD_TTL,
                    count: lost,
                    key: &key,
                    during: "live stream",
                });
            }
        }
        if large {
            // Decoded off the event loop; what came before it goes first, then its
            // commands as they are produced (bounded), each run behind the last.
            if let Some(last) = out.last() {
                shard.run_db.store(last.db, Ordering::Release);
                let run = RunInfo {
                    epoch: at.epoch,
                    offset: ends.last().copied(),
                    completes_full_sync: false,
                };
                writer
                    .send_group(g, shard, run, std::mem::take(&mut out), Feed::Stream(&ends))
                    .await?;
                ends.clear();
            }
            let job = Offload {
                settings,
                target,
                g,
                epoch: at.epoch,
                db: dc.db,
                now,
                // Inside a held source transaction there is no position to resume at.
                before: (!writer.group_in_transaction(g)).then_some(start_of_cmd),
                start: start_of_cmd,
            };
            if let Some(cmd) = restore_off_loop(job, shard, writer, dc.cmd).await? {
                out.push(DbCmd { db: dc.db, cmd });
                ends.push(end);
            }
            continue;
        }
        rewrite_between(dc.cmd, &settings.source, target, now, &mut rewritten);
        ends.extend(std::iter::repeat_n(end, rewritten.len()));
        out.extend(rewritten.drain(..).map(|cmd| DbCmd { db: dc.db, cmd }));
    }
    let run = RunInfo {
        epoch: at.epoch,
        offset: Some(at.offset),
        completes_full_sync: false,
    };
    shard.run_db.store(at.db, Ordering::Release);
    writer
        .send_group(g, shard, run, out, Feed::Stream(&ends))
        .await?;
    Ok(())
}

fn is_large_foreign_restore(cmd: &Cmd, target: &ServerInfo) -> bool {
    cmd.is("RESTORE")
        && cmd
            .args
            .get(3)
            .is_some_and(|p| p.len() > RESTORE_OFFLOAD_MIN)
        && crate::convert::compat::restore_needs_decode(cmd, target)
}

/// A large `RESTORE` to rewrite off the event loop: for group `g` of the fan-out, whose
/// targets run `target`; `db`: the command's source database; `now`: the clock of its run.
struct Offload<'a> {
    settings: &'a LinkSettings,
    target: &'a ServerInfo,
    g: usize,
    epoch: u64,
    db: u32,
    now: i64,
    /// The source offset just before the `RESTORE` (`None` inside an open source transaction).
    /// Exactly-once: piece `k` commits with the position "`before`, plus `k` pieces"
    /// ([`ShardState::run_piece`]), so a writer that reconnects resends only the pieces the
    /// target did not commit; a restart resumes at `before` and rewrites the whole value again
    /// (its first piece is a `DEL`).
    before: Option<u64>,
    /// The source offset just before the `RESTORE`, inside a transaction too (see
    /// [`ShardState::piece_of`]).
    start: u64,
}

/// Rewrites a large `RESTORE` into plain commands on a blocking thread, sending them to the
/// writers in batches as they are produced (a bounded channel of 2 batches: memory stays at the
/// payload plus a few batches, and `/healthz` keeps answering). Returns the command itself when
/// it cannot be rewritten (it then goes to the target unchanged and is refused visibly).
async fn restore_off_loop(
    job: Offload<'_>,
    shard: &Arc<ShardState>,
    writer: &mut Fanout,
    cmd: Cmd,
) -> Result<Option<Cmd>, LinkError> {
    let (tx, mut rx) = mpsc::channel::<Vec<Cmd>>(2);
    let target = job.target.clone();
    let (max_cmds, max_bytes) = (
        job.settings.sync.batch_max_commands,
        job.settings.sync.batch_max_bytes,
    );
    let (shard2, now) = (shard.clone(), job.now);
    let decode = tokio::task::spawn_blocking(move || {
        let lost = crate::convert::loss::restore_field_ttls_dropped(&cmd, &target);
        if lost > 0 {
            let key = cmd.args.get(1).cloned().unwrap_or_default();
            crate::observe::events::Emit::emit(crate::observe::events::LossyConversion {
                shard: &shard2,
                kind: crate::convert::loss::HASH_FIELD_TTL,
                count: lost,
                key: &key,
                during: "live stream",
            });
        }
        let mut batch: Vec<Cmd> = Vec::new();
        let mut bytes = 0usize;
        let mut open = true;
        let mut emit = |cmds: Vec<Cmd>| {
            bytes += cmds.iter().map(|c| c.encoded_len()).sum::<usize>();
            batch.extend(cmds);
            if open && (batch.len() >= max_cmds || bytes >= max_bytes) {
                bytes = 0;
                open = tx.blocking_send(std::mem::take(&mut batch)).is_ok();
            }
        };
        let r = crate::convert::compat::restore_as_commands_chunked(cmd, &target, now, &mut emit);
        if open && !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
        r.err()
    });
    let mut pieces = 0u32;
    let set_piece = |p: Option<(u64, u32)>| {
        if let Ok(mut r) = shard.run_piece.lock() {
            *r = p;
        }
    };
    let set_piece_of = |p: Option<u64>| {
        if let Ok(mut r) = shard.piece_of.lock() {
            *r = p;
        }
    };
    while let Some(cmds) = rx.recv().await {
        let run = RunInfo {
            epoch: job.epoch,
            offset: None,
            completes_full_sync: false,
        };
        let cmds = cmds
            .into_iter()
            .map(|cmd| DbCmd { db: job.db, cmd })
            .collect();
        pieces = pieces.saturating_add(1);
        shard.run_db.store(job.db, Ordering::Release);
        set_piece(job.before.map(|b| (b, pieces)));
        set_piece_of(Some(job.start));
        let sent = writer
            .send_group(job.g, shard, run, cmds, Feed::Plain)
            .await;
        set_piece(None);
        set_piece_of(None);
        sent?;
    }
    decode
        .await
        .map_err(|e| LinkError::Internal(format!("RESTORE decoding thread: {e}")))
}
