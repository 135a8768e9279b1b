//! The parser against real servers: each available server (Redis 6.0, 6.2, 7.0, Valkey 9.1, started
//! by `tests/common`) is filled with every type in both compact and full encodings (int sets, streams
//! with groups and pending entries, TTLs, several databases, functions, hash field TTLs where
//! supported), `SAVE`d, and the dump is parsed: every value must equal what the server returns,
//! and every captured payload must equal the server's own `DUMP` output byte for byte.

use crate::common;
use crate::rdb_support;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use common::{RedisServer, ServerKind};
use rdb_support::{Key, Parsed, parse_file};
use redis::Value as RV;
use shardsync::rdb::{Flavor, Item, ParseOptions, ValueKind, parse_dump_payload};

/// Starts `kind` (a missing binary fails the test), with `DEBUG` enabled where the server gates it (7.0+).
fn start(kind: ServerKind) -> RedisServer {
    let extra: &[&str] = if kind.at_least(7, 0) {
        &["--enable-debug-command", "local"]
    } else {
        &[]
    };
    RedisServer::start_with(kind, extra)
}

fn cmd(c: &mut redis::Connection, args: &[&[u8]]) -> RV {
    let mut k = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        k.arg(*a);
    }
    k.query::<RV>(c)
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(args[0])))
}

fn cmds(c: &mut redis::Connection, args: &[String]) -> RV {
    let v: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    cmd(c, &v)
}

fn s(args: &str) -> Vec<String> {
    args.split(' ').map(str::to_string).collect()
}

fn bytes_of(v: &RV) -> Bytes {
    match v {
        RV::BulkString(b) => Bytes::copy_from_slice(b),
        RV::SimpleString(t) => Bytes::copy_from_slice(t.as_bytes()),
        RV::Int(i) => Bytes::copy_from_slice(i.to_string().as_bytes()),
        RV::Okay => Bytes::from_static(b"OK"),
        other => panic!("not a string: {other:?}"),
    }
}

fn int_of(v: &RV) -> i64 {
    match v {
        RV::Int(i) => *i,
        other => std::str::from_utf8(&bytes_of(other))
            .unwrap()
            .parse()
            .unwrap(),
    }
}

fn arr(v: &RV) -> &[RV] {
    match v {
        RV::Array(a) => a,
        RV::Nil => &[],
        other => panic!("not an array: {other:?}"),
    }
}

/// `[k1, v1, k2, v2, …]` reply as a map.
fn kv(v: &RV) -> BTreeMap<String, RV> {
    arr(v)
        .chunks(2)
        .map(|p| {
            (
                String::from_utf8_lossy(&bytes_of(&p[0])).into_owned(),
                p[1].clone(),
            )
        })
        .collect()
}

struct Caps {
    major: u32,
    valkey: bool,
}

impl Caps {
    fn functions(&self) -> bool {
        self.major >= 7
    }
    fn hash_field_ttl(&self) -> bool {
        self.valkey && self.major >= 9
    }
}

fn caps(c: &mut redis::Connection) -> Caps {
    let info = String::from_utf8_lossy(&bytes_of(&cmd(c, &[b"INFO", b"server"]))).into_owned();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .map(str::to_string)
    };
    let valkey = field("valkey_version:").is_some();
    let ver = field("valkey_version:")
        .or_else(|| field("redis_version:"))
        .unwrap();
    let major = ver.split('.').next().unwrap().parse().unwrap();
    Caps { major, valkey }
}

/// A deterministic, poorly compressible string.
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}

const FAR_FUTURE_MS: i64 = 4_102_444_800_000; // 2100-01-01

