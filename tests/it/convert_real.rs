//! Real-server tests of the converter and the rewrites: items built by hand are converted, sent to
//! redis-server 6.0 / 7.0 and valkey-server 9.1 (via `tests/common`, skipped when absent), and every
//! key is read back with type-specific commands and compared with the items.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{RedisServer, ServerKind};
use redis::Value;
use shardsync::cmd::{Cmd, DbCmd};
use shardsync::convert::{ConvertError, ConvertOptions, Converter, rewrite_for_target};
use shardsync::net::server_info::ServerInfo;
use shardsync::rdb::{
    Chunk, HashField, Item, KeyHeader, PendingEntry, StreamConsumer, StreamEntry, StreamGroup,
    StreamId, StreamMeta, ValueKind,
};

// ---------------------------------------------------------------- harness

/// Starts `kind` (a missing binary fails the test).
fn start(kind: ServerKind) -> RedisServer {
    RedisServer::start(kind)
}

/// The server's `INFO server`, parsed as shardsync parses it.
fn server_info(server: &RedisServer) -> ServerInfo {
    ServerInfo::parse(&server.info("server")).expect("parse INFO")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn exec(con: &mut redis::Connection, c: &Cmd) -> redis::RedisResult<Value> {
    let mut rc = redis::Cmd::new();
    for a in &c.args {
        rc.arg(a.as_ref());
    }
    rc.query(con)
}

/// Sends converted commands, selecting databases as needed; every command must succeed.
fn send(con: &mut redis::Connection, cmds: &[DbCmd]) {
    let mut db = u32::MAX;
    for c in cmds {
        if c.db != db {
            redis::cmd("SELECT")
                .arg(c.db)
                .query::<()>(con)
                .expect("SELECT");
            db = c.db;
        }
        if let Err(e) = exec(con, &c.cmd) {
            panic!("{:?} failed: {e}", show(&c.cmd));
        }
    }
    redis::cmd("SELECT")
        .arg(0)
        .query::<()>(con)
        .expect("SELECT 0");
}

fn show(c: &Cmd) -> String {
    c.args
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&[u8]]) -> T {
    let mut rc = redis::Cmd::new();
    for a in args {
        rc.arg(*a);
    }
    rc.query(con)
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(args[0])))
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Okay => "OK".into(),
        Value::Nil => "nil".into(),
        other => format!("{other:?}"),
    }
}

/// A flat `[k, v, k, v…]` reply (XINFO) as a map.
fn kv(v: Value) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    let items = match v {
        Value::Array(a) => a,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => panic!("not a flat map: {other:?}"),
    };
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        m.insert(text(&k), v);
    }
    m
}

fn arr(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Nil => vec![],
        other => panic!("not an array: {other:?}"),
    }
}

// ---------------------------------------------------------------- the data set

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

fn sid(ms: u64, seq: u64) -> StreamId {
    StreamId { ms, seq }
}

/// One key of the data set: its header and value chunks.
struct Key {
    header: KeyHeader,
    chunks: Vec<Chunk>,
}

fn header(key: &[u8], kind: ValueKind, expire_ms: Option<i64>) -> KeyHeader {
    KeyHeader {
        db: 0,
        key: b(key),
        rdb_type: 0,
        kind,
        expire_ms,
        idle_secs: None,
        freq: None,
    }
}

