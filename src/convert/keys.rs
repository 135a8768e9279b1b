//! Per-key conversion: strings, lists, sets, sorted sets, hashes (with field TTLs), `RESTORE` of
//! captured `DUMP` payloads (decoded to plain commands when the target cannot read them), and the
//! key's expiry. Streams are delegated to [`super::stream`].

use std::collections::BTreeMap;

use bytes::Bytes;

use super::stream::StreamState;
use super::{ConvertError, ConvertOptions, format_score};
use crate::cmd;
use crate::cmd::{Cmd, DbCmd};
use crate::net::server_info::ServerInfo;
use crate::rdb::{Chunk, HashField, KeyHeader, ParseOptions, ValueKind, parse_dump_payload};

/// Where the commands of one key go; sends `DEL key` before the first collection command when
/// replacing.
pub(super) struct Emit<'a> {
    pub key: &'a Bytes,
    pub db: u32,
    pub started: &'a mut bool,
    pub opts: &'a ConvertOptions,
    pub out: &'a mut Vec<DbCmd>,
}

impl Emit<'_> {
    /// Pushes a command that creates or modifies the value (preceded by `DEL` the first time when
    /// replacing).
    pub fn write(&mut self, cmd: Cmd) {
        if !*self.started {
            *self.started = true;
            if self.opts.replace {
                self.raw(cmd!["DEL", self.key]);
            }
        }
        self.raw(cmd);
    }

    /// Pushes a command as is.
    pub fn raw(&mut self, cmd: Cmd) {
        self.out.push(DbCmd { db: self.db, cmd });
    }
}

/// A command being filled with elements, flushed at `elements_per_command`.
struct Batch {
    args: Vec<Bytes>,
    elems: usize,
    /// Hash fields of this batch with their own TTL: (absolute ms, field).
    field_ttls: Vec<(i64, Bytes)>,
}

/// State of the key between `KeyStart` and `KeyEnd`.
pub(super) struct KeyState {
    pub header: KeyHeader,
    db: u32,
    /// A value command has been pushed for this key.
    started: bool,
    /// Any value chunk was seen.
    chunks_seen: bool,
    /// First string part, held back so that a single-part string becomes one `SET … PXAT`.
    string_first: Option<Bytes>,
    string_parts: u64,
    batch: Option<Batch>,
    stream: StreamState,
    /// Properties that could not be expressed; reported once at `KeyEnd`.
    unsupported: Vec<String>,
    /// Hash fields whose TTL the target cannot hold (taken by [`super::Converter`]).
    pub lost_field_ttls: u64,
}

/// Clamps an absolute expiry so that it is a valid, already-past time when the source's is ≤ 0.
pub(super) fn expire_at(ms: i64) -> i64 {
    ms.max(1)
}

/// True when the target has per-field hash TTLs (`HPEXPIREAT`).
pub(crate) fn has_hash_field_ttl(t: &ServerInfo) -> bool {
    use crate::rdb::Flavor;
    match t.flavor {
        Flavor::Redis => (t.version.0, t.version.1) >= (7, 4),
        Flavor::Valkey => t.version.0 >= 9,
    }
}

/// The RDB version in a `DUMP` payload's trailer (2 bytes LE before the 8-byte CRC).
pub fn dump_payload_version(payload: &[u8]) -> Option<u32> {
    let n = payload.len();
    if n < 11 {
        return None;
    }
    Some(u16::from_le_bytes([payload[n - 10], payload[n - 9]]) as u32)
}

impl KeyState {
    pub fn new(header: KeyHeader, db: u32) -> Self {
        KeyState {
            header,
            db,
            started: false,
            chunks_seen: false,
            string_first: None,
            string_parts: 0,
            batch: None,
            stream: StreamState::default(),
            unsupported: Vec::new(),
            lost_field_ttls: 0,
        }
    }

    fn key(&self) -> Bytes {
        self.header.key.clone()
    }

    fn seq_err(&self, reason: impl Into<String>) -> ConvertError {
        ConvertError::Sequence {
            key: Some(self.key()),
            reason: reason.into(),
        }
    }