fn fill(c: &mut redis::Connection, caps: &Caps) {
    for db in [0u32, 3, 9] {
        cmds(c, &s(&format!("SELECT {db}")));
        let p = |k: &str| format!("db{db}:{k}");
        // Strings: raw, int-encoded of each width, compressible and not, large, empty.
        cmds(c, &["SET".into(), p("s:small"), "hello".into()]);
        cmds(c, &["SET".into(), p("s:empty"), "".into()]);
        for (i, v) in ["7", "-100", "30000", "-2000000000", "123456789012", "00123"]
            .iter()
            .enumerate()
        {
            cmds(c, &["SET".into(), p(&format!("s:int{i}")), v.to_string()]);
        }
        cmds(c, &["SET".into(), p("s:compressible"), "ab".repeat(5000)]);
        cmds(c, &["SET".into(), p("s:noise"), noise(1, 300_000)]);
        cmds(
            c,
            &[
                "SET".into(),
                p("s:binary"),
                "\u{0}\u{1}\u{ff}\r\n".repeat(10),
            ],
        );
        cmds(c, &["SET".into(), p("s:ttl"), "expiring".into()]);
        cmds(
            c,
            &["PEXPIREAT".into(), p("s:ttl"), FAR_FUTURE_MS.to_string()],
        );

        // Lists: compact and quicklist with many nodes, ints and long strings.
        let mut a = vec!["RPUSH".to_string(), p("l:small")];
        a.extend(["a", "1", "-5", "b", "99999999999"].map(String::from));
        cmds(c, &a);
        let mut a = vec!["RPUSH".to_string(), p("l:big")];
        for i in 0..3000 {
            a.push(match i % 4 {
                0 => i.to_string(),
                1 => format!("-{}", i * 1_000_003),
                2 => noise(i, 80),
                _ => format!("item{i}"),
            });
        }
        cmds(c, &a);
        if caps.major >= 7 {
            // Make 20 kB items "plain" quicklist nodes (RDB quicklist2 container 1).
            cmds(c, &s("DEBUG QUICKLIST-PACKED-THRESHOLD 10000"));
        }
        cmds(
            c,
            &[
                "RPUSH".into(),
                p("l:hugeitem"),
                noise(7, 20_000),
                "x".into(),
                noise(8, 30_000),
            ],
        );

        // Sets: intsets of each width, listpack (7.2+) / hashtable, large.
        cmds(c, &s(&format!("SADD {} 1 2 3 -4", p("set:int16"))));
        cmds(c, &s(&format!("SADD {} 100000 -70000 5", p("set:int32"))));
        cmds(
            c,
            &s(&format!(
                "SADD {} 5000000000 -9000000000000000000 1",
                p("set:int64")
            )),
        );
        cmds(c, &s(&format!("SADD {} a b c 1", p("set:small"))));
        let mut a = vec!["SADD".to_string(), p("set:bigint")];
        a.extend((0..1000).map(|i| (i * 7).to_string()));
        cmds(c, &a);
        let mut a = vec!["SADD".to_string(), p("set:big")];
        a.extend((0..700).map(|i| format!("m{i}")));
        cmds(c, &a);

        // Sorted sets: compact and skiplist, awkward scores.
        cmds(
            c,
            &s(&format!("ZADD {} 1 a 2.5 b -3 c 1e20 d", p("z:small"))),
        );
        cmds(
            c,
            &s(&format!(
                "ZADD {} inf top -inf bottom 0.1 tenth",
                p("z:inf")
            )),
        );
        let mut a = vec!["ZADD".to_string(), p("z:big")];
        for i in 0..400 {
            a.push(format!("{}", (i as f64) / 3.0 - 50.0));
            a.push(format!("member{i}"));
        }
        cmds(c, &a);
        cmds(
            c,
            &["ZADD".into(), p("z:longmember"), "1".into(), noise(3, 100)],
        );

        // Hashes: compact and hashtable.
        cmds(c, &s(&format!("HSET {} f1 v1 f2 2 f3 -300", p("h:small"))));
        let mut a = vec!["HSET".to_string(), p("h:big")];
        for i in 0..300 {
            a.push(format!("field{i}"));
            a.push(if i % 3 == 0 {
                i.to_string()
            } else {
                noise(i, 20)
            });
        }
        cmds(c, &a);
        cmds(
            c,
            &["HSET".into(), p("h:longval"), "f".into(), noise(5, 200)],
        );
        cmds(
            c,
            &[
                "PEXPIREAT".into(),
                p("h:longval"),
                FAR_FUTURE_MS.to_string(),
            ],
        );

        // Streams: several nodes, deletions, groups with PEL, an empty stream with a group.
        let st = p("st:main");
        for i in 0..250 {
            let id = format!("{}-{}", 1_700_000_000_000u64 + i / 3, i % 3);
            if i % 5 == 0 {
                cmds(
                    c,
                    &["XADD".into(), st.clone(), id, "other".into(), i.to_string()],
                );
            } else {
                cmds(
                    c,
                    &[
                        "XADD".into(),
                        st.clone(),
                        id,
                        "name".into(),
                        format!("n{i}"),
                        "val".into(),
                        i.to_string(),
                    ],
                );
            }
        }
        cmds(
            c,
            &[
                "XDEL".into(),
                st.clone(),
                "1700000000010-1".into(),
                "1700000000020-0".into(),
            ],
        );
        cmds(
            c,
            &[
                "XGROUP".into(),
                "CREATE".into(),
                st.clone(),
                "g1".into(),
                "0".into(),
            ],
        );
        cmds(
            c,
            &[
                "XGROUP".into(),
                "CREATE".into(),
                st.clone(),
                "g2".into(),
                "$".into(),
            ],
        );
        cmds(
            c,
            &[
                "XREADGROUP".into(),
                "GROUP".into(),
                "g1".into(),
                "alice".into(),
                "COUNT".into(),
                "5".into(),
                "STREAMS".into(),
                st.clone(),
                ">".into(),
            ],
        );
        cmds(
            c,
            &[
                "XREADGROUP".into(),
                "GROUP".into(),
                "g1".into(),
                "bob".into(),
                "COUNT".into(),
                "3".into(),
                "STREAMS".into(),
                st.clone(),
                ">".into(),
            ],
        );
        cmds(
            c,
            &[
                "XACK".into(),
                st.clone(),
                "g1".into(),
                "1700000000000-0".into(),
            ],
        );
        // CREATECONSUMER exists from 6.2 on; older servers just have no idle consumer.
        let _ = redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg(&st)
            .arg("g2")
            .arg("carol")
            .query::<RV>(c);
        cmds(
            c,
            &[
                "XGROUP".into(),
                "CREATE".into(),
                p("st:empty"),
                "g".into(),
                "$".into(),
                "MKSTREAM".into(),
            ],
        );
        cmds(
            c,
            &[
                "XADD".into(),
                p("st:small"),
                "5-5".into(),
                "k".into(),
                "v".into(),
            ],
        );
    }
    cmds(c, &s("SELECT 0"));
    if caps.functions() {
        let code =
            "#!lua name=mylib\nredis.register_function('f1', function(keys, args) return 1 end)";
        cmds(c, &["FUNCTION".into(), "LOAD".into(), code.into()]);
    }
    if caps.hash_field_ttl() {
        cmds(c, &s("HSET hx:small a 1 b 2 c 3"));
        cmds(
            c,
            &s(&format!("HPEXPIREAT hx:small {FAR_FUTURE_MS} FIELDS 1 a")),
        );
        let mut a = vec!["HSET".to_string(), "hx:big".to_string()];
        for i in 0..200 {
            a.push(format!("f{i}"));
            a.push(format!("v{i}"));
        }
        cmds(c, &a);
        cmds(
            c,
            &s(&format!(
                "HPEXPIREAT hx:big {} FIELDS 2 f1 f2",
                FAR_FUTURE_MS - 5
            )),
        );
    }
}

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn parse_id(b: &[u8]) -> (u64, u64) {
    let t = std::str::from_utf8(b).unwrap();
    let (a, c) = t.split_once('-').unwrap();
    (a.parse().unwrap(), c.parse().unwrap())
}