fn dataset(now: i64) -> Vec<Key> {
    let exp = Some(now + 3_600_000);
    let big: Vec<Bytes> = (0..1300).map(|i| Bytes::from(format!("e{i}"))).collect();
    let mut keys = vec![
        Key {
            header: header(b"str", ValueKind::String, None),
            chunks: vec![Chunk::StringPart(b(b"hello"))],
        },
        Key {
            header: header(b"str:exp", ValueKind::String, exp),
            chunks: vec![Chunk::StringPart(b(b"v"))],
        },
        Key {
            header: header(b"str:parts", ValueKind::String, exp),
            chunks: vec![
                Chunk::StringPart(b(b"ab\x00")),
                Chunk::StringPart(b(b"\xff\r\n")),
                Chunk::StringPart(b(b"z")),
            ],
        },
        Key {
            header: header(b"", ValueKind::String, None),
            chunks: vec![Chunk::StringPart(b(b"empty key"))],
        },
        Key {
            header: header(b"str:empty", ValueKind::String, None),
            chunks: vec![],
        },
        Key {
            header: header(b"bin\x00\xff\r\nkey", ValueKind::String, None),
            chunks: vec![Chunk::StringPart(b(b""))],
        },
        Key {
            header: header(b"list", ValueKind::List, exp),
            chunks: vec![
                Chunk::ListItems(big[..700].to_vec()),
                Chunk::ListItems(big[700..].to_vec()),
                Chunk::ListItems(vec![b(b""), b(b"\x00\x01")]),
            ],
        },
        Key {
            header: header(b"set", ValueKind::Set, None),
            chunks: vec![
                Chunk::SetMembers(big[..600].to_vec()),
                Chunk::SetMembers(vec![b(b""), b(b"\xfe")]),
            ],
        },
        Key {
            header: header(b"zset", ValueKind::ZSet, exp),
            chunks: vec![Chunk::ZSetMembers(vec![
                (b(b"a"), 0.1),
                (b(b"b"), -0.0),
                (b(b"c"), 1e300),
                (b(b"d"), f64::INFINITY),
                (b(b"e"), f64::NEG_INFINITY),
                (b(b"f"), 3.0000000000000004),
                (b(b"g"), 1e20),
                (b(b"h"), -1e-7),
                (b(b"i"), 5e-324),
                (b(b""), 1.0 / 3.0),
            ])],
        },
        Key {
            header: header(b"zset:big", ValueKind::ZSet, None),
            chunks: vec![Chunk::ZSetMembers(
                big.iter()
                    .enumerate()
                    .map(|(i, m)| (m.clone(), i as f64 * 0.37 - 100.0))
                    .collect(),
            )],
        },
        Key {
            header: header(b"hash", ValueKind::Hash, exp),
            chunks: vec![Chunk::HashFields(
                (0..5)
                    .map(|i| HashField {
                        field: Bytes::from(format!("f{i}")),
                        value: Bytes::from(format!("v{i}")),
                        expire_ms: None,
                    })
                    .chain([HashField {
                        field: b(b""),
                        value: b(b""),
                        expire_ms: None,
                    }])
                    .collect(),
            )],
        },
        Key {
            header: header(b"hash:ttl", ValueKind::Hash, None),
            chunks: vec![Chunk::HashFields(vec![
                HashField {
                    field: b(b"a"),
                    value: b(b"1"),
                    expire_ms: Some(now + 1_000_000),
                },
                HashField {
                    field: b(b"b"),
                    value: b(b"2"),
                    expire_ms: None,
                },
                HashField {
                    field: b(b"c"),
                    value: b(b"3"),
                    expire_ms: Some(now + 2_000_000),
                },
            ])],
        },
    ];
    keys.extend(streams(now));
    keys
}

fn streams(now: i64) -> Vec<Key> {
    let t = now as u64 - 100_000;
    let entry = |ms, seq, f: &[(&[u8], &[u8])]| StreamEntry {
        id: sid(ms, seq),
        fields: f.iter().map(|(a, v)| (b(a), b(v))).collect(),
    };
    let pe = |ms, seq, c: &[u8], time: u64, n| PendingEntry {
        id: sid(ms, seq),
        consumer: b(c),
        delivery_time_ms: time,
        delivery_count: n,
    };
    let consumer = |n: &[u8]| StreamConsumer {
        name: b(n),
        seen_time_ms: t,
        active_time_ms: None,
    };
    vec![
        Key {
            header: header(b"stream", ValueKind::Stream, Some(now + 3_600_000)),
            chunks: vec![
                Chunk::StreamEntries(vec![
                    entry(1, 0, &[(b"f", b"v"), (b"g", b"w")]),
                    entry(1, 1, &[(b"", b"")]),
                    entry(2, 0, &[(b"bin\x00", b"\xff")]),
                ]),
                Chunk::StreamEntries(vec![entry(5, 0, &[(b"z", b"1")])]),
                Chunk::StreamMeta(StreamMeta {
                    length: 4,
                    last_id: sid(9, 0),
                    first_id: Some(sid(1, 0)),
                    max_deleted_id: Some(sid(7, 0)),
                    entries_added: Some(6),
                }),
                Chunk::StreamGroup(StreamGroup {
                    name: b(b"g1"),
                    last_delivered_id: sid(5, 0),
                    entries_read: Some(4),
                    pending: vec![
                        pe(1, 0, b"alice", t, 1),
                        pe(1, 1, b"alice", t, 1),
                        pe(2, 0, b"bob", t + 5, 3),
                        pe(5, 0, b"alice", t, 1),
                    ],
                    consumers: vec![consumer(b"alice"), consumer(b"bob"), consumer(b"idle")],
                }),
                Chunk::StreamGroup(StreamGroup {
                    name: b(b"g2"),
                    last_delivered_id: sid(0, 0),
                    entries_read: Some(0),
                    pending: vec![],
                    consumers: vec![],
                }),
            ],
        },
        Key {
            header: header(b"stream:empty", ValueKind::Stream, None),
            chunks: vec![Chunk::StreamMeta(StreamMeta {
                length: 0,
                last_id: sid(42, 3),
                first_id: Some(sid(0, 0)),
                max_deleted_id: Some(sid(42, 3)),
                entries_added: Some(2),
            })],
        },
        Key {
            header: header(b"stream:empty0", ValueKind::Stream, None),
            chunks: vec![Chunk::StreamMeta(StreamMeta::default())],
        },
        Key {
            header: header(b"stream:empty:groups", ValueKind::Stream, None),
            chunks: vec![
                Chunk::StreamMeta(StreamMeta {
                    length: 0,
                    last_id: sid(10, 0),
                    first_id: None,
                    max_deleted_id: None,
                    entries_added: None,
                }),
                Chunk::StreamGroup(StreamGroup {
                    name: b(b"ga"),
                    last_delivered_id: sid(10, 0),
                    entries_read: None,
                    pending: vec![],
                    consumers: vec![consumer(b"c1")],
                }),
                Chunk::StreamGroup(StreamGroup {
                    name: b(b"gb"),
                    last_delivered_id: sid(3, 0),
                    entries_read: None,
                    pending: vec![],
                    consumers: vec![],
                }),
            ],
        },
    ]
}

