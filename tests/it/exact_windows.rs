//! Exactly-once windows (issue 12): a large `RESTORE` that the target cannot read is rewritten
//! into plain commands written as several batches (its *pieces*). The target (Redis 6.0) sits
//! behind a TCP proxy that forwards every command but loses the replies from a given one on
//! (a real network can do that: the target ran the commands, shardsync never hears of it), so
//! the writer stalls and reconnects with pieces the target already applied; or shardsync is
//! SIGKILLed in that state and restarted. Either way the target must equal the source key by
//! key. Before pieces carried their own position, the reconnect resent the applied pieces and
//! the list came out with duplicated elements.

use crate::common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::run::{SyncRun, assert_no_panic, wait_server_caught_up};
use common::util::wait_until;
use common::*;

const IGNORE: &[&[u8]] = &[b"shardsync:heartbeat*"];
/// Elements of the list: 40 `RPUSH` of 512 when rewritten, 5 batches of 8 commands.
pub(crate) const ELEMENTS: usize = 20_000;

/// Forwards both ways; once armed, the first connection whose replies contain `pattern` loses
/// every reply from there on (its commands still reach the target). Trips once.
/// (Also used by `exact_loading`.)
pub(crate) struct ReplyCutProxy {
    port: u16,
    pub(crate) armed: Arc<AtomicBool>,
    pub(crate) tripped: Arc<AtomicBool>,
}