    pub fn chunk(
        &mut self,
        chunk: Chunk,
        opts: &ConvertOptions,
        out: &mut Vec<DbCmd>,
    ) -> Result<(), ConvertError> {
        self.chunks_seen = true;
        let expected = match &chunk {
            Chunk::StringPart(_) => ValueKind::String,
            Chunk::ListItems(_) => ValueKind::List,
            Chunk::SetMembers(_) => ValueKind::Set,
            Chunk::ZSetMembers(_) => ValueKind::ZSet,
            Chunk::HashFields(_) => ValueKind::Hash,
            Chunk::StreamEntries(_) | Chunk::StreamMeta(_) | Chunk::StreamGroup(_) => {
                ValueKind::Stream
            }
        };
        if expected != self.header.kind {
            return Err(self.seq_err(format!(
                "{expected:?} chunk in a {:?} key; chunk ignored",
                self.header.kind
            )));
        }
        let key = self.header.key.clone();
        let mut e = Emit {
            key: &key,
            db: self.db,
            started: &mut self.started,
            opts,
            out,
        };
        match chunk {
            Chunk::StringPart(part) => {
                self.string_parts += 1;
                match self.string_first.take() {
                    None if self.string_parts == 1 => self.string_first = Some(part),
                    first => {
                        if let Some(first) = first {
                            e.raw(cmd!["SET", &key, first]);
                        }
                        e.raw(cmd!["APPEND", &key, part]);
                    }
                }
                Ok(())
            }
            Chunk::ListItems(items) => {
                for it in items {
                    push_elem(&mut self.batch, &mut e, "RPUSH", [it], None);
                }
                Ok(())
            }
            Chunk::SetMembers(members) => {
                for m in members {
                    push_elem(&mut self.batch, &mut e, "SADD", [m], None);
                }
                Ok(())
            }
            Chunk::ZSetMembers(members) => {
                let mut nan = 0usize;
                for (m, score) in members {
                    match format_score(score) {
                        Some(s) => push_elem(&mut self.batch, &mut e, "ZADD", [s.into(), m], None),
                        None => nan += 1,
                    }
                }
                if nan > 0 {
                    self.unsupported
                        .push(format!("{nan} members with a NaN score were skipped"));
                }
                Ok(())
            }
            Chunk::HashFields(fields) => {
                let name = if opts.target.at_least(4, 0) {
                    "HSET"
                } else {
                    "HMSET"
                };
                let mut lost = 0usize;
                let ttl_ok = has_hash_field_ttl(&opts.target);
                for HashField {
                    field,
                    value,
                    expire_ms,
                } in fields
                {
                    let ttl = match expire_ms {
                        Some(ms) if ttl_ok => Some(ms),
                        Some(_) => {
                            lost += 1;
                            None
                        }
                        None => None,
                    };
                    push_elem(&mut self.batch, &mut e, name, [field, value], ttl);
                }
                if lost > 0 {
                    self.lost_field_ttls += lost as u64;
                    self.unsupported.push(format!(
                        "{lost} hash field TTLs dropped (target needs Redis >= 7.4 or Valkey >= 9)"
                    ));
                }
                Ok(())
            }
            Chunk::StreamEntries(entries) => self.stream.entries(entries, &mut e),
            Chunk::StreamMeta(meta) => self.stream.meta(meta, &mut e),
            Chunk::StreamGroup(g) => self.stream.group(g, &mut e),
        }
    }

    /// `merge`: see [`super::Converter::merge_sets`].
    pub fn end(
        mut self,
        dump: Option<Bytes>,
        opts: &ConvertOptions,
        merge: Option<&[u8]>,
        out: &mut Vec<DbCmd>,
    ) -> Result<(), ConvertError> {
        // The most common key, a one-part string without a TTL: its name moves into the `SET`
        // (the general path below clones it twice).
        if dump.is_none()
            && self.header.kind == ValueKind::String
            && self.string_parts <= 1
            && self.header.expire_ms.is_none()
            && self.unsupported.is_empty()
        {
            let v = self.string_first.take().unwrap_or_default();
            let key = std::mem::take(&mut self.header.key);
            crate::sink::coalesce::push_set(out, self.db, key, v, merge);
            return Ok(());
        }
        let key = self.key();
        if let Some(payload) = dump {
            if self.chunks_seen {
                return Err(self.seq_err("DUMP payload after value chunks; key skipped"));
            }
            return self.restore(payload, opts, out);
        }
        if self.header.kind == ValueKind::Module {
            return Err(ConvertError::Unconvertible {
                key,
                reason: "module value without a DUMP payload".into(),
            });
        }
        let expire = self.header.expire_ms.map(expire_at);
        let mut e = Emit {
            key: &key,
            db: self.db,
            started: &mut self.started,
            opts,
            out,
        };
        let mut seq_error = None;
        let needs_expire = match self.header.kind {
            ValueKind::String => {
                if self.string_parts <= 1 {
                    let v = self.string_first.take().unwrap_or_default();
                    match expire {
                        Some(ms) if opts.target.at_least(6, 2) => {
                            e.raw(cmd!["SET", &key, v, "PXAT", ms]);
                            false
                        }
                        _ => {
                            e.raw(cmd!["SET", &key, v]);
                            true
                        }
                    }
                } else {
                    true
                }
            }
            ValueKind::Stream => {
                if let Err(err) = self.stream.finish(&mut e, &mut self.unsupported) {
                    seq_error = Some(err);
                }
                true
            }
            _ => {
                flush(&mut self.batch, &mut e);
                if !*e.started {
                    // Empty collection: it cannot exist; make sure the target has none either.
                    if opts.replace {
                        e.raw(cmd!["DEL", &key]);
                    }
                    false
                } else {
                    true
                }
            }
        };
        if needs_expire && let Some(ms) = expire {
            e.raw(cmd!["PEXPIREAT", &key, ms]);
        }
        if let Some(err) = seq_error {
            return Err(err);
        }
        if !self.unsupported.is_empty() {
            return Err(ConvertError::Unsupported {
                key,
                reason: self.unsupported.join("; "),
            });
        }
        Ok(())
    }

