//! [`ShardLink`]: the actor that replicates one source master. It runs the replica handshake,
//! streams the RDB of a full sync into the loader, then decodes the command stream into batches
//! for the writers, answering `REPLCONF GETACK` and sending `REPLCONF ACK <applied offset>` every
//! interval. A failure stops the actor; it is classified ([`super::failure`]): a transient one
//! makes its `Supervisor` restart it with backoff (it resumes with `PSYNC <replid> <offset>` from
//! what it had handed to the writers) until the shard's retry budget runs out; a permanent one
//! marks the shard `failed` for good. A full sync whose RDB turns out corrupt first removes the
//! keys it wrote (or reports them, with `sync.on_resync = keep`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};

use super::failure::{self, Class, RetryBudget, Verdict};
use super::handshake::{self, PsyncReply, RdbFraming, ReplPosition};
use super::rdb_load::{self, ChannelReader, LoadError, LoadSettings};
use super::stream::{StreamDecoder, StreamError};
use crate::config::{Endpoint, SyncSettings};
use crate::net::backoff::Backoff;
use crate::net::server_info::ServerInfo;
use crate::net::{NetError, RespConn};
use crate::observe::events::{
    Emit, FullSyncHandedOver, FullSyncStarted, LinkFailed, LinkResumed, LinkStreaming,
};
use crate::observe::progress::{Phase, ShardState};
use crate::sink::Fanout;
use crate::sink::dispatch::Feed;
use crate::sink::dispatch::{RunInfo, WriterGone};

/// A master that sends nothing (not even its `PING`s) for this long is considered gone.
const SOURCE_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything a link needs to know, fixed for its life.
#[derive(Clone, Debug)]
pub struct LinkSettings {
    /// The source master found at startup.
    pub endpoint: Endpoint,
    /// For a cluster source: the slots of this shard, used to find its master again after a
    /// failover, and every node known at startup to ask.
    pub cluster: Option<ClusterShard>,
    pub sync: SyncSettings,
    pub source: ServerInfo,
    pub target: ServerInfo,
    /// Port announced with `REPLCONF listening-port` (shown in the master's `INFO replication`).
    pub listening_port: u16,
    /// Consecutive failed attempts without progress before the shard fails (0: no limit).
    pub retry_budget: u32,
}

/// What a cluster source shard is, independent of which node serves it now.
#[derive(Clone, Debug)]
pub struct ClusterShard {
    pub slots: Vec<(u16, u16)>,
    pub known_nodes: Vec<Endpoint>,
    /// Replicate from a replica of the shard's master (`source.prefer_replica`).
    pub prefer_replica: bool,
}

/// Asks the known nodes of a cluster source which master serves the shard's slots now; returns
/// it and, with `prefer_replica`, one of its replicas to replicate from (else the master again).
async fn current_source(shard: &ClusterShard, current: &Endpoint) -> Option<(Endpoint, Endpoint)> {
    let slot = shard.slots.first()?.0;
    let mut ask = vec![current.clone()];
    ask.extend(shard.known_nodes.iter().cloned());
    for ep in ask {
        let Ok(table) = crate::net::topology::cluster_table("source", &ep).await else {
            continue;
        };
        if let Some(n) = table.node_for(slot) {
            let master = crate::net::topology::endpoint_like(current, &n.host, n.port);
            let from = if shard.prefer_replica {
                table
                    .replicas_of(&n.id)
                    .first()
                    .map(|r| crate::net::topology::endpoint_like(current, &r.host, r.port))
                    .unwrap_or_else(|| master.clone())
            } else {
                master.clone()
            };
            return Some((master, from));
        }
    }
    None
}

