//! [`TargetWriter`]: one actor per target node. It takes [`Batch`]es from a bounded queue (and
//! redirected commands from other writers), pipelines them over one connection (writing and
//! reading replies at the same time), checks every reply, and marks each batch's part of its
//! [`crate::observe::progress::Ticket`] done when acknowledged. Batches stay in memory until acknowledged;
//! when the connection drops it reconnects with backoff and resends what was not acknowledged,
//! so nothing is lost (at-least-once). On a cluster, `MOVED`/`ASK` replies send the command to
//! the right node and refresh the slot table; `TRYAGAIN`/`CLUSTERDOWN` retry after a pause.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::Batch;
use super::targets::Targets;
use crate::cmd::{Cmd, DbCmd};
use crate::config::Endpoint;
use crate::net::RespConn;
use crate::net::backoff::Backoff;
use crate::resp::{self, Frame};

/// Reply slot of a command the writer inserted itself (`SELECT`, `ASKING`).
const INTERNAL_SLOT: u32 = u32::MAX;
/// Stop taking new batches while this many bytes are waiting to be written…
const OUT_HIGH_WATER: usize = 4 << 20;
/// …or this many commands are awaiting replies.
const MAX_INFLIGHT_CMDS: usize = 32 * 1024;
/// Pause before retrying a command the cluster answered `TRYAGAIN`/`CLUSTERDOWN` to.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Settings of one writer.
#[derive(Clone, Debug)]
pub struct WriterSettings {
    pub endpoint: Endpoint,
    /// Prefix of the heartbeat keys: a `SET` of one carries the source time and gives the lag.
    pub heartbeat_key: Bytes,
}

/// The sending sides of a writer's inputs.
#[derive(Clone, Debug)]
pub struct WriterHandle {
    /// `host:port` of the node.
    pub addr: String,
    /// Bounded: the memory bound and back-pressure of the data path.
    pub tx: mpsc::Sender<Batch>,
    /// Commands redirected by other writers (bounded by their in-flight limits).
    pub redirect: mpsc::UnboundedSender<Batch>,
}

/// Pipelines batches into one target node. Stops (and signals `done`) when its queues are
/// closed and every batch is acknowledged.
pub struct TargetWriter {
    settings: WriterSettings,
    inputs: Option<(mpsc::Receiver<Batch>, mpsc::UnboundedReceiver<Batch>)>,
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
        let (rtx, rrx) = mpsc::unbounded_channel();
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
        let pipeline = Pipeline {
            settings: self.settings.clone(),
            node: self.settings.endpoint.to_string(),
            pending: VecDeque::new(),
            targets: self.targets.take(),
            redirects_closed: false,
        };
        ctx.spawn(pipeline.run(rx, rrx).into_actor(self).map(|_, act, ctx| {
            if let Some(d) = act.done.take() {
                let _ = d.send(());
            }
            ctx.stop();
        }));
    }
}

/// A batch that was sent (or is about to be) and is not fully acknowledged.
struct InFlight {
    batch: Batch,
    /// For each reply expected on the current connection: the command index, or `INTERNAL_SLOT`.
    slots: Vec<u32>,
    /// Replies received on the current connection.
    seen: usize,
    /// Batch commands acknowledged (over all connections): resend starts after them.
    acked_cmds: usize,
    started: Instant,
}

impl InFlight {
    fn new(batch: Batch) -> InFlight {
        InFlight {
            batch,
            slots: Vec::new(),
            seen: 0,
            acked_cmds: 0,
            started: Instant::now(),
        }
    }

    fn done(&self) -> bool {
        self.seen == self.slots.len() && self.acked_cmds == self.batch.cmds.len()
    }
}

/// The connection loop's state.
struct Pipeline {
    settings: WriterSettings,
    node: String,
    pending: VecDeque<InFlight>,
    targets: Option<Arc<Targets>>,
    redirects_closed: bool,
}

/// What a cluster error reply asks the writer to do.
enum Redirect {
    Moved(String),
    Ask(String),
    Retry,
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

