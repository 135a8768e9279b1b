//! Hostile masters a real server cannot imitate (a fake master from `common::fake_peer`): a huge
//! array announce, a command that never ends, an absurd RDB size or offset, a huge AUX field or
//! key name, a giant quicklist node or stream node. shardsync must stay under a stated RSS, say which limit was
//! hit, and — where the input is legal but large — still write the right data into a real target.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::fake_peer::{
    FakeMaster, RDB_END, fullresync, peak_rss_kib, rdb_len, rdb_str, write_endless_array,
    write_filler,
};
use crate::common::run::SyncRun;
use crate::common::status::full_sync_done;
use crate::common::{RedisServer, ServerKind, Shardsync};

/// The RDB header of a Redis 7.0 file (`REDIS0010`).
const MAGIC: &[u8] = b"REDIS0010";

/// A run without a heartbeat (a fake master cannot take one) and with extra `[sync]` TOML.
fn no_heartbeat(sync_toml: &str) -> SyncRun {
    SyncRun::new(Some(&format!(
        "[sync]\nheartbeat_key = \"\"\n{sync_toml}\n"
    )))
}

/// Starts `shardsync run` from the fake master into a real Redis 7.0 (see [`no_heartbeat`]).
fn run(master: &FakeMaster, target: &RedisServer, sync_toml: &str) -> (Shardsync, SyncRun) {
    let sync = no_heartbeat(sync_toml);
    (sync.spawn_pair(&master.url(), &target.url(), &[]), sync)
}

/// Waits for `needle` in the log, then checks the peak RSS is below `max_mib` and stops.
fn expect_error_under(p: &mut Shardsync, needle: &str, max_mib: u64) -> u64 {
    p.expect_log(needle, Duration::from_secs(60));
    let pid = p.pid().expect("running");
    let peak = peak_rss_kib(pid) / 1024;
    eprintln!("peak RSS {peak} MiB after: {needle}");
    assert!(
        peak < max_mib,
        "peak RSS {peak} MiB >= {max_mib} MiB\n{}",
        p.log_tail(30)
    );
    p.terminate();
    peak
}

fn scenario(
    f: impl Fn(&mut TcpStream) + Send + Sync + 'static,
) -> Arc<dyn Fn(&mut TcpStream) + Send + Sync> {
    Arc::new(f)
}

/// An empty RDB (header, EOF, zero CRC).
fn empty_rdb() -> Vec<u8> {
    [MAGIC, &RDB_END[..]].concat()
}

fn stream_after_empty_rdb(conn: &mut TcpStream) -> std::io::Result<()> {
    let rdb = empty_rdb();
    fullresync(conn, 0, rdb.len() as u64)?;
    conn.write_all(&rdb)
}

#[test]
fn huge_array_announce_is_refused_at_once() {
    let target = RedisServer::start(ServerKind::Redis70);
    let m = FakeMaster::start(scenario(|c| {
        if stream_after_empty_rdb(c).is_ok() {
            let _ = c.write_all(b"*1073741824\r\n");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if c.write_all(&b"$1\r\nx\r\n".repeat(10_000)).is_err() {
                    return;
                }
            }
        }
    }));
    let (mut p, _d) = run(&m, &target, "");
    expect_error_under(
        &mut p,
        "more than the limit of 16777216 (max_frame_elements)",
        100,
    );
}

#[test]
fn endless_command_hits_the_frame_cap() {
    let target = RedisServer::start(ServerKind::Redis70);
    let m = FakeMaster::start(scenario(|c| {
        if stream_after_empty_rdb(c).is_ok() {
            // 1M elements of 100 bytes: legal counts, 107 MB in all, sent until refused.
            write_endless_array(c, 1_000_000);
        }
    }));
    let (mut p, _d) = run(&m, &target, "max_frame_bytes = 16777216");
    expect_error_under(
        &mut p,
        "exceeds the limit of 16777216 bytes (max_frame_bytes)",
        120,
    );
}

/// A handshake reply that never ends stops at the 64 MiB reply cap.
#[test]
fn endless_handshake_reply_hits_the_reply_cap() {
    let target = RedisServer::start(ServerKind::Redis70);
    let endless = scenario(|c| write_endless_array(c, 3_000_000));
    let m = FakeMaster::start_with(scenario(|_| {}), Some(endless));
    let (mut p, _d) = run(&m, &target, "");
    expect_error_under(
        &mut p,
        "exceeds the limit of 67108864 bytes (max_frame_bytes)",
        200,
    );
}