/// Why a link stopped.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Net(#[from] NetError),
    #[error("{0}")]
    Stream(#[from] StreamError),
    #[error("RDB from the source: {0}")]
    Load(#[from] LoadError),
    #[error("{0}")]
    WriterGone(#[from] WriterGone),
    #[error("internal: {0}")]
    Internal(String),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error("{0} is no longer a master of the source cluster; looking for the shard's new master")]
    NotMaster(String),
    #[error("the RDB from the source {}: {error}; {aftermath}", if matches!(.error.kind, crate::rdb::RdbErrorKind::TooLarge { .. }) { "holds a value over a configured limit" } else { "is corrupt" })]
    CorruptRdb {
        error: crate::rdb::RdbError,
        /// What happened to the keys already written from it.
        aftermath: String,
    },
    #[error("the shard was marked failed")]
    ShardFailed,
}

/// Replicates one source master; supervised.
pub struct ShardLink {
    settings: Arc<LinkSettings>,
    shard: Arc<ShardState>,
    writer: Fanout,
    /// The checkpoint found at process start; used while no in-process position exists.
    checkpoint: Option<ReplPosition>,
    backoff: Backoff,
    /// The links' group token of the run's [`crate::supervise::Tree`]: cancelled at shutdown.
    shutdown: CancellationToken,
    /// The links' group work tracker: each replication attempt is tracked so the shutdown can
    /// wait for it to end.
    work: TaskTracker,
    started_at: Instant,
    /// The node replicated from now (moves on a source failover).
    endpoint: Endpoint,
    budget: RetryBudget,
}

impl ShardLink {
    pub fn new(
        settings: Arc<LinkSettings>,
        shard: Arc<ShardState>,
        writer: Fanout,
        checkpoint: Option<ReplPosition>,
        shutdown: CancellationToken,
        work: TaskTracker,
    ) -> ShardLink {
        ShardLink {
            endpoint: settings.endpoint.clone(),
            shard,
            writer,
            checkpoint,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            shutdown,
            work,
            started_at: Instant::now(),
            budget: RetryBudget::new(settings.retry_budget),
            settings,
        }
    }

    fn launch(&mut self, ctx: &mut Context<Self>) {
        if self.shard.is_failed() {
            return;
        }
        if self.shutdown.is_cancelled() {
            self.shard.set_phase(Phase::Stopped);
            return;
        }
        self.started_at = Instant::now();
        let resume = self
            .shard
            .reconnect_position()
            .or_else(|| self.checkpoint.clone());
        let restarted = self.shard.restarts.load(Ordering::Relaxed) > 0;
        let (settings, shard, current) = (
            self.settings.clone(),
            self.shard.clone(),
            self.endpoint.clone(),
        );
        let writer = self.writer.clone(); // a fresh dispatcher: no transaction carried over
        let fut = async move {
            // After a failure, a cluster shard first asks who serves its slots now (failover).
            let ep = match (&settings.cluster, restarted) {
                (Some(c), true) => match current_source(c, &current).await {
                    Some((master, from)) => {
                        if let Ok(mut a) = shard.master_addr.lock() {
                            *a = master.to_string();
                        }
                        from
                    }
                    None => current.clone(),
                },
                _ => current.clone(),
            };
            if ep != current {
                tracing::info!(shard = %shard.name, from = %current, to = %ep, "source shard moved to another master (failover)");
            }
            // A shard marked failed elsewhere (a writer) stops its link at once.
            let mut failed = shard.failed_watch();
            let r = tokio::select! {
                r = run(settings, shard, writer, resume, ep.clone()) => r,
                _ = failed.wait_for(|f| *f) => Err(LinkError::ShardFailed),
            };
            (r, ep)
        };
        // Tracked: the shutdown waits until this attempt (and its handle on the writers) is gone.
        let fut = self.work.track_future(fut);
        ctx.spawn(fut.into_actor(self).map(|(res, ep), act, ctx| {
            act.endpoint = ep;
            match res {
                Ok(()) => act.shard.set_phase(Phase::Stopped),
                Err(e) => {
                    if act.shutdown.is_cancelled() {
                        act.shard.set_phase(Phase::Stopped);
                        return;
                    }
                    act.failed(&e);
                }
            }
            ctx.stop();
        }));
    }

    /// Classifies the error that ended an attempt: back off and retry, or fail the shard.
    fn failed(&mut self, e: &LinkError) {
        if self.shard.is_failed() {
            return;
        }
        // Reaching the command stream is progress: the budget starts again.
        if self.shard.phase() == Phase::Incremental {
            self.budget.progress();
        }
        let class = failure::classify(e);
        let text = e.to_string();
        let label = match class {
            Class::Permanent(_) => "permanent",
            _ => "transient",
        };
        let fail = match self.budget.record(&class, &text) {
            // The reason says what to do; the error says what happened.
            Verdict::Fail(reason) => Some(match class {
                Class::Permanent(_) => format!("{reason} [{text}]"),
                _ => reason,
            }),
            Verdict::Retry => None,
        };
        LinkFailed {
            shard: &self.shard,
            error: &text,
            class: label,
            consecutive: self.budget.failures(),
            fail,
        }
        .emit();
    }
}

impl Actor for ShardLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Shutdown (the tree cancels the links' token): drop the connection, stay stopped (the
        // restart that follows sees the token and stays idle).
        if self.shutdown.is_cancelled() {
            self.shard.set_phase(Phase::Stopped);
            return;
        }
        ctx.spawn(
            self.shutdown
                .clone()
                .cancelled_owned()
                .into_actor(self)
                .map(|_, act, ctx| {
                    act.shard.set_phase(Phase::Stopped); // a failed shard stays failed
                    tracing::debug!(shard = %act.shard.name, "link stopping");
                    ctx.stop();
                }),
        );
        if self.shard.is_failed() {
            // Failed for good: the actor stays idle until the process stops.
            return;
        }
        if self.shard.restarts.load(Ordering::Relaxed) == 0 {
            self.launch(ctx);
        } else {
            let delay = self.backoff.next_delay();
            ctx.run_later(delay, |act, ctx| act.launch(ctx));
        }
    }
}