fn items_of(keys: &[Key]) -> Vec<Item> {
    let mut v = vec![Item::SelectDb(0)];
    for k in keys {
        v.push(Item::KeyStart(k.header.clone()));
        v.extend(k.chunks.iter().cloned().map(Item::Chunk));
        v.push(Item::KeyEnd { dump: None });
    }
    v
}

// ---------------------------------------------------------------- verification

fn check_ttl(con: &mut redis::Connection, h: &KeyHeader, now: i64) {
    let pttl: i64 = q(con, &[b"PTTL", &h.key]);
    match h.expire_ms {
        None => assert_eq!(pttl, -1, "key {:?} should not expire", h.key),
        Some(ms) => {
            let expect = ms - now;
            assert!(
                (pttl - expect).abs() < 10_000,
                "key {:?}: pttl {pttl}, expected ~{expect}",
                h.key
            );
        }
    }
}

fn verify(con: &mut redis::Connection, info: &ServerInfo, keys: &[Key], now: i64) {
    let v7 = info.at_least(7, 0);
    for k in keys {
        let key: &[u8] = &k.header.key;
        let ctx = String::from_utf8_lossy(key).into_owned();
        check_ttl(con, &k.header, now);
        match k.header.kind {
            ValueKind::String => {
                let want: Vec<u8> = k
                    .chunks
                    .iter()
                    .flat_map(|c| match c {
                        Chunk::StringPart(p) => p.to_vec(),
                        _ => vec![],
                    })
                    .collect();
                let got: Vec<u8> = q(con, &[b"GET", key]);
                assert_eq!(got, want, "{ctx}");
            }
            ValueKind::List => {
                let want: Vec<Bytes> = k
                    .chunks
                    .iter()
                    .flat_map(|c| match c {
                        Chunk::ListItems(i) => i.clone(),
                        _ => vec![],
                    })
                    .collect();
                let got: Vec<Vec<u8>> = q(con, &[b"LRANGE", key, b"0", b"-1"]);
                assert_eq!(got, want, "{ctx}");
            }
            ValueKind::Set => {
                let want: BTreeSet<Vec<u8>> = k
                    .chunks
                    .iter()
                    .flat_map(|c| match c {
                        Chunk::SetMembers(i) => i.iter().map(|m| m.to_vec()).collect(),
                        _ => vec![],
                    })
                    .collect();
                let got: BTreeSet<Vec<u8>> = q(con, &[b"SMEMBERS", key]);
                assert_eq!(got, want, "{ctx}");
            }
            ValueKind::ZSet => {
                for c in &k.chunks {
                    let Chunk::ZSetMembers(ms) = c else { continue };
                    for (m, score) in ms {
                        let got: String = q(con, &[b"ZSCORE", key, m]);
                        let got: f64 = got.parse().expect("score");
                        assert!(
                            got == *score && (got == 0.0 || got.to_bits() == score.to_bits()),
                            "{ctx}: member {m:?}: {got} != {score}"
                        );
                    }
                    let n: usize = q(con, &[b"ZCARD", key]);
                    assert_eq!(n, ms.len(), "{ctx}");
                }
            }
            ValueKind::Hash => {
                let got: BTreeMap<Vec<u8>, Vec<u8>> = q(con, &[b"HGETALL", key]);
                let mut want = BTreeMap::new();
                for c in &k.chunks {
                    let Chunk::HashFields(fs) = c else { continue };
                    for f in fs {
                        want.insert(f.field.to_vec(), f.value.to_vec());
                        if let Some(ms) = f.expire_ms
                            && matches!(k.header.key.as_ref(), b"hash:ttl")
                            && info.flavor == shardsync::rdb::Flavor::Valkey
                        {
                            let t: Vec<i64> =
                                q(con, &[b"HPEXPIRETIME", key, b"FIELDS", b"1", &f.field]);
                            assert_eq!(t, [ms], "{ctx}: field TTL");
                        }
                    }
                }
                assert_eq!(got, want, "{ctx}");
            }
            ValueKind::Stream => verify_stream(con, k, v7),
            ValueKind::Module => unreachable!(),
        }
    }
}

