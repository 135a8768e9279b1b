//! Key repairs across a crash (issue 12, exactly-once): a key diverged on the target (a string
//! where the source has a list), so the stream's `RPUSH` is rejected (`WRONGTYPE`) and the key is
//! repaired from the source. shardsync is SIGKILLed inside a repair's window and restarted; the
//! target must then equal the source key by key.
//!
//! The windows are built deterministically with a TCP proxy in front of the *source*: the
//! replication connection (the one that sent `PSYNC`) is forwarded up to the end of each stop
//! pattern in turn and held there until the test releases it (the source keeps writing; its
//! offset moves on). Other connections (the repairer's reads, the heartbeat) pass, except that
//! while `refuse_dumps` is set a connection sending `DUMP` is closed (a source read that fails).

use crate::common;
use crate::exact_windows::{exact_run, exact_run_with, wait_caught_up};
use crate::exactly_once::IGNORE;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::cluster::RedisCluster;
use common::compare::{CompareOptions, Difference, assert_no_differences, compare_servers_with};
use common::run::{SyncRun, sigkill};
use common::util::wait_until;
use common::*;

/// See the module doc.
struct StopProxy {
    port: u16,
    /// Stops forwarded so far (on the replication connection).
    reached: Arc<AtomicUsize>,
    /// Stops released: after stop `k` the stream is held until `released > k`.
    released: Arc<AtomicUsize>,
    refuse_dumps: Arc<AtomicBool>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl StopProxy {
    fn start(upstream: u16, stops: &'static [&'static [u8]]) -> StopProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let reached = Arc::new(AtomicUsize::new(0));
        let released = Arc::new(AtomicUsize::new(0));
        let refuse_dumps = Arc::new(AtomicBool::new(false));
        let (r, l, d) = (reached.clone(), released.clone(), refuse_dumps.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let repl = Arc::new(AtomicBool::new(false));
                let (mut c1, mut u1) = (
                    client.try_clone().expect("clone"),
                    up.try_clone().expect("clone"),
                );
                let (repl1, d) = (repl.clone(), d.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = c1.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if find(&buf[..n], b"PSYNC").is_some() {
                            repl1.store(true, Ordering::SeqCst);
                        }
                        if d.load(Ordering::SeqCst) && find(&buf[..n], b"DUMP").is_some() {
                            break;
                        }
                        if u1.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = u1.shutdown(std::net::Shutdown::Both);
                    let _ = c1.shutdown(std::net::Shutdown::Both);
                });
                let (mut c2, mut u2) = (client, up);
                let (r, l) = (r.clone(), l.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    let mut held: Vec<u8> = Vec::new();
                    let _ = u2.set_read_timeout(Some(Duration::from_millis(200)));
                    'read: loop {
                        let n = match u2.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => n,
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) =>
                            {
                                // Nothing followed a kept tail: it does not begin a stop (the
                                // source writes a command's bytes together), e.g. the end of
                                // the RDB.
                                if c2.write_all(&held).is_err() {
                                    break;
                                }
                                held.clear();
                                continue;
                            }
                            Err(_) => break,
                        };
                        held.extend_from_slice(&buf[..n]);
                        loop {
                            if !repl.load(Ordering::SeqCst) {
                                if c2.write_all(&held).is_err() {
                                    break 'read;
                                }
                                held.clear();
                                break;
                            }
                            while r.load(Ordering::SeqCst) > l.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            let k = r.load(Ordering::SeqCst);
                            let Some(stop) = stops.get(k) else {
                                if c2.write_all(&held).is_err() {
                                    break 'read;
                                }
                                held.clear();
                                break;
                            };
                            if let Some(at) = find(&held, stop) {
                                let end = at + stop.len();
                                if c2.write_all(&held[..end]).is_err() {
                                    break 'read;
                                }
                                held.drain(..end);
                                r.store(k + 1, Ordering::SeqCst);
                                continue;
                            }
                            // The stop may straddle two reads: keep a tail that begins it.
                            let keep = (1..stop.len().min(held.len() + 1))
                                .rev()
                                .find(|&n| held.ends_with(&stop[..n]))
                                .unwrap_or(0);
                            let send = held.len() - keep;
                            if c2.write_all(&held[..send]).is_err() {
                                break 'read;
                            }
                            held.drain(..send);
                            break;
                        }
                    }
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        StopProxy {
            port,
            reached,
            released,
            refuse_dumps,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_reached(&self, k: usize, ss: &Shardsync) {
        assert!(
            wait_until(Duration::from_secs(30), || self
                .reached
                .load(Ordering::SeqCst)
                >= k),
            "the stream never reached stop {k}; log:\n{}",
            ss.log_tail(40)
        );
    }

    fn release(&self, k: usize) {
        self.released.store(k, Ordering::SeqCst);
    }
}