impl Supervised for ShardLink {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        if self.shard.is_failed() || self.shutdown.is_cancelled() {
            return;
        }
        if self.started_at.elapsed() > Duration::from_secs(30) {
            self.backoff.reset();
        }
        self.shard.restarts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::observe::telemetry::LINK_RESTARTS, "shard" => self.shard.name.clone())
            .increment(1);
    }
}

/// One connection's life: handshake, full sync if needed, then the command stream until error.
async fn run(
    settings: Arc<LinkSettings>,
    shard: Arc<ShardState>,
    mut writer: Fanout,
    resume: Option<ReplPosition>,
    endpoint: Endpoint,
) -> Result<(), LinkError> {
    shard.set_phase(Phase::Connecting);
    if let Ok(mut a) = shard.source_addr.lock() {
        *a = endpoint.to_string();
    }
    let mut conn = RespConn::connect(&endpoint).await?;
    if settings.cluster.as_ref().is_some_and(|c| !c.prefer_replica) {
        // A cluster shard follows its master: a node demoted to replica (failover) would still
        // serve us as a chained replica, but the shard belongs with the new master.
        let role = conn.request(&crate::cmd!["ROLE"]).await?;
        let is_master = matches!(&role, crate::resp::Frame::Array(a) if a.first().and_then(|f| f.as_bytes()).is_some_and(|r| r.as_ref() == b"master"));
        if !is_master {
            return Err(LinkError::NotMaster(endpoint.to_string()));
        }
    }
    let reply = handshake::handshake(
        &mut conn,
        settings.listening_port,
        resume.as_ref(),
        handshake::declares_version(&settings.source),
    )
    .await?;
    let epoch;
    // A master repeats no SELECT after +CONTINUE: the stream resumes in the saved database.
    let mut stream_db = 0;
    let stream_start = match reply {
        PsyncReply::FullResync(pos) => {
            // A repeated full sync (this process synced the shard before, or a checkpoint said
            // the target holds an earlier sync) first removes what it wrote, so that keys gone
            // from the source do not stay on the target.
            let repeated = shard.full_resyncs.load(Ordering::Relaxed) > 0
                || resume.is_some()
                || writer.exact_dirty();
            if repeated && settings.sync.on_resync == Some(crate::config::OnResync::Clear) {
                clear_before_resync(&settings, &shard, &writer).await?;
            }
            // Exactly-once: the target's progress key says "partial copy" until the RDB is applied.
            writer.mark_full_sync(&shard).await?;
            epoch = shard.begin_epoch(pos.offset);
            if let Ok(mut r) = shard.replid.lock() {
                r.clone_from(&pos.replid);
            }
            FullSyncStarted {
                shard: &shard,
                replid: &pos.replid,
                offset: pos.offset,
            }
            .emit();
            let started = Instant::now();
            let stats = match full_sync(&settings, &shard, writer.clone(), &mut conn, epoch).await {
                Ok(stats) => stats,
                Err(LinkError::Load(LoadError::Rdb(error))) => {
                    let aftermath = discard_corrupt_rdb(&settings, &shard, &writer).await;
                    return Err(LinkError::CorruptRdb { error, aftermath });
                }
                Err(e) => return Err(e),
            };
            let end = RunInfo {
                epoch,
                offset: Some(pos.offset),
                completes_full_sync: true,
            };
            writer.send(&shard, end, Vec::new(), Feed::Plain).await?;
            FullSyncHandedOver {
                shard: &shard,
                keys: stats.keys,
                rdb_bytes: stats.bytes,
                commands: stats.commands,
                convert_errors: stats.convert_errors,
                took: started.elapsed(),
            }
            .emit();
            pos.offset
        }
        PsyncReply::Continue { new_replid } => {
            let Some(pos) = resume else {
                return Err(LinkError::Internal("+CONTINUE without a position".into()));
            };
            epoch = shard.epoch.load(Ordering::Acquire);
            let replid = new_replid.unwrap_or(pos.replid);
            if let Ok(mut r) = shard.replid.lock() {
                *r = replid;
            }
            // Resumed from a checkpoint: what it names was applied (on every target).
            shard.resumed_at(pos.offset);
            shard.handed_offset.store(pos.offset, Ordering::Release);
            shard.handed_db.store(pos.db, Ordering::Release);
            shard.applied_db.store(pos.db, Ordering::Release);
            stream_db = pos.db;
            LinkResumed {
                shard: &shard,
                offset: pos.offset,
            }
            .emit();
            pos.offset
        }
    };
    LinkStreaming { shard: &shard }.emit();
    stream(
        &settings,
        &shard,
        &mut writer,
        conn,
        (stream_start, stream_db),
        epoch,
    )
    .await
}

