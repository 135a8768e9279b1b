//! [`TargetWriter`]: one actor per target node. It takes [`Batch`]es from a bounded queue,
//! pipelines them over one connection (writing and reading replies at the same time), checks
//! every reply, and tells each shard which source offset the target has applied. Batches stay in
//! memory until acknowledged; when the connection drops it reconnects with backoff and resends
//! what was not acknowledged, so nothing is lost (at-least-once).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::Batch;
use crate::backoff::Backoff;
use crate::cmd::Cmd;
use crate::config::Endpoint;
use crate::net::RespConn;
use crate::resp::{self, Frame};

/// Reply slot that belongs to a `SELECT` the writer inserted, not to a batch command.
const SELECT_SLOT: u32 = u32::MAX;
/// Stop taking new batches while this many bytes are waiting to be written…
const OUT_HIGH_WATER: usize = 4 << 20;
/// …or this many commands are awaiting replies.
const MAX_INFLIGHT_CMDS: usize = 32 * 1024;

/// Settings of one writer.
#[derive(Clone, Debug)]
pub struct WriterSettings {
    pub endpoint: Endpoint,
    /// The heartbeat key: a `SET` of it carries the source time and gives the lag.
    pub heartbeat_key: Bytes,
}

/// Pipelines batches into one target node. Stops (and signals `done`) when its queue is closed
/// and every batch is acknowledged.
pub struct TargetWriter {
    settings: WriterSettings,
    rx: Option<mpsc::Receiver<Batch>>,
    done: Option<oneshot::Sender<()>>,
}

impl TargetWriter {
    /// Creates the writer and the sending side of its queue (`capacity` batches).
    pub fn new(
        settings: WriterSettings,
        capacity: usize,
    ) -> (TargetWriter, mpsc::Sender<Batch>, oneshot::Receiver<()>) {
        let (tx, rx) = mpsc::channel(capacity);
        let (done_tx, done_rx) = oneshot::channel();
        (
            TargetWriter {
                settings,
                rx: Some(rx),
                done: Some(done_tx),
            },
            tx,
            done_rx,
        )
    }
}

impl Actor for TargetWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(rx) = self.rx.take() else {
            ctx.stop();
            return;
        };
        // observability: the node's series exist (at 0) from the writer's start.
        crate::telemetry::register_node(&self.settings.endpoint.to_string());
        let pipeline = Pipeline {
            settings: self.settings.clone(),
            node: self.settings.endpoint.to_string(),
            pending: VecDeque::new(),
        };
        ctx.spawn(pipeline.run(rx).into_actor(self).map(|_, act, ctx| {
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
    /// For each reply expected on the current connection: the command index, or `SELECT_SLOT`.
    slots: Vec<u32>,
    /// Replies received on the current connection.
    seen: usize,
    /// Batch commands acknowledged (over all connections): resend starts after them.
    acked_cmds: usize,
    started: Instant,
}

impl InFlight {
    fn done(&self) -> bool {
        self.seen == self.slots.len() && self.acked_cmds == self.batch.cmds.len()
    }
}

/// The connection loop's state.
struct Pipeline {
    settings: WriterSettings,
    node: String,
    pending: VecDeque<InFlight>,
}

impl Pipeline {
    fn pending_cmds(&self) -> usize {
        self.pending.iter().map(|f| f.slots.len() - f.seen).sum()
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Batch>) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut closed = false;
        loop {
            match self.connection(&mut rx, &mut closed).await {
                Ok(()) => return,
                Err(why) => {
                    let delay = backoff.next_delay();
                    metrics::counter!("shardsync_target_errors_total", "node" => self.node.clone(), "kind" => "connection").increment(1);
                    tracing::warn!(node = %self.node, error = %why, retry_in_ms = delay.as_millis() as u64,
                        unacked_batches = self.pending.len(), "target connection failed; will reconnect and resend unacknowledged writes");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Runs one connection until the queue is closed and drained (`Ok`) or the connection fails.
    async fn connection(
        &mut self,
        rx: &mut mpsc::Receiver<Batch>,
        closed: &mut bool,
    ) -> Result<(), String> {
        let conn = RespConn::connect(&self.settings.endpoint)
            .await
            .map_err(|e| e.to_string())?;
        let RespConn {
            mut stream,
            buf: mut inbuf,
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
                return Ok(());
            }
            let can_take =
                !*closed && out.len() < OUT_HIGH_WATER && self.pending_cmds() < MAX_INFLIGHT_CMDS;
            tokio::select! {
                r = rh.read_buf(&mut inbuf) => {
                    match r {
                        Ok(0) => return Err("connection closed by the target".into()),
                        Err(e) => return Err(e.to_string()),
                        Ok(_) => self.on_replies(&mut inbuf)?,
                    }
                }
                r = wh.write_buf(&mut out), if !out.is_empty() => {
                    if let Err(e) = r {
                        return Err(e.to_string());
                    }
                }
                b = rx.recv(), if can_take => match b {
                    None => *closed = true,
                    Some(batch) => {
                        let mut f = InFlight { batch, slots: Vec::new(), seen: 0, acked_cmds: 0, started: Instant::now() };
                        encode(&mut f, &mut out, &mut db);
                        self.pending.push_back(f);
                        self.complete_front();
                    }
                },
            }
            if inbuf.capacity() - inbuf.len() < 8192 {
                inbuf.reserve(64 * 1024);
            }
        }
    }

    fn on_replies(&mut self, inbuf: &mut BytesMut) -> Result<(), String> {
        loop {
            let frame = match resp::decode(inbuf) {
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
            if slot == SELECT_SLOT {
                if let Frame::Error(e) = &frame {
                    return Err(format!("SELECT failed: {}", String::from_utf8_lossy(e)));
                }
                continue;
            }
            front.acked_cmds += 1;
            let cmd = &front.batch.cmds[slot as usize].cmd;
            let rejected = check_reply(&self.node, cmd, &frame);
            if rejected > 0 {
                front
                    .batch
                    .shard
                    .rejected_writes
                    .fetch_add(rejected, std::sync::atomic::Ordering::Relaxed);
            }
            if !self.settings.heartbeat_key.is_empty()
                && cmd.args.len() >= 3
                && cmd.args[1] == self.settings.heartbeat_key
                && cmd.is("SET")
                && !frame.is_error()
                && let Some(ms) = std::str::from_utf8(&cmd.args[2])
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
            {
                // Lag gauges are published by `status::publish` from the shard's state.
                front.batch.shard.heartbeat_applied(ms);
            }
        }
        self.complete_front();
        Ok(())
    }

    /// Pops fully acknowledged batches from the front, in order, moving the shards' offsets.
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

/// Appends the batch's not-yet-acknowledged commands to `out`, inserting `SELECT` where the
/// database changes, and records which reply belongs to which command.
fn encode(f: &mut InFlight, out: &mut BytesMut, db: &mut u32) {
    for (i, dc) in f.batch.cmds.iter().enumerate().skip(f.acked_cmds) {
        if dc.db != *db {
            crate::cmd!["SELECT", dc.db].encode(out);
            f.slots.push(SELECT_SLOT);
            *db = dc.db;
        }
        dc.cmd.encode(out);
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
        metrics::counter!("shardsync_target_errors_total", "node" => node.to_string(), "kind" => kind.clone()).increment(1);
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
