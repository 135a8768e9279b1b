//! Turns parsed RDB items into the commands that recreate each key on a target, and rewrites
//! live stream commands for targets older than the source.
//!
//! [`Converter`] is a push-style state machine: feed it every [`Item`] of an RDB in order and it
//! appends [`DbCmd`]s to a caller-owned vector. It never holds a whole value: at most one batch of
//! [`ConvertOptions::elements_per_command`] elements (or one string part) is buffered.
//!
//! Errors are values. When [`Converter::feed`] returns an error, the commands it already pushed to
//! `out` are still valid and should be sent: errors of kind [`ConvertError::Unsupported`] mean "the
//! data is written, but some property (a field TTL, an idle consumer) could not be expressed on
//! this target"; [`ConvertError::Unconvertible`] means the key was skipped.
//!
//! [`rewrite_for_target`] (in [`compat`]) adapts live replication-stream commands to older targets.

pub mod compat;
mod emulate;
pub mod functions;
mod keys;
pub mod loss;
pub mod score;
mod stream;

use bytes::Bytes;

use crate::cmd::DbCmd;
use crate::net::server_info::ServerInfo;
use crate::rdb::{Flavor, Item};

pub use compat::{rewrite_between, rewrite_for_target};
pub use functions::library_name;
pub use score::format_score;

use keys::KeyState;

/// How the converter writes keys.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// The server the commands are for; decides syntax (PXAT, HSET vs HMSET, XSETID options…).
    pub target: ServerInfo,
    /// Who wrote the RDB (updated by [`Item::Header`]).
    pub source_flavor: Flavor,
    /// RDB version of the source (updated by [`Item::Header`]); used when a `DUMP` payload's own
    /// version trailer cannot be read.
    pub source_rdb_version: u32,
    /// Send captured `DUMP` payloads with `RESTORE` when the target accepts their version. Payloads
    /// not sent that way are decoded and written with plain commands; module values, which cannot
    /// be decoded, are always sent with `RESTORE`.
    pub use_restore: bool,
    /// Most elements (list items, members, field/value pairs, PEL ids) per command.
    pub elements_per_command: usize,
    /// Replace existing keys: `DEL` before collections and streams, `RESTORE … REPLACE`.
    pub replace: bool,
    /// Entry bytes of one stream held back until its groups are known, so that pending entries
    /// of deleted IDs can be recreated exactly (see [`stream`]); a larger stream is written as
    /// it arrives (`sync.max_stream_rebuild_bytes`).
    pub stream_hold_max_bytes: usize,
}

/// Default [`ConvertOptions::stream_hold_max_bytes`]: 32 MiB.
pub const DEFAULT_STREAM_HOLD_MAX_BYTES: usize = stream::HOLD_MAX_BYTES;

impl ConvertOptions {
    /// Options for `target` with defaults: Redis source at the target's RDB version, `RESTORE`
    /// allowed, 512 elements per command, replace existing keys.
    pub fn new(target: ServerInfo) -> Self {
        let source_rdb_version = target.rdb_version();
        ConvertOptions {
            source_flavor: target.flavor,
            target,
            source_rdb_version,
            use_restore: true,
            elements_per_command: 512,
            replace: true,
            stream_hold_max_bytes: DEFAULT_STREAM_HOLD_MAX_BYTES,
        }
    }
}

/// Why an item could not be (fully) turned into commands. Every variant names what it is about.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    /// The key was not written at all.
    #[error("key {}: cannot convert: {reason}", lossy(.key))]
    Unconvertible { key: Bytes, reason: String },
    /// The key was written, but something about it cannot be expressed on the target.
    #[error("key {}: not fully expressible on target: {reason}", lossy(.key))]
    Unsupported { key: Bytes, reason: String },
    /// A function library cannot be loaded on the target.
    #[error("function library {library}: {reason}")]
    Function { library: String, reason: String },
    /// Items arrived out of the documented order (a parser bug or a truncated stream).
    #[error("unexpected item{}: {reason}", .key.as_ref().map(|k| format!(" in key {}", lossy(k))).unwrap_or_default())]
    Sequence { key: Option<Bytes>, reason: String },
}

impl ConvertError {
    /// The key the error is about, if any.
    pub fn key(&self) -> Option<&Bytes> {
        match self {
            ConvertError::Unconvertible { key, .. } | ConvertError::Unsupported { key, .. } => {
                Some(key)
            }
            ConvertError::Sequence { key, .. } => key.as_ref(),
            ConvertError::Function { .. } => None,
        }
    }
}