/// Source, target, proxy; the source holds a few keys; shardsync (exactly-once, run `run`
/// through the proxy) caught up.
fn setup(
    stops: &'static [&'static [u8]],
) -> (RedisServer, RedisServer, StopProxy, SyncRun, Shardsync) {
    let src = RedisServer::start_with(ServerKind::Redis70, &["--repl-diskless-sync-delay", "0"]);
    let dst = RedisServer::start(ServerKind::Redis70);
    let mut sc = src.client();
    exec(&mut sc, &["SET", "plain", "v"]);
    exec(&mut sc, &["RPUSH", "other", "x", "y"]);
    let proxy = StopProxy::start(src.port(), stops);
    let run = exact_run();
    let ss = run.spawn_pair(&proxy.url(), &dst.url(), &[]);
    wait_caught_up(&ss, &dst);
    (src, dst, proxy, run, ss)
}

/// The run with a heartbeat every 10 minutes: the stream carries only the test's writes.
fn quiet_run() -> SyncRun {
    exact_run_with("heartbeat_interval_ms = 600000\n")
}

/// `run` from the source through `proxy` into `dst`.
fn spawn_via(run: &SyncRun, proxy: &StopProxy, dst: &impl Target) -> Shardsync {
    run.spawn_pair(&proxy.url(), &dst.target_url(), &[])
}

/// Writes a marker on the source and waits until the target has it.
fn wait_marker(ss: &Shardsync, src: &RedisServer, dst: &impl Target, value: &str) {
    common::run::wait_marker(
        ss,
        &mut src.client(),
        &mut dst.conn("marker"),
        value,
        Duration::from_secs(30),
    );
}

/// How many of `keys` are lists on `s`.
fn lists(s: &RedisServer, keys: &[String]) -> usize {
    let mut c = s.client();
    keys.iter()
        .filter(|k| {
            redis::cmd("TYPE")
                .arg(k.as_str())
                .query::<String>(&mut c)
                .is_ok_and(|t| t == "list")
        })
        .count()
}

fn exec(c: &mut redis::Connection, args: &[&str]) -> redis::Value {
    common::util::exec(c, args)
}

fn llen(c: &mut redis::Connection, key: &str) -> Option<i64> {
    let t: String = redis::cmd("TYPE").arg(key).query(c).ok()?;
    if t != "list" {
        return None;
    }
    redis::cmd("LLEN").arg(key).query(c).ok()
}

/// The target of a scenario: a standalone server or a cluster.
trait Target {
    fn target_url(&self) -> String;
    /// A connection to the node that holds `key`.
    fn conn(&self, key: &str) -> redis::Connection;
    fn differences(&self, src: &RedisServer) -> Vec<Difference>;
}

impl Target for RedisServer {
    fn target_url(&self) -> String {
        self.url()
    }
    fn conn(&self, _key: &str) -> redis::Connection {
        self.client()
    }
    fn differences(&self, src: &RedisServer) -> Vec<Difference> {
        compare_servers_with(
            &mut src.client(),
            &mut self.client(),
            &[0],
            IGNORE,
            &CompareOptions::default(),
        )
    }
}

impl Target for RedisCluster {
    fn target_url(&self) -> String {
        self.seed_url()
    }
    fn conn(&self, key: &str) -> redis::Connection {
        self.node_for_key(key.as_bytes()).client()
    }
    fn differences(&self, src: &RedisServer) -> Vec<Difference> {
        crate::exactly_once_cluster::differences(src, self)
    }
}

/// The first key on `c` (db 0) whose name starts with the progress prefix and ends with
/// `suffix`.
fn record_key(c: &mut redis::Connection, suffix: &str) -> Option<String> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("__shardsync:progress:*{suffix}"))
        .query(c)
        .unwrap_or_default();
    keys.into_iter().next()
}

/// The offset in the progress key on `c` that covers `key` (the shard key on a standalone
/// target, the key's slot key on a cluster).
fn progress_offset(c: &mut redis::Connection, key: &str) -> u64 {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("__shardsync:progress:*")
        .query(c)
        .expect("KEYS");
    let mut keys: Vec<&String> = keys
        .iter()
        .filter(|k| !k.contains(":fences") && !k.ends_with(":repairs"))
        .collect();
    let slot = common::cluster::key_slot(key.as_bytes());
    keys.sort_by_key(|k| common::cluster::key_slot(k.as_bytes()) != slot);
    let v: String = redis::cmd("GET")
        .arg(keys.first().expect("a progress key").as_str())
        .query(c)
        .expect("GET");
    v.split(':')
        .nth(1)
        .and_then(|o| o.parse().ok())
        .expect("REPLID:OFFSET:DB")
}