/// A target whose reply to a write never ends: the writer stops at the 64 MiB reply cap (and
/// reconnects), it does not buffer without end.
#[test]
fn endless_target_reply_hits_the_reply_cap() {
    let src = RedisServer::start(ServerKind::Redis70);
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut src.client())
        .expect("SET");
    let endless = scenario(|c| write_endless_array(c, 3_000_000));
    let fake_target = FakeMaster::start_on("SET", scenario(|_| {}), Some(endless));
    let sync = no_heartbeat("");
    let mut p = sync.spawn_pair(&src.url(), &fake_target.url(), &[]);
    expect_error_under(
        &mut p,
        "exceeds the limit of 67108864 bytes (max_frame_bytes)",
        200,
    );
}

#[test]
fn absurd_rdb_size_is_refused_in_the_handshake() {
    let target = RedisServer::start(ServerKind::Redis70);
    let m = FakeMaster::start(scenario(|c| {
        let _ = c.write_all(
            format!(
                "+FULLRESYNC {} 0\r\n$99999999999999\r\n",
                crate::common::fake_peer::REPLID
            )
            .as_bytes(),
        );
    }));
    let (mut p, _d) = run(&m, &target, "");
    expect_error_under(
        &mut p,
        "an RDB size above the limit of 1099511627776 bytes",
        60,
    );
}

#[test]
fn offset_near_2_pow_64_is_refused() {
    let target = RedisServer::start(ServerKind::Redis70);
    let m = FakeMaster::start(scenario(|c| {
        let rdb = empty_rdb();
        let _ = fullresync(c, u64::MAX - 5, rdb.len() as u64);
        let _ = c.write_all(&rdb);
    }));
    let (mut p, _d) = run(&m, &target, "");
    expect_error_under(&mut p, "replication offset above 9223372036854775807", 60);
}

#[test]
fn huge_key_name_is_refused_naming_the_limit() {
    let target = RedisServer::start(ServerKind::Redis70);
    const LEN: u64 = 128 << 20;
    let m = FakeMaster::start(scenario(|c| {
        let mut head = MAGIC.to_vec();
        head.push(0xfe);
        head.push(0);
        head.push(0); // string value
        head.extend(rdb_len(LEN));
        let _ = fullresync(c, 0, head.len() as u64 + LEN + 100);
        let _ = c.write_all(&head);
        write_filler(c, LEN);
    }));
    let (mut p, _d) = run(&m, &target, "");
    expect_error_under(
        &mut p,
        "of 134217728 bytes exceeds the limit of 67108864 bytes; raise sync.max_key_bytes",
        120,
    );
    assert_eq!(crate::common::target_dbsize(&mut target.client()), 0);
}

/// A 256 MiB AUX field is skipped without being held; the key after it arrives.
#[test]
fn huge_aux_field_is_skipped_and_the_sync_goes_on() {
    let target = RedisServer::start(ServerKind::Redis70);
    const LEN: u64 = 256 << 20;
    let m = FakeMaster::start(scenario(|c| {
        let mut head = MAGIC.to_vec();
        head.push(0xfa);
        head.extend(rdb_str(b"junk"));
        head.extend(rdb_len(LEN));
        let mut tail = vec![0xfe, 0, 0];
        tail.extend(rdb_str(b"after-aux"));
        tail.extend(rdb_str(b"value"));
        tail.extend_from_slice(&RDB_END);
        let _ = fullresync(c, 0, head.len() as u64 + LEN + tail.len() as u64);
        let _ = c.write_all(&head);
        write_filler(c, LEN);
        let _ = c.write_all(&tail);
    }));
    let (mut p, _d) = run(&m, &target, "");
    p.wait_status(
        Duration::from_secs(120),
        "the full sync applied",
        full_sync_done,
    );
    let mut t = target.client();
    let v: Option<String> = redis::cmd("GET")
        .arg("after-aux")
        .query(&mut t)
        .expect("GET");
    assert_eq!(v.as_deref(), Some("value"));
    assert!(
        p.log()
            .contains("RDB AUX field longer than sync.max_aux_bytes skipped"),
        "{}",
        p.log_tail(20)
    );
    let peak = peak_rss_kib(p.pid().expect("running")) / 1024;
    eprintln!("peak RSS {peak} MiB after a {} MiB AUX field", LEN >> 20);
    assert!(peak < 100, "peak RSS {peak} MiB\n{}", p.log_tail(20));
    p.terminate();
}

