//! The metrics catalog and the Prometheus recorder: every series shardsync exports is named here,
//! described once (`# HELP`), and registered with a zero value as soon as its shard or target node
//! is known, so dashboards and alerts see every series before anything happens. The recorder is
//! installed once per process; `/metrics` is served by [`crate::observe::http`] from the returned handle.
//!
//! Emission points: the main happenings (link resumed/failed, full sync started/handed over,
//! write refused, key repaired or not, target stall) go through the typed events of
//! [`crate::observe::events`], which write the log line, the metric and the `/status` field
//! together; hot-path counters are incremented where things happen (`source/link.rs`,
//! `source/rdb_load.rs`, `sink/writer.rs`); per-shard gauges are published once a second from
//! [`crate::observe::progress::ShardState`] by the sampler in [`crate::observe::status`]. Every
//! per-shard series is labelled with the shard's stable name, never the node replicated from now.

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::observe::progress::Phase;

pub const STATE: &str = "shardsync_state";
pub const LINK_STATE: &str = "shardsync_link_state";
pub const RDB_BYTES: &str = "shardsync_rdb_bytes_total";
pub const RDB_RECEIVED: &str = "shardsync_rdb_received_bytes";
pub const RDB_SIZE: &str = "shardsync_rdb_size_bytes";
pub const RDB_KEYS: &str = "shardsync_rdb_keys_total";
pub const FULL_SYNC_PROGRESS: &str = "shardsync_full_sync_progress_ratio";
pub const SOURCE_OFFSET: &str = "shardsync_source_offset_bytes";
pub const APPLIED_OFFSET: &str = "shardsync_applied_offset_bytes";
pub const CHECKPOINT_OFFSET: &str = "shardsync_checkpoint_offset_bytes";
pub const LAG_BYTES: &str = "shardsync_lag_bytes";
pub const LAG_SECONDS: &str = "shardsync_lag_seconds";
pub const COMMANDS: &str = "shardsync_commands_total";
pub const CONVERT_ERRORS: &str = "shardsync_convert_errors_total";
pub const FUNCTION_ERRORS: &str = "shardsync_function_errors_total";
pub const REJECTED_WRITES: &str = "shardsync_rejected_writes_total";
pub const LINK_RESTARTS: &str = "shardsync_link_restarts_total";
pub const FULL_RESYNCS: &str = "shardsync_full_resyncs_total";
pub const TARGET_WRITES: &str = "shardsync_target_writes_total";
pub const TARGET_ERRORS: &str = "shardsync_target_errors_total";
pub const WRITE_BATCH_SECONDS: &str = "shardsync_write_batch_seconds";
pub const TARGET_REDIRECTS: &str = "shardsync_target_redirects_total";
pub const UNROUTABLE_COMMANDS: &str = "shardsync_unroutable_commands_total";
pub const TARGET_STALLS: &str = "shardsync_target_stalls_total";
pub const DB_REFUSED_WRITES: &str = "shardsync_db_refused_writes_total";
pub const KEY_REPAIRS: &str = "shardsync_key_repairs_total";
pub const LINK_ERRORS: &str = "shardsync_link_errors_total";
pub const LOG_SUPPRESSED: &str = "shardsync_log_suppressed_total";
pub const EXEC_ABORTS: &str = "shardsync_exec_aborts_total";
pub const TARGET_FAILED: &str = "shardsync_target_failed";
pub const TARGET_APPLIED_OFFSET: &str = "shardsync_target_applied_offset_bytes";
pub const TARGET_DROPPED_WRITES: &str = "shardsync_target_dropped_writes_total";
pub const FILTERED_COMMANDS: &str = "shardsync_filtered_commands_total";
pub const FILTERED_KEYS: &str = "shardsync_filtered_rdb_keys_total";
pub const LOSSY_CONVERSIONS: &str = "shardsync_lossy_conversions_total";
pub const TASK_FAILURES: &str = "shardsync_task_failures_total";

