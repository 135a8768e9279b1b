//! Errors of the RDB parser: each says where in the stream it happened and, inside a key, which.

use bytes::Bytes;

/// An RDB parsing failure with its position.
#[derive(Debug, thiserror::Error)]
#[error("RDB parse error at byte {offset}{}: {kind}", key_suffix(.key))]
pub struct RdbError {
    /// Byte offset in the RDB stream (from the magic) where the problem was detected.
    pub offset: u64,
    /// The key being read, if any.
    pub key: Option<Bytes>,
    pub kind: RdbErrorKind,
}

fn key_suffix(key: &Option<Bytes>) -> String {
    match key {
        Some(k) => format!(" (key {})", crate::escape::quoted(k)),
        None => String::new(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RdbErrorKind {
    #[error("not an RDB file (bad magic {0:?})")]
    BadMagic(Vec<u8>),
    #[error("unsupported RDB version {0}")]
    UnsupportedVersion(u32),
    #[error("unknown opcode or value type {0}")]
    UnknownType(u8),
    #[error("unexpected end of stream")]
    UnexpectedEof,
    #[error("checksum mismatch: file says {expected:#018x}, computed {computed:#018x}")]
    Checksum { expected: u64, computed: u64 },
    #[error("corrupt encoding: {0}")]
    Corrupt(String),
    /// A format this parser knows but deliberately does not decode (pre-release formats).
    #[error("unsupported format: {0}")]
    Unsupported(String),
    /// A collection key with no elements. Redis skips such keys when loading; the parser
    /// reports them so they are not silently lost, but the key was consumed whole and nothing of
    /// it was emitted: calling `next_item` again continues with the next key.
    #[error("empty key (a collection with no elements; Redis discards these when loading)")]
    EmptyKey,
    /// A string longer than a configured limit (the option named sets it: `ParseOptions::<option>`,
    /// the `[sync]` setting of the same name).
    #[error(
        "{what} of {len} {unit} exceeds the limit of {limit} {unit}; raise sync.{option} (ParseOptions::{option}) to at least {len} if the source really holds one this large"
    )]
    TooLarge {
        what: String,
        len: u64,
        /// What `len` and `limit` count: `bytes`, or `entries`.
        unit: &'static str,
        option: String,
        limit: u64,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
