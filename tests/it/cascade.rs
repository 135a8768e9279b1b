//! Cascade A → shardsync #1 → B → shardsync #2 → C, with a native replica of B (`REPLICAOF B`)
//! as the oracle: a typed dataset is fully synced down the chain, a mixed workload runs on A
//! while both instances stream it, and A, B, C and B's replica are compared key by key.
//!
//! Heartbeats: each instance writes its own key into its source (#1 into A, #2 into B). The rule
//! (README "Cascade"): another instance's heartbeat key is ordinary data — #2 copies #1's key from
//! B to C like any key, and never takes it for its own (recognition is by exact name, so #2's
//! default `shardsync:heartbeat` does not claim #1's `shardsync:heartbeat:a-to-b`). Both lags in
//! `/status` stay bounded during the workload, and after both stop (#1 first) no heartbeat key is
//! left anywhere: A, B, C and B's replica are equal with nothing ignored.
//!
//! Misconfigured (both instances on the default key): both write one key into B; #2 warns that
//! someone else writes its key, keeps its lag from its own values, and the data still matches.

use crate::common;
use crate::common::util::now_ms;

use std::time::Duration;

use common::compare::{CompareOptions, assert_no_differences, compare_servers_with};
use common::run::SyncRun;
use common::status::status;
use common::util::wait_until;
use common::workload::{WorkloadOptions, run_workload};
use common::*;

/// #1's heartbeat key (starts with #2's default name on purpose).
const HB1: &str = "shardsync:heartbeat:a-to-b";
/// #2's heartbeat key (the default).
const HB2: &str = "shardsync:heartbeat";

fn get_ms(conn: &mut redis::Connection, key: &str) -> Option<u64> {
    let v: Option<String> = redis::cmd("GET").arg(key).query(conn).ok()?;
    v?.parse().ok()
}

/// `lag_seconds` of the only shard in `/status`.
fn lag_seconds(addr: &str) -> Option<f64> {
    status(addr)?["shards"][0]["lag_seconds"].as_f64()
}

fn spawn(src: &RedisServer, dst: &RedisServer, hb: &str, run: &SyncRun) -> Shardsync {
    let extra = ["--heartbeat-key", hb, "--log-level", "info"];
    run.spawn_pair(&src.url(), &dst.url(), &extra)
}

fn compare(
    a: &mut redis::Connection,
    b: &mut redis::Connection,
    dbs: &[u32],
    ignore: &[&[u8]],
    what: &str,
) {
    let opts = CompareOptions {
        compare_functions: true,
        ..Default::default()
    };
    let diffs = compare_servers_with(a, b, dbs, ignore, &opts);
    if !diffs.is_empty() {
        eprintln!("differences {what}:");
    }
    assert_no_differences(&diffs);
}

#[test]
fn cascade_a_b_c_with_native_replica_of_b() {
    cascade(HB1, HB2);
}

#[test]
fn cascade_with_one_heartbeat_key_for_both_instances() {
    cascade(HB2, HB2);
}