    fn restore(
        mut self,
        payload: Bytes,
        opts: &ConvertOptions,
        out: &mut Vec<DbCmd>,
    ) -> Result<(), ConvertError> {
        let key = self.key();
        let version = dump_payload_version(&payload).unwrap_or(opts.source_rdb_version);
        let accepted = opts.target.accepts_dump(opts.source_flavor, version);
        let is_module = self.header.kind == ValueKind::Module;
        if !(is_module || (opts.use_restore && accepted)) {
            // Decode the payload and write the value with plain commands like any other key.
            let value = parse_dump_payload(&payload, &ParseOptions::default()).map_err(|e| {
                ConvertError::Unconvertible {
                    key: key.clone(),
                    reason: format!("DUMP payload (RDB {version}) cannot be decoded: {e}"),
                }
            })?;
            if value.kind != self.header.kind {
                return Err(ConvertError::Unconvertible {
                    key,
                    reason: format!(
                        "DUMP payload holds a {:?} value but the key is a {:?}",
                        value.kind, self.header.kind
                    ),
                });
            }
            for chunk in value.chunks {
                self.chunk(chunk, opts, out)?;
            }
            return self.end(None, opts, None, out);
        }
        let abs = opts.target.at_least(5, 0);
        let expire = self.header.expire_ms.map(expire_at);
        let ttl = if abs { expire.unwrap_or(0) } else { 0 };
        let mut c = cmd!["RESTORE", &key, ttl, payload];
        if opts.replace {
            c.args.push(Bytes::from_static(b"REPLACE"));
        }
        if abs {
            c.args.push(Bytes::from_static(b"ABSTTL"));
        }
        out.push(DbCmd {
            db: self.db,
            cmd: c,
        });
        if !abs && let Some(ms) = expire {
            out.push(DbCmd {
                db: self.db,
                cmd: cmd!["PEXPIREAT", &key, ms],
            });
        }
        if is_module && !accepted {
            return Err(ConvertError::Unsupported {
                key,
                reason: format!("module payload RDB {version} may be rejected by the target"),
            });
        }
        Ok(())
    }
}

/// Adds one element (1 or 2 args) to the current batch of command `name`, flushing when full.
fn push_elem<const N: usize>(
    batch: &mut Option<Batch>,
    e: &mut Emit<'_>,
    name: &'static str,
    args: [Bytes; N],
    field_ttl: Option<i64>,
) {
    let b = batch.get_or_insert_with(|| Batch {
        args: vec![Bytes::from_static(name.as_bytes()), e.key.clone()],
        elems: 0,
        field_ttls: Vec::new(),
    });
    if let Some(ms) = field_ttl {
        b.field_ttls.push((expire_at(ms), args[0].clone()));
    }
    b.args.extend(args);
    b.elems += 1;
    if b.elems >= e.opts.elements_per_command {
        flush(batch, e);
    }
}

/// Sends the current batch, then `HPEXPIREAT` for its fields with TTLs (grouped by time).
fn flush(batch: &mut Option<Batch>, e: &mut Emit<'_>) {
    let Some(b) = batch.take() else { return };
    e.write(Cmd { args: b.args });
    let mut by_time: BTreeMap<i64, Vec<Bytes>> = BTreeMap::new();
    for (ms, f) in b.field_ttls {
        by_time.entry(ms).or_default().push(f);
    }
    for (ms, fields) in by_time {
        let mut c = cmd!["HPEXPIREAT", e.key, ms, "FIELDS", fields.len()];
        c.args.extend(fields);
        e.raw(c);
    }
}
