//! Shared integration-test harness for shardsync.
//!
//! Every integration test includes this tree with `mod common;`. It starts real
//! Redis/Valkey servers (never mocks, loopback only, never port 6379), fills them with
//! a typed dataset, drives a command workload, compares two servers key by key, runs the
//! shardsync binary and builds small clusters. Each test uses only part of it, hence the
//! `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod compare;
pub mod dataset;
pub mod server;
pub mod shardsync;
pub mod util;
pub mod workload;

pub use compare::{Difference, assert_same, compare_servers, dbsize_all, wait_until};
pub use dataset::{DatasetOptions, DatasetSummary, populate_typed_dataset};
pub use server::{RedisServer, ServerKind};
pub use shardsync::Shardsync;
pub use workload::{WorkloadOptions, WorkloadSummary, run_workload};