fn cascade(hb1: &str, hb2: &str) {
    let same = hb1 == hb2;
    let kind = ServerKind::Redis70;
    let nodelay = ["--repl-diskless-sync-delay", "0"];
    let a = RedisServer::start_with(kind, &nodelay);
    let b = RedisServer::start_with(kind, &nodelay);
    let c = RedisServer::start(kind);
    let b_replica = RedisServer::start(kind);
    b_replica.replicaof(&b);
    let (mut ac, mut bc, mut cc, mut rc) = (a.client(), b.client(), c.client(), b_replica.client());

    let dataset = DatasetOptions::small();
    let summary = populate_typed_dataset(&mut ac, kind, &dataset);
    assert!(summary.total_keys() > 50, "dataset too small: {summary:?}");

    let (run1, run2) = (SyncRun::new(None), SyncRun::new(None));
    let (addr1, addr2) = (run1.addr.clone(), run2.addr.clone());
    let mut one = spawn(&a, &b, hb1, &run1);
    one.wait_status(
        Duration::from_secs(60),
        "A's full sync applied on B",
        common::status::full_sync_done,
    );
    // #2 starts once B holds the dataset: its full sync (B's RDB) carries it to C, the rest
    // arrives incrementally through both hops.
    let mut two = spawn(&b, &c, hb2, &run2);
    two.wait_status(
        Duration::from_secs(60),
        "B's full sync applied on C",
        common::status::full_sync_done,
    );

    let wopts = WorkloadOptions::default();
    let mut max_lag = (0f64, 0f64);
    let sampler = {
        let (addr1, addr2) = (addr1.clone(), addr2.clone());
        std::thread::spawn(move || {
            let mut m = (0f64, 0f64);
            for _ in 0..40 {
                m.0 = m.0.max(lag_seconds(&addr1).unwrap_or(0.0));
                m.1 = m.1.max(lag_seconds(&addr2).unwrap_or(0.0));
                std::thread::sleep(Duration::from_millis(100));
            }
            m
        })
    };
    run_workload(&mut ac, kind, &wopts);
    let after = now_ms();
    if let Ok(m) = sampler.join() {
        max_lag = m;
    }
    // #1's heartbeat written after the workload reaching C means both hops carried the workload.
    assert!(
        wait_until(Duration::from_secs(60), || get_ms(&mut cc, hb1)
            .is_some_and(|v| v >= after)),
        "#1's heartbeat never reached C through B; #1 log:\n{}\n#2 log:\n{}",
        one.log_tail(30),
        two.log_tail(30)
    );
    assert!(
        wait_until(Duration::from_secs(30), || get_ms(&mut cc, hb2)
            .is_some_and(|v| v >= after)),
        "#2's own heartbeat never reached C; #2 log:\n{}",
        two.log_tail(30)
    );
    // Both lags bounded while the workload ran, and small once caught up.
    assert!(
        max_lag.0 < 10.0 && max_lag.1 < 10.0,
        "lag during the workload: #1 {:.2} s, #2 {:.2} s",
        max_lag.0,
        max_lag.1
    );
    let settled = wait_until(Duration::from_secs(10), || {
        lag_seconds(&addr1).is_some_and(|l| l < 3.0) && lag_seconds(&addr2).is_some_and(|l| l < 3.0)
    });
    assert!(
        settled,
        "lag did not settle: #1 {:?}, #2 {:?}",
        status(&addr1),
        status(&addr2)
    );

    let mut dbs = dataset.dbs.clone();
    for d in wopts.dbs() {
        if !dbs.contains(&d) {
            dbs.push(d);
        }
    }
    // Heartbeat values move every second: compare everything else now.
    let hb: [&[u8]; 2] = [hb1.as_bytes(), hb2.as_bytes()];
    compare(&mut ac, &mut bc, &dbs, &hb, "A vs B");
    compare(&mut bc, &mut cc, &dbs, &hb, "B vs C");
    b_replica.wait_replica_synced(&b, Duration::from_secs(30));
    compare(&mut rc, &mut cc, &dbs, &hb, "B's native replica vs C");

    // #1's heartbeat key is data on B (copied to C, like B's native replica has it), and #2
    // does not measure its lag from it: its applied heartbeat is its own key's value.
    let on_c: i64 = redis::cmd("EXISTS")
        .arg(hb1)
        .query(&mut cc)
        .expect("EXISTS");
    assert_eq!(
        on_c, 1,
        "#1's heartbeat key (data on B) was not copied to C"
    );

    // Stop #1 first: it deletes its key from A and waits until B applied the DEL; #2 carries
    // that DEL on to C; then #2 deletes its own key from B and waits until C applied it.
    let st = one.terminate();
    assert!(st.success(), "#1 exit {st:?}\n{}", one.log_tail(30));
    if !same {
        // (With one shared key #2 keeps writing it into B, so it would come back.)
        assert!(
            wait_until(Duration::from_secs(20), || redis::cmd("EXISTS")
                .arg(hb1)
                .query::<i64>(&mut cc)
                .is_ok_and(|n| n == 0)),
            "#1's heartbeat DEL did not travel B → C; #2 log:\n{}",
            two.log_tail(30)
        );
    }
    let st = two.terminate();
    assert!(st.success(), "#2 exit {st:?}\n{}", two.log_tail(30));
    b_replica.wait_replica_synced(&b, Duration::from_secs(30));
    compare(&mut ac, &mut bc, &dbs, &[], "A vs B after stop");
    compare(&mut bc, &mut cc, &dbs, &[], "B vs C after stop");
    compare(&mut rc, &mut cc, &dbs, &[], "B's replica vs C after stop");
    for p in [&one, &two] {
        assert!(!p.log().contains("panicked"), "panic:\n{}", p.log());
    }
    let warned = two.log().contains("also written by someone else");
    assert_eq!(
        warned,
        same,
        "#2's warning about a shared heartbeat key:\n{}",
        two.log_tail(30)
    );
}