fn assert_exact(src: &RedisServer, dst: &impl Target) {
    assert_no_differences(&dst.differences(src));
}

/// The repair's copy of `lst` (read at source offset F, holding `elem-1..5`) commits with a
/// position before those `RPUSH`es; shardsync is SIGKILLed there. The restart replays them:
/// without the fence on the target they were appended a second time (11 elements).
fn fence_window(dst: &impl Target) {
    let run = quiet_run();
    let src = RedisServer::start_with(ServerKind::Redis70, &["--repl-diskless-sync-delay", "0"]);
    let proxy = StopProxy::start(src.port(), &[b"elem-0\r\n", b"go-repair\r\n"]);
    let mut sc = src.client();
    exec(&mut sc, &["SET", "plain", "v"]);
    let mut ss = spawn_via(&run, &proxy, dst);
    wait_marker(&ss, &src, dst, "ready");
    exec(&mut dst.conn("lst"), &["SET", "lst", "diverged"]);
    // Rejected on the target (WRONGTYPE); the stream is held right after it.
    exec(&mut sc, &["RPUSH", "lst", "elem-0"]);
    proxy.wait_reached(1, &ss);
    ss.expect_log("target rejected a write", Duration::from_secs(30));
    // On the source, behind the held stream: a write that triggers the repair, then the key's
    // commands the copy will already hold.
    exec(&mut sc, &["SET", "trigger", "go-repair"]);
    for i in 1..=5 {
        exec(&mut sc, &["RPUSH", "lst", &format!("elem-{i}")]);
    }
    proxy.release(1);
    proxy.wait_reached(2, &ss);
    assert!(
        wait_until(Duration::from_secs(30), || llen(
            &mut dst.conn("lst"),
            "lst"
        ) == Some(6)),
        "the repair's copy never reached the target; log:\n{}",
        ss.log_tail(40)
    );
    sigkill(&mut ss);
    // The window: the copy and its fence committed, the position before the fence.
    let mut dc = dst.conn("lst");
    let fences = record_key(&mut dc, ":fences*").expect("the fence is recorded on the target");
    let fence: u64 = redis::cmd("HGET")
        .arg(&fences)
        .arg("0:lst")
        .query(&mut dc)
        .expect("HGET fence");
    let at = progress_offset(&mut dc, "lst");
    assert!(fence > at, "fence {fence} not ahead of the position {at}");
    println!("killed with the position at {at}, the fence of lst at {fence} ({fences})");
    proxy.release(usize::MAX);
    let mut ss = spawn_via(&run, &proxy, dst);
    wait_marker(&ss, &src, dst, "after-restart");
    assert_eq!(
        llen(&mut dst.conn("lst"), "lst"),
        Some(6),
        "lst on the target"
    );
    assert_exact(&src, dst);
    ss.expect_log(
        "found key repairs of a previous run",
        Duration::from_secs(5),
    );
    // The position passed the fence: its record is gone.
    assert!(
        wait_until(Duration::from_secs(10), || record_key(
            &mut dst.conn("lst"),
            ":fences*"
        )
        .is_none()),
        "the fence record stayed"
    );
    ss.terminate();
}

#[test]
fn fenced_repair_survives_a_sigkill_before_the_position_passes_it() {
    fence_window(&RedisServer::start(ServerKind::Redis70));
}

/// The same on a cluster target (`exactly_once = true`): the fence hash is in `lst`'s slot.
#[test]
fn fenced_repair_survives_a_sigkill_cluster_target() {
    let dst = RedisCluster::start(ServerKind::Redis70, 3, 0);
    dst.wait_ok(Duration::from_secs(30));
    fence_window(&dst);
}