/// Waits for the full sync, then for `len_cmd key` on the target to reach `n` (the RDB's elements
/// are written after the sync is marked done).
fn full_sync_then_len(
    mut p: Shardsync,
    target: &RedisServer,
    len_cmd: &str,
    key: &str,
    n: u64,
) -> (Shardsync, redis::Connection) {
    p.wait_status(
        Duration::from_secs(240),
        "the full sync applied",
        full_sync_done,
    );
    let mut t = target.client();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got: u64 = redis::cmd(len_cmd).arg(key).query(&mut t).expect(len_cmd);
        if got == n {
            return (p, t);
        }
        assert!(Instant::now() < deadline, "{len_cmd} {got} of {n}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One 8 MB quicklist node of 4M one-byte integers: every element arrives, memory stays a small
/// multiple of the node.
#[test]
fn giant_quicklist_node_is_decoded_in_bounded_chunks() {
    let target = RedisServer::start(ServerKind::Redis70);
    const N: usize = 4_000_000;
    let m = FakeMaster::start(scenario(|c| {
        // listpack: total u32, count u16 (65535 = unknown), entries (7-bit int + backlen 1), 0xff
        let total = 6 + 2 * N + 1;
        let mut lp = Vec::with_capacity(total);
        lp.extend_from_slice(&(total as u32).to_le_bytes());
        lp.extend_from_slice(&u16::MAX.to_le_bytes());
        for i in 0..N {
            lp.push((i % 100) as u8);
            lp.push(1);
        }
        lp.push(0xff);
        let mut rdb = MAGIC.to_vec();
        rdb.extend_from_slice(&[0xfe, 0, 18]); // SELECTDB 0, QUICKLIST_2
        rdb.extend(rdb_str(b"biglist"));
        rdb.extend_from_slice(&[1, 2]); // one node, packed
        rdb.extend(rdb_str(&lp));
        rdb.extend_from_slice(&RDB_END);
        let _ = fullresync(c, 0, rdb.len() as u64);
        let _ = c.write_all(&rdb);
    }));
    let (p, _d) = run(&m, &target, "");
    let (mut p, mut t) = full_sync_then_len(p, &target, "LLEN", "biglist", N as u64);
    let some: Vec<String> = redis::cmd("LRANGE")
        .arg("biglist")
        .arg(0)
        .arg(2)
        .query(&mut t)
        .expect("LRANGE");
    assert_eq!(some, ["0", "1", "2"]);
    let last: Vec<String> = redis::cmd("LRANGE")
        .arg("biglist")
        .arg(-1)
        .arg(-1)
        .query(&mut t)
        .expect("LRANGE");
    assert_eq!(last, [((N - 1) % 100).to_string()]);
    let peak = peak_rss_kib(p.pid().expect("running")) / 1024;
    eprintln!("peak RSS {peak} MiB for an 8 MB node of {N} elements");
    assert!(peak < 150, "peak RSS {peak} MiB\n{}", p.log_tail(20));
    p.terminate();
}

/// One 8 MB stream node of 600k small entries sharing the master's fields: every entry arrives,
/// memory stays a small multiple of the node (decoded at once, the node's entries took about
/// 30 times its size).
#[test]
fn giant_stream_node_is_decoded_in_bounded_chunks() {
    let target = RedisServer::start(ServerKind::Redis70);
    const N: u32 = 600_000;
    let m = FakeMaster::start(scenario(|c| {
        let int7 = |v: u8| [v, 1];
        let int24 = |v: u32| {
            let b = v.to_le_bytes();
            [0xf2, b[0], b[1], b[2], 4]
        };
        let mut body = Vec::with_capacity(13 * N as usize + 32);
        body.extend_from_slice(&int24(N)); // live entries
        body.extend_from_slice(&int7(0)); // deleted entries
        body.extend_from_slice(&int7(1)); // master fields
        body.extend_from_slice(&[0x81, b'f', 2]); // "f"
        body.extend_from_slice(&int7(0)); // end of the master entry
        for i in 0..N {
            body.extend_from_slice(&int7(2)); // flags: same fields
            body.extend_from_slice(&int7(0)); // ms delta
            body.extend_from_slice(&int24(i)); // seq delta
            body.extend_from_slice(&int7((i % 100) as u8)); // value of "f"
            body.extend_from_slice(&int7(4)); // lp-count
        }
        let total = 6 + body.len() + 1;
        let mut lp = Vec::with_capacity(total);
        lp.extend_from_slice(&(total as u32).to_le_bytes());
        lp.extend_from_slice(&u16::MAX.to_le_bytes());
        lp.extend(body);
        lp.push(0xff);
        let mut node_key = 1u64.to_be_bytes().to_vec();
        node_key.extend_from_slice(&0u64.to_be_bytes());
        let mut rdb = MAGIC.to_vec();
        rdb.extend_from_slice(&[0xfe, 0, 15]); // SELECTDB 0, STREAM_LISTPACKS
        rdb.extend(rdb_str(b"bigstream"));
        rdb.extend(rdb_len(1)); // one node
        rdb.extend(rdb_str(&node_key));
        rdb.extend(rdb_str(&lp));
        rdb.extend(rdb_len(N as u64)); // length
        rdb.extend(rdb_len(1)); // last id ms
        rdb.extend(rdb_len(N as u64 - 1)); // last id seq
        rdb.extend(rdb_len(0)); // no groups
        rdb.extend_from_slice(&RDB_END);
        let _ = fullresync(c, 0, rdb.len() as u64);
        let _ = c.write_all(&rdb);
    }));
    let (p, _d) = run(&m, &target, "");
    let (mut p, mut t) = full_sync_then_len(p, &target, "XLEN", "bigstream", N as u64);
    type Entries = Vec<(String, Vec<(String, String)>)>;
    let ends = |cmd: &str, from: &str, to: &str, t: &mut redis::Connection| -> Entries {
        redis::cmd(cmd)
            .arg("bigstream")
            .arg(from)
            .arg(to)
            .arg("COUNT")
            .arg(1)
            .query(t)
            .expect(cmd)
    };
    let first = ends("XRANGE", "-", "+", &mut t);
    assert_eq!(
        first,
        vec![("1-0".to_string(), vec![("f".into(), "0".into())])]
    );
    let last = ends("XREVRANGE", "+", "-", &mut t);
    let want = ((N - 1) % 100).to_string();
    assert_eq!(
        last,
        vec![(format!("1-{}", N - 1), vec![("f".into(), want)])]
    );
    let peak = peak_rss_kib(p.pid().expect("running")) / 1024;
    eprintln!("peak RSS {peak} MiB for an 8 MB stream node of {N} entries");
    assert!(peak < 150, "peak RSS {peak} MiB\n{}", p.log_tail(20));
    p.terminate();
}

/// One `GET /healthz`; returns how long it took (panics on no answer within 10 s).
fn healthz(addr: &str) -> Duration {
    use std::io::Read;
    let t = Instant::now();
    let mut c = TcpStream::connect(addr).expect("connect /healthz");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    t.elapsed()
}

/// A real cross-version `RESTORE` in the command stream (a Valkey 9 payload, which Redis 7.0
/// cannot read) of a list of 2M small integers: decoded chunk by chunk off the event loop —
/// `/healthz` keeps answering, memory stays bounded and the target gets the whole list.
#[test]
fn large_foreign_restore_is_decoded_off_the_event_loop() {
    const N: usize = 2_000_000;
    let src = RedisServer::start(ServerKind::Valkey91);
    let dst = RedisServer::start(ServerKind::Redis70);
    let sync = no_heartbeat("");
    let mut p = sync.start(&["--source", &src.url(), "--target", &dst.url()], 1);
    let metrics = sync.addr.clone();
    let mut s = src.client();
    for b in 0..N / 10_000 {
        let vals: Vec<String> = (0..10_000)
            .map(|i| (((b * 10_000 + i) as u64 * 2_654_435_761) % 10_000_000).to_string())
            .collect();
        let _: usize = redis::cmd("RPUSH")
            .arg("big")
            .arg(&vals)
            .query(&mut s)
            .expect("RPUSH");
    }
    let payload: Vec<u8> = redis::cmd("DUMP").arg("big").query(&mut s).expect("DUMP");
    assert!(
        payload.len() > 1 << 20,
        "payload of {} bytes",
        payload.len()
    );
    let mut d = dst.client();
    let wait_len = |d: &mut redis::Connection, key: &str| {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let n: usize = redis::cmd("LLEN").arg(key).query(d).expect("LLEN");
            if n == N {
                return;
            }
            assert!(Instant::now() < deadline, "{key}: LLEN {n} of {N}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_len(&mut d, "big");
    let base = peak_rss_kib(p.pid().expect("running")) / 1024;
    let _: () = redis::cmd("RESTORE")
        .arg("copy")
        .arg(0)
        .arg(&payload)
        .query(&mut s)
        .expect("RESTORE");
    let mut worst = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        worst = worst.max(healthz(&metrics));
        let n: usize = redis::cmd("LLEN").arg("copy").query(&mut d).expect("LLEN");
        if n == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "copy: LLEN {n} of {N}\n{}",
            p.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let a: Vec<String> = redis::cmd("LRANGE")
        .arg("copy")
        .arg(0)
        .arg(-1)
        .query(&mut d)
        .expect("LRANGE");
    let b: Vec<String> = redis::cmd("LRANGE")
        .arg("big")
        .arg(0)
        .arg(-1)
        .query(&mut s)
        .expect("LRANGE");
    assert!(a == b, "the restored list differs from the source's");
    let peak = peak_rss_kib(p.pid().expect("running")) / 1024;
    eprintln!(
        "RESTORE of a {} KiB payload ({N} elements): peak RSS {peak} MiB (before it {base} MiB), slowest /healthz {worst:?}",
        payload.len() >> 10
    );
    assert!(
        worst < Duration::from_millis(500),
        "/healthz took {worst:?}"
    );
    assert!(peak < 400, "peak RSS {peak} MiB");
    p.terminate();
}
