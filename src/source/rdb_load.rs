//! Loading an RDB into the writers: runs the streaming parser and the converter on a blocking
//! thread (decode on one core while the network runs on the other), cuts the commands into
//! batches and hands them to the writer queue, blocking when it is full (back-pressure). With
//! several targets the RDB is parsed once and filtered and converted once per group of targets
//! that get the same commands ([`Fanout::groups`]).

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
    /// One-to-many: group `g`'s conversion (for its targets' server) at index `g` (see
    /// [`Fanout::groups`]); a group without an entry uses `convert`.
    pub group_convert: Vec<ConvertOptions>,
    pub batch_max_commands: usize,
    pub batch_max_bytes: usize,
}

/// What a converted command counts against `batch_max_bytes`: the memory it holds
/// ([`DbCmd::mem_bytes`]), so that a queued batch of many-element commands (`HSET` of 512 small
/// fields) holds about `batch_max_bytes` rather than ~4× it: the write queues
/// (`queue_batches` × `batch_max_bytes`) are the memory bound.
fn batch_cost(c: &DbCmd) -> usize {
    c.mem_bytes()
}

/// [`batch_cost`] of one argument added to a command (its encoding, at most 5 digits of
/// length for the merged small values, and [`crate::cmd::ARG_MEMORY`]).
fn arg_cost(a: &[u8]) -> usize {
    a.len() + 10 + crate::cmd::ARG_MEMORY
}

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

/// One group of targets' share of a load (see [`Fanout::groups`]): its selection and filters,
/// its converter (for its targets' server) and its batch.
struct GroupLoad {
    filter: crate::router::filter::Filter,
    filtering: bool,
    conv: Converter,
    cmds: Vec<DbCmd>,
    bytes: usize,
    /// Writes in `cmds`: commands, plus the keys merged into an `MSET` beyond its first
    /// (see [`Converter::merge_sets`]); the batch is cut at `batch_max_commands` of them.
    writes: usize,
    /// Inside a key this group's filter skips.
    skipping: bool,
    /// Keys skipped by the database selection (`[0]`) and by the key filters (`[1]`).
    skipped: [u64; 2],
    /// The label of its counts.
    label: String,
}

impl GroupLoad {
    /// False when this group's selection or filters skip `item` (a skipped key's items are not
    /// converted at all).
    fn admits(&mut self, item: &Item) -> bool {
        if !self.filtering {
            return true;
        }
        match item {
            Item::KeyStart(h) if !self.filter.keep_key(h.db, &h.key) => {
                self.skipping = true;
                self.skipped[usize::from(self.filter.db_selected(h.db))] += 1;
                false
            }
            Item::KeyStart(_) => {
                self.skipping = false;
                true
            }
            Item::Chunk(_) if self.skipping => false,
            Item::KeyEnd { .. } if self.skipping => {
                self.skipping = false;
                false
            }
            Item::Function { .. } => !self.filter.denied(&crate::cmd!["FUNCTION", "LOAD"]),
            _ => true,
        }
    }

    /// Converts one item into this group's batch (a conversion error is logged and counted in
    /// `errors`). Returns the number of writes it added (see `writes`).
    fn convert(&mut self, item: Item, shard: &ShardState, errors: &mut u64) -> usize {
        let before = self.cmds.len();
        let last_args = self.cmds.last().map_or(0, |c| c.cmd.args.len());
        if let Err(e) = self.conv.feed(item, &mut self.cmds) {
            let lost = self.conv.take_lost_field_ttls();
            if let Some(key) = e.key() {
                crate::observe::events::Emit::emit(crate::observe::events::LossyConversion {
                    shard,
                    kind: crate::convert::loss::HASH_FIELD_TTL,
                    count: lost,
                    key,
                    during: "full sync",
                });
            }
            *errors += 1;
            metrics::counter!(crate::observe::telemetry::CONVERT_ERRORS, "shard" => shard.name.clone())
                .increment(1);
            if let Some(suppressed) = crate::observe::lograte::allow(&shard.name, "convert_error") {
                tracing::error!(shard = %shard.name, target = %self.label, error = %e, suppressed, "a key of the RDB could not be written to the target");
            }
        }
        let mut added = self.cmds.len() - before;
        self.bytes += self.cmds[before..].iter().map(batch_cost).sum::<usize>();
        // Pairs merged into the command that was last (an `MSET` grows in place).
        if let Some(last) = before.checked_sub(1).and_then(|i| self.cmds.get(i)) {
            let grown = &last.cmd.args[last_args.min(last.cmd.args.len())..];
            added += grown.len() / 2;
            self.bytes += grown.iter().map(|a| arg_cost(a)).sum::<usize>();
        }
        self.writes += added;
        added
    }
}

