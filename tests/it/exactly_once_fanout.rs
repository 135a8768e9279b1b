//! Exactly-once with several targets (issue 12, one-to-many): one source, two targets, each
//! holding its own progress key. shardsync is SIGKILLed again and again (during the full sync,
//! during `MULTI`/`EXEC` bursts, under the steady non-idempotent mix of `exactly_once.rs`) while
//! one target (a Redis 6.2, so its commands are converted apart from the 7.0 one's) is paused
//! now and then (`CLIENT PAUSE … WRITE`), and held paused before each kill of the stream
//! phase until the other has committed past it: the targets are at different positions when
//! the kill comes (checked on their progress keys), the restart resumes at the lower one and
//! the target ahead skips what it already holds. Each target must then equal the source key by
//! key, no tolerance. The same with a standalone and a 3-master cluster target
//! (`exactly_once = true`), pausing one and then the other, so that each is ahead in turn; a
//! cluster source (three shards, a leg per shard and target) into two standalone targets; and a
//! target that fails alone, then rejoins at the restart.

use crate::common;
use crate::exactly_once::{
    IGNORE, Kills, Workload, assert_exact, assert_last_run_resumed, populated_source,
};
use crate::exactly_once_cluster::{
    cluster_source_load, differences as cluster_differences, heartbeats_at_least,
    wait_caught_up as cluster_caught_up,
};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::cluster::RedisCluster;
use common::compare::{CompareOptions, assert_no_differences, compare_servers_with};
use common::run::{
    SyncRun, assert_no_panic, sigkill, stop, wait_server_caught_up as wait_caught_up,
};
use common::util::{DetRng, wait_until};
use common::*;

/// The run of these tests (no `/status`: restarted again and again), its config holding
/// `[[target]]` tables `(name, url)`.
fn fanout_run(source: &str, targets: &[(&str, String)], exact: &str) -> SyncRun {
    let t: Vec<(&str, String, &str)> = targets.iter().map(|(n, u)| (*n, u.clone(), "")).collect();
    fanout_run_with(source, &t, exact)
}

/// [`fanout_run`] with extra lines in each `[[target]]` table `(name, url, extra)`.
fn fanout_run_with(source: &str, targets: &[(&str, String, &str)], exact: &str) -> SyncRun {
    let mut text = format!("[source]\nurl = \"{source}\"\n\n");
    for (name, url, extra) in targets {
        text.push_str(&format!(
            "[[target]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n\n"
        ));
    }
    text.push_str(&format!(
        "[sync]\nheartbeat_interval_ms = 100\nexactly_once = {exact}\n"
    ));
    SyncRun::without_status(Some(&text))
}

/// The offset in the target's one progress key (`<replid>:<offset>:<db>[:<pieces>]`), `None`
/// when it holds none or `full-sync`.
fn progress_offset(dst: &RedisServer) -> Option<u64> {
    let mut c = dst.client();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("__shardsync:progress:*")
        .query(&mut c)
        .unwrap_or_default();
    assert!(keys.len() <= 1, "one progress key per target: {keys:?}");
    let v: Option<String> = redis::cmd("GET")
        .arg(keys.first()?.as_slice())
        .query(&mut c)
        .ok()?;
    v?.split(':').nth(1)?.parse().ok()
}

/// Both targets hold a position and the two differ.
fn positions_differ(a: Option<u64>, b: Option<u64>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a != b)
}

/// A target's writes held (`CLIENT PAUSE … WRITE`) across a kill ([`hold_behind`]): a thread
/// renews a 1 s pause every 100 ms rather than one long pause, because a Redis 6.2 keeps a
/// pause's end time after `CLIENT UNPAUSE`, so that the pausers' next 250 ms pause would last
/// until that end.
struct Held<'a> {
    dst: &'a RedisServer,
    stop: Arc<AtomicBool>,
    renew: std::thread::JoinHandle<()>,
}