pub(crate) fn lossy(b: &[u8]) -> String {
    crate::escape::quoted(b)
}

/// Turns RDB items into commands. See the module documentation.
pub struct Converter {
    opts: ConvertOptions,
    db: u32,
    key: Option<KeyState>,
    /// Hash fields whose TTL was dropped since the last [`Converter::take_lost_field_ttls`].
    lost_field_ttls: u64,
    /// Plain string keys merged into `MSET`s as they are converted (see
    /// [`Converter::merge_sets`]): `Some(progress_prefix)`.
    merge_sets: Option<Vec<u8>>,
}

impl Converter {
    pub fn new(mut opts: ConvertOptions) -> Self {
        opts.elements_per_command = opts.elements_per_command.max(1);
        Converter {
            opts,
            db: 0,
            key: None,
            lost_field_ttls: 0,
            merge_sets: None,
        }
    }

    /// Writes runs of plain string keys (no TTL) of one database as `MSET`s directly
    /// ([`crate::sink::coalesce::push_set`]) instead of one `SET` each for the full sync's
    /// coalescing to merge: for a standalone target only (a cluster target's `MSET`s are made
    /// per slot by [`crate::sink::coalesce::batch`]). Keys starting with `progress_prefix` stay
    /// `SET`s. Why: a `SET`'s own argument vector was an allocation and a free per key.
    pub fn merge_sets(&mut self, progress_prefix: &[u8]) {
        self.merge_sets = Some(progress_prefix.to_vec());
    }

    /// Hash fields whose TTL the target cannot hold (their values were written) since the last
    /// call: the caller counts them (see [`loss`]).
    pub fn take_lost_field_ttls(&mut self) -> u64 {
        std::mem::take(&mut self.lost_field_ttls)
    }

    pub fn options(&self) -> &ConvertOptions {
        &self.opts
    }

    /// The database of the commands currently produced.
    pub fn current_db(&self) -> u32 {
        self.db
    }

    /// Consumes one item, appending the commands it completes to `out`. On error, what was pushed
    /// to `out` is still valid (see the module documentation); feeding may continue.
    pub fn feed(&mut self, item: Item, out: &mut Vec<DbCmd>) -> Result<(), ConvertError> {
        match item {
            Item::Header { flavor, version } => {
                self.opts.source_flavor = flavor;
                self.opts.source_rdb_version = version;
                Ok(())
            }
            Item::SelectDb(db) => {
                self.db = db;
                Ok(())
            }
            Item::Aux { .. }
            | Item::AuxSkipped { .. }
            | Item::ResizeDb { .. }
            | Item::SlotInfo { .. }
            | Item::ModuleAux { .. }
            | Item::End { .. } => self.no_open_key("a non-key item"),
            Item::Function { code } => {
                self.no_open_key("FUNCTION")?;
                self.function(code, out)
            }
            Item::KeyStart(header) => {
                let res = self.no_open_key("KeyStart");
                // Drop a dangling key (already reported) and start the new one regardless.
                self.key = None;
                self.db = header.db;
                self.key = Some(KeyState::new(header, self.db));
                res
            }
            Item::Chunk(chunk) => match self.key.as_mut() {
                Some(k) => {
                    let r = k.chunk(chunk, &self.opts, out);
                    self.lost_field_ttls += std::mem::take(&mut k.lost_field_ttls);
                    r
                }
                None => Err(ConvertError::Sequence {
                    key: None,
                    reason: "value chunk outside of a key".into(),
                }),
            },
            Item::KeyEnd { dump } => match self.key.take() {
                Some(k) => k.end(dump, &self.opts, self.merge_sets.as_deref(), out),
                None => Err(ConvertError::Sequence {
                    key: None,
                    reason: "KeyEnd without KeyStart".into(),
                }),
            },
        }
    }

    fn no_open_key(&mut self, what: &str) -> Result<(), ConvertError> {
        match self.key.take() {
            None => Ok(()),
            Some(k) => Err(ConvertError::Sequence {
                key: Some(k.header.key.clone()),
                reason: format!("{what} before KeyEnd; the key was abandoned"),
            }),
        }
    }

    fn function(&mut self, code: Bytes, out: &mut Vec<DbCmd>) -> Result<(), ConvertError> {
        if !self.opts.target.at_least(7, 0) {
            return Err(ConvertError::Function {
                library: library_name(&code),
                reason: "functions need a target >= 7.0".into(),
            });
        }
        out.push(DbCmd {
            db: self.db,
            cmd: functions::load(code),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests;