fn verify_stream(con: &mut redis::Connection, k: &Key, v7: bool) {
    let key: &[u8] = &k.header.key;
    let ctx = String::from_utf8_lossy(key).into_owned();
    let mut want_entries = Vec::new();
    let mut meta = None;
    let mut groups = Vec::new();
    for c in &k.chunks {
        match c {
            Chunk::StreamEntries(es) => want_entries.extend(es.iter().map(|e| {
                (
                    e.id.to_string(),
                    e.fields
                        .iter()
                        .flat_map(|(f, v)| [f.to_vec(), v.to_vec()])
                        .collect::<Vec<_>>(),
                )
            })),
            Chunk::StreamMeta(m) => meta = Some(m.clone()),
            Chunk::StreamGroup(g) => groups.push(g.clone()),
            _ => {}
        }
    }
    let meta = meta.expect("meta");
    let got: Vec<(String, Vec<Vec<u8>>)> = q(con, &[b"XRANGE", key, b"-", b"+"]);
    assert_eq!(got, want_entries, "{ctx}: entries");
    let info = kv(q(con, &[b"XINFO", b"STREAM", key]));
    assert_eq!(text(&info["length"]), meta.length.to_string(), "{ctx}");
    assert_eq!(
        text(&info["last-generated-id"]),
        meta.last_id.to_string(),
        "{ctx}"
    );
    if v7 {
        if let Some(n) = meta.entries_added {
            assert_eq!(text(&info["entries-added"]), n.to_string(), "{ctx}");
        }
        if let Some(id) = meta.max_deleted_id {
            assert_eq!(text(&info["max-deleted-entry-id"]), id.to_string(), "{ctx}");
        }
    }
    let got_groups: Vec<BTreeMap<String, Value>> = arr(q(con, &[b"XINFO", b"GROUPS", key]))
        .into_iter()
        .map(kv)
        .collect();
    assert_eq!(got_groups.len(), groups.len(), "{ctx}: groups");
    for g in &groups {
        let gname = String::from_utf8_lossy(&g.name).into_owned();
        let gi = got_groups
            .iter()
            .find(|m| text(&m["name"]) == gname)
            .unwrap_or_else(|| panic!("{ctx}: group {gname} missing"));
        assert_eq!(
            text(&gi["last-delivered-id"]),
            g.last_delivered_id.to_string()
        );
        assert_eq!(text(&gi["pending"]), g.pending.len().to_string());
        if v7 && let Some(n) = g.entries_read {
            assert_eq!(text(&gi["entries-read"]), n.to_string(), "{ctx}/{gname}");
        }
        // The PEL: ids, owners, delivery counts and (via idle) delivery times.
        let pel = arr(q(con, &[b"XPENDING", key, &g.name, b"-", b"+", b"1000"]));
        assert_eq!(pel.len(), g.pending.len(), "{ctx}/{gname}: PEL");
        let now = now_ms() as u64;
        for (row, want) in pel.into_iter().zip(&g.pending) {
            let row = arr(row);
            assert_eq!(text(&row[0]), want.id.to_string());
            assert_eq!(text(&row[1]).as_bytes(), want.consumer.as_ref());
            let idle: u64 = text(&row[2]).parse().expect("idle");
            let want_idle = now - want.delivery_time_ms;
            assert!(
                idle.abs_diff(want_idle) < 10_000,
                "idle {idle} vs {want_idle}"
            );
            assert_eq!(text(&row[3]), want.delivery_count.to_string());
        }
        // Consumers: all of them (before 6.2 idle ones are created by reading their empty history).
        let got_consumers: BTreeSet<String> = arr(q(con, &[b"XINFO", b"CONSUMERS", key, &g.name]))
            .into_iter()
            .map(|c| text(&kv(c)["name"]))
            .collect();
        let want_consumers: BTreeSet<String> = g
            .consumers
            .iter()
            .map(|c| &c.name)
            .chain(g.pending.iter().map(|p| &p.consumer))
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        assert_eq!(got_consumers, want_consumers, "{ctx}/{gname}: consumers");
    }
}

// ---------------------------------------------------------------- tests

fn convert_all(info: &ServerInfo, items: Vec<Item>) -> (Vec<DbCmd>, Vec<ConvertError>) {
    let mut opts = ConvertOptions::new(info.clone());
    opts.elements_per_command = 100;
    let mut conv = Converter::new(opts);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for it in items {
        if let Err(e) = conv.feed(it, &mut out) {
            errors.push(e);
        }
    }
    (out, errors)
}

fn roundtrip(kind: ServerKind) {
    let server = start(kind);
    let info = server_info(&server);
    let mut con = server.client();
    let now = now_ms();
    let keys = dataset(now);
    // Pre-existing data must be replaced.
    for k in &keys {
        let _: () = q(&mut con, &[b"SET", &k.header.key, b"old"]);
    }
    let (cmds, errors) = convert_all(&info, items_of(&keys));
    send(&mut con, &cmds);
    // Expected reports: field TTLs before Redis 7.4 / Valkey 9; idle consumers before 6.2.
    for e in &errors {
        let ConvertError::Unsupported { key, reason } = e else {
            panic!("unexpected error {e}");
        };
        match key.as_ref() {
            b"hash:ttl" => assert_ne!(info.flavor, shardsync::rdb::Flavor::Valkey),
            b"stream" | b"stream:empty:groups" => {
                assert!(!info.at_least(6, 2), "{reason}")
            }
            _ => panic!("unexpected error {e}"),
        }
    }
    verify(&mut con, &info, &keys, now);
    let dbsize: usize = q(&mut con, &[b"DBSIZE"]);
    assert_eq!(dbsize, keys.len());

    // Feeding twice (replace) gives the same result.
    let (cmds, _) = convert_all(&info, items_of(&keys));
    send(&mut con, &cmds);
    verify(&mut con, &info, &keys, now);
}

