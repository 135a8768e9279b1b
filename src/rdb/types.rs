//! The items the streaming RDB parser produces. This is the contract between the parser
//! ([`super::RdbParser`]) and its consumers (the converter that turns items into commands).
//!
//! A key arrives as `KeyStart`, zero or more `Chunk`s, then `KeyEnd`. Large values come out as
//! several chunks so that no consumer needs the whole value in memory.

use bytes::Bytes;

/// Which server family wrote the file: the magic is `REDIS` or `VALKEY`; their type and version
/// numbers differ, so the flavor travels with the version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    Redis,
    Valkey,
}

/// The logical type of a value, as Redis's `TYPE` command names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueKind {
    String,
    List,
    Set,
    ZSet,
    Hash,
    Stream,
    /// A module value: only its opaque serialized form is known (passed on by `RESTORE`).
    Module,
}

/// Stream entry ID `ms-seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Everything known about a key before its value: database, name, type, absolute expiry.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyHeader {
    pub db: u32,
    pub key: Bytes,
    /// The RDB type byte as found in the file (flavor-specific numbering).
    pub rdb_type: u8,
    pub kind: ValueKind,
    /// Absolute expiry in Unix milliseconds (`EXPIRETIME_MS`, or seconds × 1000 for `EXPIRETIME`).
    pub expire_ms: Option<i64>,
    /// `IDLE` opcode value (seconds), if present.
    pub idle_secs: Option<u64>,
    /// `FREQ` opcode value, if present.
    pub freq: Option<u8>,
}

/// One hash field; `expire_ms` is set for hash fields with their own TTL (Redis 7.4+, Valkey 9).
#[derive(Clone, Debug, PartialEq)]
pub struct HashField {
    pub field: Bytes,
    pub value: Bytes,
    pub expire_ms: Option<i64>,
}

/// One stream entry with its fields in order.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamEntry {
    pub id: StreamId,
    pub fields: Vec<(Bytes, Bytes)>,
}

impl StreamEntry {
    /// The memory this entry holds, allocator overhead included: the one estimate behind every
    /// byte limit on held entries (a count of field bytes alone undercounts small entries about
    /// six times: one `"f" "1"` entry takes ~190 bytes).
    pub fn mem_bytes(&self) -> usize {
        std::mem::size_of::<StreamEntry>()
            + heap_bytes(self.fields.capacity() * std::mem::size_of::<(Bytes, Bytes)>())
            + self
                .fields
                .iter()
                .map(|(f, v)| heap_bytes(f.len()) + heap_bytes(v.len()))
                .sum::<usize>()
    }
}

/// What the allocator takes for `n` requested bytes (glibc: 16-byte granules, 8 bytes of
/// header, 32 bytes at least); 0 for nothing requested.
fn heap_bytes(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).div_ceil(16).max(2) * 16
    }
}

/// Stream-level metadata, emitted once after all entries of the stream.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct StreamMeta {
    /// Number of live entries (`XLEN`).
    pub length: u64,
    pub last_id: StreamId,
    /// v2+ (RDB 10): first entry ID, max deleted entry ID, entries added over the stream's life.
    pub first_id: Option<StreamId>,
    pub max_deleted_id: Option<StreamId>,
    pub entries_added: Option<u64>,
}

/// A pending entry of a consumer group: delivered to `consumer` but not acknowledged.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingEntry {
    pub id: StreamId,
    pub consumer: Bytes,
    /// Last delivery time, Unix ms.
    pub delivery_time_ms: u64,
    pub delivery_count: u64,
}

/// A consumer of a group.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamConsumer {
    pub name: Bytes,
    /// Unix ms of the last interaction (`seen-time`).
    pub seen_time_ms: u64,
    /// Unix ms of the last successful read (RDB 11+), if present.
    pub active_time_ms: Option<u64>,
}

/// A consumer group, with its whole PEL (pending entries list) and consumers.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamGroup {
    pub name: Bytes,
    pub last_delivered_id: StreamId,
    /// `entries-read` (RDB 10+), if present.
    pub entries_read: Option<u64>,
    pub pending: Vec<PendingEntry>,
    pub consumers: Vec<StreamConsumer>,
}

/// A piece of the current key's value. The concatenation of all chunks of one kind is the value.
#[derive(Clone, Debug, PartialEq)]
pub enum Chunk {
    /// A slice of a string value, in order.
    StringPart(Bytes),
    ListItems(Vec<Bytes>),
    SetMembers(Vec<Bytes>),
    ZSetMembers(Vec<(Bytes, f64)>),
    HashFields(Vec<HashField>),
    StreamEntries(Vec<StreamEntry>),
    /// After the last `StreamEntries` chunk.
    StreamMeta(StreamMeta),
    /// After `StreamMeta`, one per group.
    StreamGroup(StreamGroup),
}

/// One thing read from an RDB stream, in file order.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// The magic and version: `REDIS0011` → (Redis, 11), `VALKEY080` → (Valkey, 80).
    Header {
        flavor: Flavor,
        version: u32,
    },
    /// `AUX` field (redis-ver, ctime, repl-id, …).
    Aux {
        key: Bytes,
        value: Bytes,
    },
    /// An `AUX` field whose value was longer than [`super::ParseOptions::max_aux_bytes`]: skipped
    /// without being held; `len` is its length.
    AuxSkipped {
        key: Bytes,
        len: u64,
    },
    /// `SELECTDB`: the keys that follow belong to this database.
    SelectDb(u32),
    ResizeDb {
        db_size: u64,
        expires_size: u64,
    },
    /// `SLOT_INFO` (Redis 7.4+ cluster RDBs).
    SlotInfo {
        slot: u64,
        slot_size: u64,
        expires_slot_size: u64,
    },
    /// A function library (`FUNCTION2`, or the older `FUNCTION` opcode): its source code, to be
    /// loaded with `FUNCTION LOAD REPLACE <code>`.
    Function {
        code: Bytes,
    },
    /// A module AUX record (skipped; reported so it can be counted).
    ModuleAux {
        module_id: u64,
    },
    KeyStart(KeyHeader),
    Chunk(Chunk),
    /// End of the current key. `dump` holds the value in `DUMP`/`RESTORE` payload form (type
    /// byte, value bytes, 2-byte little-endian RDB version, CRC64 little-endian) when the parser
    /// captured it (see [`super::ParseOptions::capture_dump_max`]); in that case the key's value
    /// chunks were NOT emitted. Module values are always captured (they cannot be decoded).
    KeyEnd {
        dump: Option<Bytes>,
    },
    /// The `EOF` opcode was read; `checksum` is the file's CRC64 when present and non-zero
    /// (already verified: a mismatch is an error, not an item).
    End {
        checksum: Option<u64>,
    },
}
