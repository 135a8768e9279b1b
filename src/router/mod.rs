//! Slot routing for a Redis Cluster target (pure library code: no I/O, no actors).
//!
//! - [`slot`]: `CRC16-XMODEM` key → slot hashing with hash tags, and hash-tag search.
//! - [`keys`]: a table of every replication-stream command's key positions and category.
//! - [`split`]: per-command and per-transaction routing decisions, splitting multi-key commands
//!   per slot where that keeps their meaning.
//! - [`filter`]: database selection, key include/exclude lists and the command deny-list.
//! - [`table`]: the slot → node map parsed from `CLUSTER NODES`.

pub mod filter;
pub mod keys;
pub mod slot;
pub mod split;
pub mod table;

pub use keys::{Category, KeyPositions, KeySpec, command_keys};
pub use slot::{SLOTS, hash_tag, hashtag_in, key_slot, tag_for_slot_range};
pub use split::{Routed, Scope, TxRouted, route, route_transaction, route_with};
pub use table::{LineError, NodeAddr, Role, SlotTable, TableError};
