//! All integration tests in one binary (one link of the crate and the harness instead of one per file).
//! Each module is one former test file; `common` is the real-server harness, `rdb_support` the
//! corpus helpers.

mod common;
mod rdb_support;

mod acl;
mod big_values;
mod cascade;
mod cli_errors;
mod coalesce;
mod command_table;
mod convert_real;
mod corpus_sync;
mod diff_fuzz;
mod e2e_cluster;
mod e2e_standalone;
mod exact_loading;
mod exact_refusals;
mod exact_repairs;
mod exact_windows;
mod exactly_once;
mod exactly_once_cluster;
mod exactly_once_fanout;
mod failure_model;
mod faults;
mod faults_cluster;
mod functions_xver;
mod fuzz_gen;
mod group_limits;
mod harness_selftest;
mod hostile_peers;
mod key_limits;
mod lossy_field_ttl;
mod observability;
mod one_to_many;
mod oracle;
mod per_target;
mod propagated_forms;
mod rdb_corpus;
pub mod rdb_fuzz;
mod rdb_servers;
mod rdb_synthetic;
mod resp_fuzz;
mod rewrite_fuzz;
mod router_keyslot;
mod select_filters;
mod sink_errors;
mod stream_fallback;
mod stream_state;
mod tls;
mod url_passwords;
mod verify;