impl<'a> Held<'a> {
    /// Pauses `dst`'s writes (in effect when this returns) until [`Held::release`].
    fn new(dst: &'a RedisServer) -> Held<'a> {
        let stop = Arc::new(AtomicBool::new(false));
        let (paused, on) = std::sync::mpsc::channel();
        let mut c = dst.client();
        let s = stop.clone();
        let renew = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                let r: redis::RedisResult<()> = redis::cmd("CLIENT")
                    .arg("PAUSE")
                    .arg(1000)
                    .arg("WRITE")
                    .query(&mut c);
                let _ = paused.send(r.map_err(|e| e.to_string()));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        match on.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("CLIENT PAUSE on {}: {e}", dst.port()),
            Err(_) => panic!("the pause thread of {} ended", dst.port()),
        }
        Held { dst, stop, renew }
    }

    /// After the kill: waits until the killed run's writer connections are gone from the held
    /// target (their unexecuted commands dropped with them), then ends the pause.
    fn release(self) {
        let mut c = self.dst.client();
        let gone = wait_until(Duration::from_secs(10), || {
            redis::cmd("CLIENT")
                .arg("LIST")
                .query::<String>(&mut c)
                .is_ok_and(|l| !l.contains("name=shardsync-exact-"))
        });
        self.stop.store(true, Ordering::Release);
        self.renew.join().expect("pause renewing thread");
        assert!(
            gone,
            "the killed run's connections stayed on {}",
            self.dst.port()
        );
        let _: () = redis::cmd("CLIENT")
            .arg("UNPAUSE")
            .query(&mut c)
            .expect("CLIENT UNPAUSE");
    }
}

/// Right before a kill: once both targets hold a position (`held_at` and `other_at` read
/// them), holds the writes of `held` (the target, or the one cluster master, the pausers slow
/// down this round) and waits until the other target has committed past it, 30 s at most
/// each. A paused server drops a closed client's unexecuted commands, so nothing the killed
/// run sent `held` commits after the kill: the targets are at different positions when the
/// kill comes (not only when a random pause happens to cover it, nor only once the run has
/// committed anything at all, which under load can take longer than the kill's random
/// delay). Returns the hold, to [`Held::release`] after the kill.
fn hold_behind<'a>(
    ss: &Shardsync,
    held: &'a RedisServer,
    held_at: impl Fn() -> Option<u64>,
    other_at: impl Fn() -> Option<u64>,
) -> Held<'a> {
    wait_until(Duration::from_secs(30), || {
        held_at().is_some() && other_at().is_some()
    });
    let hold = Held::new(held);
    let t = Instant::now();
    let apart = wait_until(
        Duration::from_secs(30),
        || matches!((held_at(), other_at()), (Some(h), Some(o)) if o > h),
    );
    println!(
        "held {} for {:.1?}: the other target {} (held at {:?}, other at {:?})",
        held.port(),
        t.elapsed(),
        if apart {
            "got ahead"
        } else {
            "did NOT get ahead"
        },
        held_at(),
        other_at()
    );
    if !apart {
        println!("log tail:\n{}", ss.log_tail(20));
    }
    hold
}

/// Pauses `dst`'s writes for 250 ms every ~600 ms while `on` (its writers fall behind).
fn pauser(
    dst: &RedisServer,
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let url = dst.url();
    std::thread::spawn(move || {
        let mut c = redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("pauser connection");
        let mut rng = DetRng::new(7);
        while !stop.load(Ordering::Acquire) {
            if on.load(Ordering::Acquire) {
                let _: redis::RedisResult<()> = redis::cmd("CLIENT")
                    .arg("PAUSE")
                    .arg(250)
                    .arg("WRITE")
                    .query(&mut c);
            }
            std::thread::sleep(Duration::from_millis(400 + rng.below(400)));
        }
    })
}

/// Keys of the source that differ on `dst` (databases 0 and 2, progress keys left out).
fn differing(src: &RedisServer, dst: &RedisServer) -> usize {
    compare_servers_with(
        &mut src.client(),
        &mut dst.client(),
        &[0, 2],
        IGNORE,
        &CompareOptions::default(),
    )
    .len()
}