/// Every metric name, for documentation and tests.
pub const ALL: &[&str] = &[
    STATE,
    LINK_STATE,
    RDB_BYTES,
    RDB_RECEIVED,
    RDB_SIZE,
    RDB_KEYS,
    FULL_SYNC_PROGRESS,
    SOURCE_OFFSET,
    APPLIED_OFFSET,
    CHECKPOINT_OFFSET,
    LAG_BYTES,
    LAG_SECONDS,
    COMMANDS,
    CONVERT_ERRORS,
    FUNCTION_ERRORS,
    REJECTED_WRITES,
    LINK_RESTARTS,
    FULL_RESYNCS,
    TARGET_WRITES,
    TARGET_ERRORS,
    WRITE_BATCH_SECONDS,
    TARGET_REDIRECTS,
    UNROUTABLE_COMMANDS,
    TARGET_STALLS,
    DB_REFUSED_WRITES,
    KEY_REPAIRS,
    LINK_ERRORS,
    LOG_SUPPRESSED,
    EXEC_ABORTS,
    TARGET_FAILED,
    TARGET_APPLIED_OFFSET,
    TARGET_DROPPED_WRITES,
    FILTERED_COMMANDS,
    FILTERED_KEYS,
    LOSSY_CONVERSIONS,
    TASK_FAILURES,
];

/// Buckets of `shardsync_write_batch_seconds` (so Grafana's `histogram_quantile` works).
const BATCH_SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Error kinds of `shardsync_target_errors_total` registered up front (others appear when seen).
const PREREGISTERED_ERROR_KINDS: &[&str] = &["connection", "ERR"];

/// The `kind` labels an error reply may get: its first word when it is one of these, else
/// `other` (the label never comes from the data itself, so its cardinality is fixed).
pub const ERROR_KINDS: &[&str] = &[
    "ERR",
    "WRONGTYPE",
    "OOM",
    "NOPERM",
    "NOAUTH",
    "WRONGPASS",
    "READONLY",
    "BUSY",
    "BUSYKEY",
    "LOADING",
    "MASTERDOWN",
    "MISCONF",
    "NOREPLICAS",
    "NOSCRIPT",
    "EXECABORT",
    "CROSSSLOT",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "MOVED",
    "ASK",
    "UNBLOCKED",
];

/// The `kind` label of an error reply (`-WRONGTYPE …` → `WRONGTYPE`; unknown words → `other`).
pub fn error_kind(reply: &[u8]) -> &'static str {
    let word = reply
        .split(|b| b.is_ascii_whitespace())
        .next()
        .unwrap_or(b"");
    if word.is_empty() {
        return "ERR";
    }
    ERROR_KINDS
        .iter()
        .find(|k| k.as_bytes().eq_ignore_ascii_case(word))
        .copied()
        .unwrap_or("other")
}

/// The `command` label of a command: its name when it is a command shardsync knows (the key
/// table of [`crate::router`]), else `other`, so that a stream of made-up names cannot grow
/// `/metrics`.
pub fn command_label(cmd: &crate::cmd::Cmd) -> &'static str {
    crate::router::keys::lookup(cmd.name()).map_or("other", |e| e.name)
}
/// Redirect kinds of `shardsync_target_redirects_total`.
const REDIRECT_KINDS: &[&str] = &["moved", "ask", "tryagain"];

/// Target nodes seen so far (writers register themselves when they start).
/// Node address → order of appearance (a concurrent map: every writer registers its node).
static NODES: std::sync::LazyLock<dashmap::DashMap<String, usize>> =
    std::sync::LazyLock::new(dashmap::DashMap::new);

/// Installs the global recorder (once per process) and describes every metric.
pub fn install_recorder() -> Result<PrometheusHandle, crate::observe::ObserveError> {
    let why = |e: String| crate::observe::ObserveError::Recorder { why: e };
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(WRITE_BATCH_SECONDS.into()),
            BATCH_SECONDS_BUCKETS,
        )
        .map_err(|e| why(e.to_string()))?
        .install_recorder()
        .map_err(|e| why(format!("cannot install the recorder: {e}")))?;
    describe();
    // The histogram has no labels: register it now so its buckets exist from the start.
    let _ = histogram!(WRITE_BATCH_SECONDS);
    Ok(handle)
}