/// Waits until the shard's earlier writes are applied (or 30 s).
async fn drain(shard: &ShardState) {
    let _ = tokio::time::timeout(Duration::from_secs(30), shard.drained()).await;
}

/// Waits until the shard's earlier writes are applied (or 30 s), then clears its keys.
async fn clear_before_resync(
    settings: &LinkSettings,
    shard: &ShardState,
    writer: &Fanout,
) -> Result<(), LinkError> {
    drain(shard).await;
    let slots = settings.cluster.as_ref().map(|c| c.slots.as_slice());
    let removed = writer.clear_shard(slots).await?;
    tracing::info!(shard = %shard.name, removed, "cleared the shard's keys from the target before a repeated full sync");
    Ok(())
}

/// After a full sync whose RDB failed its checksum or did not parse: removes what was written
/// from it (`sync.on_resync = clear`), or says exactly what stays (`keep`). Returns that sentence.
async fn discard_corrupt_rdb(
    settings: &LinkSettings,
    shard: &ShardState,
    writer: &Fanout,
) -> String {
    let written = shard.rdb_keys_handed.load(Ordering::Relaxed);
    drain(shard).await;
    if settings.sync.on_resync != Some(crate::config::OnResync::Clear) {
        let msg = format!(
            "{written} keys read from it before the error were written to the target and remain there \
             (sync.on_resync = keep): their values are from this RDB and the next full sync overwrites them, \
             but any key the source no longer has stays; set sync.on_resync = clear to have them removed"
        );
        tracing::error!(shard = %shard.name, keys = written, "{msg}");
        return msg;
    }
    let slots = settings.cluster.as_ref().map(|c| c.slots.as_slice());
    match writer.clear_shard(slots).await {
        Ok(_) => {
            tracing::warn!(shard = %shard.name, keys = written, "removed the keys written from a corrupt RDB from the target");
            format!(
                "the {written} keys written from it were removed from the target (sync.on_resync = clear)"
            )
        }
        Err(e) => {
            let msg = format!(
                "{written} keys written from it could NOT be removed from the target ({e}); \
                 they stay until the next successful full sync overwrites them"
            );
            tracing::error!(shard = %shard.name, keys = written, "{msg}");
            msg
        }
    }
}