#[test]
fn roundtrip_redis_60() {
    roundtrip(ServerKind::Redis60);
}

#[test]
fn roundtrip_redis_62() {
    roundtrip(ServerKind::Redis62);
}

#[test]
fn roundtrip_redis_70() {
    roundtrip(ServerKind::Redis70);
}

#[test]
fn roundtrip_valkey_91() {
    roundtrip(ServerKind::Valkey91);
}

#[test]
fn functions_load() {
    for kind in [ServerKind::Redis70, ServerKind::Valkey91] {
        let server = start(kind);
        let info = server_info(&server);
        let code = b"#!lua name=lib1\nredis.register_function('f1', function() return 7 end)";
        let (cmds, errors) = convert_all(
            &info,
            vec![Item::Function {
                code: Bytes::from_static(code),
            }],
        );
        assert!(errors.is_empty());
        let mut con = server.client();
        send(&mut con, &cmds);
        send(&mut con, &cmds); // REPLACE
        let r: i64 = q(&mut con, &[b"FCALL", b"f1", b"0"]);
        assert_eq!(r, 7);
    }
}

/// `DUMP` payloads captured from a real server are restored with the converter's `RESTORE`.
#[test]
fn restore_from_real_dump() {
    let servers: Vec<RedisServer> = [
        ServerKind::Redis60,
        ServerKind::Redis70,
        ServerKind::Valkey91,
    ]
    .into_iter()
    .map(start)
    .collect();
    for src in &servers {
        let src_info = server_info(src);
        let mut sc = src.client();
        let _: () = q(&mut sc, &[b"RPUSH", b"l", b"a", b"b", b"\x00"]);
        let _: () = q(&mut sc, &[b"ZADD", b"z", b"0.1", b"m", b"inf", b"n"]);
        let _: () = q(&mut sc, &[b"XADD", b"s", b"1-1", b"f", b"v"]);
        let _: () = q(&mut sc, &[b"XGROUP", b"CREATE", b"s", b"g", b"0"]);
        let _: () = q(&mut sc, &[b"HSET", b"h", b"f", b"v"]);
        let exp = now_ms() + 1_000_000;
        for dst in &servers {
            let dst_info = server_info(dst);
            let mut dc = dst.client();
            for (name, kind) in [
                (&b"l"[..], ValueKind::List),
                (b"z", ValueKind::ZSet),
                (b"s", ValueKind::Stream),
                (b"h", ValueKind::Hash),
            ] {
                let payload: Vec<u8> = q(&mut sc, &[b"DUMP", name]);
                let mut opts = ConvertOptions::new(dst_info.clone());
                opts.source_flavor = src_info.flavor;
                opts.source_rdb_version = src_info.rdb_version();
                let mut conv = Converter::new(opts);
                let mut out = Vec::new();
                let mut h = header(b"restored", kind, Some(exp));
                h.key = Bytes::from([b"r:", name].concat());
                let res = conv
                    .feed(Item::KeyStart(h.clone()), &mut out)
                    .and_then(|_| {
                        conv.feed(
                            Item::KeyEnd {
                                dump: Some(Bytes::from(payload.clone())),
                            },
                            &mut out,
                        )
                    });
                let accepted = dst_info.accepts_dump(src_info.flavor, src_info.rdb_version());
                res.expect("convert");
                if accepted {
                    assert_eq!(out.len(), 1);
                } else {
                    // Decoded to plain commands.
                    assert!(out.iter().all(|c| !c.cmd.is("RESTORE")));
                }
                send(&mut dc, &out);
                send(&mut dc, &out); // REPLACE
                assert_eq!(content(&mut sc, name), content(&mut dc, &h.key), "{name:?}");
                let pttl: i64 = q(&mut dc, &[b"PTTL", &h.key]);
                assert!((pttl - 1_000_000).abs() < 10_000);
                let t: String = q(&mut dc, &[b"TYPE", &h.key]);
                assert_eq!(t, format!("{kind:?}").to_lowercase());
                if src_info == dst_info {
                    let again: Vec<u8> = q(&mut dc, &[b"DUMP", &h.key]);
                    assert_eq!(again, payload, "DUMP of the restored key differs");
                }
            }
        }
    }
}

// ---------------------------------------------------------------- rewrites

