//! Exactly-once against refusals the `COMMAND` table cannot predict (issue 12): `OOM` under
//! `maxmemory` + `noeviction`, and `NOPERM` of an ACL user lacking a command. Either aborts a
//! write transaction (`EXECABORT`). The target sits behind the proxy of `exact_windows`, which
//! hides every reply from the `EXECABORT` on, and shardsync is SIGKILLed before it could read it.
//! While transactions were pipelined, a later batch committed a higher position behind the
//! aborted one and the restart resumed past it: its `INCR` was lost. On such targets the writer
//! now sends one transaction at a time (`src/sink/writer/refusals.rs`), so nothing commits past
//! a batch whose outcome is unknown, and the restart sends it again.

use std::time::Duration;

use crate::common;
use crate::exact_loading::{ctr, wait_marker};
use crate::exact_windows::ReplyCutProxy;
use crate::exactly_once::IGNORE;

use common::run::{SyncRun, assert_no_panic};
use common::util::wait_until;
use common::*;

fn incr(src: &RedisServer) {
    let _: i64 = redis::cmd("INCR")
        .arg("ctr")
        .query(&mut src.client())
        .expect("INCR");
}

/// The common run: `refuse` makes the target refuse the next batch, `allow` lifts it; batch N
/// (`first`) is refused behind the proxy, batch N+1 (`INCR ctr`) follows, shardsync is killed
/// and restarted straight to the target; then `ctr` must be 2 and the copy exact (but for the
/// keys of `refused_for_good`, writes the target keeps refusing: reported, not repaired).
#[allow(clippy::too_many_arguments)]
fn refused_batch_then_kill(
    src: &RedisServer,
    dst: &RedisServer,
    target_via_proxy: &str,
    target_direct: &str,
    proxy: &ReplyCutProxy,
    refuse: &dyn Fn(),
    allow: &dyn Fn(),
    first: &dyn Fn(),
    refused_for_good: &[&[u8]],
) {
    // No heartbeats: the only batches are the test's writes.
    let run = SyncRun::without_status(Some(
        "[sync]\nheartbeat_interval_ms = 3600000\nexactly_once = true\n",
    ));
    let mut ss = run.spawn_pair(&src.url(), target_via_proxy, &[]);
    ss.expect_log("RDB received", Duration::from_secs(30));
    wait_marker(src, dst, &ss);
    refuse();
    // The transaction is aborted: its `EXECABORT` and every later reply are lost.
    proxy.cut_around(&ss, first);
    allow();
    incr(src);
    // Pipelined, the later batch commits at once; sent one at a time it waits for the reply the
    // proxy hides (nothing to wait for then).
    let mut dc = dst.client();
    let committed_past = wait_until(Duration::from_secs(3), || {
        redis::cmd("GET")
            .arg("ctr")
            .query::<Option<i64>>(&mut dc)
            .ok()
            .flatten()
            .is_some()
    });
    ss.kill();
    println!("a later batch committed past the aborted one before the kill: {committed_past}");
    let ss2 = run.spawn_pair(&src.url(), target_direct, &[]);
    wait_marker(src, dst, &ss2);
    assert!(
        refused_for_good.is_empty() || ss2.log().contains("target rejected a write"),
        "the refused write is reported:\n{}",
        ss2.log_tail(30)
    );
    assert_eq!(
        ctr(dst),
        Some(2),
        "both INCRs once each; log of the run killed:\n{}\nlog of the restart:\n{}",
        ss.log_tail(30),
        ss2.log_tail(30)
    );
    let mut ignore = IGNORE.to_vec();
    ignore.extend_from_slice(refused_for_good);
    assert_same(&mut src.client(), &mut dst.client(), &[0], &ignore);
    assert_no_panic(&ss2);
}

fn config_set(dst: &RedisServer, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(&mut dst.client())
        .expect("CONFIG SET");
}

/// `OOM`: the target's `maxmemory` (set before shardsync connects) is lowered to 1 byte, a batch
/// is refused, the limit is raised again and a later batch is written.
#[test]
fn oom_refusal_then_sigkill_is_exact() {
    let src = RedisServer::start_with(ServerKind::Redis70, &["--repl-diskless-sync-delay", "0"]);
    let dst = RedisServer::start_with(
        ServerKind::Redis70,
        &["--maxmemory", "100mb", "--maxmemory-policy", "noeviction"],
    );
    let proxy = ReplyCutProxy::start(dst.port(), b"-EXECABORT");
    refused_batch_then_kill(
        &src,
        &dst,
        &proxy.url(),
        &dst.url(),
        &proxy,
        &|| config_set(&dst, "maxmemory", "1"),
        &|| config_set(&dst, "maxmemory", "100mb"),
        &|| incr(&src),
        &[],
    );
}

/// `NOPERM`: shardsync writes as an ACL user without `LPUSH`; a batch holding an `INCR` and an
/// `LPUSH` is refused (for good: on the restart the `INCR` is applied without it; the `LPUSH` is
/// reported — a copy cannot fix a permission — so `list` stays missing).
#[test]
fn noperm_refusal_then_sigkill_is_exact() {
    let src = RedisServer::start_with(ServerKind::Redis70, &["--repl-diskless-sync-delay", "0"]);
    let dst = RedisServer::start(ServerKind::Redis70);
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("writer")
        .arg("on")
        .arg(">writer-pw")
        .arg("+@all")
        .arg("-lpush")
        .arg("~*")
        .arg("&*")
        .query(&mut dst.client())
        .expect("ACL SETUSER");
    let proxy = ReplyCutProxy::start(dst.port(), b"-EXECABORT");
    let via_proxy = proxy.url().replace("redis://", "redis://writer:writer-pw@");
    let direct = format!("redis://writer:writer-pw@127.0.0.1:{}", dst.port());
    refused_batch_then_kill(
        &src,
        &dst,
        &via_proxy,
        &direct,
        &proxy,
        &|| {},
        &|| {},
        &|| {
            let mut p = redis::pipe();
            p.cmd("INCR").arg("ctr").ignore();
            p.cmd("LPUSH").arg("list").arg("a").ignore();
            p.query::<()>(&mut src.client()).expect("pipeline");
        },
        &[b"list"],
    );
}
