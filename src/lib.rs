//! shardsync: one-way, continuous Redis replication (full sync, then the command stream) from a
//! standalone Redis or Redis Cluster into another.
//!
//! The pipeline, in the order a key travels from the source socket to the target socket:
//! - [`source`]: one `ShardLink` actor per source master: handshake, `PSYNC`, the RDB stream
//!   and the command stream, checkpoints of the replication offset;
//! - [`resp`] and [`rdb`]: the pure codecs the link reads with (no I/O, fuzzable);
//! - [`convert`]: RDB items and live commands → the commands the target version accepts;
//! - [`router`]: key positions of every command, CRC16 slots, the target's slot table;
//! - [`sink`]: per-link dispatcher, one `TargetWriter` per target node, cross-slot execution;
//! - [`observe`]: metric catalog, progress, `/status`, `/metrics`, log rate limits;
//! - [`net`]: raw RESP connections, redis-rs clients, server INFO, topology discovery, backoff.
//!
//! [`verify`] compares source and target before a cut-over (`shardsync verify`).
//! [`escape`] quotes bytes from the data or a peer for logs, errors and terminals.
//!
//! [`app`] wires it together (prechecks, actors, shutdown); `src/main.rs` is the thin CLI.

pub mod app;
pub mod checkpoint;
pub mod cmd;
pub mod config;
pub mod convert;
pub mod escape;
pub mod heartbeat;
pub mod load_file;
pub mod net;
pub mod observe;
pub mod outputs;
pub mod precheck;
pub mod precheck_acl;
pub mod precheck_features;
pub mod precheck_functions;
pub mod precheck_tls;
pub mod rdb;
pub mod resp;
pub mod router;
pub mod sink;
pub mod source;
pub mod supervise;
pub mod verify;

/// Wall-clock time in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