/// Compare one parsed key with what the server says about it.
fn check_key(c: &mut redis::Connection, caps: &Caps, k: &Key) {
    let key = &k.header.key[..];
    let name = String::from_utf8_lossy(key).into_owned();
    let ty = String::from_utf8_lossy(&bytes_of(&cmd(c, &[b"TYPE", key]))).into_owned();
    let want_kind = match ty.as_str() {
        "string" => ValueKind::String,
        "list" => ValueKind::List,
        "set" => ValueKind::Set,
        "zset" => ValueKind::ZSet,
        "hash" => ValueKind::Hash,
        "stream" => ValueKind::Stream,
        other => panic!("{name}: unexpected type {other}"),
    };
    assert_eq!(k.header.kind, want_kind, "{name}");
    let pttl = int_of(&cmd(c, &[b"PTTL", key]));
    if pttl < 0 {
        assert_eq!(k.header.expire_ms, None, "{name}");
    } else {
        assert_eq!(k.header.expire_ms, Some(FAR_FUTURE_MS), "{name}");
    }
    let v = &k.value;
    match want_kind {
        ValueKind::String => {
            assert_eq!(
                &v.string[..],
                &bytes_of(&cmd(c, &[b"GET", key]))[..],
                "{name}"
            );
        }
        ValueKind::List => {
            let want: Vec<Bytes> = arr(&cmd(c, &[b"LRANGE", key, b"0", b"-1"]))
                .iter()
                .map(bytes_of)
                .collect();
            assert_eq!(v.list, want, "{name}");
        }
        ValueKind::Set => {
            let want: Vec<Bytes> = arr(&cmd(c, &[b"SMEMBERS", key]))
                .iter()
                .map(bytes_of)
                .collect();
            assert_eq!(sorted(&v.set), sorted(&want), "{name}");
        }
        ValueKind::ZSet => {
            let r = cmd(c, &[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"]);
            let mut want: Vec<(Bytes, f64)> = arr(&r)
                .chunks(2)
                .map(|p| {
                    let sc = String::from_utf8_lossy(&bytes_of(&p[1])).into_owned();
                    (bytes_of(&p[0]), sc.parse::<f64>().unwrap())
                })
                .collect();
            let mut got = v.zset.clone();
            let ord = |a: &(Bytes, f64), b: &(Bytes, f64)| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0));
            got.sort_by(ord);
            want.sort_by(ord);
            assert_eq!(got, want, "{name}");
        }
        ValueKind::Hash => {
            let r = cmd(c, &[b"HGETALL", key]);
            let want: BTreeMap<Bytes, Bytes> = arr(&r)
                .chunks(2)
                .map(|p| (bytes_of(&p[0]), bytes_of(&p[1])))
                .collect();
            let got: BTreeMap<Bytes, Bytes> = v
                .hash
                .iter()
                .map(|f| (f.field.clone(), f.value.clone()))
                .collect();
            assert_eq!(got, want, "{name}");
            assert_eq!(got.len(), v.hash.len(), "{name}: duplicate fields");
            if caps.hash_field_ttl() {
                for f in &v.hash {
                    let r = cmd(c, &[b"HPEXPIRETIME", key, b"FIELDS", b"1", &f.field]);
                    let t = int_of(&arr(&r)[0]);
                    assert_eq!(
                        f.expire_ms,
                        (t >= 0).then_some(t),
                        "{name} field {:?}",
                        f.field
                    );
                }
            } else {
                assert!(v.hash.iter().all(|f| f.expire_ms.is_none()), "{name}");
            }
        }
        ValueKind::Stream => check_stream(c, k),
        ValueKind::Module => unreachable!(),
    }
}

