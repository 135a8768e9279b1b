//! Typed internal events (after Vector's `internal_events`): one type per happening that matters
//! to an operator. Its [`Emit::emit`] writes the log line, updates the metric (names from the
//! catalog in [`super::telemetry`]) and the shard's `/status` fields together, so the three never
//! disagree; every per-shard series is labelled with the shard's stable name
//! ([`ShardState::name`]: the master's address at start), which no failover or `prefer_replica`
//! changes.
//!
//! The happenings: a source link connected (partial resync accepted) or failed (retried or
//! failed for good), a full sync started and handed over, a write refused, a key repaired (or
//! not), a target stall, a lossy conversion (data the target cannot hold, e.g. hash-field TTLs;
//! see [`crate::convert::loss`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::lograte;
use super::progress::{Phase, ShardState};
use super::telemetry;
use crate::cmd::Cmd;

/// One happening: log line, metrics and status in one place.
pub trait Emit {
    type Output;
    fn emit(self) -> Self::Output;
}

/// The source accepted a partial resync: the shard streams commands from `offset`.
pub struct LinkResumed<'a> {
    pub shard: &'a ShardState,
    pub offset: u64,
}

impl Emit for LinkResumed<'_> {
    type Output = ();
    fn emit(self) {
        tracing::info!(shard = %self.shard.name, offset = self.offset, "partial resync accepted (+CONTINUE)");
    }
}

/// The link reached the command stream (after a full or a partial sync).
pub struct LinkStreaming<'a> {
    pub shard: &'a ShardState,
}

impl Emit for LinkStreaming<'_> {
    type Output = ();
    fn emit(self) {
        self.shard.set_phase(Phase::Incremental); // shardsync_link_state + /status phase
        self.shard.set_error(None);
        tracing::debug!(shard = %self.shard.name, "streaming commands");
    }
}

/// An attempt of the source link ended with an error.
pub struct LinkFailed<'a> {
    pub shard: &'a ShardState,
    /// What happened.
    pub error: &'a str,
    /// `transient` or `permanent` (the `class` label).
    pub class: &'static str,
    pub consecutive: u32,
    /// `Some(reason)`: the shard fails for good with this reason (it says what to do);
    /// `None`: the link restarts after a backoff.
    pub fail: Option<String>,
}

impl Emit for LinkFailed<'_> {
    type Output = ();
    fn emit(self) {
        let s = self.shard;
        metrics::counter!(telemetry::LINK_ERRORS, "shard" => s.name.clone(), "class" => self.class)
            .increment(1);
        match self.fail {
            // Logs, sets phase `failed` and `last_error`.
            Some(reason) => s.mark_failed(reason),
            None => {
                if let Some(suppressed) = lograte::allow(&s.name, "link_failed") {
                    tracing::warn!(shard = %s.name, error = %self.error, consecutive_failures = self.consecutive,
                        suppressed, "source link failed; restarting");
                }
                s.set_error(Some(self.error.to_string()));
                s.set_phase(Phase::Backoff);
            }
        }
    }
}

/// The source started a full sync (`+FULLRESYNC`).
pub struct FullSyncStarted<'a> {
    pub shard: &'a ShardState,
    pub replid: &'a str,
    pub offset: u64,
}

impl Emit for FullSyncStarted<'_> {
    type Output = ();
    fn emit(self) {
        let s = self.shard;
        s.full_resyncs.fetch_add(1, Ordering::Relaxed); // /status full_resyncs
        metrics::counter!(telemetry::FULL_RESYNCS, "shard" => s.name.clone()).increment(1);
        tracing::info!(shard = %s.name, replid = %crate::escape::text(self.replid.as_bytes()), offset = self.offset, "full sync started");
        s.set_phase(Phase::FullSync);
    }
}

/// The whole RDB was read and handed to the writers (applied once its tickets are done:
/// `full_sync_done` in `/status`).
pub struct FullSyncHandedOver<'a> {
    pub shard: &'a ShardState,
    pub keys: u64,
    pub rdb_bytes: u64,
    pub commands: u64,
    pub convert_errors: u64,
    pub took: Duration,
}

impl Emit for FullSyncHandedOver<'_> {
    type Output = ();
    fn emit(self) {
        tracing::info!(shard = %self.shard.name, keys = self.keys, rdb_bytes = self.rdb_bytes, commands = self.commands,
            errors = self.convert_errors, secs = self.took.as_secs_f64(), "RDB received and handed to the writers");
    }
}

/// A command of the shard that cannot be written to the target (no route, a cross-slot
/// fallback that failed, a database the target lacks).
pub struct WriteRefused<'a> {
    pub shard: &'a ShardState,
    pub cmd: &'a Cmd,
    pub why: &'a str,
}

impl Emit for WriteRefused<'_> {
    type Output = ();
    fn emit(self) {
        let s = self.shard;
        s.rejected_writes.fetch_add(1, Ordering::Relaxed); // /status rejected_writes
        metrics::counter!(telemetry::UNROUTABLE_COMMANDS, "shard" => s.name.clone(), "command" => telemetry::command_label(self.cmd))
            .increment(1);
        let Some(suppressed) = lograte::allow(&s.name, "unroutable") else {
            return;
        };
        let key = crate::escape::quoted_key(self.cmd);
        tracing::error!(shard = %s.name, command = %self.cmd.name_upper(), key = %key, suppressed, "{}", self.why);
    }
}

