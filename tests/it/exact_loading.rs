//! Exactly-once across a target restart (issue 12): the writer must not pipeline into a target
//! that is still loading its AOF. A restarted Redis accepts connections while it loads and
//! answers `MULTI`/`EXEC`, but refuses data commands with `LOADING`: a batch read during the
//! load aborts, a batch read just after it commits with a higher position. Before the writer
//! checked readiness on connect, a reconnect with nothing unacknowledged went straight to
//! pipelining; on the next reconnect the progress key (past the aborted batch) made it skip that
//! batch as "committed, reply lost", and its writes were lost — about 1 run in 55 of
//! `exactly_once::target_sigkill_restarts_from_aof_exact`.
//!
//! Here the window is made wide and certain: the target (AOF, `appendfsync always`) holds
//! 40,000 keys in an RDB-preamble AOF loaded with `key-load-delay` (seconds of `LOADING`), and it
//! sits behind the proxy of `exact_windows`, which hides every reply from the first
//! `MULTI` answered `+OK` then `LOADING` on (so the writer cannot notice the abort before the
//! later batch commits).

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common;
use crate::exact_windows::ReplyCutProxy;
use crate::exactly_once::IGNORE;

use common::run::{SyncRun, assert_no_panic};
use common::util::{info_field, now_ms, wait_until};
use common::*;

fn raw(port: u16) -> Option<redis::Connection> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    c.get_connection_with_timeout(Duration::from_millis(500))
        .ok()
}

/// `loading:1` in the server's `INFO persistence` (allowed while loading).
fn loading(port: u16) -> Option<bool> {
    let mut c = raw(port)?;
    let info: String = redis::cmd("INFO").arg("persistence").query(&mut c).ok()?;
    info_field(&info, "loading").map(|v| v == "1")
}

/// A connection of shardsync's exactly-once writer is open on the server.
fn writer_connected(port: u16) -> bool {
    let Some(mut c) = raw(port) else {
        return false;
    };
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut c)
        .unwrap_or_default();
    list.contains("name=shardsync-exact-")
}

/// Sets `marker` (to the time) on the source and waits until the target has it (everything
/// before it was applied).
pub(crate) fn wait_marker(src: &RedisServer, dst: &RedisServer, ss: &Shardsync) {
    common::run::wait_marker(
        ss,
        &mut src.client(),
        &mut dst.client(),
        &now_ms().to_string(),
        Duration::from_secs(60),
    );
}

/// `ctr` on `dst` (the tests' counter, one `INCR` a batch).
pub(crate) fn ctr(dst: &RedisServer) -> Option<i64> {
    redis::cmd("GET")
        .arg("ctr")
        .query(&mut dst.client())
        .expect("GET ctr")
}

/// The writer reconnects to a target that is loading its AOF, with nothing unacknowledged; an
/// `INCR` reaches the target during the load, another after it. Both must apply once each.
#[test]
fn reconnect_during_aof_load_loses_nothing() {
    let src = RedisServer::start_with(
        ServerKind::Redis70,
        &[
            "--enable-debug-command",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ],
    );
    let mut dst = RedisServer::start_with(
        ServerKind::Redis70,
        &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            // A slow load (about 4 s for 40,000 keys), serving clients every 1 KB read.
            "--key-load-delay",
            "50",
            "--loading-process-events-interval-bytes",
            "1024",
        ],
    );
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(40_000)
        .query(&mut src.client())
        .expect("DEBUG POPULATE");
    let proxy = ReplyCutProxy::start(dst.port(), b"+OK\r\n-LOADING");
    // No heartbeats (nothing in flight when the target dies); a reply deadline longer than the
    // load, so the writer hears nothing until the later batch committed.
    let run = SyncRun::without_status(Some(
        "[sync]\nheartbeat_interval_ms = 3600000\nexactly_once = true\n[target]\nreply_timeout_ms = 15000\n",
    ));
    let mut ss = run.spawn_pair(&src.url(), &proxy.url(), &[]);
    ss.expect_log("RDB received", Duration::from_secs(30));
    wait_marker(&src, &dst, &ss);
    // The AOF's base becomes an RDB holding every key (so `key-load-delay` slows its load).
    let _: () = redis::cmd("BGREWRITEAOF")
        .query::<String>(&mut dst.client())
        .map(|_| ())
        .expect("BGREWRITEAOF");
    assert!(
        wait_until(Duration::from_secs(60), || {
            let info = dst.info("persistence");
            info_field(&info, "aof_rewrite_in_progress").as_deref() == Some("0")
                && info_field(&info, "aof_rewrite_scheduled").as_deref() == Some("0")
                && info_field(&info, "aof_last_bgrewrite_status").as_deref() == Some("ok")
        }),
        "AOF rewrite did not finish"
    );
    proxy.armed.store(true, Ordering::SeqCst);
    let port = dst.port();
    let mut sc = src.client();
    dst.kill();
    // The restart runs on this thread (a server dies with the thread that spawned it); the
    // writes during the load come from another.
    let watcher = std::thread::spawn(move || {
        // The writer reconnects while the target loads (its backoff is well under the load).
        if !wait_until(Duration::from_secs(15), || loading(port) == Some(true)) {
            return (false, false);
        }
        wait_until(Duration::from_secs(15), || {
            writer_connected(port) || loading(port) == Some(false)
        });
        let _: i64 = redis::cmd("INCR")
            .arg("ctr")
            .query(&mut sc)
            .expect("INCR 1");
        std::thread::sleep(Duration::from_millis(200));
        (loading(port) == Some(true), true)
    });
    dst.restart(); // returns once the load is over
    let (during_load, saw_loading) = watcher.join().expect("watcher thread");
    assert!(saw_loading, "the target never reported loading");
    let tripped = proxy.tripped.load(Ordering::SeqCst);
    let mut sc = src.client();
    // After the load: this batch commits whatever the writer knows.
    let _: i64 = redis::cmd("INCR")
        .arg("ctr")
        .query(&mut sc)
        .expect("INCR 2");
    wait_marker(&src, &dst, &ss);
    println!(
        "first INCR sent while loading: {during_load}; a batch was refused by LOADING behind the proxy: {tripped}"
    );
    assert_eq!(
        ctr(&dst),
        Some(2),
        "both INCRs applied once each; shardsync log:\n{}",
        ss.log_tail(40)
    );
    assert_same(&mut src.client(), &mut dst.client(), &[0], IGNORE);
    assert_no_panic(&ss);
    assert!(ss.is_running(), "shardsync stopped:\n{}", ss.log_tail(40));
}
