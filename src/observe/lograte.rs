//! Rate limit for repeated log lines: per (scope, kind) — e.g. (shard or node, error kind) — at
//! most [`LINES_PER_WINDOW`] lines per [`WINDOW`]; the rest are counted, and the next line that
//! is let through carries how many similar ones were left out (`suppressed=K`). The count of
//! left-out lines is also exported as `shardsync_log_suppressed_total{kind}`.
//!
//! The kind must be one of a fixed set (a `&'static str` such as a metric label), and scopes are
//! shards and target nodes, so the table stays small whatever the data holds.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Length of one rate window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Lines let through per (scope, kind) and window.
pub const LINES_PER_WINDOW: u32 = 10;
/// Scopes remembered at most (beyond, the oldest windows are forgotten).
const MAX_ENTRIES: usize = 4096;

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// Concurrent (writers, links and the repairer log from several threads): a `DashMap` locks one
/// shard of the table per call instead of the whole table.
static TABLE: LazyLock<DashMap<(String, &'static str), Window>> = LazyLock::new(DashMap::new);

/// Whether a line of `kind` in `scope` may be logged now: `Some(k)` with the number of similar
/// lines suppressed since the last one that was logged, or `None` to drop this one.
pub fn allow(scope: &str, kind: &'static str) -> Option<u64> {
    allow_at(scope, kind, Instant::now())
}

fn allow_at(scope: &str, kind: &'static str, now: Instant) -> Option<u64> {
    let key = (scope.to_string(), kind);
    if TABLE.len() >= MAX_ENTRIES && !TABLE.contains_key(&key) {
        TABLE.retain(|_, w| now.duration_since(w.started) < WINDOW);
        if TABLE.len() >= MAX_ENTRIES {
            TABLE.clear();
        }
    }
    let mut w = TABLE.entry(key).or_insert_with(|| Window {
        started: now,
        logged: 0,
        suppressed: 0,
    });
    if now.duration_since(w.started) >= WINDOW {
        w.started = now;
        w.logged = 0;
    }
    if w.logged < LINES_PER_WINDOW {
        w.logged += 1;
        Some(std::mem::take(&mut w.suppressed))
    } else {
        w.suppressed += 1;
        metrics::counter!(crate::observe::telemetry::LOG_SUPPRESSED, "kind" => kind).increment(1);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_a_few_through_then_counts() {
        let t0 = Instant::now();
        let scope = "lograte-test-scope";
        for _ in 0..LINES_PER_WINDOW {
            assert_eq!(allow_at(scope, "ERR", t0), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(allow_at(scope, "ERR", t0), None);
        }
        // Another kind has its own budget.
        assert_eq!(allow_at(scope, "WRONGTYPE", t0), Some(0));
        // Next window: the first line says how many were left out.
        let t1 = t0 + WINDOW;
        assert_eq!(allow_at(scope, "ERR", t1), Some(1000));
        assert_eq!(allow_at(scope, "ERR", t1), Some(0));
    }
}
