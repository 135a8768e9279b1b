//! Exactly-once delivery into a **cluster target** (3 masters; per-slot transactions with
//! per-slot progress keys, `src/sink/exact_slots.rs`): shardsync is SIGKILLed twelve times at
//! random moments (during the full sync, during `MULTI`/`EXEC` bursts whose keys span slots,
//! under the steady non-idempotent mix of `exactly_once.rs`), then the cluster must equal the
//! source key by key — no duplicate tolerance.

use crate::common;
use crate::exactly_once::Workload;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::cluster::{RedisCluster, StandaloneReader, compare_sources};
use common::compare::{CompareOptions, assert_no_differences};
use common::util::{DetRng, now_ms, wait_until};
use common::*;

const KIND: ServerKind = ServerKind::Redis70;
const HEARTBEAT: &str = "shardsync:heartbeat";
const IGNORE: &[&[u8]] = &[b"shardsync:heartbeat*", b"__shardsync:progress:*"];

fn write_config(dir: &Path, exact: bool) -> PathBuf {
    let path = dir.join("shardsync.toml");
    std::fs::write(
        &path,
        format!("[sync]\nheartbeat_interval_ms = 100\nexactly_once = {exact}\n"),
    )
    .expect("write config");
    path
}

fn spawn(src: &RedisServer, dst: &RedisCluster, state: &Path, config: &Path) -> Shardsync {
    Shardsync::spawn(&[
        "run",
        "--source",
        &src.url(),
        "--target",
        &dst.seed_url(),
        "--state-dir",
        state.to_str().expect("utf-8 path"),
        "--config",
        config.to_str().expect("utf-8 path"),
        "--metrics-addr",
        "off",
    ])
}

/// Waits until a heartbeat written after now reached the cluster.
fn wait_caught_up(ss: &Shardsync, dst: &RedisCluster, timeout: Duration) {
    let after = now_ms();
    let mut c = dst.node_for_key(HEARTBEAT.as_bytes()).client();
    let ok = wait_until(timeout, || {
        let v: Option<String> = redis::cmd("GET")
            .arg(HEARTBEAT)
            .query(&mut c)
            .unwrap_or(None);
        v.and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|v| v >= after)
    });
    assert!(
        ok,
        "cluster did not catch up within {timeout:?}; shardsync log:\n{}",
        ss.log_tail(60)
    );
}

fn differences(src: &RedisServer, dst: &RedisCluster) -> Vec<common::compare::Difference> {
    let mut sc = src.client();
    compare_sources(
        &mut StandaloneReader(&mut sc),
        &mut dst.reader(),
        IGNORE,
        &CompareOptions::default(),
    )
}

/// Twelve SIGKILLs of shardsync into a 3-master cluster target: two during the full sync,
/// three during `MULTI`/`EXEC` bursts, seven under the steady mix. The cluster must equal the
/// source exactly, and the per-slot progress keys must be spread over every master.
#[test]
fn sigkill_twelve_times_cluster_target_is_exact() {
    let t0 = Instant::now();
    let src = RedisServer::start_with(
        KIND,
        &[
            "--enable-debug-command",
            "yes",
            "--repl-backlog-size",
            "128mb",
            "--repl-diskless-sync",
            "yes",
        ],
    );
    let dst = RedisCluster::start(KIND, 3, 0);
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(20_000)
        .arg("bulk")
        .arg(4000)
        .query(&mut src.client())
        .expect("DEBUG POPULATE");
    let state = tempfile::tempdir().expect("state dir");
    let config = write_config(state.path(), true);
    let (load, handle) = Workload::start_cluster(src.url(), 21);
    let mut rng = DetRng::new(0xc1u64);
    let mut resumed = 0;
    for round in 0..12 {
        let mut ss = spawn(&src, &dst, state.path(), &config);
        if round < 2 {
            ss.expect_log("full sync started", Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(150 + rng.below(300)));
            assert!(
                !ss.log().contains("RDB received"),
                "round {round}: the full sync ended before the kill; log:\n{}",
                ss.log_tail(30)
            );
        } else {
            ss.expect_log("replication started", Duration::from_secs(30));
            if !wait_until(Duration::from_secs(60), || {
                let l = ss.log();
                l.contains("partial resync accepted") || l.contains("RDB received")
            }) {
                panic!("round {round}: no stream phase; log:\n{}", ss.log_tail(40));
            }
            if ss.log().contains("partial resync accepted") {
                resumed += 1;
            }
            load.bursts
                .store((5..8).contains(&round), Ordering::Release);
            std::thread::sleep(Duration::from_millis(100 + rng.below(1400)));
        }
        let log = ss.log();
        assert!(!log.contains("panicked"), "shardsync panicked:\n{log}");
        let status = ss.kill();
        assert!(
            Shardsync::killed_by(status, nix::sys::signal::Signal::SIGKILL),
            "round {round}: shardsync exited by itself ({status:?}):\n{}",
            ss.log_tail(40)
        );
        println!(
            "round {round} killed at {:.1?} ops {}",
            t0.elapsed(),
            load.ops.load(Ordering::Relaxed)
        );
        if let Ok(d) = std::env::var("EXACT_KEEP_LOGS") {
            let _ = std::fs::create_dir_all(&d);
            let _ = std::fs::write(format!("{d}/cluster-round-{round}.log"), ss.log());
        }
    }
    load.bursts.store(false, Ordering::Release);
    let mut ss = spawn(&src, &dst, state.path(), &config);
    ss.expect_log("replication started", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1000));
    load.stop.store(true, Ordering::Release);
    handle.join().expect("workload thread");
    wait_caught_up(&ss, &dst, Duration::from_secs(90));
    assert_no_differences(&differences(&src, &dst));
    let log = ss.log();
    assert!(
        log.contains("found the target's progress key"),
        "the last run did not resume from the target:\n{log}"
    );
    assert!(
        !log.contains("full sync started"),
        "the last run did a full sync:\n{log}"
    );
    assert!(
        resumed >= 8,
        "only {resumed} of the restarts resumed with +CONTINUE"
    );
    // The per-slot keys live on the masters that own their slots.
    for m in dst.masters() {
        assert!(
            common::compare::progress_keys(&mut m.client()) > 0,
            "master {} holds no progress key",
            m.port()
        );
    }
    let status = ss.terminate();
    assert!(status.success(), "{status:?}\n{}", ss.log_tail(30));
    println!(
        "EXACTLY-ONCE cluster: 12 SIGKILLs ({resumed} partial resyncs), {} source writes, cluster exact; {:.1?}",
        load.ops.load(Ordering::Relaxed),
        t0.elapsed()
    );
}