    async fn run(mut self, mut rx: mpsc::Receiver<Batch>, mut rrx: mpsc::UnboundedReceiver<Batch>) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut closed = false;
        loop {
            match self.connection(&mut rx, &mut rrx, &mut closed).await {
                Ok(()) => return,
                Err(why) => {
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
                    let delay = backoff.next_delay();
                    metrics::counter!("shardsync_target_errors_total", "node" => self.node.clone(), "kind" => "connection")
                        .increment(1);
                    tracing::warn!(node = %self.node, error = %why, retry_in_ms = delay.as_millis() as u64,
                        unacked_batches = self.pending.len(), "target connection failed; will reconnect and resend unacknowledged writes");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Gives every unacknowledged command to the masters serving its slots now, then forgets
    /// this node.
    fn hand_over(
        &mut self,
        targets: &Arc<Targets>,
        rx: &mut mpsc::Receiver<Batch>,
        rrx: &mut mpsc::UnboundedReceiver<Batch>,
    ) {
        targets.forget(&self.node);
        let mut moved = 0usize;
        for mut f in self.pending.drain(..) {
            f.batch.cmds.drain(..f.acked_cmds);
            moved += f.batch.cmds.len();
            targets.reroute(f.batch);
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
        rrx: &mut mpsc::UnboundedReceiver<Batch>,
        closed: &mut bool,
    ) -> Result<(), String> {
        let conn = RespConn::connect(&self.settings.endpoint)
            .await
            .map_err(|e| e.to_string())?;
        let RespConn {
            mut stream,
            buf: mut inbuf,
            dec: mut replies,
            ..
        } = conn;
        let mut db = 0u32;
        let mut out = BytesMut::with_capacity(1 << 20);
        for f in self.pending.iter_mut() {
            f.slots.clear();
            f.seen = 0;
            encode(f, &mut out, &mut db);
        }
        let (mut rh, mut wh) = stream.split();
        loop {
            if *closed && self.pending.is_empty() && out.is_empty() {
                let _ = wh.flush().await;
                tracing::debug!(node = %self.node, "writer drained and stopped");
                return Ok(());
            }
            let can_take = out.len() < OUT_HIGH_WATER && self.pending_cmds() < MAX_INFLIGHT_CMDS;
            tokio::select! {
                biased;
                r = rh.read_buf(&mut inbuf) => {
                    match r {
                        Ok(0) => return Err("connection closed by the target".into()),
                        Err(e) => return Err(e.to_string()),
                        Ok(_) => self.on_replies(&mut inbuf, &mut replies)?,
                    }
                }
                r = wh.write_buf(&mut out), if !out.is_empty() => {
                    if let Err(e) = r {
                        return Err(e.to_string());
                    }
                }
                b = rrx.recv(), if can_take && !self.redirects_closed => match b {
                    // Closed redirect channel: stop polling it (it would be ready forever).
                    None => self.redirects_closed = true,
                    Some(batch) => self.take(batch, &mut out, &mut db),
                },
                b = rx.recv(), if can_take && !*closed => match b {
                    None => {
                        tracing::debug!(node = %self.node, pending = self.pending.len(), "writer queue closed; draining");
                        *closed = true;
                    }
                    Some(batch) => self.take(batch, &mut out, &mut db),
                },
            }
            if inbuf.capacity() - inbuf.len() < 8192 {
                inbuf.reserve(64 * 1024);
            }
        }
    }

    fn take(&mut self, batch: Batch, out: &mut BytesMut, db: &mut u32) {
        let mut f = InFlight::new(batch);
        encode(&mut f, out, db);
        self.pending.push_back(f);
        self.complete_front();
    }

    fn on_replies(
        &mut self,
        inbuf: &mut BytesMut,
        replies: &mut resp::Decoder,
    ) -> Result<(), String> {
        loop {
            let frame = match replies.decode(inbuf) {
                Ok(Some((f, _))) => f,
                Ok(None) => break,
                Err(e) => return Err(format!("target sent bytes that are not RESP: {e}")),
            };
            let Some(front) = self.pending.iter_mut().find(|f| f.seen < f.slots.len()) else {
                return Err(format!(
                    "target sent a reply nobody asked for: {}",
                    frame.to_text()
                ));
            };
            let slot = front.slots[front.seen];
            front.seen += 1;
            if slot == INTERNAL_SLOT {
                if let Frame::Error(e) = &frame {
                    return Err(format!(
                        "SELECT/ASKING failed: {}",
                        String::from_utf8_lossy(e)
                    ));
                }
                continue;
            }
            front.acked_cmds += 1;
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
                };
                b.ticket.add_part();
                let kind = match &r {
                    Redirect::Moved(_) => "moved",
                    Redirect::Ask(_) => "ask",
                    Redirect::Retry => "tryagain",
                };
                metrics::counter!("shardsync_target_redirects_total", "node" => self.node.clone(), "kind" => kind)
                    .increment(1);
                match r {
                    Redirect::Moved(addr) => {
                        targets.request_refresh();
                        targets.redirect(&addr, again, None);
                    }
                    Redirect::Ask(addr) => targets.redirect(&addr, again, None),
                    Redirect::Retry => targets.redirect(&self.node, again, Some(RETRY_PAUSE)),
                }
                continue;
            }
            let rejected = check_reply(&self.node, &dc.cmd, &frame);
            let shard = &front.batch.shard;
            if rejected > 0 {
                shard.rejected_writes.fetch_add(rejected, Ordering::Relaxed);
            } else if let Some(ms) = heartbeat_ms(&self.settings.heartbeat_key, &dc.cmd) {
                // Lag gauges are published by `status::publish` from the shard's state.
                shard.heartbeat_applied(ms);
            }
        }
        self.complete_front();
        Ok(())
    }

    /// Pops fully acknowledged batches from the front, in order, marking their ticket parts done.
    fn complete_front(&mut self) {
        while self.pending.front().is_some_and(InFlight::done) {
            let Some(f) = self.pending.pop_front() else {
                break;
            };
            let b = &f.batch;
            b.shard.part_done(&b.ticket);
            metrics::counter!("shardsync_target_writes_total", "node" => self.node.clone())
                .increment(b.cmds.len() as u64);
            metrics::histogram!("shardsync_write_batch_seconds")
                .record(f.started.elapsed().as_secs_f64());
        }
    }
}

/// The source time carried by a heartbeat `SET <prefix…> <ms>`, if `cmd` is one.
fn heartbeat_ms(prefix: &Bytes, cmd: &Cmd) -> Option<u64> {
    if prefix.is_empty() || cmd.args.len() < 3 || !cmd.args[1].starts_with(prefix) || !cmd.is("SET")
    {
        return None;
    }
    std::str::from_utf8(&cmd.args[2]).ok()?.parse().ok()
}

/// Appends the batch's not-yet-acknowledged commands to `out`, inserting `SELECT` where the
/// database changes (and `ASKING` before each command of an ASK redirect), and records which
/// reply belongs to which command.
fn encode(f: &mut InFlight, out: &mut BytesMut, db: &mut u32) {
    for (i, DbCmd { db: cdb, cmd }) in f.batch.cmds.iter().enumerate().skip(f.acked_cmds) {
        if *cdb != *db {
            crate::cmd!["SELECT", *cdb].encode(out);
            f.slots.push(INTERNAL_SLOT);
            *db = *cdb;
        }
        if f.batch.asking {
            crate::cmd!["ASKING"].encode(out);
            f.slots.push(INTERNAL_SLOT);
        }
        cmd.encode(out);
        f.slots.push(i as u32);
    }
}

/// Counts and logs an error reply (also errors inside an `EXEC` result), naming the key.
/// Returns how many errors the reply held.
fn check_reply(node: &str, cmd: &Cmd, frame: &Frame) -> u64 {
    let report = |e: &Bytes| {
        let text = String::from_utf8_lossy(e);
        let kind = text
            .split_whitespace()
            .next()
            .unwrap_or("ERR")
            .to_ascii_uppercase();
        let key = cmd
            .args
            .get(1)
            .map(|k| String::from_utf8_lossy(&k[..k.len().min(100)]).into_owned())
            .unwrap_or_default();
        metrics::counter!("shardsync_target_errors_total", "node" => node.to_string(), "kind" => kind).increment(1);
        tracing::error!(node, command = %cmd.name_upper(), key = %key, error = %text, "target rejected a write");
    };
    match frame {
        Frame::Error(e) => {
            report(e);
            1
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