/// A stream entry as `((ms, seq), fields)`.
type Entry = ((u64, u64), Vec<(Bytes, Bytes)>);

fn check_stream(c: &mut redis::Connection, k: &Key) {
    let key = &k.header.key[..];
    let name = String::from_utf8_lossy(key).into_owned();
    let v = &k.value;
    let r = cmd(c, &[b"XRANGE", key, b"-", b"+"]);
    let want: Vec<Entry> = arr(&r)
        .iter()
        .map(|e| {
            let e = arr(e);
            let fields = arr(&e[1])
                .chunks(2)
                .map(|p| (bytes_of(&p[0]), bytes_of(&p[1])))
                .collect();
            (parse_id(&bytes_of(&e[0])), fields)
        })
        .collect();
    let got: Vec<Entry> = v
        .entries
        .iter()
        .map(|e| ((e.id.ms, e.id.seq), e.fields.clone()))
        .collect();
    assert_eq!(got, want, "{name}");
    let info = kv(&cmd(c, &[b"XINFO", b"STREAM", key]));
    let meta = v.meta.as_ref().expect("stream meta");
    assert_eq!(meta.length as i64, int_of(&info["length"]), "{name}");
    let last = parse_id(&bytes_of(&info["last-generated-id"]));
    assert_eq!((meta.last_id.ms, meta.last_id.seq), last, "{name}");
    if let Some(added) = info.get("entries-added") {
        assert_eq!(meta.entries_added, Some(int_of(added) as u64), "{name}");
    }
    let groups = cmd(c, &[b"XINFO", b"GROUPS", key]);
    let groups = arr(&groups);
    assert_eq!(v.groups.len(), groups.len(), "{name}");
    for g in groups {
        let g = kv(g);
        let gname = bytes_of(&g["name"]);
        let pg = v
            .groups
            .iter()
            .find(|x| x.name == gname)
            .expect("group parsed");
        let ld = parse_id(&bytes_of(&g["last-delivered-id"]));
        assert_eq!((pg.last_delivered_id.ms, pg.last_delivered_id.seq), ld);
        assert_eq!(pg.pending.len() as i64, int_of(&g["pending"]));
        assert_eq!(pg.consumers.len() as i64, int_of(&g["consumers"]));
        if let Some(er) = g.get("entries-read") {
            let want = match er {
                RV::Nil => None,
                other => Some(int_of(other) as u64),
            };
            assert_eq!(pg.entries_read, want, "{name}");
        }
        let pel = cmd(c, &[b"XPENDING", key, &gname, b"-", b"+", b"10000"]);
        let want: Vec<((u64, u64), Bytes, i64)> = arr(&pel)
            .iter()
            .map(|e| {
                let e = arr(e);
                (parse_id(&bytes_of(&e[0])), bytes_of(&e[1]), int_of(&e[3]))
            })
            .collect();
        let got: Vec<((u64, u64), Bytes, i64)> = pg
            .pending
            .iter()
            .map(|p| {
                (
                    (p.id.ms, p.id.seq),
                    p.consumer.clone(),
                    p.delivery_count as i64,
                )
            })
            .collect();
        assert_eq!(got, want, "{name}");
        let cons = cmd(c, &[b"XINFO", b"CONSUMERS", key, &gname]);
        let want: BTreeSet<Bytes> = arr(&cons)
            .iter()
            .map(|x| bytes_of(&kv(x)["name"]))
            .collect();
        let got: BTreeSet<Bytes> = pg.consumers.iter().map(|x| x.name.clone()).collect();
        assert_eq!(got, want, "{name}");
    }
}