fn describe() {
    describe_gauge!(
        STATE,
        "1 for the overall state of the run (prechecking, full_sync, incremental, stopping, failed), 0 for the others"
    );
    describe_gauge!(
        LINK_STATE,
        "1 for the current phase of the shard's source link (connecting, full_sync, incremental, backoff, stopped, failed), 0 for the others"
    );
    describe_counter!(
        RDB_BYTES,
        Unit::Bytes,
        "RDB bytes received from the source, over all full syncs"
    );
    describe_gauge!(
        RDB_RECEIVED,
        Unit::Bytes,
        "RDB bytes received in the current (or last) full sync"
    );
    describe_gauge!(
        RDB_SIZE,
        Unit::Bytes,
        "size of the current (or last) RDB transfer; 0 when unknown (diskless source)"
    );
    describe_counter!(
        RDB_KEYS,
        "keys read from the RDB and handed to the writers, over all full syncs"
    );
    describe_gauge!(
        FULL_SYNC_PROGRESS,
        "fraction of the current full sync's RDB received (0..1); 1 once the RDB is applied; 0 while unknown (diskless source)"
    );
    describe_gauge!(
        SOURCE_OFFSET,
        Unit::Bytes,
        "source replication offset read and handed to the writers"
    );
    describe_gauge!(
        APPLIED_OFFSET,
        Unit::Bytes,
        "source replication offset the target has acknowledged"
    );
    describe_gauge!(
        CHECKPOINT_OFFSET,
        Unit::Bytes,
        "source replication offset of the last checkpoint written"
    );
    describe_gauge!(
        LAG_BYTES,
        Unit::Bytes,
        "source offset handed to the writers minus the offset the target acknowledged"
    );
    describe_gauge!(
        LAG_SECONDS,
        Unit::Seconds,
        "how far the target is behind the source in time, from the heartbeat key; before the first heartbeat arrives, the time since the shard started syncing; NaN when the heartbeat is disabled"
    );
    describe_counter!(
        COMMANDS,
        "commands read from the source command stream, by name (names shardsync does not know count as other)"
    );
    describe_counter!(
        CONVERT_ERRORS,
        "RDB keys that could not be converted into target commands"
    );
    describe_counter!(
        FUNCTION_ERRORS,
        "function libraries of the live stream not written to the target (each logged with its name)"
    );
    counter!(FUNCTION_ERRORS).increment(0);
    describe_counter!(
        REJECTED_WRITES,
        "writes of this shard that the target rejected (each logged with its key)"
    );
    describe_counter!(LINK_RESTARTS, "restarts of the shard's source link");
    describe_counter!(FULL_RESYNCS, "full syncs started (the first one included)");
    describe_counter!(TARGET_WRITES, "commands acknowledged by the target node");
    describe_counter!(
        TARGET_ERRORS,
        "target errors by node and kind (connection, or the error reply's first word when it is a known one, else other)"
    );
    describe_counter!(
        TARGET_REDIRECTS,
        "MOVED / ASK / TRYAGAIN replies from a cluster target node, by kind"
    );
    describe_counter!(
        UNROUTABLE_COMMANDS,
        "commands that could not be routed to one target node (cross-slot), by shard and command"
    );
    describe_counter!(
        TARGET_STALLS,
        "times a target node left a reply outstanding longer than target.reply_timeout_ms (each followed by a reconnect)"
    );
    describe_counter!(
        DB_REFUSED_WRITES,
        "writes not applied because the target refused their database (SELECT error): raise `databases` on the target or set sync.db_map"
    );
    describe_counter!(
        KEY_REPAIRS,
        "keys copied from the source after the target rejected a write the source accepted, by result (ok, failed)"
    );
    describe_counter!(
        LINK_ERRORS,
        "source link failures by shard and class: transient (retried with backoff) or permanent (the shard stops as failed)"
    );
    describe_counter!(
        LOG_SUPPRESSED,
        "repeated log lines left out by the rate limit, by kind"
    );
    describe_gauge!(
        TARGET_FAILED,
        "one-to-many: 1 once a target failed for a shard (its writes are dropped until shardsync restarts), by shard and target"
    );
    describe_gauge!(
        TARGET_APPLIED_OFFSET,
        Unit::Bytes,
        "one-to-many: source offset acknowledged by each target, by shard and target (the shard's applied offset is the slowest live target's)"
    );
    describe_counter!(
        TARGET_DROPPED_WRITES,
        "one-to-many: commands not sent to a failed target, by shard and target"
    );
    describe_counter!(
        EXEC_ABORTS,
        "exactly-once write transactions the target refused at queue time (EXECABORT), by node; each is retried without the refused commands"
    );
    describe_counter!(
        FILTERED_COMMANDS,
        "stream commands changed by sync.dbs / sync.filter, by rule: db, key, denied (dropped), split (reduced to its kept keys), repair (kept keys copied from the source instead), flushall_per_db, move_out (MOVE out of the selection sent as DEL), swapdb_refused"
    );
    describe_counter!(
        FILTERED_KEYS,
        "RDB keys skipped by sync.dbs / sync.filter, by rule (db, key)"
    );
    describe_counter!(
        LOSSY_CONVERSIONS,
        "parts of the source's data the target cannot hold, by shard and kind (hash_field_ttl: hash fields written without their TTL); each also logged as a warning with its key"
    );
    describe_counter!(
        TASK_FAILURES,
        "long-lived tasks (heartbeat, checkpointer, target writer, HTTP listener…) that ended unexpectedly (a panic), by task kind; each is logged"
    );
    for kind in crate::supervise::Group::ALL {
        counter!(TASK_FAILURES, "task" => kind.name()).increment(0);
    }
    describe_histogram!(
        WRITE_BATCH_SECONDS,
        Unit::Seconds,
        "time from sending a write batch to the target until its last reply"
    );
}