/// A canonical description of a key's state, for comparing two servers.
fn snapshot(con: &mut redis::Connection, key: &[u8]) -> String {
    let t: String = q(con, &[b"TYPE", key]);
    let pttl: i64 = q(con, &[b"PTTL", key]);
    let ttl = match pttl {
        -1 => "persistent".to_string(),
        -2 => "absent".to_string(),
        n => format!("ttl~{}", (n + 30_000) / 60_000),
    };
    let body = match t.as_str() {
        "string" => format!("{:?}", q::<Vec<u8>>(con, &[b"GET", key])),
        "list" => format!(
            "{:?}",
            q::<Vec<Vec<u8>>>(con, &[b"LRANGE", key, b"0", b"-1"])
        ),
        "set" => format!("{:?}", q::<BTreeSet<Vec<u8>>>(con, &[b"SMEMBERS", key])),
        "zset" => format!(
            "{:?}",
            q::<Vec<(Vec<u8>, f64)>>(con, &[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"])
        ),
        "hash" => format!(
            "{:?}",
            q::<BTreeMap<Vec<u8>, Vec<u8>>>(con, &[b"HGETALL", key])
        ),
        "stream" => {
            let entries: Vec<(String, Vec<Vec<u8>>)> = q(con, &[b"XRANGE", key, b"-", b"+"]);
            let info = kv(q(con, &[b"XINFO", b"STREAM", key]));
            let groups: Vec<String> = arr(q(con, &[b"XINFO", b"GROUPS", key]))
                .into_iter()
                .map(|g| {
                    let g = kv(g);
                    format!(
                        "{} {} {} {}",
                        text(&g["name"]),
                        text(&g["last-delivered-id"]),
                        text(&g["pending"]),
                        text(&g["consumers"])
                    )
                })
                .collect();
            format!(
                "{entries:?} last={} groups={groups:?}",
                text(&info["last-generated-id"])
            )
        }
        _ => String::new(),
    };
    format!("{t} {ttl} {body}")
}

#[test]
fn rewrites_match_native_effects() {
    let (new, old) = (start(ServerKind::Redis70), start(ServerKind::Redis60));
    let old_info = server_info(&old);
    let (mut nc, mut oc) = (new.client(), old.client());
    let now = now_ms();
    let far = (now + 7_200_000).to_string();
    let far_s = ((now + 7_200_000) / 1000).to_string();
    let script: Vec<Vec<String>> = [
        "SET a 1 PXAT FAR",
        "SET b 2 NX GET EXAT FARS",
        "SET b 3 XX KEEPTTL",
        "RPUSH l 1 2 3 4 5 6 7",
        "LPOP l 2",
        "RPOP l 2",
        "LPOP l 0",
        "RPUSH l2 x y",
        "LMOVE l l2 LEFT RIGHT",
        "LMOVE l l2 RIGHT LEFT",
        "LMOVE l2 l3 LEFT LEFT",
        "LMOVE l2 l3 RIGHT RIGHT",
        "RPUSH p 1 2",
        "RPOP p 5",
        "XADD s 1-0 f 1",
        "XADD s 2-0 f 2",
        "XADD s 3-0 f 3",
        "XADD s MINID = 2 4-0 f 4",
        "XADD s MAXLEN = 10 5-0 f 5",
        "XADD s 6-1 f 6",
        "XTRIM s MINID 4-0",
        "XGROUP CREATE s g 0 ENTRIESREAD 0",
        "XGROUP CREATE s g2 $ MKSTREAM ENTRIESREAD 1",
        "XGROUP SETID s g 5-0 ENTRIESREAD 1",
        "XGROUP CREATECONSUMER s g c",
        "XCLAIM s g c 0 5-0 TIME 1000 RETRYCOUNT 2 FORCE JUSTID",
        "XSETID s 9-0 ENTRIESADDED 10 MAXDELETEDID 3-0",
        "SET e 1",
        "PEXPIREAT e FAR XX",
        "PEXPIREAT e FAR NX",
        "PEXPIRE e 7200000 GT",
    ]
    .iter()
    .map(|l| {
        l.split(' ')
            .map(|w| w.replace("FARS", &far_s).replace("FAR", &far))
            .collect()
    })
    .collect();
    for line in &script {
        let c = Cmd::new(line.iter().map(|s| Bytes::from(s.clone())));
        // The source evaluates the command; only what succeeds is propagated.
        if let Err(e) = exec(&mut nc, &c) {
            eprintln!("source rejected {}: {e}", show(&c));
            continue;
        }
        let mut out = Vec::new();
        rewrite_for_target(c.clone(), &old_info, now_ms(), &mut out);
        for r in &out {
            exec(&mut oc, r).unwrap_or_else(|e| panic!("{} -> {}: {e}", show(&c), show(r)));
        }
    }
    for k in ["a", "b", "l", "l2", "l3", "p", "s", "e"] {
        eprintln!("{k}: {}", snapshot(&mut oc, k.as_bytes()));
        assert_eq!(
            snapshot(&mut nc, k.as_bytes()),
            snapshot(&mut oc, k.as_bytes()),
            "key {k}"
        );
    }
}

// ---------------------------------------------------------------- RESTORE of payloads the target cannot read

/// Creates keys of every type and encoding on a source; returns their names. Every consumer of
/// the stream groups owns pending entries (idle consumers cannot be created before 6.2).
fn populate(con: &mut redis::Connection) -> Vec<Vec<u8>> {
    let run = |con: &mut redis::Connection, line: &[&[u8]]| {
        let _: Value = q(con, line);
    };
    let many = |prefix: &str, n: usize| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("{prefix}{i}").into_bytes())
            .collect()
    };
    let long = vec![b'x'; 300];
    run(con, &[b"SET", b"str", b"hello"]);
    run(con, &[b"SET", b"str:int", b"-12345"]);
    run(con, &[b"SET", b"str:long", &long, b"PX", b"3600000"]);
    run(con, &[b"SET", b"str:bin", b"\x00\xff\r\n"]);
    run(con, &[b"RPUSH", b"list", b"a", b"b", b"", b"12", b"\x00"]);
    run(con, &[b"PEXPIRE", b"list", b"1800000"]);
    let mut big: Vec<&[u8]> = vec![b"RPUSH", b"list:big"];
    let items = many("item", 1000);
    big.extend(items.iter().map(|v| v.as_slice()));
    big.push(&long);
    run(con, &big);
    run(
        con,
        &[b"SADD", b"set:int", b"1", b"2", b"3", b"-7", b"100000"],
    );
    run(con, &[b"SADD", b"set:small", b"a", b"b", b"c", b""]);
    run(con, &[b"PEXPIRE", b"set:small", b"2700000"]);
    let mut big: Vec<&[u8]> = vec![b"SADD", b"set:big"];
    let members = many("m", 600);
    big.extend(members.iter().map(|v| v.as_slice()));
    run(con, &big);
    run(
        con,
        &[b"ZADD", b"zset", b"1.5", b"a", b"-2", b"b", b"inf", b"c"],
    );
    run(
        con,
        &[
            b"ZADD", b"zset", b"-inf", b"d", b"0.1", b"e", b"1e300", b"f",
        ],
    );
    run(con, &[b"PEXPIRE", b"zset", b"3000000"]);
    let scores: Vec<Vec<u8>> = (0..300)
        .map(|i| format!("{}", i as f64 * 0.37 - 50.0).into_bytes())
        .collect();
    let mut big: Vec<&[u8]> = vec![b"ZADD", b"zset:big"];
    for (s, m) in scores.iter().zip(&members) {
        big.push(s);
        big.push(m);
    }
    run(con, &big);
    run(
        con,
        &[b"HSET", b"hash", b"f1", b"v1", b"f2", b"", b"n", b"42"],
    );
    run(con, &[b"PEXPIRE", b"hash", b"3500000"]);
    let mut big: Vec<&[u8]> = vec![b"HSET", b"hash:big"];
    for (f, v) in members.iter().zip(&items) {
        big.push(f);
        big.push(v);
    }
    run(con, &big);
    for (id, f, v) in [
        (&b"1-1"[..], &b"f"[..], &b"v"[..]),
        (b"1-2", b"", b""),
        (b"2-0", b"bin\x00", b"\xff"),
        (b"3-0", b"f", b"w"),
        (b"4-0", b"g", b"x"),
    ] {
        run(con, &[b"XADD", b"stream", id, f, v]);
    }
    run(con, &[b"XDEL", b"stream", b"3-0"]);
    run(con, &[b"XGROUP", b"CREATE", b"stream", b"g1", b"0"]);
    run(con, &[b"XGROUP", b"CREATE", b"stream", b"g2", b"$"]);
    run(
        con,
        &[
            b"XREADGROUP",
            b"GROUP",
            b"g1",
            b"alice",
            b"COUNT",
            b"2",
            b"STREAMS",
            b"stream",
            b">",
        ],
    );
    run(
        con,
        &[
            b"XREADGROUP",
            b"GROUP",
            b"g1",
            b"bob",
            b"COUNT",
            b"1",
            b"STREAMS",
            b"stream",
            b">",
        ],
    );
    // A second delivery of alice's first entry to bob.
    run(con, &[b"XCLAIM", b"stream", b"g1", b"bob", b"0", b"1-1"]);
    run(con, &[b"XACK", b"stream", b"g1", b"2-0"]);
    run(con, &[b"PEXPIRE", b"stream", b"3600000"]);
    [
        "str",
        "str:int",
        "str:long",
        "str:bin",
        "list",
        "list:big",
        "set:int",
        "set:small",
        "set:big",
        "zset",
        "zset:big",
        "hash",
        "hash:big",
        "stream",
    ]
    .iter()
    .map(|k| k.as_bytes().to_vec())
    .collect()
}

