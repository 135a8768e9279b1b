//! The failure model end to end, against real servers: a source whose password changes mid-run
//! ends its shard as `failed` (and the run with exit code 4); an RDB that fails its checksum
//! leaves nothing on the target (or says exactly what stays with `on_resync = keep`); keys and
//! replies are escaped in the log and in `shardsync status`; 300,000 made-up command names keep
//! `/metrics` and the log small; a precheck against a server whose INFO never completes says so.
//!
//! Where a real server cannot produce the input, a small TCP proxy in front of a real source
//! changes the replication link's bytes (flips the RDB's last checksum byte, answers `PSYNC`
//! itself, or appends commands after the RDB); everything else is the real server's.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::compare::{assert_same, scan_keys, target_dbsize, target_dbsize_all};
use crate::common::server::{RedisServer, ServerKind, pick_free_port};
use crate::common::shardsync::{Shardsync, binary};
use crate::common::status::wait_status;
use crate::common::util::{http_get, wait_until};

// ---------------------------------------------------------------------------------------------
// HTTP and /status

fn shard0(st: &serde_json::Value) -> &serde_json::Value {
    &st["shards"][0]
}

/// `run` against `source_url` → `dst`, with `/status` on a free port; returns (process, addr).
/// The state dir lives in the process's own temp dir.
fn spawn_run(source_url: &str, dst: &RedisServer, extra: &[&str]) -> (Shardsync, String) {
    let addr = format!("127.0.0.1:{}", pick_free_port(false));
    let dst_url = dst.url();
    let mut args = vec![
        "run",
        "--source",
        source_url,
        "--target",
        &dst_url,
        "--state-dir",
        "state",
        "--metrics-addr",
        &addr,
        "--heartbeat-key",
        "",
    ];
    args.extend_from_slice(extra);
    (Shardsync::spawn(&args), addr)
}

fn exit_code(ss: &mut Shardsync, within: Duration) -> i32 {
    match ss.wait_exit(within) {
        Some(st) => st.code().unwrap_or(-1),
        None => panic!(
            "shardsync did not exit within {within:?}; log:\n{}",
            ss.log_tail(40)
        ),
    }
}

fn set_keys(conn: &mut redis::Connection, prefix: &str, n: usize) {
    let mut p = redis::pipe();
    for i in 0..n {
        p.cmd("SET")
            .arg(format!("{prefix}{i}"))
            .arg(format!("v{i}"))
            .ignore();
        if p.cmd_iter().count() >= 1000 {
            p.query::<()>(conn).expect("SET batch");
            p = redis::pipe();
        }
    }
    if p.cmd_iter().count() > 0 {
        p.query::<()>(conn).expect("SET batch");
    }
}

// ---------------------------------------------------------------------------------------------
// A proxy in front of a real source that changes the replication link's bytes.

#[derive(Clone)]
enum Tamper {
    /// Flip the last byte of the RDB payload (its CRC64).
    CorruptRdbChecksum,
    /// Answer `PSYNC` with this line instead of forwarding it.
    PsyncReply(Vec<u8>),
    /// After the RDB, append these bytes to the stream (commands a real master never sends).
    AppendAfterRdb(Arc<Vec<u8>>),
}