/// A rejected write whose repair could not read the source (the proxy closes connections that
/// send `DUMP`): the key is pending, recorded on the target; shardsync is SIGKILLed. Without
/// the record the restart never repairs it (the rejected `RPUSH` is behind the position).
#[test]
fn pending_repair_survives_a_sigkill() {
    let (src, dst, proxy, run, mut ss) = setup(&[]);
    let (mut sc, mut dc) = (src.client(), dst.client());
    exec(&mut dc, &["SET", "lst", "diverged"]);
    proxy.refuse_dumps.store(true, Ordering::SeqCst);
    exec(&mut sc, &["RPUSH", "lst", "elem-0"]);
    ss.expect_log("target rejected a write", Duration::from_secs(30));
    ss.expect_log("cannot repair the key", Duration::from_secs(30));
    assert!(
        wait_until(Duration::from_secs(30), || {
            record_key(&mut dst.client(), ":repairs").is_some_and(|k| {
                redis::cmd("HEXISTS")
                    .arg(k)
                    .arg("0:lst")
                    .query::<bool>(&mut dst.client())
                    .unwrap_or(false)
            })
        }),
        "the pending repair was not recorded; log:\n{}",
        ss.log_tail(40)
    );
    sigkill(&mut ss);
    proxy.refuse_dumps.store(false, Ordering::SeqCst);
    let mut ss = spawn_via(&run, &proxy, &dst);
    exec(&mut sc, &["RPUSH", "lst2", "after-restart"]);
    wait_caught_up(&ss, &dst);
    assert!(
        wait_until(Duration::from_secs(30), || llen(&mut dst.client(), "lst")
            == Some(1)),
        "lst was not repaired after the restart; log:\n{}",
        ss.log_tail(40)
    );
    assert_exact(&src, &dst);
    assert!(
        wait_until(Duration::from_secs(10), || record_key(
            &mut dst.client(),
            ":repairs"
        )
        .is_none()),
        "the pending record stayed"
    );
    ss.terminate();
}

/// 300 keys rejected in one transaction: a run repairs 256 of them at most (fewer when it
/// runs while the writer is still handing the rejections over), and the writer records the
/// others as pending in that run's transaction. shardsync is SIGKILLed before any later run:
/// the restart must repair the others (without the writer's record they stayed diverged).
#[test]
fn pending_repairs_beyond_one_run_survive_a_sigkill() {
    const KEYS: usize = 300;
    const PER_RUN: usize = 256;
    let run = quiet_run();
    let src = RedisServer::start_with(ServerKind::Redis70, &["--repl-diskless-sync-delay", "0"]);
    let dst = RedisServer::start(ServerKind::Redis70);
    let proxy = StopProxy::start(src.port(), &[b"$4\r\nEXEC\r\n", b"go-repair\r\n"]);
    let mut ss = spawn_via(&run, &proxy, &dst);
    wait_marker(&ss, &src, &dst, "ready");
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k:{i:03}")).collect();
    let mut diverge = redis::pipe();
    let mut block = redis::pipe();
    block.atomic();
    for k in &keys {
        diverge.cmd("SET").arg(k).arg("diverged").ignore();
        block.cmd("RPUSH").arg(k).arg("elem-0").ignore();
    }
    let _: () = diverge
        .query(&mut dst.client())
        .expect("diverge the target");
    let _: () = block
        .query(&mut src.client())
        .expect("MULTI/EXEC on the source");
    proxy.wait_reached(1, &ss);
    ss.expect_log("target rejected a write", Duration::from_secs(30));
    exec(&mut src.client(), &["SET", "trigger", "go-repair"]);
    proxy.release(1);
    proxy.wait_reached(2, &ss);
    let pending = |dst: &RedisServer| -> usize {
        record_key(&mut dst.client(), ":repairs").map_or(0, |k| {
            redis::cmd("HLEN")
                .arg(k)
                .query::<usize>(&mut dst.client())
                .unwrap_or(0)
        })
    };
    // The first run's transaction holds its copies (at most 256) and the records of the keys
    // it did not take: all visible at once.
    assert!(
        wait_until(Duration::from_secs(30), || lists(&dst, &keys) > 0),
        "no key repaired; log:\n{}",
        ss.log_tail(40)
    );
    sigkill(&mut ss);
    let repaired = lists(&dst, &keys);
    assert!(
        (1..=PER_RUN).contains(&repaired),
        "{repaired} keys repaired by one run"
    );
    println!(
        "killed with {} keys repaired, {} pending on the target",
        lists(&dst, &keys),
        pending(&dst)
    );
    proxy.release(usize::MAX);
    let mut ss = spawn_via(&run, &proxy, &dst);
    wait_marker(&ss, &src, &dst, "after-restart");
    assert!(
        wait_until(Duration::from_secs(30), || lists(&dst, &keys) == KEYS),
        "{} of {KEYS} keys repaired after the restart; log:\n{}",
        lists(&dst, &keys),
        ss.log_tail(40)
    );
    wait_marker(&ss, &src, &dst, "done");
    assert_exact(&src, &dst);
    assert_eq!(pending(&dst), 0, "pending records left");
    ss.terminate();
}