/// A key's value in canonical form (no TTL): `snapshot` plus, for streams, the PEL (ids, owners,
/// delivery counts) and the consumers of every group.
fn content(con: &mut redis::Connection, key: &[u8]) -> String {
    let snap = snapshot(con, key);
    let (t, rest) = snap.split_once(' ').expect("type");
    let (_ttl, body) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut s = format!("{t} {body}");
    if t == "stream" {
        for g in arr(q(con, &[b"XINFO", b"GROUPS", key])) {
            let name = text(&kv(g)["name"]);
            let pel: Vec<String> = arr(q(
                con,
                &[b"XPENDING", key, name.as_bytes(), b"-", b"+", b"100"],
            ))
            .into_iter()
            .map(|row| {
                let row = arr(row);
                format!("{} {} {}", text(&row[0]), text(&row[1]), text(&row[3]))
            })
            .collect();
            let consumers: BTreeSet<String> =
                arr(q(con, &[b"XINFO", b"CONSUMERS", key, name.as_bytes()]))
                    .into_iter()
                    .map(|c| text(&kv(c)["name"]))
                    .collect();
            s.push_str(&format!(" {name}: pel={pel:?} consumers={consumers:?}"));
        }
    }
    s
}

fn key_kind(con: &mut redis::Connection, key: &[u8]) -> ValueKind {
    let t: String = q(con, &[b"TYPE", key]);
    match t.as_str() {
        "string" => ValueKind::String,
        "list" => ValueKind::List,
        "set" => ValueKind::Set,
        "zset" => ValueKind::ZSet,
        "hash" => ValueKind::Hash,
        "stream" => ValueKind::Stream,
        other => panic!("type {other}"),
    }
}

