//! A source with a native replica (the oracle) and shardsync replicating the same source into a
//! target, for tests that compare what shardsync wrote with what the source's own replication
//! conveys: `propagated_forms` and `diff_fuzz`.
//!
//! The native replica is of the source's kind (it reads its master's propagated forms as they
//! are); the target may be any kind. [`Trio::catch_up`] waits until both have applied everything
//! the source has written so far; [`Trio::diffs`] compares target and replica key by key.

use std::time::{Duration, Instant};

use crate::common::compare::{CompareOptions, Difference, compare_servers_with};
use crate::common::run::SyncRun;
use crate::common::util::info_field;
use crate::common::{RedisServer, ServerKind, Shardsync, wait_until};

/// Keys written by shardsync or by the trio itself, ignored in comparisons.
pub const IGNORED: &[&[u8]] = &[b"shardsync:*", b"oracle:*", b"__shardsync:progress:*"];
const MARKER: &str = "oracle:marker";

pub struct Trio {
    pub src: RedisServer,
    pub replica: RedisServer,
    pub dst: RedisServer,
    pub ss: Shardsync,
    _run: SyncRun,
    marker: u64,
}

impl Trio {
    /// Starts all four processes and waits for the full sync (of an empty source) to finish.
    pub fn start(src_kind: ServerKind, dst_kind: ServerKind) -> Trio {
        Self::start_with(src_kind, dst_kind, &[])
    }

    /// [`Trio::start`] with extra `shardsync run` arguments (e.g. filters).
    pub fn start_with(src_kind: ServerKind, dst_kind: ServerKind, extra: &[&str]) -> Trio {
        let src = RedisServer::start(src_kind);
        let replica = RedisServer::start(src_kind);
        let dst = RedisServer::start(dst_kind);
        replica.replicaof(&src);
        replica.wait_replica_synced(&src, Duration::from_secs(30));
        let run = SyncRun::new(None);
        let args = [&["--log-level", "info"][..], extra].concat();
        let ss = run.start_pair(&src.url(), &dst.url(), &args);
        let mut t = Trio {
            src,
            replica,
            dst,
            ss,
            _run: run,
            marker: 0,
        };
        t.catch_up();
        t
    }

    /// Waits until the replica and the target have applied every write made on the source so
    /// far (a marker key written last reaches the target; the replica's offset equals the
    /// master's). Panics with shardsync's log on timeout.
    pub fn catch_up(&mut self) {
        self.marker += 1;
        let mut sc = self.src.client();
        let _: () = redis::cmd("SET")
            .arg(MARKER)
            .arg(self.marker)
            .query(&mut sc)
            .expect("SET marker on source");
        let mut dc = self.dst.client();
        let want = self.marker;
        let start = Instant::now();
        let ok = wait_until(Duration::from_secs(60), || {
            let v: Option<u64> = redis::cmd("GET").arg(MARKER).query(&mut dc).unwrap_or(None);
            v == Some(want)
        });
        assert!(
            ok,
            "marker {want} not on the target after {:?}; shardsync log:\n{}",
            start.elapsed(),
            self.ss.log_tail(60)
        );
        self.replica
            .wait_replica_synced(&self.src, Duration::from_secs(60));
    }

    /// Target against the native replica, in `dbs`.
    pub fn diffs(&self, dbs: &[u32]) -> Vec<Difference> {
        let (sk, dk) = (self.src.kind(), self.dst.kind());
        let opts = CompareOptions {
            compare_functions: sk.has_functions() && dk.has_functions(),
            ..Default::default()
        };
        compare_servers_with(
            &mut self.replica.client(),
            &mut self.dst.client(),
            dbs,
            IGNORED,
            &opts,
        )
    }

    /// Write errors shardsync logged (the target refused a write), one line each.
    pub fn rejected_writes(&self) -> Vec<String> {
        self.ss
            .log()
            .lines()
            .filter(|l| l.contains("rejected") || l.contains("ERROR"))
            .map(str::to_string)
            .collect()
    }

    /// The source's replication offset.
    #[allow(dead_code)]
    pub fn source_offset(&self) -> u64 {
        info_field(&self.src.info("replication"), "master_repl_offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}
