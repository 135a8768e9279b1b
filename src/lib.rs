//! shardsync: one-way, continuous Redis replication (full sync, then the command stream) from a
//! standalone Redis or Redis Cluster into another.
//!
//! The crate is a library with a thin CLI (`src/main.rs`). Pure protocol and format code lives in
//! [`resp`], [`rdb`] and [`convert`]; the actors that hold state live in [`source`], [`target`]
//! and [`supervisor`].

pub mod backoff;
pub mod cmd;
pub mod config;
pub mod convert;
pub mod escape;
pub mod net;
pub mod progress;
pub mod rdb;
pub mod resp;
pub mod router;
pub mod server_info;
pub mod source;
pub mod target;

/// Wall-clock time in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
pub mod app;
pub mod checkpoint;
pub mod client;
pub mod heartbeat;
pub mod http;
pub mod load_file;
pub mod lograte;
pub mod precheck;
pub mod status;
pub mod telemetry;
pub mod topology;