struct Proxy {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16, tamper: Tamper) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                            continue;
                        };
                        let tamper = tamper.clone();
                        let stop3 = stop2.clone();
                        std::thread::spawn(move || pipe_pair(client, server, tamper, stop3));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy { port, stop }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pipe_pair(client: TcpStream, server: TcpStream, tamper: Tamper, stop: Arc<AtomicBool>) {
    let (Ok(mut c_read), Ok(mut s_write)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let mut c_write = client;
    let mut s_read = server;
    let psync_reply = match &tamper {
        Tamper::PsyncReply(r) => Some(r.clone()),
        _ => None,
    };
    let mut c_write2 = match c_write.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    };
    // client → server (answers PSYNC itself when asked to)
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match c_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if let Some(reply) = &psync_reply
                && chunk
                    .windows(9)
                    .any(|w| w.eq_ignore_ascii_case(b"\r\nPSYNC\r\n"))
            {
                let _ = c_write2.write_all(reply);
                continue;
            }
            if s_write.write_all(chunk).is_err() {
                break;
            }
        }
        let _ = s_write.shutdown(std::net::Shutdown::Both);
    });
    // server → client, through a small state machine over the replication handshake
    #[derive(PartialEq)]
    enum St {
        Lines,
        Header,
        Payload(u64),
        After,
    }
    let mut st = St::Lines;
    let mut line = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let n = match s_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n + 16);
        let mut appended = None;
        for &b in &buf[..n] {
            let mut b = b;
            match st {
                St::Lines => {
                    line.push(b);
                    if b == b'\n' {
                        if line.starts_with(b"+FULLRESYNC") {
                            st = St::Header;
                        }
                        line.clear();
                    }
                }
                St::Header => {
                    if line.is_empty() && b == b'\n' {
                        // keep-alive
                    } else {
                        line.push(b);
                        if line.ends_with(b"\r\n") {
                            let len = std::str::from_utf8(&line[1..line.len() - 2])
                                .ok()
                                .and_then(|s| s.parse::<u64>().ok())
                                .expect("disk-based RDB header ($len); start the source with repl-diskless-sync no");
                            line.clear();
                            st = St::Payload(len);
                        }
                    }
                }
                St::Payload(ref mut left) => {
                    *left -= 1;
                    if *left == 0 {
                        if matches!(tamper, Tamper::CorruptRdbChecksum) {
                            b ^= 0xff;
                        }
                        if let Tamper::AppendAfterRdb(extra) = &tamper {
                            appended = Some(extra.clone());
                        }
                        st = St::After;
                    }
                }
                St::After => {}
            }
            out.push(b);
        }
        if c_write.write_all(&out).is_err() {
            break;
        }
        if let Some(extra) = appended
            && c_write.write_all(&extra).is_err()
        {
            break;
        }
    }
    let _ = c_write.shutdown(std::net::Shutdown::Both);
}

fn disk_source() -> RedisServer {
    RedisServer::start_with(ServerKind::Redis70, &["--repl-diskless-sync", "no"])
}