/// Receives the RDB (either framing) and feeds it to the loader thread.
async fn full_sync(
    settings: &LinkSettings,
    shard: &Arc<ShardState>,
    writer: Fanout,
    conn: &mut RespConn,
    epoch: u64,
) -> Result<rdb_load::LoadStats, LinkError> {
    let framing = handshake::read_rdb_framing(conn).await?;
    shard.rdb_bytes.store(0, Ordering::Relaxed);
    shard.rdb_keys.store(0, Ordering::Relaxed);
    shard.rdb_keys_handed.store(0, Ordering::Relaxed);
    let size = match &framing {
        RdbFraming::Length(n) => *n,
        RdbFraming::EofMark(_) => 0,
    };
    shard.rdb_size.store(size, Ordering::Relaxed);
    metrics::gauge!(crate::observe::telemetry::RDB_SIZE, "shard" => shard.name.clone())
        .set(size as f64);

    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let (src, dst) = (&settings.source, &settings.target);
    let convert_for = |dst: &ServerInfo| crate::convert::ConvertOptions {
        target: dst.clone(),
        source_flavor: src.flavor,
        source_rdb_version: src.rdb_version(),
        use_restore: settings.sync.restore_max_bytes > 0
            && dst.accepts_dump(src.flavor, src.rdb_version()),
        elements_per_command: settings.sync.elements_per_command,
        replace: true,
        stream_hold_max_bytes: settings.sync.max_stream_rebuild_bytes,
    };
    // One conversion per group of targets (see `sink::fanout`), each for its targets' server.
    let group_convert: Vec<_> = (0..writer.groups())
        .map(|g| convert_for(writer.group_target(g).unwrap_or(dst)))
        .collect();
    let convert = convert_for(dst);
    // DUMP payloads are captured when some group can RESTORE them (the others decode them).
    let use_restore = match group_convert.is_empty() {
        true => convert.use_restore,
        false => group_convert.iter().any(|c| c.use_restore),
    };
    let load_settings = LoadSettings {
        parse: crate::rdb::ParseOptions {
            chunk_elements: settings.sync.elements_per_command,
            chunk_bytes: 1 << 20,
            capture_dump_max: if use_restore {
                settings.sync.restore_max_bytes
            } else {
                0
            },
            capture_strings: false,
            max_key_bytes: settings.sync.max_key_bytes,
            max_aux_bytes: settings.sync.max_aux_bytes,
            max_element_bytes: settings.sync.max_element_bytes,
            max_blob_bytes: settings.sync.max_blob_bytes,
            max_group_entries: settings.sync.max_group_entries,
        },
        convert,
        group_convert,
        batch_max_commands: settings.sync.batch_max_commands,
        batch_max_bytes: settings.sync.batch_max_bytes,
    };
    let (shard2, mut writer2) = (shard.clone(), writer);
    let loader = tokio::task::spawn_blocking(move || {
        rdb_load::load(
            ChannelReader::new(rx),
            &load_settings,
            &shard2,
            epoch,
            &mut writer2,
        )
    });
    let fed = feed_rdb(shard, conn, framing, &tx).await;
    drop(tx);
    let loaded = loader
        .await
        .map_err(|e| LinkError::Internal(format!("RDB loader thread: {e}")))?;
    match (fed, loaded) {
        (Err(FeedError::Net(e)), _) => Err(e.into()),
        (_, Err(e)) => Err(e.into()),
        (Err(FeedError::LoaderGone), Ok(_)) => {
            Err(LinkError::Internal("RDB loader stopped early".into()))
        }
        (Ok(()), Ok(stats)) => Ok(stats),
    }
}