impl ReplyCutProxy {
    pub(crate) fn start(upstream: u16, pattern: &'static [u8]) -> ReplyCutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let armed = Arc::new(AtomicBool::new(false));
        let tripped = Arc::new(AtomicBool::new(false));
        let (a, t) = (armed.clone(), tripped.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut c1, mut u1) = (
                    client.try_clone().expect("clone"),
                    up.try_clone().expect("clone"),
                );
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = c1.read(&mut buf) {
                        if n == 0 || u1.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = u1.shutdown(std::net::Shutdown::Both);
                });
                let (mut c2, mut u2) = (client, up);
                let (a, t) = (a.clone(), t.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    let mut tail: Vec<u8> = Vec::new();
                    let mut deaf = false;
                    while let Ok(n) = u2.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if deaf {
                            continue;
                        }
                        let mut window = std::mem::take(&mut tail);
                        let old = window.len();
                        window.extend_from_slice(&buf[..n]);
                        let hit = a.load(Ordering::SeqCst) && !t.load(Ordering::SeqCst);
                        let at = if hit {
                            window.windows(pattern.len()).position(|w| w == pattern)
                        } else {
                            None
                        };
                        // `window[..old]` was sent already.
                        let send = match at {
                            Some(i) if !t.swap(true, Ordering::SeqCst) => {
                                deaf = true;
                                &window[old..i.max(old)]
                            }
                            _ => &window[old..],
                        };
                        if c2.write_all(send).is_err() {
                            break;
                        }
                        let keep = pattern.len().min(window.len());
                        tail = window[window.len() - keep..].to_vec();
                    }
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        ReplyCutProxy {
            port,
            armed,
            tripped,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Arms the proxy, runs `write` and waits until it cut the replies; panics with the log
    /// of `ss` if it never does.
    pub(crate) fn cut_around(&self, ss: &Shardsync, write: impl FnOnce()) {
        self.armed.store(true, Ordering::SeqCst);
        write();
        assert!(
            wait_until(Duration::from_secs(20), || self
                .tripped
                .load(Ordering::SeqCst)),
            "the replies were never cut; log:\n{}",
            ss.log_tail(40)
        );
    }
}

/// The run of these tests (no `/status`: each is restarted or killed), with `sync` lines
/// (e.g. the heartbeat interval): exactly-once, batches of 8 commands, a 1 s reply deadline.
pub(crate) fn exact_run_with(sync: &str) -> SyncRun {
    SyncRun::without_status(Some(&format!(
        "[sync]\n{sync}exactly_once = true\nbatch_max_commands = 8\n[target]\nreply_timeout_ms = 1000\n"
    )))
}

/// [`exact_run_with`] a heartbeat every 100 ms.
pub(crate) fn exact_run() -> SyncRun {
    exact_run_with("heartbeat_interval_ms = 100\n")
}

/// Waits (30 s) until `dst` holds everything written to the source so far.
pub(crate) fn wait_caught_up(ss: &Shardsync, dst: &RedisServer) {
    wait_server_caught_up(ss, dst, Duration::from_secs(30));
}

/// A source holding a list of [`ELEMENTS`] (Redis 7.0: its `DUMP` is RDB 10, which Redis 6.0
/// cannot read), the target behind the proxy, shardsync caught up; then the list is restored
/// as `big` and the proxy cut the replies of its second batch on. Returns the run (`ss` on it).
fn restore_with_replies_cut() -> (RedisServer, RedisServer, SyncRun, Shardsync) {
    let src = RedisServer::start_with(ServerKind::Redis70, &["--repl-diskless-sync-delay", "0"]);
    let dst = RedisServer::start(ServerKind::Redis60);
    let payload = big_list_dump(&src);
    // The 10th RPUSH of 512 answers 5120: the replies of the second batch on are lost.
    let proxy = ReplyCutProxy::start(dst.port(), b":5120\r\n");
    let run = exact_run();
    let mut ss = run.spawn_pair(&src.url(), &proxy.url(), &[]);
    ss.expect_log("RDB received", Duration::from_secs(30));
    wait_caught_up(&ss, &dst);
    proxy.cut_around(&ss, || restore(&src, &payload));
    (src, dst, run, ss)
}

/// Makes a list `template` of [`ELEMENTS`] on `src` (a Redis 7.0) and returns its `DUMP`
/// payload (RDB 10, above 64 KiB: rewritten in pieces for an older target).
pub(crate) fn big_list_dump(src: &RedisServer) -> Vec<u8> {
    let mut sc = src.client();
    let elems: Vec<String> = (0..ELEMENTS).map(|i| format!("element-{i:06}")).collect();
    for chunk in elems.chunks(1000) {
        let _: i64 = redis::cmd("RPUSH")
            .arg("template")
            .arg(chunk)
            .query(&mut sc)
            .expect("RPUSH");
    }
    let payload: Vec<u8> = redis::cmd("DUMP")
        .arg("template")
        .query(&mut sc)
        .expect("DUMP");
    assert!(payload.len() > 64 << 10, "payload {} bytes", payload.len());
    payload
}

fn restore(src: &RedisServer, payload: &[u8]) {
    let _: () = redis::cmd("RESTORE")
        .arg("big")
        .arg(0)
        .arg(payload)
        .query(&mut src.client())
        .expect("RESTORE");
}

fn assert_exact(src: &RedisServer, dst: &RedisServer) {
    let len: usize = redis::cmd("LLEN")
        .arg("big")
        .query(&mut dst.client())
        .expect("LLEN");
    assert_eq!(len, ELEMENTS, "the rewritten list on the target");
    assert_same(&mut src.client(), &mut dst.client(), &[0], IGNORE);
}

/// The writer loses the replies of committed pieces, stalls, reconnects: it must not write
/// those pieces again.
#[test]
fn restore_pieces_after_a_reconnect_are_exact() {
    let (src, dst, _run, mut ss) = restore_with_replies_cut();
    ss.expect_log("stalled", Duration::from_secs(20));
    wait_caught_up(&ss, &dst);
    assert_exact(&src, &dst);
    assert!(
        ss.log()
            .contains("the target had committed batches whose reply was lost"),
        "the reconnect found the committed pieces:
{}",
        ss.log_tail(40)
    );
    assert_no_panic(&ss);
}

/// shardsync is SIGKILLed while the target holds some pieces whose replies it never got; the
/// restart (straight to the target) resumes before the `RESTORE` and writes it whole again.
#[test]
fn restore_pieces_after_a_crash_are_exact() {
    let (src, dst, run, mut ss) = restore_with_replies_cut();
    std::thread::sleep(Duration::from_millis(300));
    ss.kill();
    let partial: usize = redis::cmd("LLEN")
        .arg("big")
        .query(&mut dst.client())
        .expect("LLEN");
    assert!(partial > 0, "the target holds pieces of the rewrite");
    let _: i64 = redis::cmd("INCR")
        .arg("after")
        .query(&mut src.client())
        .expect("INCR");
    let ss2 = run.spawn_pair(&src.url(), &dst.url(), &[]);
    wait_caught_up(&ss2, &dst);
    assert_exact(&src, &dst);
    assert_no_panic(&ss2);
}

/// A batch holding a command Redis 6.0 refuses at queue time (`GEOSEARCHSTORE`), with later
/// batches pipelined behind it, and shardsync SIGKILLed before it heard the transaction's
/// outcome. Before the writer kept such commands out of its transactions, the target answered
/// `EXECABORT`, the later batches committed a higher position, and the restart resumed after
/// the aborted batch: its `INCR`s and `RPUSH`es were lost. Now the batch commits without the
/// refused command and that key is copied from the source.
#[test]
fn queue_time_refusal_behind_pipelined_batches_is_exact() {
    let src = RedisServer::start_with(ServerKind::Redis70, &["--repl-diskless-sync-delay", "0"]);
    let dst = RedisServer::start(ServerKind::Redis60);
    let mut sc = src.client();
    common::util::run(&mut sc, &common::dataset::geoadd_places(), "GEOADD");
    let proxy = ReplyCutProxy::start(dst.port(), b"-EXECABORT");
    // The default reply deadline (10 s): no reconnect before the kill.
    let sync = SyncRun::without_status(Some(
        "[sync]\nheartbeat_interval_ms = 100\nexactly_once = true\n",
    ));
    let run = |target: &str| sync.spawn_pair(&src.url(), target, &[]);
    let mut ss = run(&proxy.url());
    ss.expect_log("RDB received", Duration::from_secs(30));
    wait_caught_up(&ss, &dst);
    proxy.armed.store(true, Ordering::SeqCst);
    crate::exactly_once::write_batch_with_a_refused_command(&mut sc);
    std::thread::sleep(Duration::from_millis(300));
    // Later batches (and heartbeats) commit behind it.
    let _: i64 = redis::cmd("INCR")
        .arg("later")
        .query(&mut sc)
        .expect("INCR");
    std::thread::sleep(Duration::from_millis(700));
    ss.kill();
    let ss2 = run(&dst.url());
    wait_caught_up(&ss2, &dst);
    let ctr: Option<i64> = redis::cmd("GET")
        .arg("ctr")
        .query(&mut dst.client())
        .expect("GET");
    assert_eq!(ctr, Some(2), "both INCRs of the batch, once each");
    assert_same(&mut src.client(), &mut dst.client(), &[0], IGNORE);
    assert_no_panic(&ss2);
}