/// A key the target rejected a write to was copied from the source.
pub struct KeyRepaired<'a> {
    pub shard: &'a ShardState,
    pub key: &'a [u8],
    pub db: u32,
    pub why: &'a str,
    pub source_offset: u64,
    pub exists: bool,
}

impl Emit for KeyRepaired<'_> {
    type Output = ();
    fn emit(self) {
        let s = self.shard;
        s.key_repairs.fetch_add(1, Ordering::Relaxed); // /status key_repairs
        metrics::counter!(telemetry::KEY_REPAIRS, "shard" => s.name.clone(), "result" => "ok")
            .increment(1);
        if let Some(suppressed) = lograte::allow(&s.name, "repair") {
            tracing::warn!(shard = %s.name, key = %crate::escape::text(self.key), db = self.db, reason = %self.why,
                source_offset = self.source_offset, exists = self.exists, suppressed,
                "repairing the key: copied from the source (its stream commands up to that offset are skipped)");
        }
    }
}

/// Why a key was not repaired.
pub enum RepairFailure<'a> {
    /// Too many keys wait already.
    Overflow,
    /// Its repairs kept failing (`attempts` within `window`): given up.
    GaveUp { attempts: u32, window: Duration },
    /// Reading it from the source failed.
    ReadFailed(&'a str),
}

/// A key could not be repaired: the target keeps what it has.
pub struct KeyRepairFailed<'a> {
    /// The shard's stable name.
    pub shard: &'a str,
    /// The shard's state, when the caller has it (for `/status`).
    pub state: Option<&'a ShardState>,
    pub key: &'a [u8],
    pub db: u32,
    pub why: &'a str,
    pub cause: RepairFailure<'a>,
}

impl Emit for KeyRepairFailed<'_> {
    type Output = ();
    fn emit(self) {
        if let Some(s) = self.state {
            s.key_repairs_failed.fetch_add(1, Ordering::Relaxed); // /status key_repairs_failed
        }
        metrics::counter!(telemetry::KEY_REPAIRS, "shard" => self.shard.to_string(), "result" => "failed")
            .increment(1);
        let (shard, db, reason) = (self.shard, self.db, self.why);
        let key = crate::escape::text(self.key);
        match self.cause {
            RepairFailure::Overflow => {
                if let Some(suppressed) = lograte::allow(shard, "repair_overflow") {
                    tracing::error!(shard, key = %key, suppressed, "too many keys waiting for repair; this one stays as the target has it");
                }
            }
            RepairFailure::GaveUp { attempts, window } => {
                if let Some(suppressed) = lograte::allow(shard, "repair_failed") {
                    tracing::error!(shard, key = %key, db, reason = %reason, suppressed,
                        "repair of this key keeps failing ({attempts} times within {} s); giving up: the target keeps what it has", window.as_secs());
                }
            }
            RepairFailure::ReadFailed(error) => {
                if let Some(suppressed) = lograte::allow(shard, "repair_failed") {
                    tracing::error!(shard, key = %key, db, reason = %reason, error = %error, suppressed,
                        "cannot repair the key: reading it from the source failed; the target keeps what it has");
                }
            }
        }
    }
}

/// A target node left replies outstanding for the whole reply timeout. Returns the text the
/// writer shows in `last_error` of the shards with writes waiting there.
pub struct TargetStall<'a> {
    pub node: &'a str,
    pub waiting: usize,
    pub timeout: Duration,
}

impl Emit for TargetStall<'_> {
    type Output = String;
    fn emit(self) -> String {
        let secs = self.timeout.as_secs_f64();
        let waiting = self.waiting;
        metrics::counter!(telemetry::TARGET_STALLS, "node" => self.node.to_string()).increment(1);
        tracing::warn!(node = %self.node, waiting_replies = waiting, timeout_s = secs,
            "target stalled: no reply for {secs:.1} s with {waiting} commands waiting; reconnecting and resending unacknowledged writes");
        format!(
            "target {} stalled: no reply for {secs:.1} s ({waiting} commands waiting); reconnecting",
            self.node
        )
    }
}

/// Part of the source's data that the target cannot hold was written without it (`kind`, one of
/// [`crate::convert::loss::KINDS`]; `count` losses on `key`): counted in
/// `shardsync_lossy_conversions_total{shard,kind}` and `/status` `lossy_conversions`, warned
/// about (rate-limited per shard and kind). `during` says where: `full sync` or `live stream`.
pub struct LossyConversion<'a> {
    pub shard: &'a ShardState,
    pub kind: &'static str,
    pub count: u64,
    pub key: &'a [u8],
    pub during: &'static str,
}

impl Emit for LossyConversion<'_> {
    type Output = ();
    fn emit(self) {
        let (shard, n) = (self.shard, self.count);
        if n == 0 {
            return;
        }
        shard.lossy_conversions.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(telemetry::LOSSY_CONVERSIONS, "shard" => shard.name.clone(), "kind" => self.kind)
            .increment(n);
        if let Some(suppressed) = lograte::allow(&shard.name, self.kind) {
            tracing::warn!(shard = %shard.name, kind = self.kind, count = n, key = %crate::escape::quoted(self.key),
                during = self.during, suppressed,
                "the target cannot hold this (e.g. hash field TTLs need Valkey >= 9 or Redis >= 7.4): the values are written without it; counted in shardsync_lossy_conversions_total");
        }
    }
}