fn dbsizes(c: &mut redis::Connection) -> BTreeMap<u32, usize> {
    let mut out = BTreeMap::new();
    for db in 0..16u32 {
        cmds(c, &s(&format!("SELECT {db}")));
        let n = int_of(&cmd(c, &[b"DBSIZE"])) as usize;
        if n > 0 {
            out.insert(db, n);
        }
    }
    out
}

fn run_server(kind: ServerKind) {
    let name = kind.name();
    let server = start(kind);
    let mut c = server.client();
    let caps = caps(&mut c);
    fill(&mut c, &caps);
    cmd(&mut c, &[b"SAVE"]);
    let path = server.dir().join("dump.rdb");

    // 1. Decoded values equal what the server returns.
    let opts = ParseOptions {
        chunk_elements: 7,
        chunk_bytes: 4096,
        capture_dump_max: 0,
        capture_strings: true,
        ..Default::default()
    };
    let parsed: Parsed = parse_file(&path, opts.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(parsed.max_chunk_elems <= 7);
    assert!(parsed.max_string_part <= 4096);
    let Some(Item::Header { flavor, version }) = parsed.others.first().cloned() else {
        panic!("{name}: no header");
    };
    assert_eq!(
        flavor == Flavor::Valkey,
        caps.valkey && caps.major >= 9,
        "{name}"
    );
    let mut per_db: BTreeMap<u32, usize> = BTreeMap::new();
    for k in &parsed.keys {
        *per_db.entry(k.header.db).or_default() += 1;
    }
    assert_eq!(per_db, dbsizes(&mut c), "{name}: key counts per db");
    for k in &parsed.keys {
        cmds(&mut c, &s(&format!("SELECT {}", k.header.db)));
        check_key(&mut c, &caps, k);
    }
    let funcs = parsed
        .others
        .iter()
        .filter(|i| matches!(i, Item::Function { .. }))
        .count();
    assert_eq!(funcs, usize::from(caps.functions()), "{name}");
    if caps.hash_field_ttl() {
        let hx = parsed
            .keys
            .iter()
            .filter(|k| k.header.key.starts_with(b"hx:"))
            .count();
        assert_eq!(hx, 2);
        assert!(
            parsed
                .keys
                .iter()
                .filter(|k| k.header.key.starts_with(b"hx:"))
                .all(|k| k.value.hash.iter().any(|f| f.expire_ms.is_some()))
        );
    }
    let types: BTreeSet<u8> = parsed.keys.iter().map(|k| k.header.rdb_type).collect();
    eprintln!(
        "{name}: RDB v{version} {flavor:?}, {} keys, types {types:?}",
        parsed.keys.len()
    );

    // 2. Captured payloads are byte-identical to DUMP, and decode to the same value.
    let cap = ParseOptions {
        chunk_elements: 7,
        chunk_bytes: 4096,
        capture_dump_max: 64 << 20,
        capture_strings: true,
        ..Default::default()
    };
    let captured = parse_file(&path, cap.clone()).unwrap();
    assert_eq!(captured.keys.len(), parsed.keys.len());
    for (k, plain) in captured.keys.iter().zip(&parsed.keys) {
        let kname = String::from_utf8_lossy(&k.header.key).into_owned();
        let dump = k
            .dump
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: {kname} not captured"));
        assert_eq!(k.value.chunks, 0, "{name}: {kname}");
        cmds(&mut c, &s(&format!("SELECT {}", k.header.db)));
        let server_dump = bytes_of(&cmd(&mut c, &[b"DUMP", &k.header.key]));
        assert!(
            dump[..] == server_dump[..],
            "{name}: {kname}: captured payload differs from DUMP"
        );
        let v = parse_dump_payload(&server_dump, &opts).unwrap();
        let mut re = rdb_support::Value::default();
        for ch in v.chunks {
            re.add(ch);
        }
        assert!(re.same_content(&plain.value), "{name}: {kname}");
    }

    // 3. A small capture limit: small keys captured, large ones streamed.
    let small = ParseOptions {
        chunk_elements: 50,
        chunk_bytes: 4096,
        capture_dump_max: 1000,
        capture_strings: true,
        ..Default::default()
    };
    let mixed = parse_file(&path, small).unwrap();
    let (mut with, mut without) = (0, 0);
    for (k, plain) in mixed.keys.iter().zip(&parsed.keys) {
        match &k.dump {
            Some(d) => {
                assert!(d.len() <= 1000);
                with += 1;
            }
            None => {
                assert!(k.value.same_content(&plain.value));
                without += 1;
            }
        }
    }
    assert!(
        with > 0 && without > 0,
        "{name}: {with} captured, {without} streamed"
    );
    drop(server);
}

#[test]
fn redis_6_0() {
    run_server(ServerKind::Redis60);
}

#[test]
fn redis_6_2() {
    run_server(ServerKind::Redis62);
}

#[test]
fn redis_7_0() {
    run_server(ServerKind::Redis70);
}

#[test]
fn valkey_9_1() {
    run_server(ServerKind::Valkey91);
}
