//! Shared integration-test harness for shardsync.
//!
//! Every integration test includes this tree with `mod common;`. It starts real
//! Redis/Valkey servers (never mocks, loopback only, never port 6379), fills them with
//! a typed dataset, drives a command workload, compares two servers key by key, runs the
//! shardsync binary and builds small clusters. Each test uses only part of it, hence the
//! `dead_code` allowance.
//!
//! Typical full-sync + incremental test:
//!
//! ```ignore
//! let src = RedisServer::start(ServerKind::Redis70);
//! let dst = RedisServer::start(ServerKind::Valkey91);
//! let dopts = DatasetOptions::default();
//! populate_typed_dataset(&mut src.client(), src.kind(), &dopts);
//! let mut p = Shardsync::spawn(&["run", "--source", &src.url(), "--target", &dst.url(), ...]);
//! let wopts = WorkloadOptions::default();
//! run_workload(&mut src.client(), src.kind(), &wopts);
//! // wait for shardsync to catch up (e.g. a heartbeat key), then:
//! assert_same(&mut src.client(), &mut dst.client(), &[0, 1, 3, 5], &[b"heartbeat*"]);
//! ```
//!
//! Binaries come from `SHARDSYNC_BIN_DIR` or `.deps/bin` (`scripts/install-deps.sh`);
//! `redis-cli` must be on PATH for clusters. `tests/harness_selftest.rs` validates all of
//! this against native Redis/Valkey replication.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod compare;
pub mod dataset;
pub mod fake_peer;
pub mod run;
pub mod selection;
pub mod server;
pub mod shardsync;
pub mod status;
pub mod tls;
pub mod util;
pub mod workload;

pub use compare::{
    Difference, assert_same, compare_servers, dbsize_all, target_dbsize, target_dbsize_all,
    wait_until,
};
pub use dataset::{DatasetOptions, DatasetSummary, populate_typed_dataset};
pub use server::{RedisServer, ServerKind};
pub use shardsync::Shardsync;
pub use workload::{WorkloadOptions, WorkloadSummary, run_workload};
