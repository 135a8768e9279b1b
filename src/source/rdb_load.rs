//! Loading an RDB into the writers: runs the streaming parser and the converter on a blocking
//! thread (decode on one core while the network runs on the other), cuts the commands into
//! batches and hands them to the writer queue, blocking when it is full (back-pressure).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use crate::cmd::DbCmd;
use crate::convert::{ConvertOptions, Converter};
use crate::observe::progress::ShardState;
use crate::rdb::{Item, ParseOptions, RdbError, RdbParser};
use crate::sink::Fanout;
use crate::sink::dispatch::{RunInfo, WriterGone};

/// How to load.
#[derive(Clone, Debug)]
pub struct LoadSettings {
    pub parse: ParseOptions,
    pub convert: ConvertOptions,
    pub batch_max_commands: usize,
    pub batch_max_bytes: usize,
}

/// Memory an argument costs beyond its encoded bytes (its `Bytes` handle in the command's vector
/// and its own allocation), counted against `batch_max_bytes` so that a queued batch of
/// many-element commands (`HSET` of 512 small fields) holds about that much memory rather than
/// ~4× it: the write queues (`queue_batches` × `batch_max_bytes`) are the memory bound.
const ARG_MEMORY: usize = 48;

/// What a load did.
#[derive(Clone, Debug, Default)]
pub struct LoadStats {
    pub keys: u64,
    pub commands: u64,
    pub convert_errors: u64,
    /// Empty collections in the RDB, skipped as Redis skips them.
    pub empty_keys: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Rdb(#[from] RdbError),
    #[error("{0}")]
    WriterGone(#[from] WriterGone),
}

/// A [`Read`] over a channel of byte chunks (the RDB as it arrives from the network).
pub struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> ChannelReader {
        ChannelReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

/// Parses the whole RDB from `reader` and sends its keys as command batches into `tx`. Must run
/// on a blocking thread. A conversion error is counted and logged with its key; a parse error
/// ends the load.
pub fn load<R: Read>(
    reader: R,
    settings: &LoadSettings,
    shard: &Arc<ShardState>,
    epoch: u64,
    out: &mut Fanout,
) -> Result<LoadStats, LoadError> {
    let mut parser = RdbParser::new(reader, settings.parse.clone());
    let mut conv = Converter::new(settings.convert.clone());
    let mut stats = LoadStats::default();
    let mut cmds: Vec<DbCmd> = Vec::with_capacity(settings.batch_max_commands);
    let mut bytes = 0usize;
    let run = RunInfo {
        epoch,
        offset: None,
        completes_full_sync: false,
    };
    // sync.dbs / sync.filter: a skipped key's items are not converted at all.
    let filter = out.sync().filter.clone();
    let mut send = |cmds: Vec<DbCmd>| out.blocking_send(shard, run, cmds);
    // Resolved once: the per-key path must not build label sets.
    let keys_total =
        metrics::counter!(crate::observe::telemetry::RDB_KEYS, "shard" => shard.name.clone());
    let count_keys = |n: u64| {
        shard.rdb_keys.fetch_add(n, Ordering::Relaxed);
        keys_total.increment(n);
    };
    let mut counted = 0u64;
    let filtering = !filter.is_noop();
    let mut skipping = false;
    let mut skipped = [0u64; 2];
    loop {
        let item = match parser.next_item() {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) if matches!(e.kind, crate::rdb::RdbErrorKind::EmptyKey) => {
                // Redis drops empty collections when it loads an RDB; so do we, but visibly.
                stats.empty_keys += 1;
                if let Some(suppressed) = crate::observe::lograte::allow(&shard.name, "empty_key") {
                    tracing::warn!(shard = %shard.name, error = %e, suppressed, "empty key in the RDB skipped (Redis skips it too)");
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if let Item::AuxSkipped { key, len } = &item {
            tracing::warn!(shard = %shard.name, aux = %String::from_utf8_lossy(&key[..key.len().min(64)]).escape_debug(), len,
                limit = settings.parse.max_aux_bytes, "RDB AUX field longer than sync.max_aux_bytes skipped (AUX fields are informational)");
        }
        if filtering {
            match &item {
                Item::KeyStart(h) if !filter.keep_key(h.db, &h.key) => {
                    skipping = true;
                    skipped[usize::from(filter.db_selected(h.db))] += 1;
                    continue;
                }
                Item::KeyStart(_) => skipping = false,
                Item::Chunk(_) if skipping => continue,
                Item::KeyEnd { .. } if skipping => {
                    skipping = false;
                    continue;
                }
                Item::Function { .. } if filter.denied(&crate::cmd!["FUNCTION", "LOAD"]) => {
                    continue;
                }
                _ => {}
            }
        }
        if let Item::KeyStart(_) = &item {
            stats.keys += 1;
        }
        let before = cmds.len();
        if let Err(e) = conv.feed(item, &mut cmds) {
            let lost = conv.take_lost_field_ttls();
            if let Some(key) = e.key() {
                crate::observe::events::Emit::emit(crate::observe::events::LossyConversion {
                    shard,
                    kind: crate::convert::loss::HASH_FIELD_TTL,
                    count: lost,
                    key,
                    during: "full sync",
                });
            }
            stats.convert_errors += 1;
            metrics::counter!(crate::observe::telemetry::CONVERT_ERRORS, "shard" => shard.name.clone())
                .increment(1);
            if let Some(suppressed) = crate::observe::lograte::allow(&shard.name, "convert_error") {
                tracing::error!(shard = %shard.name, error = %e, suppressed, "a key of the RDB could not be written to the target");
            }
        }
        stats.commands += (cmds.len() - before) as u64;
        bytes += cmds[before..]
            .iter()
            .map(|c| c.cmd.encoded_len() + c.cmd.args.len() * ARG_MEMORY)
            .sum::<usize>();
        if cmds.len() >= settings.batch_max_commands || bytes >= settings.batch_max_bytes {
            // Key counters move per batch, not per key (the per-key path stays free of them).
            count_keys(stats.keys - counted);
            counted = stats.keys;
            send(std::mem::replace(
                &mut cmds,
                Vec::with_capacity(settings.batch_max_commands),
            ))?;
            shard.rdb_keys_handed.store(stats.keys, Ordering::Relaxed);
            bytes = 0;
        }
    }
    count_keys(stats.keys - counted);
    if !cmds.is_empty() {
        send(cmds)?;
        shard.rdb_keys_handed.store(stats.keys, Ordering::Relaxed);
    }
    for (n, rule) in skipped.into_iter().zip(["db", "key"]) {
        if n > 0 {
            metrics::counter!(crate::observe::telemetry::FILTERED_KEYS, "shard" => shard.name.clone(), "rule" => rule)
                .increment(n);
        }
    }
    stats.bytes = parser.bytes_read();
    Ok(stats)
}
