//! Unit tests of the converter and the rewrites: exact commands for every type and target.

use bytes::Bytes;

use super::*;
use crate::cmd::Cmd;
use crate::rdb::{
    Chunk, HashField, KeyHeader, PendingEntry, StreamConsumer, StreamEntry, StreamGroup, StreamId,
    StreamMeta, ValueKind,
};

fn target(flavor: Flavor, maj: u32, min: u32) -> ServerInfo {
    ServerInfo {
        flavor,
        version: (maj, min, 0),
        cluster_enabled: false,
    }
}
fn r(maj: u32, min: u32) -> ServerInfo {
    target(Flavor::Redis, maj, min)
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn hdr(key: &str, kind: ValueKind, expire_ms: Option<i64>) -> KeyHeader {
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

fn show(c: &Cmd) -> String {
    c.args
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

struct Run {
    cmds: Vec<String>,
    dbs: Vec<u32>,
    errors: Vec<ConvertError>,
}

fn run_opts(opts: ConvertOptions, items: Vec<Item>) -> Run {
    let mut c = Converter::new(opts);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for it in items {
        if let Err(e) = c.feed(it, &mut out) {
            errors.push(e);
        }
    }
    Run {
        cmds: out.iter().map(|d| show(&d.cmd)).collect(),
        dbs: out.iter().map(|d| d.db).collect(),
        errors,
    }
}

fn run(t: ServerInfo, items: Vec<Item>) -> Run {
    run_opts(ConvertOptions::new(t), items)
}

fn key(h: KeyHeader, chunks: Vec<Chunk>) -> Vec<Item> {
    let mut v = vec![Item::KeyStart(h)];
    v.extend(chunks.into_iter().map(Item::Chunk));
    v.push(Item::KeyEnd { dump: None });
    v
}

fn list(items: &[&str]) -> Vec<Bytes> {
    items.iter().map(|s| b(s)).collect()
}

#[test]
fn string_single_part_folds_expiry_on_62() {
    let items = key(
        hdr("k", ValueKind::String, Some(5000)),
        vec![Chunk::StringPart(b("v"))],
    );
    let x = run(r(7, 0), items.clone());
    assert_eq!(x.cmds, ["SET k v PXAT 5000"]);
    assert!(x.errors.is_empty());
    let x = run(r(6, 0), items);
    assert_eq!(x.cmds, ["SET k v", "PEXPIREAT k 5000"]);
}

#[test]
fn string_parts_and_empty_string() {
    let x = run(
        r(7, 0),
        key(
            hdr("k", ValueKind::String, Some(7)),
            vec![
                Chunk::StringPart(b("ab")),
                Chunk::StringPart(b("cd")),
                Chunk::StringPart(b("e")),
            ],
        ),
    );
    assert_eq!(
        x.cmds,
        ["SET k ab", "APPEND k cd", "APPEND k e", "PEXPIREAT k 7"]
    );
    let x = run(r(6, 0), key(hdr("e", ValueKind::String, None), vec![]));
    assert_eq!(x.cmds, ["SET e "]);
    // Non-positive expiry stays a valid (past) time.
    let x = run(
        r(6, 0),
        key(
            hdr("p", ValueKind::String, Some(-5)),
            vec![Chunk::StringPart(b("x"))],
        ),
    );
    assert_eq!(x.cmds, ["SET p x", "PEXPIREAT p 1"]);
}

#[test]
fn list_batches_across_chunks_with_del() {
    let mut o = ConvertOptions::new(r(7, 0));
    o.elements_per_command = 2;
    let items = key(
        hdr("l", ValueKind::List, Some(99)),
        vec![
            Chunk::ListItems(list(&["a", "b", "c"])),
            Chunk::ListItems(list(&["d", "e"])),
        ],
    );
    let x = run_opts(o.clone(), items.clone());
    assert_eq!(
        x.cmds,
        [
            "DEL l",
            "RPUSH l a b",
            "RPUSH l c d",
            "RPUSH l e",
            "PEXPIREAT l 99"
        ]
    );
    o.replace = false;
    let x = run_opts(o, items);
    assert_eq!(x.cmds[0], "RPUSH l a b");
    assert_eq!(x.cmds.len(), 4);
}

#[test]
fn empty_collection_only_deletes() {
    let x = run(r(7, 0), key(hdr("s", ValueKind::Set, Some(5)), vec![]));
    assert_eq!(x.cmds, ["DEL s"]);
}

#[test]
fn set_and_zset() {
    let x = run(
        r(6, 0),
        key(
            hdr("s", ValueKind::Set, None),
            vec![Chunk::SetMembers(list(&["x", "y"]))],
        ),
    );
    assert_eq!(x.cmds, ["DEL s", "SADD s x y"]);
    let x = run(
        r(6, 0),
        key(
            hdr("z", ValueKind::ZSet, None),
            vec![Chunk::ZSetMembers(vec![
                (b("a"), 0.1),
                (b("b"), -0.0),
                (b("c"), 1e300),
                (b("d"), f64::INFINITY),
                (b("e"), f64::NEG_INFINITY),
                (b("f"), 3.0000000000000004),
                (b("g"), f64::NAN),
            ])],
        ),
    );
    assert_eq!(
        x.cmds,
        [
            "DEL z",
            "ZADD z 0.1 a -0 b 1e300 c inf d -inf e 3.0000000000000004 f"
        ]
    );
    assert!(matches!(&x.errors[..], [ConvertError::Unsupported { key, .. }] if key == "z"));
}

fn hash_items() -> Vec<Item> {
    key(
        hdr("h", ValueKind::Hash, Some(1000)),
        vec![Chunk::HashFields(vec![
            HashField {
                field: b("a"),
                value: b("1"),
                expire_ms: Some(500),
            },
            HashField {
                field: b("b"),
                value: b("2"),
                expire_ms: None,
            },
            HashField {
                field: b("c"),
                value: b("3"),
                expire_ms: Some(500),
            },
            HashField {
                field: b("d"),
                value: b("4"),
                expire_ms: Some(400),
            },
        ])],
    )
}

#[test]
fn hash_with_field_ttls() {
    let x = run(target(Flavor::Valkey, 9, 0), hash_items());
    assert_eq!(
        x.cmds,
        [
            "DEL h",
            "HSET h a 1 b 2 c 3 d 4",
            "HPEXPIREAT h 400 FIELDS 1 d",
            "HPEXPIREAT h 500 FIELDS 2 a c",
            "PEXPIREAT h 1000"
        ]
    );
    assert!(x.errors.is_empty());
    assert_eq!(run(r(7, 4), hash_items()).cmds.len(), 5);
    // Older targets: fields written, TTLs reported.
    let x = run(r(7, 0), hash_items());
    assert_eq!(
        x.cmds,
        ["DEL h", "HSET h a 1 b 2 c 3 d 4", "PEXPIREAT h 1000"]
    );
    assert!(
        matches!(&x.errors[..], [ConvertError::Unsupported { key, reason }] if key == "h" && reason.contains("3 hash field TTLs"))
    );
    let x = run(target(Flavor::Valkey, 8, 1), hash_items());
    assert_eq!(x.errors.len(), 1);
    let x = run(r(3, 2), hash_items());
    assert_eq!(x.cmds[1], "HMSET h a 1 b 2 c 3 d 4");
}

fn sid(ms: u64, seq: u64) -> StreamId {
    StreamId { ms, seq }
}

fn stream_items() -> Vec<Item> {
    key(
        hdr("s", ValueKind::Stream, Some(123)),
        vec![
            Chunk::StreamEntries(vec![
                StreamEntry {
                    id: sid(1, 0),
                    fields: vec![(b("f"), b("v")), (b("g"), b("w"))],
                },
                StreamEntry {
                    id: sid(2, 0),
                    fields: vec![(b("f"), b("x"))],
                },
            ]),
            Chunk::StreamEntries(vec![StreamEntry {
                id: sid(3, 1),
                fields: vec![(b("f"), b("y"))],
            }]),
            Chunk::StreamMeta(StreamMeta {
                length: 3,
                last_id: sid(5, 0),
                first_id: Some(sid(1, 0)),
                max_deleted_id: Some(sid(4, 0)),
                entries_added: Some(4),
            }),
            Chunk::StreamGroup(StreamGroup {
                name: b("g1"),
                last_delivered_id: sid(3, 1),
                entries_read: Some(3),
                pending: vec![
                    pe(1, 0, "alice", 1000, 1),
                    pe(2, 0, "alice", 1000, 1),
                    pe(3, 1, "bob", 2000, 4),
                ],
                consumers: vec![consumer("alice"), consumer("bob"), consumer("carol")],
            }),
            Chunk::StreamGroup(StreamGroup {
                name: b("g2"),
                last_delivered_id: sid(0, 0),
                entries_read: None,
                pending: vec![],
                consumers: vec![],
            }),
        ],
    )
}

fn pe(ms: u64, seq: u64, c: &str, t: u64, n: u64) -> PendingEntry {
    PendingEntry {
        id: sid(ms, seq),
        consumer: b(c),
        delivery_time_ms: t,
        delivery_count: n,
    }
}

fn consumer(name: &str) -> StreamConsumer {
    StreamConsumer {
        name: b(name),
        seen_time_ms: 1,
        active_time_ms: None,
    }
}

#[test]
fn stream_on_70() {
    let x = run(r(7, 0), stream_items());
    assert_eq!(
        x.cmds,
        [
            "DEL s",
            "XADD s 1-0 f v g w",
            "XADD s 2-0 f x",
            "XADD s 3-1 f y",
            "XSETID s 5-0 ENTRIESADDED 4 MAXDELETEDID 4-0",
            "XGROUP CREATE s g1 3-1 ENTRIESREAD 3",
            "XGROUP CREATECONSUMER s g1 carol",
            "XCLAIM s g1 alice 0 1-0 2-0 TIME 1000 RETRYCOUNT 1 FORCE JUSTID",
            "XCLAIM s g1 bob 0 3-1 TIME 2000 RETRYCOUNT 4 FORCE JUSTID",
            "XGROUP CREATE s g2 0-0",
            "PEXPIREAT s 123",
        ]
    );
    assert!(x.errors.is_empty(), "{:?}", x.errors);
}

#[test]
fn stream_on_60_and_pel_batching() {
    let mut o = ConvertOptions::new(r(6, 0));
    o.elements_per_command = 1;
    let x = run_opts(o, stream_items());
    assert_eq!(
        x.cmds,
        [
            "DEL s",
            "XADD s 1-0 f v g w",
            "XADD s 2-0 f x",
            "XADD s 3-1 f y",
            "XSETID s 5-0",
            "XGROUP CREATE s g1 3-1",
            "XREADGROUP GROUP g1 carol COUNT 1 STREAMS s 0",
            "XCLAIM s g1 alice 0 1-0 TIME 1000 RETRYCOUNT 1 FORCE JUSTID",
            "XCLAIM s g1 alice 0 2-0 TIME 1000 RETRYCOUNT 1 FORCE JUSTID",
            "XCLAIM s g1 bob 0 3-1 TIME 2000 RETRYCOUNT 4 FORCE JUSTID",
            "XGROUP CREATE s g2 0-0",
            "PEXPIREAT s 123",
        ]
    );
    assert!(x.errors.is_empty(), "{:?}", x.errors);
}

#[test]
fn empty_streams() {
    let meta = StreamMeta {
        length: 0,
        last_id: sid(7, 7),
        first_id: None,
        max_deleted_id: None,
        entries_added: None,
    };
    let x = run(
        r(7, 0),
        key(
            hdr("e", ValueKind::Stream, None),
            vec![Chunk::StreamMeta(meta.clone())],
        ),
    );
    assert_eq!(
        x.cmds,
        [
            "DEL e",
            "XGROUP CREATE e __shardsync_mkstream__ $ MKSTREAM",
            "XGROUP DESTROY e __shardsync_mkstream__",
            "XSETID e 7-7"
        ]
    );
    let x = run(
        r(7, 0),
        key(
            hdr("e", ValueKind::Stream, None),
            vec![
                Chunk::StreamMeta(meta.clone()),
                Chunk::StreamGroup(StreamGroup {
                    name: b("g"),
                    last_delivered_id: sid(7, 7),
                    entries_read: Some(u64::MAX),
                    pending: vec![],
                    consumers: vec![consumer("c")],
                }),
            ],
        ),
    );
    assert_eq!(
        x.cmds,
        [
            "DEL e",
            "XGROUP CREATE e g 7-7 MKSTREAM",
            "XSETID e 7-7",
            "XGROUP CREATECONSUMER e g c"
        ]
    );
    // Missing meta is reported, the stream still created.
    let x = run(r(7, 0), key(hdr("e", ValueKind::Stream, None), vec![]));
    assert_eq!(x.cmds.len(), 3);
    assert!(matches!(&x.errors[..], [ConvertError::Sequence { .. }]));
}

fn payload(version: u16) -> Bytes {
    let mut p = vec![0u8, 1, b'x'];
    p.extend_from_slice(&version.to_le_bytes());
    p.extend_from_slice(&[0; 8]);
    Bytes::from(p)
}

#[test]
fn restore_and_modules() {
    let dump_key = |kind, exp, v| {
        vec![
            Item::KeyStart(hdr("k", kind, exp)),
            Item::KeyEnd {
                dump: Some(payload(v)),
            },
        ]
    };
    let x = run(r(7, 0), dump_key(ValueKind::List, Some(42), 10));
    assert_eq!(x.cmds.len(), 1);
    assert!(x.cmds[0].starts_with("RESTORE k 42 "));
    assert!(x.cmds[0].ends_with(" REPLACE ABSTTL"));
    let mut o = ConvertOptions::new(r(7, 0));
    o.replace = false;
    let x = run_opts(o.clone(), dump_key(ValueKind::List, None, 9));
    assert!(x.cmds[0].starts_with("RESTORE k 0 ") && x.cmds[0].ends_with(" ABSTTL"));
    assert!(!x.cmds[0].contains("REPLACE"));
    // Newer payload than the target reads: decoded to plain commands.
    let x = run(r(6, 0), dump_key(ValueKind::String, None, 10));
    assert_eq!(x.cmds, ["SET k x"]);
    assert!(x.errors.is_empty());
    // use_restore off: decoded too.
    o.use_restore = false;
    let x = run_opts(o.clone(), dump_key(ValueKind::String, Some(42), 9));
    assert_eq!(x.cmds, ["SET k x PXAT 42"]);
    assert!(x.errors.is_empty());
    // Modules are always restored.
    let x = run_opts(o, dump_key(ValueKind::Module, None, 9));
    assert_eq!(x.cmds.len(), 1);
    assert!(x.errors.is_empty());
    let x = run(r(7, 0), key(hdr("m", ValueKind::Module, None), vec![]));
    assert!(matches!(
        &x.errors[..],
        [ConvertError::Unconvertible { .. }]
    ));
}

#[test]
fn functions_dbs_and_ignored_items() {
    let code = b("#!lua name=mylib\nredis.register_function('f', function() return 1 end)");
    let items = vec![
        Item::Header {
            flavor: Flavor::Redis,
            version: 10,
        },
        Item::Aux {
            key: b("redis-ver"),
            value: b("7.0.0"),
        },
        Item::Function { code: code.clone() },
        Item::SelectDb(3),
        Item::ResizeDb {
            db_size: 1,
            expires_size: 0,
        },
        Item::KeyStart(KeyHeader {
            db: 3,
            ..hdr("k", ValueKind::String, None)
        }),
        Item::Chunk(Chunk::StringPart(b("v"))),
        Item::KeyEnd { dump: None },
        Item::ModuleAux { module_id: 1 },
        Item::End { checksum: None },
    ];
    let x = run(r(7, 0), items.clone());
    assert_eq!(x.cmds.len(), 2);
    assert!(x.cmds[0].starts_with("FUNCTION LOAD REPLACE #!lua name=mylib"));
    assert_eq!(x.dbs, [0, 3]);
    let x = run(r(6, 2), items);
    assert_eq!(x.cmds, ["SET k v"]);
    assert!(
        matches!(&x.errors[..], [ConvertError::Function { library, .. }] if library == "mylib")
    );
}

#[test]
fn sequence_errors_do_not_panic() {
    let x = run(
        r(7, 0),
        vec![
            Item::Chunk(Chunk::SetMembers(list(&["a"]))),
            Item::KeyEnd { dump: None },
            Item::KeyStart(hdr("k", ValueKind::Set, None)),
            Item::Chunk(Chunk::ListItems(list(&["a"]))),
            Item::KeyStart(hdr("k2", ValueKind::Set, None)),
            Item::Chunk(Chunk::SetMembers(list(&["a"]))),
            Item::KeyEnd { dump: None },
        ],
    );
    assert_eq!(x.errors.len(), 4, "{:?}", x.errors);
    assert_eq!(x.cmds, ["DEL k2", "SADD k2 a"]);
    assert!(x.errors[3].key().is_some_and(|k| k == "k"));
    assert!(!x.errors[0].to_string().is_empty());
}

// ---- rewrites ----

fn rw(args: &[&str], t: ServerInfo) -> Vec<String> {
    let mut out = Vec::new();
    rewrite_for_target(Cmd::new(args.iter().map(|s| b(s))), &t, 10_000, &mut out);
    out.iter().map(show).collect()
}

#[test]
fn rewrite_set_absolute_expiry() {
    assert_eq!(
        rw(&["SET", "k", "v", "NX", "GET", "PXAT", "15000"], r(6, 0)),
        ["SET k v NX PX 5000"]
    );
    assert_eq!(
        rw(&["set", "k", "v", "exat", "20", "XX"], r(6, 0)),
        ["set k v PX 10000 XX"]
    );
    assert_eq!(
        rw(&["SET", "k", "v", "PXAT", "5"], r(6, 0)),
        ["SET k v PX 1"]
    );
    assert_eq!(
        rw(&["SET", "k", "v", "KEEPTTL"], r(6, 0)),
        ["SET k v KEEPTTL"]
    );
    assert_eq!(
        rw(&["SET", "k", "v", "PXAT", "15000"], r(6, 2)),
        ["SET k v PXAT 15000"]
    );
    assert_eq!(
        rw(&["SET", "k", "v", "PXAT", "bad"], r(6, 0)),
        ["SET k v PXAT bad"]
    );
}

#[test]
fn rewrite_pops_and_moves() {
    assert_eq!(rw(&["LPOP", "l", "2"], r(6, 0)), ["LTRIM l 2 -1"]);
    assert_eq!(rw(&["RPOP", "l", "2"], r(6, 0)), ["LTRIM l 0 -3"]);
    assert!(rw(&["RPOP", "l", "0"], r(6, 0)).is_empty());
    assert_eq!(rw(&["LPOP", "l"], r(6, 0)), ["LPOP l"]);
    assert_eq!(rw(&["LPOP", "l", "2"], r(6, 2)), ["LPOP l 2"]);
    assert_eq!(
        rw(&["LMOVE", "a", "b", "right", "left"], r(6, 0)),
        ["RPOPLPUSH a b"]
    );
    let x = rw(&["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"], r(6, 0));
    assert!(x[0].starts_with("EVAL ") && x[0].ends_with(" 2 a b LEFT RIGHT"));
    assert_eq!(
        rw(&["LMOVE", "a", "b", "LEFT", "RIGHT"], r(7, 0)),
        ["LMOVE a b LEFT RIGHT"]
    );
}

#[test]
fn rewrite_streams() {
    assert_eq!(
        rw(
            &[
                "XSETID",
                "s",
                "5-0",
                "ENTRIESADDED",
                "9",
                "MAXDELETEDID",
                "1-0"
            ],
            r(6, 2)
        ),
        ["XSETID s 5-0"]
    );
    assert_eq!(
        rw(&["XSETID", "s", "5-0", "ENTRIESADDED", "9"], r(7, 0)),
        ["XSETID s 5-0 ENTRIESADDED 9"]
    );
    assert_eq!(
        rw(
            &[
                "xgroup",
                "create",
                "s",
                "g",
                "$",
                "ENTRIESREAD",
                "3",
                "MKSTREAM"
            ],
            r(6, 0)
        ),
        ["xgroup create s g $ MKSTREAM"]
    );
    assert_eq!(
        rw(
            &["XGROUP", "SETID", "s", "g", "0", "ENTRIESREAD", "0"],
            r(6, 2)
        ),
        ["XGROUP SETID s g 0"]
    );
    assert_eq!(
        rw(&["XGROUP", "CREATECONSUMER", "s", "g", "c"], r(6, 0)),
        ["XREADGROUP GROUP g c COUNT 1 STREAMS s 0"]
    );
    let copy = rw(&["COPY", "a", "b", "DB", "2", "REPLACE"], r(6, 0));
    assert!(
        copy[0].starts_with("EVAL ") && copy[0].ends_with(" 2 a b 1 2"),
        "{copy:?}"
    );
    assert_eq!(rw(&["COPY", "a", "b"], r(6, 2)), ["COPY a b"]);
    assert_eq!(
        rw(&["XGROUP", "CREATECONSUMER", "s", "g", "c"], r(6, 2)),
        ["XGROUP CREATECONSUMER s g c"]
    );
    assert_eq!(
        rw(
            &[
                "XADD",
                "s",
                "NOMKSTREAM",
                "MAXLEN",
                "~",
                "10",
                "LIMIT",
                "5",
                "1-1",
                "f",
                "v"
            ],
            r(6, 0)
        ),
        ["XADD s MAXLEN ~ 10 1-1 f v"]
    );
    let x = rw(&["XADD", "s", "MINID", "=", "5", "6-0", "f", "v"], r(6, 0));
    assert_eq!(x[0], "XADD s 6-0 f v");
    assert!(x[1].starts_with("EVAL ") && x[1].ends_with(" 1 s 5-0"));
    let x = rw(&["XTRIM", "s", "MINID", "3-2"], r(6, 0));
    assert!(x[0].starts_with("EVAL ") && x[0].ends_with(" 1 s 3-2"));
    assert_eq!(
        rw(&["XTRIM", "s", "MAXLEN", "=", "2", "LIMIT", "9"], r(6, 0)),
        ["XTRIM s MAXLEN = 2"]
    );
    assert_eq!(
        rw(&["XADD", "s", "MINID", "=", "5", "6-0", "f", "v"], r(6, 2)),
        ["XADD s MINID = 5 6-0 f v"]
    );
}

#[test]
fn rewrite_expire_options_publish_and_passthrough() {
    assert_eq!(
        rw(&["PEXPIREAT", "k", "100", "XX"], r(6, 2)),
        ["PEXPIREAT k 100"]
    );
    assert_eq!(
        rw(&["PEXPIREAT", "k", "100", "XX"], r(7, 0)),
        ["PEXPIREAT k 100 XX"]
    );
    assert_eq!(rw(&["SPUBLISH", "c", "m"], r(6, 0)), ["PUBLISH c m"]);
    assert_eq!(
        rw(&["ZADD", "z", "GT", "1", "a"], r(6, 2)),
        ["ZADD z GT 1 a"]
    );
    assert_eq!(rw(&["FOO"], r(6, 0)), ["FOO"]);
    assert_eq!(
        rw(&["SET", "k", "v"], target(Flavor::Valkey, 9, 1)),
        ["SET k v"]
    );
}

#[test]
fn restore_hook_detects_foreign_payloads() {
    let mk = |v| Cmd::new([b("RESTORE"), b("k"), b("0"), payload(v)]);
    assert!(compat::restore_needs_decode(&mk(10), &r(6, 0)));
    assert!(!compat::restore_needs_decode(&mk(9), &r(6, 0)));
    assert!(compat::restore_needs_decode(&mk(80), &r(7, 0)));
    assert!(!compat::restore_needs_decode(
        &mk(80),
        &target(Flavor::Valkey, 9, 1)
    ));
    let mut out = Vec::new();
    rewrite_for_target(mk(10), &r(6, 0), 0, &mut out);
    assert_eq!(out.iter().map(show).collect::<Vec<_>>(), ["SET k x"]);
}

/// Decodes hex (fixtures).
fn hex(s: &str) -> Bytes {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect::<Vec<u8>>()
        .into()
}

/// `DUMP` output of a real redis-server 7.0 (RDB 10) for: `SET str hello`, `RPUSH list a b "" 12`
/// (quicklist), `SADD si 1 2 3 -7` (intset), `SADD sl a b c` (hashtable), `ZADD z 1.5 a -2 b inf c`
/// (listpack), `HSET h f1 v1 f2 ""` (listpack), and stream `s` (`XADD s 1-1 f v`, `XADD s 2-0 a b
/// c d`, `XGROUP CREATE s g 0`, `XREADGROUP GROUP g alice COUNT 1 …`, `XREADGROUP GROUP g bob …`).
const R70: [(&str, &str); 7] = [
    ("str", "000568656c6c6f0a006372df766534200a"),
    (
        "list",
        "1201021111000000040081610281620280010c01ff0a00eae189c88fc04b05",
    ),
    (
        "si",
        "0b100200000004000000f9ff0100020003000a003bfa4a3923b1fa84",
    ),
    ("sl", "02030162016101630a0099cc80dd5982d255"),
    (
        "z",
        "111d1d0000000600816202dffe0281610283312e350481630283696e6604ff0a007356ad6cc2484ad0",
    ),
    (
        "h",
        "10151500000004008266310382763103826632038001ff0a00e355d9e2d89366d9",
    ),
    (
        "s",
        "13011000000000000000010000000000000001343400000013000201000101018166020001020100010001\
         817602040100010101dfff0202018161028162028163028164020801ff020200010100000201016702000202\
         00000000000000010000000000000001c929de0fa20100000100000000000000020000000000000000d129de\
         0fa2010000010205616c696365c929de0fa2010000010000000000000001000000000000000103626f62d129\
         de0fa201000001000000000000000200000000000000000a00fd076fb46cf749f1",
    ),
];

/// `DUMP` of `SADD sl a b c` on valkey-server 9.1 (RDB 80, set listpack, Valkey type 20).
const VK91_SET_LISTPACK: &str = "1410100000000300816102816202816302ff5000cbc02085a8c5174a";

fn r70(name: &str) -> Bytes {
    hex(R70.iter().find(|(n, _)| *n == name).expect("fixture").1)
}

fn rw_restore(args: &[Bytes], t: ServerInfo, now: i64) -> Vec<String> {
    let mut out = Vec::new();
    rewrite_for_target(Cmd::new(args.iter().cloned()), &t, now, &mut out);
    out.iter().map(show).collect()
}

#[test]
fn rewrite_restore_of_real_payloads_for_60() {
    let restore = |name: &str| [b("RESTORE"), b("k"), b("0"), r70(name)];
    let expect: [(&str, &[&str]); 6] = [
        ("str", &["SET k hello"]),
        ("list", &["DEL k", "RPUSH k a b  12"]),
        ("si", &["DEL k", "SADD k -7 1 2 3"]),
        ("sl", &["DEL k", "SADD k b a c"]),
        ("z", &["DEL k", "ZADD k -2 b 1.5 a inf c"]),
        ("h", &["DEL k", "HSET k f1 v1 f2 "]),
    ];
    for (name, want) in expect {
        assert_eq!(rw_restore(&restore(name), r(6, 0), 0), want, "{name}");
    }
    let s = rw_restore(&restore("s"), r(6, 0), 0);
    assert_eq!(
        s[..3],
        ["DEL k", "XADD k 1-1 f v", "XADD k 2-0 a b c d"],
        "{s:?}"
    );
    assert!(
        s.iter().any(|c| c.starts_with("XGROUP CREATE k g ")),
        "{s:?}"
    );
    assert!(
        s.iter().any(|c| c.starts_with("XCLAIM k g alice 0 1-1 ")),
        "{s:?}"
    );
    assert!(
        s.iter().any(|c| c.starts_with("XCLAIM k g bob 0 2-0 ")),
        "{s:?}"
    );
    // A target that reads RDB 10 gets the RESTORE as is.
    let same = rw_restore(&restore("list"), r(7, 0), 0);
    assert_eq!(same, [show(&Cmd::new(restore("list")))]);
}

#[test]
fn rewrite_restore_expiry_and_options() {
    let p = r70("str");
    let with = |ttl: &str, opts: &[&str]| {
        let mut a = vec![b("RESTORE"), b("k"), b(ttl), p.clone()];
        a.extend(opts.iter().map(|o| b(o)));
        a
    };
    // Relative TTL: from now.
    assert_eq!(
        rw_restore(&with("5000", &[]), r(6, 0), 1_000),
        ["SET k hello", "PEXPIREAT k 6000"]
    );
    // ABSTTL and the other options (case-insensitive).
    assert_eq!(
        rw_restore(
            &with(
                "123456",
                &["replace", "ABSTTL", "IDLETIME", "10", "FREQ", "3"]
            ),
            r(6, 0),
            1_000
        ),
        ["SET k hello", "PEXPIREAT k 123456"]
    );
    // A list with a TTL on 6.0: the PEXPIREAT follows the data.
    let mut a = with("0", &[]);
    a[2] = b("7000");
    a[3] = r70("list");
    assert_eq!(
        rw_restore(&a, r(6, 0), 1_000),
        ["DEL k", "RPUSH k a b  12", "PEXPIREAT k 8000"]
    );
    // Valkey 9.1 payload on Redis 7.0: set listpack decoded, PXAT used.
    let v = [
        b("RESTORE"),
        b("k"),
        b("9000"),
        hex(VK91_SET_LISTPACK),
        b("ABSTTL"),
    ];
    assert_eq!(
        rw_restore(&v, r(7, 0), 1_000),
        ["DEL k", "SADD k a b c", "PEXPIREAT k 9000"]
    );
}

#[test]
fn rewrite_restore_undecodable_passes_through() {
    let mut corrupt = r70("list").to_vec();
    corrupt[5] ^= 0xff; // CRC mismatch
    let mut bad_type = vec![200u8, 0];
    bad_type.extend_from_slice(&10u16.to_le_bytes());
    bad_type.extend_from_slice(&[0; 8]);
    let cases = [
        vec![b("RESTORE"), b("k"), b("0"), Bytes::from(corrupt)],
        vec![b("RESTORE"), b("k"), b("0"), Bytes::from(bad_type)],
        vec![b("RESTORE"), b("k"), b("-1"), r70("str")],
        vec![b("RESTORE"), b("k"), b("x"), r70("str")],
        vec![b("RESTORE"), b("k"), b("0"), r70("str"), b("IDLETIME")],
        vec![b("RESTORE"), b("k"), b("0"), r70("str"), b("BOGUS")],
    ];
    for c in cases {
        let want = [show(&Cmd::new(c.clone()))];
        assert_eq!(rw_restore(&c, r(6, 0), 0), want);
    }
}

#[test]
fn converter_decodes_real_payloads_the_target_cannot_restore() {
    let dump = |name: &str, kind, exp| {
        vec![
            Item::KeyStart(hdr("k", kind, exp)),
            Item::KeyEnd {
                dump: Some(r70(name)),
            },
        ]
    };
    let mut o = ConvertOptions::new(r(6, 0));
    o.source_rdb_version = 10;
    let x = run_opts(o.clone(), dump("list", ValueKind::List, Some(42)));
    assert_eq!(x.cmds, ["DEL k", "RPUSH k a b  12", "PEXPIREAT k 42"]);
    assert!(x.errors.is_empty());
    let x = run_opts(o.clone(), dump("si", ValueKind::Set, None));
    assert_eq!(x.cmds, ["DEL k", "SADD k -7 1 2 3"]);
    let x = run_opts(o.clone(), dump("z", ValueKind::ZSet, None));
    assert_eq!(x.cmds, ["DEL k", "ZADD k -2 b 1.5 a inf c"]);
    let x = run_opts(o.clone(), dump("h", ValueKind::Hash, None));
    assert_eq!(x.cmds, ["DEL k", "HSET k f1 v1 f2 "]);
    let x = run_opts(o.clone(), dump("str", ValueKind::String, Some(42)));
    assert_eq!(x.cmds, ["SET k hello", "PEXPIREAT k 42"]);
    let x = run_opts(o.clone(), dump("s", ValueKind::Stream, None));
    assert!(x.errors.is_empty(), "{:?}", x.errors);
    assert_eq!(
        x.cmds[..3],
        ["DEL k", "XADD k 1-1 f v", "XADD k 2-0 a b c d"]
    );
    // The payload does not match the key's type: skipped.
    let x = run_opts(o.clone(), dump("h", ValueKind::List, None));
    assert!(x.cmds.is_empty());
    assert!(matches!(&x.errors[..], [ConvertError::Unconvertible { key, .. }] if key == "k"));
    // Undecodable: skipped.
    let mut corrupt = r70("h").to_vec();
    corrupt[3] ^= 1;
    let x = run_opts(
        o.clone(),
        vec![
            Item::KeyStart(hdr("k", ValueKind::Hash, None)),
            Item::KeyEnd {
                dump: Some(Bytes::from(corrupt)),
            },
        ],
    );
    assert!(x.cmds.is_empty());
    assert!(matches!(
        &x.errors[..],
        [ConvertError::Unconvertible { .. }]
    ));
    // Valkey 9.1 payload on Redis 7.0.
    let mut o = ConvertOptions::new(r(7, 0));
    o.source_flavor = Flavor::Valkey;
    o.source_rdb_version = 80;
    let x = run_opts(
        o,
        vec![
            Item::KeyStart(hdr("k", ValueKind::Set, Some(42))),
            Item::KeyEnd {
                dump: Some(hex(VK91_SET_LISTPACK)),
            },
        ],
    );
    assert_eq!(x.cmds, ["DEL k", "SADD k a b c", "PEXPIREAT k 42"]);
}

#[test]
fn library_names() {
    assert_eq!(library_name(b"#!lua name=abc\nx"), "abc");
    assert_eq!(library_name(b"nope"), "<unnamed>");
}

#[path = "stream_tests.rs"]
mod stream_tests;

#[test]
fn replica_only_trim_limit_dropped_on_every_target() {
    for t in [r(6, 0), r(6, 2), r(7, 0), target(Flavor::Valkey, 9, 1)] {
        let pre62 = !t.at_least(6, 2);
        assert_eq!(
            rw(
                &[
                    "xadd", "s", "maxlen", "=", "0", "limit", "1", "1-1", "f", "v"
                ],
                t.clone()
            ),
            ["xadd s maxlen = 0 1-1 f v"].map(|x| if pre62 {
                "XADD s MAXLEN = 0 1-1 f v"
            } else {
                x
            }),
            "{t:?}"
        );
        assert_eq!(
            rw(&["XTRIM", "s", "MaxLen", "=", "3", "Limit", "7"], t.clone()),
            [if pre62 {
                "XTRIM s MAXLEN = 3"
            } else {
                "XTRIM s MaxLen = 3 "
            }
            .trim_end()],
            "{t:?}"
        );
    }
    for t in [r(6, 2), r(7, 0), target(Flavor::Valkey, 9, 1)] {
        // `~` keeps its LIMIT; no operator drops it; NOMKSTREAM is skipped over.
        assert_eq!(
            rw(
                &["XADD", "s", "MAXLEN", "~", "9", "LIMIT", "1", "*", "f", "v"],
                t.clone()
            ),
            ["XADD s MAXLEN ~ 9 LIMIT 1 * f v"]
        );
        assert_eq!(
            rw(
                &[
                    "XADD",
                    "s",
                    "nomkstream",
                    "minid",
                    "5",
                    "limit",
                    "1",
                    "*",
                    "f",
                    "v"
                ],
                t.clone()
            ),
            ["XADD s nomkstream minid 5 * f v"]
        );
        assert_eq!(
            rw(
                &["xtrim", "s", "minid", "=", "5-1", "limit", "2"],
                t.clone()
            ),
            ["xtrim s minid = 5-1"]
        );
        // Field values named LIMIT are values.
        assert_eq!(
            rw(&["XADD", "s", "1-1", "LIMIT", "1"], t.clone()),
            ["XADD s 1-1 LIMIT 1"]
        );
    }
}

#[test]
fn rewrite_valkey_forms_for_redis_targets() {
    let v91 = target(Flavor::Valkey, 9, 1);
    for t in [r(6, 2), r(7, 0)] {
        assert_eq!(
            rw(&["set", "k", "v2", "ifeq", "v"], t.clone()),
            ["set k v2"]
        );
        assert_eq!(rw(&["DELIFEQ", "k", "v"], t.clone()), ["DEL k"]);
        assert_eq!(
            rw(
                &[
                    "hsetex", "h", "PXAT", "99", "fields", "2", "a", "1", "b", "2"
                ],
                t.clone()
            ),
            ["HSET h a 1 b 2"]
        );
        assert_eq!(
            rw(&["hgetdel", "h", "FIELDS", "1", "c"], t.clone()),
            ["HDEL h c"]
        );
        for c in ["HPEXPIREAT", "hpersist", "HEXPIRE", "HGETEX"] {
            assert!(rw(&[c, "h", "1", "FIELDS", "1", "a"], t.clone()).is_empty());
        }
        // Malformed: passed on for the target to refuse, counted with its key.
        assert_eq!(
            rw(&["HSETEX", "h", "FIELDS", "2", "a", "1"], t.clone()),
            ["HSETEX h FIELDS 2 a 1"]
        );
    }
    assert_eq!(
        rw(&["SET", "k", "v", "IFEQ", "x", "PXAT", "15000"], r(6, 0)),
        ["SET k v PX 5000"]
    );
    assert_eq!(
        rw(&["SET", "k", "v", "IFEQ", "x"], v91.clone()),
        ["SET k v IFEQ x"]
    );
    assert_eq!(
        rw(&["HGETDEL", "h", "FIELDS", "1", "c"], v91.clone()),
        ["HGETDEL h FIELDS 1 c"]
    );
    assert_eq!(
        rw(&["HPEXPIREAT", "h", "1", "FIELDS", "1", "a"], v91),
        ["HPEXPIREAT h 1 FIELDS 1 a"]
    );
}

#[test]
fn rewrite_62_commands_for_60() {
    let z = rw(
        &["zadd", "z", "xx", "gt", "ch", "5", "a", "-inf", "b"],
        r(6, 0),
    );
    assert!(
        z[0].starts_with("EVAL ") && z[0].ends_with(" 1 z GT XX  5 a -inf b"),
        "{z:?}"
    );
    let z = rw(&["ZADD", "z", "LT", "INCR", "5", "a"], r(6, 0));
    assert!(z[0].ends_with(" 1 z LT  1 5 a"), "{z:?}");
    assert_eq!(
        rw(&["ZADD", "z", "NX", "1", "a"], r(6, 0)),
        ["ZADD z NX 1 a"]
    );
    let z = rw(
        &[
            "zrangestore",
            "d",
            "s",
            "(1",
            "+inf",
            "byscore",
            "limit",
            "0",
            "2",
        ],
        r(6, 0),
    );
    assert!(z[0].ends_with(" 2 d s (1 +inf SCORE  0 2"), "{z:?}");
    let z = rw(
        &["ZRANGESTORE", "d", "s", "[z", "-", "BYLEX", "REV"],
        r(6, 0),
    );
    assert!(z[0].ends_with(" 2 d s [z - LEX 1"), "{z:?}");
    let z = rw(&["ZDIFFSTORE", "d", "2", "a", "b"], r(6, 0));
    assert!(z[0].ends_with(" 3 d a b"), "{z:?}");
    assert_eq!(
        rw(&["ZDIFFSTORE", "d", "3", "a", "b"], r(6, 0)),
        ["ZDIFFSTORE d 3 a b"]
    );
    assert_eq!(
        rw(
            &[
                "geosearchstore",
                "d",
                "g",
                "frommember",
                "m",
                "byradius",
                "10",
                "km",
                "desc",
                "count",
                "3",
                "storedist"
            ],
            r(6, 0)
        ),
        ["GEORADIUSBYMEMBER g m 10 km desc COUNT 3 STOREDIST d"]
    );
    assert_eq!(
        rw(
            &[
                "GEOSEARCHSTORE",
                "d",
                "g",
                "FROMLONLAT",
                "1",
                "2",
                "BYRADIUS",
                "5",
                "m"
            ],
            r(6, 0)
        ),
        ["GEORADIUS g 1 2 5 m STORE d"]
    );
    assert_eq!(
        rw(
            &[
                "GEOSEARCHSTORE",
                "d",
                "g",
                "FROMLONLAT",
                "1",
                "2",
                "BYBOX",
                "5",
                "5",
                "m"
            ],
            r(6, 0)
        ),
        ["GEOSEARCHSTORE d g FROMLONLAT 1 2 BYBOX 5 5 m"]
    );
    assert_eq!(rw(&["flushall", "sync"], r(6, 0)), ["flushall"]);
    assert_eq!(rw(&["FLUSHDB", "ASYNC"], r(6, 0)), ["FLUSHDB ASYNC"]);
    assert_eq!(rw(&["FLUSHALL", "SYNC"], r(6, 2)), ["FLUSHALL SYNC"]);
}

/// Keywords are case-insensitive in Redis, so every rewrite must give the same commands whatever
/// the case of the keywords the client wrote. Keys and values here are digits and symbols, so
/// upper-casing the whole output compares only the keywords' effect.
mod case_insensitive {
    use super::*;
    use proptest::prelude::*;

    const FORMS: &[&[&str]] = &[
        &[
            "XADD", "1", "MAXLEN", "=", "0", "LIMIT", "1", "1-1", "2", "3",
        ],
        &[
            "XADD",
            "1",
            "NOMKSTREAM",
            "MINID",
            "~",
            "5",
            "LIMIT",
            "1",
            "*",
            "2",
            "3",
        ],
        &["XTRIM", "1", "MINID", "=", "5-1", "LIMIT", "2"],
        &["XTRIM", "1", "MAXLEN", "2"],
        &["SET", "1", "2", "NX", "GET", "PXAT", "15000"],
        &["SET", "1", "2", "EXAT", "20", "KEEPTTL"],
        &["SET", "1", "2", "IFEQ", "3"],
        &["LPOP", "1", "2"],
        &["RPOP", "1", "2"],
        &["LMOVE", "1", "2", "RIGHT", "LEFT"],
        &["BLMOVE", "1", "2", "LEFT", "RIGHT", "0"],
        &["COPY", "1", "2", "DB", "3", "REPLACE"],
        &["XGROUP", "CREATECONSUMER", "1", "2", "3"],
        &[
            "XGROUP",
            "CREATE",
            "1",
            "2",
            "$",
            "ENTRIESREAD",
            "3",
            "MKSTREAM",
        ],
        &["XGROUP", "SETID", "1", "2", "0", "ENTRIESREAD", "0"],
        &[
            "XSETID",
            "1",
            "5-0",
            "ENTRIESADDED",
            "9",
            "MAXDELETEDID",
            "1-0",
        ],
        &["PEXPIREAT", "1", "100", "XX"],
        &["SPUBLISH", "1", "2"],
        &["ZADD", "1", "XX", "GT", "CH", "5", "2"],
        &[
            "ZRANGESTORE",
            "1",
            "2",
            "(1",
            "+INF",
            "BYSCORE",
            "REV",
            "LIMIT",
            "0",
            "2",
        ],
        &["ZDIFFSTORE", "1", "2", "3", "4"],
        &[
            "GEOSEARCHSTORE",
            "1",
            "2",
            "FROMMEMBER",
            "3",
            "BYRADIUS",
            "10",
            "KM",
            "ASC",
            "COUNT",
            "3",
            "STOREDIST",
        ],
        &["FLUSHALL", "SYNC"],
        &["DELIFEQ", "1", "2"],
        &["HSETEX", "1", "FNX", "PXAT", "99", "FIELDS", "1", "2", "3"],
        &["HGETDEL", "1", "FIELDS", "1", "2"],
        &["HPEXPIREAT", "1", "99", "FIELDS", "1", "2"],
        &["RESTORE", "1", "0", "3", "REPLACE", "ABSTTL"],
    ];

    fn targets() -> Vec<ServerInfo> {
        vec![r(6, 0), r(6, 2), r(7, 0), target(Flavor::Valkey, 9, 1)]
    }

    fn upper_out(args: &[String], t: &ServerInfo) -> Vec<String> {
        let mut out = Vec::new();
        rewrite_for_target(Cmd::new(args.iter().map(|s| b(s))), t, 10_000, &mut out);
        out.iter().map(|c| show(c).to_ascii_uppercase()).collect()
    }

    proptest! {
        #[test]
        fn any_keyword_case_rewrites_alike(form in 0..FORMS.len(), mask in any::<u64>(), t in 0usize..4) {
            let t = &targets()[t];
            let upper: Vec<String> = FORMS[form].iter().map(|s| s.to_string()).collect();
            // Flip the case of each character chosen by the mask (cycled over the whole command).
            let mut bit = 0;
            let mixed: Vec<String> = upper
                .iter()
                .map(|a| {
                    a.chars()
                        .map(|ch| {
                            bit = (bit + 1) % 64;
                            if mask >> bit & 1 == 1 { ch.to_ascii_lowercase() } else { ch }
                        })
                        .collect()
                })
                .collect();
            prop_assert_eq!(upper_out(&mixed, t), upper_out(&upper, t), "{:?} on {:?}", mixed, t);
        }
    }
}

#[test]
fn xclaim_of_deleted_entries_from_70_acks_on_older_targets() {
    let claim = [
        "XCLAIM",
        "s",
        "g",
        "c",
        "0",
        "1-3",
        "TIME",
        "5",
        "RETRYCOUNT",
        "2",
        "FORCE",
        "JUSTID",
        "LASTID",
        "1-6",
    ];
    let mut out = Vec::new();
    rewrite_between(
        Cmd::new(claim.iter().map(|s| b(s))),
        &r(7, 0),
        &r(6, 2),
        0,
        &mut out,
    );
    let x = show(&out[0]);
    assert!(
        x.starts_with("EVAL ")
            && x.ends_with(" 1 s 1-3 g c 0 1-3 TIME 5 RETRYCOUNT 2 FORCE JUSTID LASTID 1-6"),
        "{x}"
    );
    for (src, dst) in [(r(6, 2), r(6, 0)), (r(7, 0), r(7, 0)), (r(6, 2), r(7, 0))] {
        let mut out = Vec::new();
        rewrite_between(
            Cmd::new(claim.iter().map(|s| b(s))),
            &src,
            &dst,
            0,
            &mut out,
        );
        assert_eq!(out.iter().map(show).collect::<Vec<_>>(), [claim.join(" ")]);
    }
}