/// No raw control byte (ESC, BEL, CR…) in `text`: nothing reaches a terminal unescaped.
fn assert_no_control_bytes(what: &str, text: &[u8]) {
    if let Some(i) = text
        .iter()
        .position(|&b| b == 0x1b || b == 0x07 || b == b'\r' || b == 0)
    {
        let from = i.saturating_sub(80);
        panic!(
            "{what} holds a raw control byte {:#04x}: …{}…",
            text[i],
            String::from_utf8_lossy(&text[from..(i + 80).min(text.len())])
        );
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn password_changed_on_the_source_fails_the_shard_and_exits_4() {
    let src = RedisServer::start_with_password(ServerKind::Redis70, "first-pw", &[]);
    let dst = RedisServer::start(ServerKind::Redis70);
    set_keys(&mut src.client(), "k", 500);
    let (mut ss, addr) = spawn_run(&src.url(), &dst, &[]);
    wait_status(
        &mut ss,
        &addr,
        Duration::from_secs(30),
        "incremental",
        |st| st["state"] == "incremental" && shard0(st)["phase"] == "incremental",
    );
    // Data first: the target equals the source so far, key by key.
    let mut sc = src.client();
    redis::cmd("SET")
        .arg("after-start")
        .arg("1")
        .query::<()>(&mut sc)
        .expect("SET");
    let mut dc = dst.client();
    assert!(
        wait_until(Duration::from_secs(10), || target_dbsize(&mut dc) == 501),
        "the target never got the live write"
    );
    assert_same(&mut sc, &mut dc, &[0], &[]);

    // The password changes; the link is dropped and must log in again.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("second-pw")
        .query::<()>(&mut sc)
        .expect("CONFIG SET requirepass");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query(&mut sc)
        .expect("CLIENT KILL");
    assert_eq!(killed, 1, "one replica link to drop");

    let st = wait_status(&mut ss, &addr, Duration::from_secs(30), "failed", |st| {
        shard0(st)["phase"] == "failed"
    });
    assert_eq!(st["state"], "failed", "{st:#}");
    let err = shard0(&st)["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("password") && err.contains("restart shardsync"),
        "last_error should say the password changed and what to do: {err}"
    );
    assert_eq!(
        exit_code(&mut ss, Duration::from_secs(30)),
        4,
        "exit code 4: no shard can make progress; log:\n{}",
        ss.log_tail(30)
    );
    let log = ss.log();
    assert!(
        log.contains("no shard can make progress"),
        "{}",
        ss.log_tail(20)
    );
    for pw in ["first-pw", "second-pw"] {
        assert!(!log.contains(pw), "a password reached the log");
        assert!(!err.contains(pw), "a password reached /status");
    }
    // Nothing lost and nothing made up on the target.
    assert_eq!(target_dbsize(&mut dc), 501);
}

/// Runs a sync through a proxy that corrupts the RDB's checksum until the shard fails.
fn corrupt_rdb_run(extra: &[&str]) -> (serde_json::Value, RedisServer, RedisServer, i32) {
    let src = disk_source();
    let dst = RedisServer::start(ServerKind::Redis70);
    set_keys(&mut src.client(), "corrupt:", 20_000);
    let proxy = Proxy::start(src.port(), Tamper::CorruptRdbChecksum);
    let (mut ss, addr) = spawn_run(&proxy.url(), &dst, extra);
    let st = wait_status(&mut ss, &addr, Duration::from_secs(90), "failed", |st| {
        shard0(st)["phase"] == "failed"
    });
    let code = exit_code(&mut ss, Duration::from_secs(30));
    let log = ss.log();
    assert!(
        log.contains("checksum mismatch"),
        "the log should name the checksum: {}",
        ss.log_tail(30)
    );
    (st, src, dst, code)
}

#[test]
fn corrupt_rdb_checksum_leaves_nothing_on_the_target() {
    let (st, _src, dst, code) = corrupt_rdb_run(&[]);
    let err = shard0(&st)["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("checksum mismatch") && err.contains("removed from the target"),
        "last_error: {err}"
    );
    assert!(
        err.contains("protocol"),
        "repeated corrupt RDBs are a permanent failure: {err}"
    );
    assert_eq!(code, 4);
    // Key by key: nothing of the corrupt RDB stays.
    let sizes = target_dbsize_all(&mut dst.client());
    assert!(
        sizes.values().all(|&n| n == 0),
        "keys written from a corrupt RDB stayed on the target: {sizes:?}"
    );
}

#[test]
fn corrupt_rdb_with_keep_says_exactly_what_remains() {
    let (st, src, dst, code) = corrupt_rdb_run(&["--on-resync", "keep"]);
    let err = shard0(&st)["last_error"].as_str().unwrap_or_default();
    let marker = " keys read from it before the error were written to the target and remain";
    let at = err
        .find(marker)
        .unwrap_or_else(|| panic!("last_error should count what remains: {err}"));
    let n: u64 = err[..at]
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no count before the marker: {err}"));
    assert_eq!(code, 4);
    // The checksum is the RDB's last field: the batches handed out before it are on the target,
    // the batch still being filled when the check failed is not.
    assert!(n > 0 && n <= 20_000, "{err}");
    let mut dc = dst.client();
    assert_eq!(
        target_dbsize(&mut dc),
        n,
        "the target holds exactly what was reported"
    );
    let mut sc = src.client();
    // The exactly-once progress key is the target's own bookkeeping, not a copied key.
    let copied = scan_keys(&mut dc)
        .into_iter()
        .filter(|k| !k.starts_with(crate::common::compare::PROGRESS_PREFIX));
    for key in copied {
        let (a, b): (Option<Vec<u8>>, Option<Vec<u8>>) = (
            redis::cmd("GET").arg(&key).query(&mut sc).expect("GET"),
            redis::cmd("GET").arg(&key).query(&mut dc).expect("GET"),
        );
        assert_eq!(a, b, "key {}", String::from_utf8_lossy(&key));
    }
}

#[test]
fn keys_and_replies_are_escaped_in_the_log_and_in_status() {
    // 1. A key with a newline and terminal escapes, rejected by the target (WRONGTYPE).
    let src = RedisServer::start(ServerKind::Redis70);
    let dst = RedisServer::start(ServerKind::Redis70);
    let (mut ss, addr) = spawn_run(&src.url(), &dst, &[]);
    wait_status(
        &mut ss,
        &addr,
        Duration::from_secs(30),
        "incremental",
        |st| shard0(st)["phase"] == "incremental",
    );
    let evil: &[u8] = b"k\n2030-01-01T00:00:00Z ERROR forged line \x1b[31mred\x1b]0;title\x07";
    let mut dc = dst.client();
    redis::cmd("SET")
        .arg(evil)
        .arg("a string on the target")
        .query::<()>(&mut dc)
        .expect("SET on target");
    redis::cmd("LPUSH")
        .arg(evil)
        .arg("x")
        .query::<()>(&mut src.client())
        .expect("LPUSH");
    wait_status(
        &mut ss,
        &addr,
        Duration::from_secs(20),
        "a rejected write",
        |st| shard0(st)["rejected_writes"].as_u64() >= Some(1),
    );
    let log = std::fs::read(ss.log_path()).expect("log");
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains(r#"k\n2030-01-01T00:00:00Z ERROR forged line \x1b[31mred\x1b]0;title\a"#),
        "the key should be logged escaped as redis-cli quotes it:\n{}",
        ss.log_tail(10)
    );
    assert!(
        !text.lines().any(|l| l.starts_with("2030-01-01")),
        "a key forged a log line"
    );
    assert_no_control_bytes("the log", &log);
    ss.terminate();

    // 2. A source whose PSYNC reply carries escape sequences: /status and `shardsync status`.
    let src2 = disk_source();
    let proxy = Proxy::start(
        src2.port(),
        Tamper::PsyncReply(b"-ERR no sync for you \x1b[2J\x1b]0;pwned\x07\r\r\n".to_vec()),
    );
    let (mut ss2, addr2) = spawn_run(&proxy.url(), &dst, &[]);
    let st = wait_status(&mut ss2, &addr2, Duration::from_secs(30), "failed", |st| {
        shard0(st)["phase"] == "failed"
    });
    let err = shard0(&st)["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains(r"no sync for you \x1b[2J\x1b]0;pwned\a\r")
            && err.contains("cannot serve a full sync"),
        "last_error: {err}"
    );
    let out = std::process::Command::new(binary())
        .args(["status", "--addr", &addr2])
        .output()
        .expect("shardsync status");
    assert_eq!(out.status.code(), Some(1), "status of a failed run exits 1");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(r"\x1b[2J") && table.contains("failed"),
        "{table}"
    );
    assert_no_control_bytes("shardsync status", &out.stdout);
    assert_eq!(exit_code(&mut ss2, Duration::from_secs(30)), 4);
    assert_no_control_bytes("the log", &std::fs::read(ss2.log_path()).expect("log"));
}

#[test]
fn many_unknown_command_names_keep_metrics_and_log_small() {
    const N: usize = 300_000;
    let src = disk_source();
    let dst = RedisServer::start(ServerKind::Redis70);
    set_keys(&mut src.client(), "base:", 100);
    let mut extra = Vec::with_capacity(N * 40);
    for i in 0..N {
        let name = format!("NOSUCHCMD{i:06}");
        let key = format!("unknown:{i}");
        extra.extend_from_slice(
            format!(
                "*2\r\n${}\r\n{name}\r\n${}\r\n{key}\r\n",
                name.len(),
                key.len()
            )
            .as_bytes(),
        );
    }
    let proxy = Proxy::start(src.port(), Tamper::AppendAfterRdb(Arc::new(extra)));
    let (mut ss, addr) = spawn_run(&proxy.url(), &dst, &[]);
    let st = wait_status(
        &mut ss,
        &addr,
        // Each rejection also queues a repair of its key (read from the source in batches):
        // generous for a loaded 2-core machine.
        Duration::from_secs(300),
        "every unknown command rejected by the target",
        |st| shard0(st)["rejected_writes"].as_u64() >= Some(N as u64),
    );
    assert_eq!(shard0(&st)["rejected_writes"].as_u64(), Some(N as u64));
    let (code, metrics) = http_get(&addr, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.len() < 100_000,
        "/metrics is {} bytes after {N} distinct command names",
        metrics.len()
    );
    assert!(
        !metrics.contains("NOSUCHCMD"),
        "a made-up name became a label"
    );
    assert!(
        metrics.contains(r#"command="other""#),
        "unknown names count as other"
    );
    let log_len = std::fs::metadata(ss.log_path()).expect("log").len();
    assert!(
        log_len < 200_000,
        "{log_len} bytes of log for {N} rejected writes; tail:\n{}",
        ss.log_tail(20)
    );
    assert!(
        ss.log().contains("suppressed="),
        "the rate limit should say how much it left out"
    );
    // Data: the made-up commands changed nothing; the base keys are all there.
    assert_same(&mut src.client(), &mut dst.client(), &[0], &[]);
    ss.terminate();
}

/// A peer that accepts connections, answers `+OK` to anything, and to `INFO` starts a reply it
/// never finishes (no real server does this).
fn stalling_info_server() -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            let Ok((mut c, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let _ = c.set_nonblocking(false);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    let n = match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(4).any(|w| w.eq_ignore_ascii_case(b"INFO")) {
                        let _ = c.write_all(b"$100000\r\n# Server\r\nredis_version:7.0.0\r\n");
                        // …and nothing more, while the connection stays open.
                        let _ = c.read(&mut buf);
                        std::thread::sleep(Duration::from_secs(60));
                        return;
                    }
                    // Any other command (pipelined or not) gets +OK per array header seen.
                    let arrays = seen.iter().filter(|&&b| b == b'*').count();
                    for _ in 0..arrays {
                        let _ = c.write_all(b"+OK\r\n");
                    }
                    seen.clear();
                }
            });
        }
    });
    (port, stop)
}