fn assert_pttl(con: &mut redis::Connection, key: &[u8], want: i64) {
    let got: i64 = q(con, &[b"PTTL", key]);
    if want < 0 {
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(key));
    } else {
        assert!(
            got > 0 && (got - want).abs() < 10_000,
            "{:?}: pttl {got}, expected ~{want}",
            String::from_utf8_lossy(key)
        );
    }
}

/// `DUMP`s every key of `src_kind` whose payload `dst_kind` cannot `RESTORE`, then writes it to the
/// target both ways: a live `RESTORE` rewritten by [`rewrite_for_target`], and a captured dump
/// through the [`Converter`]. The target's keys must equal the source's (value and TTL).
fn restore_decoded(src_kind: ServerKind, dst_kind: ServerKind) {
    let (src, dst) = (start(src_kind), start(dst_kind));
    let (src_info, dst_info) = (server_info(&src), server_info(&dst));
    assert!(!dst_info.accepts_dump(src_info.flavor, src_info.rdb_version()));
    let (mut sc, mut dc) = (src.client(), dst.client());
    let keys = populate(&mut sc);
    for (i, key) in keys.iter().enumerate() {
        let ctx = String::from_utf8_lossy(key).into_owned();
        let payload: Vec<u8> = q(&mut sc, &[b"DUMP", key]);
        let pttl: i64 = q(&mut sc, &[b"PTTL", key]);
        let kind = key_kind(&mut sc, key);
        let want = content(&mut sc, key);

        // 1. A live RESTORE, with the option combinations the source may propagate.
        let now = now_ms();
        let mut args: Vec<Vec<u8>> = vec![b"RESTORE".to_vec(), key.clone()];
        let abs = i % 2 == 0;
        args.push(match (pttl, abs) {
            (-1, _) => b"0".to_vec(),
            (t, true) => (now + t).to_string().into_bytes(),
            (t, false) => t.to_string().into_bytes(),
        });
        args.push(payload.clone());
        if i % 3 != 0 {
            args.push(b"REPLACE".to_vec());
            // What REPLACE replaces on the target.
            let _: () = q(&mut dc, &[b"SET", key, b"old"]);
        }
        if abs {
            args.push(b"ABSTTL".to_vec());
        }
        if i % 4 == 1 {
            args.extend([b"IDLETIME".to_vec(), b"100".to_vec()]);
        }
        let cmd = Cmd::new(args.into_iter().map(Bytes::from));
        let mut out = Vec::new();
        rewrite_for_target(cmd, &dst_info, now, &mut out);
        assert!(out.iter().all(|c| !c.is("RESTORE")), "{ctx}: not decoded");
        for c in &out {
            exec(&mut dc, c).unwrap_or_else(|e| panic!("{ctx}: {} failed: {e}", show(c)));
        }
        assert_eq!(content(&mut dc, key), want, "{ctx} (rewrite)");
        assert_pttl(&mut dc, key, pttl);

        // 2. A captured dump in an RDB, through the converter (replacing what is there).
        let mut opts = ConvertOptions::new(dst_info.clone());
        opts.source_flavor = src_info.flavor;
        opts.source_rdb_version = src_info.rdb_version();
        let mut conv = Converter::new(opts);
        let mut h = header(key, kind, (pttl >= 0).then(|| now_ms() + pttl));
        h.key = Bytes::from([&b"c:"[..], key].concat());
        let _: () = q(&mut dc, &[b"SET", &h.key, b"old"]);
        let mut cmds = Vec::new();
        conv.feed(Item::KeyStart(h.clone()), &mut cmds)
            .and_then(|_| {
                conv.feed(
                    Item::KeyEnd {
                        dump: Some(Bytes::from(payload)),
                    },
                    &mut cmds,
                )
            })
            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert!(cmds.iter().all(|c| !c.cmd.is("RESTORE")), "{ctx}");
        send(&mut dc, &cmds);
        assert_eq!(content(&mut dc, &h.key), want, "{ctx} (converter)");
        assert_pttl(&mut dc, &h.key, pttl);
    }
    let n: usize = q(&mut dc, &[b"DBSIZE"]);
    assert_eq!(n, 2 * keys.len());
}

#[test]
fn restore_redis_70_dumps_on_60() {
    restore_decoded(ServerKind::Redis70, ServerKind::Redis60);
}

#[test]
fn restore_valkey_91_dumps_on_redis_70() {
    restore_decoded(ServerKind::Valkey91, ServerKind::Redis70);
}
