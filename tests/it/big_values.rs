//! Big values from a real Redis source: a string far larger than shardsync's write queues must go
//! through the full sync in parts, so shardsync's peak RSS is bounded by its configuration
//! (`chunk` size, `sync.queue_batches` × `sync.batch_max_bytes`), not by the value's size —
//! also when Redis stores the string LZF-compressed in the RDB (it does so for any compressible
//! string), where the compressed form is tiny and the inflated one is not.

use std::time::{Duration, Instant};

use crate::common::fake_peer::peak_rss_kib;
use crate::common::status::{full_sync_done, status_addr_arg};
use crate::common::util::DetRng;
use crate::common::{RedisServer, ServerKind, Shardsync};

const MIB: usize = 1 << 20;

/// Starts `shardsync run` from `source` into `target` (no heartbeat, so both hold the same keys).
fn run(source: &RedisServer, target: &RedisServer) -> (Shardsync, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let p = Shardsync::spawn(&[
        "run",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--state-dir",
        state.to_str().expect("utf8"),
        "--heartbeat-key",
        "",
        "--metrics-addr",
        &status_addr_arg(),
    ]);
    (p, dir)
}

/// Waits until `key` on `conn` is `len` bytes long.
fn wait_strlen(conn: &mut redis::Connection, key: &str, len: usize, p: &Shardsync) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n: usize = redis::cmd("STRLEN").arg(key).query(conn).expect("STRLEN");
        if n == len {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key}: STRLEN {n} of {len}\n{}",
            p.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Compares `key` on both sides in 8 MiB `GETRANGE` pieces (naming the first piece that differs).
fn assert_same_string(
    src: &mut redis::Connection,
    dst: &mut redis::Connection,
    key: &str,
    len: usize,
) {
    let piece = 8 * MIB;
    let mut at = 0;
    while at < len {
        let end = (at + piece).min(len) - 1;
        let get = |c: &mut redis::Connection| -> Vec<u8> {
            redis::cmd("GETRANGE")
                .arg(key)
                .arg(at)
                .arg(end)
                .query(c)
                .expect("GETRANGE")
        };
        let (a, b) = (get(src), get(dst));
        assert!(a == b, "{key}: bytes {at}..={end} differ");
        at = end + 1;
    }
}

#[test]
fn compressible_string_larger_than_the_queues_keeps_rss_bounded() {
    // 160 MiB: zeros with a random 4 KiB stamp every 8 MiB, so Redis writes it LZF-compressed
    // (a few MiB in the RDB). Plus a 24 MiB random string, which the RDB holds raw.
    const LEN: usize = 160 * MIB;
    const RAW: usize = 24 * MIB;
    let source = RedisServer::start(ServerKind::Redis70);
    let target = RedisServer::start(ServerKind::Redis70);
    let mut s = source.client();
    let mut rng = DetRng::new(13);
    let _: usize = redis::cmd("SETRANGE")
        .arg("big:lzf")
        .arg(LEN - 1)
        .arg("!")
        .query(&mut s)
        .expect("SETRANGE");
    for at in (0..LEN - 4096).step_by(8 * MIB) {
        let _: usize = redis::cmd("SETRANGE")
            .arg("big:lzf")
            .arg(at)
            .arg(rng.bytes(4096))
            .query(&mut s)
            .expect("SETRANGE");
    }
    for _ in 0..RAW / MIB {
        let _: usize = redis::cmd("APPEND")
            .arg("big:raw")
            .arg(rng.bytes(MIB))
            .query(&mut s)
            .expect("APPEND");
    }

    let (mut p, _d) = run(&source, &target);
    p.wait_status(
        Duration::from_secs(180),
        "the full sync applied",
        full_sync_done,
    );
    let mut t = target.client();
    wait_strlen(&mut t, "big:lzf", LEN, &p);
    wait_strlen(&mut t, "big:raw", RAW, &p);
    let peak = peak_rss_kib(p.pid().expect("running")) / 1024;
    eprintln!(
        "peak RSS {peak} MiB for a {} MiB compressible and a {} MiB random string",
        LEN / MIB,
        RAW / MIB
    );
    assert_same_string(&mut s, &mut t, "big:lzf", LEN);
    assert_same_string(&mut s, &mut t, "big:raw", RAW);
    // The write queues hold at most queue_batches (32) × batch_max_bytes (1 MiB) per target
    // connection; the parser one 1 MiB part at a time.
    assert!(
        peak < 110,
        "peak RSS {peak} MiB: a {} MiB string was held whole\n{}",
        LEN / MIB,
        p.log_tail(20)
    );
    p.terminate();
}

/// A target that reads but does not answer (`CLIENT PAUSE WRITE`) while a 1.5M-field hash is
/// copied: the writer keeps what it sent for a resend, so the unacknowledged commands must be
/// bounded by memory (`MAX_INFLIGHT_BYTES`), not only by count (32k `HSET`s of 512 fields held
/// ~290 MiB). After the pause the hash arrives whole.
#[test]
fn target_that_reads_but_does_not_answer_keeps_rss_bounded() {
    const FIELDS: usize = 1_500_000;
    let source = RedisServer::start(ServerKind::Redis70);
    let target = RedisServer::start(ServerKind::Redis70);
    let mut s = source.client();
    for start in (0..FIELDS).step_by(10_000) {
        let mut c = redis::cmd("HSET");
        c.arg("big:hash");
        for i in start..start + 10_000 {
            c.arg(format!("f{i}")).arg(i);
        }
        let _: usize = c.query(&mut s).expect("HSET");
    }
    let mut t = target.client();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(25_000)
        .arg("WRITE")
        .query(&mut t)
        .expect("CLIENT PAUSE");
    let paused = Instant::now();
    let (mut p, _d) = run(&source, &target);
    let pid = p.pid().expect("running");
    // While paused, everything shardsync sends stays unanswered.
    while paused.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let peak_paused = peak_rss_kib(pid) / 1024;
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut t)
        .expect("CLIENT UNPAUSE");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n: usize = redis::cmd("HLEN")
            .arg("big:hash")
            .query(&mut t)
            .expect("HLEN");
        if n == FIELDS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HLEN {n} of {FIELDS}\n{}",
            p.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let sample: Vec<Option<String>> = redis::cmd("HMGET")
        .arg("big:hash")
        .arg("f0")
        .arg("f777777")
        .arg(format!("f{}", FIELDS - 1))
        .query(&mut t)
        .expect("HMGET");
    assert_eq!(
        sample,
        [
            Some("0".into()),
            Some("777777".into()),
            Some((FIELDS - 1).to_string())
        ]
    );
    let peak = peak_rss_kib(pid) / 1024;
    eprintln!("peak RSS {peak_paused} MiB while the target did not answer, {peak} MiB in all");
    assert!(
        peak < 150,
        "peak RSS {peak} MiB ({peak_paused} MiB while paused)\n{}",
        p.log_tail(20)
    );
    p.terminate();
}