/// Registers every per-shard series with a zero value.
pub fn register_shard(shard: &str) {
    let s = shard.to_string();
    for p in Phase::ALL {
        gauge!(LINK_STATE, "shard" => s.clone(), "state" => p.name()).set(0.0);
    }
    for g in [
        RDB_RECEIVED,
        RDB_SIZE,
        FULL_SYNC_PROGRESS,
        SOURCE_OFFSET,
        APPLIED_OFFSET,
        CHECKPOINT_OFFSET,
        LAG_BYTES,
        LAG_SECONDS,
    ] {
        gauge!(g, "shard" => s.clone()).set(0.0);
    }
    for c in [
        RDB_BYTES,
        RDB_KEYS,
        CONVERT_ERRORS,
        REJECTED_WRITES,
        LINK_RESTARTS,
        FULL_RESYNCS,
        DB_REFUSED_WRITES,
    ] {
        counter!(c, "shard" => s.clone()).increment(0);
    }
    for result in ["ok", "failed"] {
        counter!(KEY_REPAIRS, "shard" => s.clone(), "result" => result).increment(0);
    }
    for class in ["transient", "permanent"] {
        counter!(LINK_ERRORS, "shard" => s.clone(), "class" => class).increment(0);
    }
    for rule in crate::router::filter::Rule::ALL {
        counter!(FILTERED_COMMANDS, "shard" => s.clone(), "rule" => rule.name()).increment(0);
    }
    for rule in ["db", "key"] {
        counter!(FILTERED_KEYS, "shard" => s.clone(), "rule" => rule).increment(0);
    }
    for kind in crate::convert::loss::KINDS {
        counter!(LOSSY_CONVERSIONS, "shard" => s.clone(), "kind" => *kind).increment(0);
    }
}

/// Registers the series of one target of a shard (one-to-many) with a zero value.
pub fn register_leg(shard: &str, target: &str) {
    let (s, t) = (shard.to_string(), target.to_string());
    gauge!(TARGET_FAILED, "shard" => s.clone(), "target" => t.clone()).set(0.0);
    gauge!(TARGET_APPLIED_OFFSET, "shard" => s.clone(), "target" => t.clone()).set(0.0);
    counter!(TARGET_DROPPED_WRITES, "shard" => s, "target" => t).increment(0);
}

/// Registers every per-target-node series with a zero value (once per node; cheap to repeat).
pub fn register_node(node: &str) {
    let order = NODES.len();
    match NODES.entry(node.to_string()) {
        dashmap::Entry::Occupied(_) => return,
        dashmap::Entry::Vacant(v) => {
            v.insert(order);
        }
    }
    counter!(TARGET_WRITES, "node" => node.to_string()).increment(0);
    counter!(TARGET_STALLS, "node" => node.to_string()).increment(0);
    counter!(EXEC_ABORTS, "node" => node.to_string()).increment(0);
    for kind in PREREGISTERED_ERROR_KINDS {
        counter!(TARGET_ERRORS, "node" => node.to_string(), "kind" => *kind).increment(0);
    }
    for kind in REDIRECT_KINDS {
        counter!(TARGET_REDIRECTS, "node" => node.to_string(), "kind" => *kind).increment(0);
    }
}

/// Target nodes registered so far, in order of appearance.
pub fn nodes() -> Vec<String> {
    let mut v: Vec<(usize, String)> = NODES
        .iter()
        .map(|e| (*e.value(), e.key().clone()))
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}