enum FeedError {
    Net(NetError),
    LoaderGone,
}

async fn fill_with_timeout(conn: &mut RespConn) -> Result<usize, FeedError> {
    match tokio::time::timeout(SOURCE_READ_TIMEOUT, conn.fill()).await {
        Ok(r) => r.map_err(FeedError::Net),
        Err(_) => Err(FeedError::Net(NetError::Timeout {
            addr: conn.addr.clone(),
            secs: SOURCE_READ_TIMEOUT.as_secs(),
        })),
    }
}

/// Moves exactly the RDB's bytes from the connection to the loader; stream bytes stay buffered.
async fn feed_rdb(
    shard: &ShardState,
    conn: &mut RespConn,
    framing: RdbFraming,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), FeedError> {
    let count = |n: usize| {
        shard.rdb_bytes.fetch_add(n as u64, Ordering::Relaxed);
        metrics::counter!(crate::observe::telemetry::RDB_BYTES, "shard" => shard.name.clone())
            .increment(n as u64);
    };
    match framing {
        RdbFraming::Length(mut remaining) => loop {
            let take = (conn.buf.len() as u64).min(remaining) as usize;
            if take > 0 {
                let chunk = conn.buf.split_to(take).freeze();
                count(take);
                tx.send(chunk).await.map_err(|_| FeedError::LoaderGone)?;
                remaining -= take as u64;
            }
            if remaining == 0 {
                return Ok(());
            }
            fill_with_timeout(conn).await?;
        },
        RdbFraming::EofMark(mark) => loop {
            let n = conn.buf.len();
            if n >= mark.len() && conn.buf[n - mark.len()..] == mark {
                let chunk = conn.buf.split_to(n - mark.len()).freeze();
                let _ = conn.buf.split_to(mark.len());
                count(chunk.len());
                if !chunk.is_empty() {
                    tx.send(chunk).await.map_err(|_| FeedError::LoaderGone)?;
                }
                return Ok(());
            }
            if n > mark.len() {
                let chunk = conn.buf.split_to(n - mark.len()).freeze();
                count(chunk.len());
                tx.send(chunk).await.map_err(|_| FeedError::LoaderGone)?;
            }
            fill_with_timeout(conn).await?;
        },
    }
}

/// Sends `REPLCONF ACK` every interval and whenever the master asks; ends with the connection.
async fn ack_loop(
    mut wh: crate::net::stream::OwnedWriteHalf,
    shard: Arc<ShardState>,
    interval: Duration,
    getack: Arc<Notify>,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = getack.notified() => {}
        }
        let off = shard.applied_offset.load(Ordering::Acquire);
        let mut buf = BytesMut::new();
        crate::cmd!["REPLCONF", "ACK", off].encode(&mut buf);
        if wh.write_all(&buf).await.is_err() {
            return;
        }
    }
}