#[test]
fn precheck_says_it_timed_out_waiting_for_info() {
    let (port, stop) = stalling_info_server();
    let dst = RedisServer::start(ServerKind::Redis70);
    let state = tempfile::tempdir().expect("state");
    let (status, log) = Shardsync::run_to_exit(
        &[
            "check",
            "--source",
            &format!("redis://127.0.0.1:{port}"),
            "--target",
            &dst.url(),
            "--state-dir",
            state.path().to_str().expect("utf-8"),
        ],
        Duration::from_secs(60),
    );
    stop.store(true, Ordering::Relaxed);
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(
        log.contains("timed out after 10 s waiting for the INFO reply"),
        "{log}"
    );
    assert!(!log.contains("cannot connect"), "{log}");
}

#[test]
fn unreadable_checkpoint_fails_its_shard_with_the_fix() {
    let src = RedisServer::start(ServerKind::Redis70);
    let dst = RedisServer::start(ServerKind::Redis70);
    set_keys(&mut src.client(), "k", 10);
    let state = tempfile::tempdir().expect("state");
    let file = state
        .path()
        .join(format!("checkpoint-127.0.0.1_{}.json", src.port()));
    std::fs::write(&file, b"{not json").expect("write checkpoint");
    let addr = format!("127.0.0.1:{}", pick_free_port(false));
    let (src_url, dst_url) = (src.url(), dst.url());
    let mut ss = Shardsync::spawn(&[
        "run",
        "--source",
        &src_url,
        "--target",
        &dst_url,
        "--state-dir",
        state.path().to_str().expect("utf-8"),
        "--metrics-addr",
        &addr,
        "--heartbeat-key",
        "",
    ]);
    let st = wait_status(&mut ss, &addr, Duration::from_secs(30), "failed", |st| {
        shard0(st)["phase"] == "failed"
    });
    let err = shard0(&st)["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("is corrupt") && err.contains("delete that checkpoint file"),
        "{err}"
    );
    assert_eq!(exit_code(&mut ss, Duration::from_secs(30)), 4);
    // Nothing was synced from a guessed position.
    assert_eq!(target_dbsize(&mut dst.client()), 0);
    assert_eq!(
        std::fs::read(&file).expect("checkpoint kept"),
        b"{not json",
        "the file is left for a person to look at"
    );
}