/// The last run of a 12-kill test (`log`) resumed from the targets' keys without a full sync;
/// at least 8 of the restarts resumed with `+CONTINUE` and the targets' keys named different
/// positions after at least 3 kills (else the per-target replay filter was not exercised).
fn assert_resumed_apart(log: &str, resumed: usize, apart: usize) {
    assert_last_run_resumed(
        log,
        "every target holds a position: resuming at the lowest",
        resumed,
    );
    assert!(
        apart >= 3,
        "the targets were at different positions after only {apart} kills: the per-target replay filter was not exercised"
    );
}

/// Twelve SIGKILLs with two standalone targets (7.0 and 6.2), the 6.2 one paused now and then
/// (with `exact`, held behind the other before each kill from round 2 on: [`hold_behind`]);
/// `exact`: the default `exactly_once = "auto"`, else `false`. Returns the keys differing on each target (always 0 with `exact`: asserted).
fn twelve_kills_two_targets(exact: bool) -> (usize, usize) {
    let t0 = Instant::now();
    let src = populated_source(20_000, 4000);
    let fast = RedisServer::start(ServerKind::Redis70);
    let slow = RedisServer::start(ServerKind::Redis62);
    let run = fanout_run(
        &src.url(),
        &[("fast", fast.url()), ("slow", slow.url())],
        // The default ("auto") is exactly-once on standalone targets, one or several.
        if exact { "\"auto\"" } else { "false" },
    );
    let (load, handle) = Workload::start(src.url(), 21);
    let (pause_on, pause_stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let pausing = pauser(&slow, pause_on.clone(), pause_stop.clone());
    let mut kills = Kills::new(&load, 0xfa_0a7, Duration::from_secs(60), t0, "fanout");
    let mut apart = 0;
    for round in 0..12 {
        let ss = run.spawn(&[]);
        pause_on.store(round >= 2, Ordering::Release);
        let mut held = None;
        kills.kill_when(ss, round, |ss| {
            if exact && round >= 2 {
                pause_on.store(false, Ordering::Release);
                held = Some(hold_behind(
                    ss,
                    &slow,
                    || progress_offset(&slow),
                    || progress_offset(&fast),
                ));
            }
        });
        pause_on.store(false, Ordering::Release);
        match held {
            Some(h) => h.release(),
            // Let a pause run out: the killed run's transactions the slow target still held in
            // its socket buffer are then applied or gone (the next run's fence closes the
            // connection).
            None => std::thread::sleep(Duration::from_millis(300)),
        }
        if exact && round >= 2 {
            let (f, s) = (progress_offset(&fast), progress_offset(&slow));
            println!("round {round}: progress fast {f:?} slow {s:?}");
            apart += usize::from(positions_differ(f, s));
        }
    }
    load.bursts.store(false, Ordering::Release);
    pause_stop.store(true, Ordering::Release);
    pausing.join().expect("pauser thread");
    let mut ss = run.spawn(&[]);
    load.finish_on(&mut ss, handle, Duration::from_millis(1000));
    let resumed = kills.resumed;
    wait_caught_up(&ss, &fast, Duration::from_secs(90));
    wait_caught_up(&ss, &slow, Duration::from_secs(90));
    let log = ss.log();
    let diffs = (differing(&src, &fast), differing(&src, &slow));
    println!(
        "EXACTLY-ONCE fan-out (exactly_once = {exact}): 12 SIGKILLs ({resumed} partial resyncs, targets at different positions after {apart}), {} source writes; differing keys: fast {}, slow {}; {:.1?}",
        load.ops.load(Ordering::Relaxed),
        diffs.0,
        diffs.1,
        t0.elapsed()
    );
    if exact {
        assert_exact(&src, &fast);
        assert_exact(&src, &slow);
        assert_resumed_apart(&log, resumed, apart);
    }
    stop(&mut ss);
    diffs
}

/// Twelve SIGKILLs, two standalone targets at different positions: each equals the source.
#[test]
fn sigkill_twelve_times_two_targets_each_exact() {
    twelve_kills_two_targets(true);
}

/// The same run with `exactly_once = false` (the at-least-once baseline; prints how many keys
/// differ, asserts nothing). Run by hand: `cargo test --test it exactly_once_fanout:: -- --ignored`.
#[test]
#[ignore]
fn sigkill_twelve_times_two_targets_at_least_once_baseline() {
    twelve_kills_two_targets(false);
}

/// The highest offset among the progress keys on one cluster master `m` (the keys of its
/// slots, and the shard key when it lives there), `None` when it holds none.
fn master_progress_offset(m: &RedisServer) -> Option<u64> {
    let mut c = m.client();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("__shardsync:progress:*")
        .query(&mut c)
        .unwrap_or_default();
    keys.into_iter()
        .filter_map(|k| {
            let v: Option<String> = redis::cmd("GET").arg(k).query(&mut c).unwrap_or(None);
            v?.split(':').nth(1)?.parse::<u64>().ok()
        })
        .max()
}

/// The highest offset among the progress keys of every master of `dst`, `None` when there is
/// none.
fn cluster_progress_offset(dst: &RedisCluster) -> Option<u64> {
    dst.masters()
        .into_iter()
        .filter_map(master_progress_offset)
        .max()
}

/// Twelve SIGKILLs into a standalone Redis 7.0 target and a 3-master cluster target with
/// `exactly_once = true`: the standalone one is paused now and then in rounds 2–6 (the cluster
/// gets ahead: its per-slot filter with a floor), a cluster master in rounds 7–11 (the
/// standalone target gets ahead of that master's slots), and held behind before each of those
/// kills ([`hold_behind`]). Both must equal the source key by key.
#[test]
fn sigkill_twelve_times_standalone_and_cluster_targets_each_exact() {
    let t0 = Instant::now();
    let src = populated_source(20_000, 4000);
    let one = RedisServer::start(ServerKind::Redis70);
    let cluster = RedisCluster::start(ServerKind::Redis70, 3, 0);
    let run = fanout_run(
        &src.url(),
        &[("one", one.url()), ("cluster", cluster.seed_url())],
        "true",
    );
    let (load, handle) = Workload::start_cluster(src.url(), 33);
    let pausers_stop = Arc::new(AtomicBool::new(false));
    let (pause_one, pause_master) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let master = cluster.masters()[1];
    let pausers = [
        pauser(&one, pause_one.clone(), pausers_stop.clone()),
        pauser(master, pause_master.clone(), pausers_stop.clone()),
    ];
    let mut kills = Kills::new(
        &load,
        0xc1_0a7,
        Duration::from_secs(60),
        t0,
        "fanout-cluster",
    );
    let mut apart = 0;
    // The cluster's position this round: its highest while the standalone target is held
    // back (rounds 2–6), the held master's own while that master is (rounds 7–11; the other
    // masters' slots go on, so the highest says nothing about it).
    let cluster_at = |round: usize| {
        if round >= 7 {
            master_progress_offset(master)
        } else {
            cluster_progress_offset(&cluster)
        }
    };
    for round in 0..12 {
        let ss = run.spawn(&[]);
        pause_one.store((2..7).contains(&round), Ordering::Release);
        pause_master.store(round >= 7, Ordering::Release);
        let mut held = None;
        kills.kill_when(ss, round, |ss| {
            pause_one.store(false, Ordering::Release);
            pause_master.store(false, Ordering::Release);
            held = match round {
                0..2 => None,
                2..7 => Some(hold_behind(
                    ss,
                    &one,
                    || progress_offset(&one),
                    || cluster_at(round),
                )),
                _ => Some(hold_behind(
                    ss,
                    master,
                    || cluster_at(round),
                    || progress_offset(&one),
                )),
            };
        });
        match held {
            Some(h) => h.release(),
            None => std::thread::sleep(Duration::from_millis(300)),
        }
        if round >= 2 {
            let (o, c) = (progress_offset(&one), cluster_at(round));
            let which = if round >= 7 { "held master" } else { "highest" };
            println!("round {round}: progress standalone {o:?} cluster ({which}) {c:?}");
            apart += usize::from(positions_differ(o, c));
        }
    }
    load.bursts.store(false, Ordering::Release);
    pausers_stop.store(true, Ordering::Release);
    for p in pausers {
        p.join().expect("pauser thread");
    }
    let mut ss = run.spawn(&[]);
    load.finish_on(&mut ss, handle, Duration::from_millis(1000));
    let resumed = kills.resumed;
    wait_caught_up(&ss, &one, Duration::from_secs(90));
    cluster_caught_up(&ss, &cluster, Duration::from_secs(90));
    assert_exact(&src, &one);
    assert_no_differences(&cluster_differences(&src, &cluster));
    let log = ss.log();
    assert_resumed_apart(&log, resumed, apart);
    stop(&mut ss);
    println!(
        "EXACTLY-ONCE fan-out standalone + cluster: 12 SIGKILLs ({resumed} partial resyncs; targets at different positions after {apart}), {} source writes, both exact; {:.1?}",
        load.ops.load(Ordering::Relaxed),
        t0.elapsed()
    );
}

/// The failure rule with exactly-once: a target frozen (SIGSTOP) past its `fail_after_ms` fails
/// alone while the other goes on under the mixed workload; shardsync is then SIGKILLed, the
/// target thawed, and shardsync restarted (then SIGKILLed twice more at random moments): the
/// restart resumes at the failed target's (much older) position, the other skips what it
/// holds, and both equal the source key by key.
#[test]
fn failed_target_rejoins_at_restart_and_both_are_exact() {
    let t0 = Instant::now();
    let src = populated_source(2_000, 100);
    let good = RedisServer::start(ServerKind::Redis70);
    let frozen = RedisServer::start(ServerKind::Redis62);
    let fast = "reply_timeout_ms = 500\nfail_after_ms = 2000";
    let run = fanout_run_with(
        &src.url(),
        &[("good", good.url(), fast), ("frozen", frozen.url(), fast)],
        "true",
    );
    let (load, handle) = Workload::start(src.url(), 44);
    let mut ss = run.spawn(&[]);
    ss.expect_log("replication started", Duration::from_secs(30));
    wait_caught_up(&ss, &good, Duration::from_secs(60));
    wait_caught_up(&ss, &frozen, Duration::from_secs(60));
    frozen.signal(nix::sys::signal::Signal::SIGSTOP);
    ss.expect_log("target failed for this shard", Duration::from_secs(30));
    // The live target goes on alone for a while.
    wait_caught_up(&ss, &good, Duration::from_secs(60));
    sigkill(&mut ss);
    frozen.signal(nix::sys::signal::Signal::SIGCONT);
    std::thread::sleep(Duration::from_millis(300));
    let (g, f) = (progress_offset(&good), progress_offset(&frozen));
    println!("after the kill: progress good {g:?} frozen {f:?}");
    assert!(
        matches!((g, f), (Some(g), Some(f)) if g > f),
        "the live target is not ahead of the failed one: {g:?} {f:?}"
    );
    let mut kills = Kills::new(&load, 0xfa11, Duration::from_secs(60), t0, "fanout-failed");
    for round in 2..4 {
        kills.kill(run.spawn(&[]), round);
    }
    let mut ss = run.spawn(&[]);
    load.finish_on(&mut ss, handle, Duration::from_millis(500));
    wait_caught_up(&ss, &good, Duration::from_secs(90));
    wait_caught_up(&ss, &frozen, Duration::from_secs(90));
    assert_exact(&src, &good);
    assert_exact(&src, &frozen);
    let log = ss.log();
    assert!(
        !log.contains("full sync started"),
        "the last run did a full sync:\n{log}"
    );
    stop(&mut ss);
    println!(
        "EXACTLY-ONCE fan-out, failed target: good ahead of frozen by {} bytes at the kill, {} source writes, both exact; {:.1?}",
        g.unwrap_or(0).saturating_sub(f.unwrap_or(0)),
        load.ops.load(Ordering::Relaxed),
        t0.elapsed()
    );
}

/// Each source shard's offset in `dst`'s progress keys (`…:<shard>@<target>` → offset).
fn offsets_by_shard(dst: &RedisServer) -> std::collections::BTreeMap<String, u64> {
    let mut c = dst.client();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("__shardsync:progress:*")
        .query(&mut c)
        .unwrap_or_default();
    keys.into_iter()
        .filter_map(|k| {
            let v: Option<String> = redis::cmd("GET").arg(&k).query(&mut c).unwrap_or(None);
            let o = v?.split(':').nth(1)?.parse().ok()?;
            let shard = k.rsplit_once('@')?.0.to_string();
            Some((shard, o))
        })
        .collect()
}

/// A 3-master cluster source (three shards, each with a leg per target) into a Redis 7.0 and a
/// Redis 6.2 standalone target (the default `"auto"`), the 6.2 one paused now and then: six
/// SIGKILLs under `INCR`/`RPUSH`/`APPEND`/`LPOP`/`MULTI`/`EXEC` on every source master, then
/// each target equals the source key by key.
#[test]
fn cluster_source_into_two_targets_sigkill_six_times_each_exact() {
    let src = RedisCluster::start_with(ServerKind::Redis70, 3, 0, &["--repl-backlog-size", "64mb"]);
    let one = RedisServer::start(ServerKind::Redis70);
    let old = RedisServer::start(ServerKind::Redis62);
    let loads_stop = Arc::new(AtomicBool::new(false));
    let loads = cluster_source_load(&src, &loads_stop);
    let run = fanout_run(
        &src.seed_url(),
        &[("one", one.url()), ("old", old.url())],
        "\"auto\"",
    );
    let (pause_on, pause_stop) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    );
    let pausing = pauser(&old, pause_on.clone(), pause_stop.clone());
    let mut rng = DetRng::new(0xc5);
    let mut ss = run.spawn(&[]);
    ss.expect_log("RDB received", Duration::from_secs(30));
    let mut apart = 0;
    for round in 0..6 {
        std::thread::sleep(Duration::from_millis(300 + rng.below(900)));
        sigkill(&mut ss);
        std::thread::sleep(Duration::from_millis(300));
        let (a, b) = (offsets_by_shard(&one), offsets_by_shard(&old));
        println!("round {round}: one {a:?} old {b:?}");
        apart += a
            .iter()
            .filter(|(s, o)| b.get(*s).is_some_and(|p| p != *o))
            .count();
        ss = run.spawn(&[]);
        ss.expect_log("replication started", Duration::from_secs(30));
    }
    pause_stop.store(true, Ordering::Release);
    pausing.join().expect("pauser thread");
    std::thread::sleep(Duration::from_millis(1500));
    loads_stop.store(true, Ordering::Release);
    for l in loads {
        l.join().expect("workload thread");
    }
    let after = common::util::now_ms();
    for t in [&one, &old] {
        let mut c = t.client();
        let ok = common::util::wait_until(Duration::from_secs(90), || {
            heartbeats_at_least(&mut common::cluster::StandaloneReader(&mut c), 3, after)
        });
        assert!(
            ok,
            "target {} did not catch up:\n{}",
            t.port(),
            ss.log_tail(60)
        );
    }
    for t in [&one, &old] {
        let mut c = t.client();
        let diffs = common::cluster::compare_sources(
            &mut src.reader(),
            &mut common::cluster::StandaloneReader(&mut c),
            IGNORE,
            &CompareOptions::default(),
        );
        assert_no_differences(&diffs);
    }
    let log = ss.log();
    assert_no_panic(&ss);
    assert_eq!(
        log.matches("every target holds a position: resuming at the lowest")
            .count()
            + log.matches("gets a full sync on every target").count(),
        3,
        "every shard decides from its targets' keys:\n{log}"
    );
    assert!(
        apart >= 3,
        "the targets' shard positions differed only {apart} times: the replay filter was not exercised"
    );
    stop(&mut ss);
    println!(
        "EXACTLY-ONCE fan-out, cluster source: 6 SIGKILLs, 3 shards x 2 targets, shard positions apart {apart} times, both exact"
    );
}