/// Aborts a task when dropped (the link's ACK sender dies with the link).
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The `shardsync_commands_total` counter of `cmd`'s label (a known name or `other`), resolved
/// once per label: the cache is as small as the set of labels, whatever names the stream holds.
fn command_counter<'a>(
    cache: &'a mut std::collections::HashMap<&'static str, metrics::Counter>,
    shard: &str,
    cmd: &crate::cmd::Cmd,
) -> &'a metrics::Counter {
    let label = crate::observe::telemetry::command_label(cmd);
    cache.entry(label).or_insert_with(|| {
        metrics::counter!(crate::observe::telemetry::COMMANDS, "shard" => shard.to_string(), "command" => label)
    })
}

/// Decodes the command stream into batches until the connection fails.
async fn stream(
    settings: &LinkSettings,
    shard: &Arc<ShardState>,
    writer: &mut Fanout,
    conn: RespConn,
    (start, start_db): (u64, u32),
    epoch: u64,
) -> Result<(), LinkError> {
    let RespConn {
        stream,
        mut buf,
        addr,
        ..
    } = conn;
    let (mut rh, wh) = stream.into_split();
    let getack = Arc::new(Notify::new());
    let _ack = AbortOnDrop(tokio::spawn(ack_loop(
        wh,
        shard.clone(),
        Duration::from_millis(settings.sync.ack_interval_ms),
        getack.clone(),
    )));
    let max_cmds = settings.sync.batch_max_commands;
    let mut dec = StreamDecoder::with_limits(
        start,
        crate::resp::Limits {
            max_frame_bytes: settings.sync.max_frame_bytes,
            ..Default::default()
        },
    );
    dec.db = start_db;
    let mut counters = std::collections::HashMap::new();
    let mut handed = start;
    loop {
        loop {
            let mut cmds = Vec::new();
            dec.decode(&mut buf, &mut cmds, max_cmds)?;
            if dec.getack {
                dec.getack = false;
                getack.notify_one();
            }
            if cmds.is_empty() && dec.offset == handed {
                break;
            }
            let full = cmds.len() >= max_cmds;
            for c in &cmds {
                command_counter(&mut counters, &shard.name, &c.cmd).increment(1);
            }
            // Always: besides version differences, masters propagate forms that only a replica
            // accepts (see `convert::compat`). The source offset after each command goes along:
            // repairs skip commands up to a fence.
            let ends_in = std::mem::take(&mut dec.ends);
            // Filtered (sync.dbs / sync.filter act on the source's commands, before any
            // conversion) and converted once per group of targets (see `sink::fanout`).
            super::convert_run::each_group(
                settings,
                shard,
                writer,
                (cmds, ends_in),
                epoch,
                (dec.offset, dec.db),
            )
            .await?;
            handed = dec.offset;
            // Inside an open MULTI block the dispatcher still holds commands: a reconnect must
            // resume before them, so the handed-out position waits for the EXEC.
            if !writer.in_transaction() {
                shard.handed_offset.store(handed, Ordering::Release);
                shard.handed_db.store(dec.db, Ordering::Release);
            } else if let Some((before, db)) = writer.handed_before_hold() {
                shard.handed_offset.store(before, Ordering::Release);
                shard.handed_db.store(db, Ordering::Release);
            }
            metrics::gauge!(crate::observe::telemetry::SOURCE_OFFSET, "shard" => shard.name.clone())
                .set(handed as f64);
            if !full {
                break;
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match tokio::time::timeout(SOURCE_READ_TIMEOUT, rh.read_buf(&mut buf)).await {
            Err(_) => {
                return Err(NetError::Timeout {
                    addr,
                    secs: SOURCE_READ_TIMEOUT.as_secs(),
                }
                .into());
            }
            Ok(Ok(0)) => return Err(NetError::Closed { addr }.into()),
            Ok(Err(e)) => {
                return Err(NetError::Io {
                    addr,
                    why: e.to_string(),
                }
                .into());
            }
            Ok(Ok(_)) => {}
        }
    }
}