/// Parses the whole RDB from `reader` and sends its keys as command batches to `out`: parsed
/// once, then filtered and converted once per group of targets ([`LoadSettings::group_convert`],
/// see [`Fanout::groups`]). Must run on a blocking thread. A conversion error is counted
/// and logged with its key; a parse error ends the load.
pub fn load<R: Read>(
    reader: R,
    settings: &LoadSettings,
    shard: &Arc<ShardState>,
    epoch: u64,
    out: &mut Fanout,
) -> Result<LoadStats, LoadError> {
    let mut parser = RdbParser::new(reader, settings.parse.clone());
    let mut stats = LoadStats::default();
    let run = RunInfo {
        epoch,
        offset: None,
        completes_full_sync: false,
    };
    // sync.dbs / sync.filter, per group: a skipped key's items are not converted at all.
    let mut groups: Vec<GroupLoad> = (0..out.groups().max(1))
        .map(|g| {
            let filter = out.group_sync(g).filter.clone();
            let opts = settings
                .group_convert
                .get(g)
                .unwrap_or(&settings.convert)
                .clone();
            let mut conv = Converter::new(opts);
            if out.group_standalone(g) {
                conv.merge_sets(out.group_sync(g).progress_prefix.as_bytes());
            }
            GroupLoad {
                filtering: !filter.is_noop(),
                filter,
                conv,
                cmds: Vec::with_capacity(settings.batch_max_commands),
                bytes: 0,
                writes: 0,
                skipping: false,
                skipped: [0; 2],
                label: out.group_label(g, shard).to_string(),
            }
        })
        .collect();
    // Resolved once: the per-key path must not build label sets.
    let keys_total =
        metrics::counter!(crate::observe::telemetry::RDB_KEYS, "shard" => shard.name.clone());
    let count_keys = |n: u64| {
        shard.rdb_keys.fetch_add(n, Ordering::Relaxed);
        keys_total.increment(n);
    };
    let mut counted = 0u64;
    let last = groups.len() - 1;
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
        let mut kept = false;
        let mut item = Some(item);
        for (g, gl) in groups.iter_mut().enumerate() {
            // The last group takes the item itself, the others a copy.
            let mine = if g == last { item.take() } else { item.clone() };
            let Some(mine) = mine else { break };
            if !gl.admits(&mine) {
                continue;
            }
            kept |= matches!(mine, Item::KeyStart(_));
            stats.commands += gl.convert(mine, shard, &mut stats.convert_errors) as u64;
            if gl.writes >= settings.batch_max_commands || gl.bytes >= settings.batch_max_bytes {
                let batch = std::mem::replace(
                    &mut gl.cmds,
                    Vec::with_capacity(settings.batch_max_commands),
                );
                gl.bytes = 0;
                gl.writes = 0;
                // Key counters move per batch, not per key (the per-key path stays free of them).
                count_keys(stats.keys + u64::from(kept) - counted);
                counted = stats.keys + u64::from(kept);
                out.blocking_send_group(g, shard, run, batch)?;
                shard.rdb_keys_handed.store(counted, Ordering::Relaxed);
            }
        }
        if kept {
            stats.keys += 1;
        }
    }
    count_keys(stats.keys - counted);
    for (g, gl) in groups.iter_mut().enumerate() {
        if !gl.cmds.is_empty() {
            out.blocking_send_group(g, shard, run, std::mem::take(&mut gl.cmds))?;
        }
    }
    shard.rdb_keys_handed.store(stats.keys, Ordering::Relaxed);
    for gl in &groups {
        for (n, rule) in gl.skipped.into_iter().zip(["db", "key"]) {
            if n > 0 {
                metrics::counter!(crate::observe::telemetry::FILTERED_KEYS, "shard" => gl.label.clone(), "rule" => rule)
                    .increment(n);
            }
        }
    }
    stats.bytes = parser.bytes_read();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::Cmd;

    /// An `HSET` of 512 small fields is counted at no less than what it holds in memory: a
    /// `Bytes` handle per argument plus the argument's own allocation (rounded up by malloc).
    #[test]
    fn many_small_arguments_count_their_memory() {
        let mut args = vec![Bytes::from_static(b"HSET"), Bytes::from_static(b"bighash")];
        for i in 0..512 {
            args.push(Bytes::from(format!("field:{i:07}").into_bytes()));
            args.push(Bytes::from(vec![b'v'; 16]));
        }
        let held: usize = args
            .iter()
            .map(|a| std::mem::size_of::<Bytes>() + a.len().div_ceil(16) * 16)
            .sum();
        let c = DbCmd {
            db: 0,
            cmd: Cmd { args },
        };
        assert!(
            batch_cost(&c) >= held,
            "cost {} < held {held}",
            batch_cost(&c)
        );
        assert!(batch_cost(&c) >= 2 * c.cmd.encoded_len());
    }
}