/// A large `RESTORE` (a Redis 7.0 `DUMP` above 64 KiB, which a Redis 6.2 target cannot read:
/// rewritten into pieces of plain commands for it) followed by an `RPUSH` on the same key,
/// replayed at a restart to a 6.2 target that had already committed both (the other 6.2 target,
/// same conversion group, was paused behind it): the pieces must be skipped like their stream
/// command, or the key is rewritten to its state before the `RPUSH`, which is then skipped.
/// Once alone, once inside a source `MULTI`/`EXEC` block (which the target behind holds open
/// while the pieces are written).
#[test]
fn large_restore_replayed_on_the_target_ahead_is_skipped() {
    use crate::exact_windows::{ELEMENTS, big_list_dump};
    let src = RedisServer::start_with(ServerKind::Redis70, &["--repl-backlog-size", "64mb"]);
    let behind = RedisServer::start(ServerKind::Redis62);
    let ahead = RedisServer::start(ServerKind::Redis62);
    let payload = big_list_dump(&src);
    let mut sc = src.client();
    let run = fanout_run(
        &src.url(),
        &[("behind", behind.url()), ("ahead", ahead.url())],
        "\"auto\"",
    );
    let mut ss = run.spawn(&[]);
    ss.expect_log("replication started", Duration::from_secs(30));
    wait_caught_up(&ss, &behind, Duration::from_secs(60));
    wait_caught_up(&ss, &ahead, Duration::from_secs(60));
    let mut pc = behind.client();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(30_000)
        .arg("WRITE")
        .query(&mut pc)
        .expect("CLIENT PAUSE");
    let _: () = redis::cmd("RESTORE")
        .arg("big")
        .arg(0)
        .arg(&payload)
        .query(&mut sc)
        .expect("RESTORE");
    let _: i64 = redis::cmd("RPUSH")
        .arg("big")
        .arg("after")
        .query(&mut sc)
        .expect("RPUSH");
    // The same inside a source transaction (its pieces carry no position).
    let _: () = redis::pipe()
        .atomic()
        .cmd("RESTORE")
        .arg("big2")
        .arg(0)
        .arg(&payload)
        .ignore()
        .cmd("RPUSH")
        .arg("big2")
        .arg("after")
        .ignore()
        .query(&mut sc)
        .expect("MULTI RESTORE RPUSH EXEC");
    let _: () = redis::cmd("SET")
        .arg("marker")
        .arg(1)
        .query(&mut sc)
        .expect("SET");
    let mut oc = ahead.client();
    assert!(
        common::util::wait_until(Duration::from_secs(30), || {
            redis::cmd("EXISTS")
                .arg("marker")
                .query::<i64>(&mut oc)
                .unwrap_or(0)
                == 1
        }),
        "the target ahead never got past the RESTORE; log:\n{}",
        ss.log_tail(40)
    );
    sigkill(&mut ss);
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut pc)
        .expect("CLIENT UNPAUSE");
    std::thread::sleep(Duration::from_millis(300));
    let (n, o) = (progress_offset(&behind), progress_offset(&ahead));
    assert!(
        matches!((n, o), (Some(n), Some(o)) if o > n),
        "the target is not ahead: behind {n:?} ahead {o:?}"
    );
    let mut ss = run.spawn(&[]);
    ss.expect_log("replication started", Duration::from_secs(30));
    wait_caught_up(&ss, &behind, Duration::from_secs(60));
    wait_caught_up(&ss, &ahead, Duration::from_secs(60));
    for t in [&behind, &ahead] {
        for key in ["big", "big2"] {
            let len: usize = redis::cmd("LLEN")
                .arg(key)
                .query(&mut t.client())
                .expect("LLEN");
            assert_eq!(len, ELEMENTS + 1, "target {}: list {key}", t.port());
        }
        assert_same(&mut src.client(), &mut t.client(), &[0], IGNORE);
    }
    let log = ss.log();
    assert!(log.contains("ahead=1"), "no target was ahead:\n{log}");
    stop(&mut ss);
}
