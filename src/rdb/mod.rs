//! Streaming RDB decoder: a pure library, no I/O policy. It pulls bytes from any
//! [`std::io::Read`] and yields [`Item`]s one at a time, never holding the whole file; large values
//! come out in chunks. Covers RDB v1 up to the newest Redis formats and Valkey's `VALKEY080`+.
//!
//! ```ignore
//! let mut p = RdbParser::new(reader, ParseOptions::default());
//! while let Some(item) = p.next_item()? { /* ... */ }
//! ```

mod cursor;
mod dump;
mod error;
mod function_payload;
mod intset;
mod lazy;
mod listpack;
mod lzf_stream;
mod module;
mod parser;
mod reader;
mod stream;
mod types;
mod value;
mod walk;
mod ziplist;
mod zipmap;

pub use dump::{DumpReader, DumpValue, parse_dump_payload, validate_dump_payload};
pub use error::{RdbError, RdbErrorKind};
pub use function_payload::{FunctionPayload, parse_function_payload};
pub use parser::RdbParser;
pub use types::*;
pub use walk::CheckSummary;

/// Tuning of the parser's output; none of it changes what is parsed.
#[derive(Clone, Debug)]
pub struct ParseOptions {
    /// Most elements (list items, members, fields, stream entries) per [`Chunk`].
    pub chunk_elements: usize,
    /// Most bytes per [`Chunk::StringPart`] and soft byte budget for other chunks.
    pub chunk_bytes: usize,
    /// Capture a key's value as a `DUMP` payload when its serialized form is at most this many
    /// bytes (0: never, except module values, which are always captured).
    pub capture_dump_max: usize,
    /// Capture string values too. Off by default: a plain `SET` carries a string more cheaply
    /// than `RESTORE` on both sides (measured: 1M small keys in 6.8 s by SET, 10.2 s by RESTORE).
    pub capture_strings: bool,
    /// Longest key name held in memory (Redis allows 512 MiB); a longer one is an error naming
    /// this limit and the offset.
    pub max_key_bytes: usize,
    /// Longest AUX value kept; longer ones are skipped without being held
    /// ([`Item::AuxSkipped`]). AUX values are informational only.
    pub max_aux_bytes: usize,
    /// Longest single string held whole apart from keys and AUX: a collection element, a
    /// function library's code, a stream consumer or group name (a command argument cannot be
    /// longer than Redis's `proto-max-bulk-len`, 512 MiB). String values are not bound by it:
    /// they are streamed in `chunk_bytes` pieces.
    pub max_element_bytes: usize,
    /// Longest encoded blob held whole (ziplist, listpack, intset, zipmap, quicklist node, stream
    /// node); its elements are then decoded lazily, one chunk at a time.
    pub max_blob_bytes: usize,
    /// Most pending entries plus consumers of one stream consumer group held in memory: a
    /// group's PEL must be held whole until its consumers (stored after it) say who owns each
    /// entry. About 64 bytes per entry, so the default holds at most ~512 MiB.
    pub max_group_entries: usize,
}

/// Default [`ParseOptions::max_key_bytes`]: 64 MiB.
pub const DEFAULT_MAX_KEY_BYTES: usize = 64 << 20;
/// Default [`ParseOptions::max_aux_bytes`]: 1 MiB.
pub const DEFAULT_MAX_AUX_BYTES: usize = 1 << 20;
/// Default [`ParseOptions::max_element_bytes`]: 512 MiB, Redis's `proto-max-bulk-len`.
pub const DEFAULT_MAX_ELEMENT_BYTES: usize = 512 << 20;
/// Default [`ParseOptions::max_blob_bytes`]: 512 MiB.
pub const DEFAULT_MAX_BLOB_BYTES: usize = 512 << 20;
/// Default [`ParseOptions::max_group_entries`]: 8 Mi (pending entries + consumers).
pub const DEFAULT_MAX_GROUP_ENTRIES: usize = 8 << 20;

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            chunk_elements: 512,
            chunk_bytes: 1 << 20,
            capture_dump_max: 0,
            capture_strings: false,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_aux_bytes: DEFAULT_MAX_AUX_BYTES,
            max_element_bytes: DEFAULT_MAX_ELEMENT_BYTES,
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            max_group_entries: DEFAULT_MAX_GROUP_ENTRIES,
        }
    }
}
