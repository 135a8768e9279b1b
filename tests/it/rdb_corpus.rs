//! The parser against the shared corpus of real RDB files (Redis test assets, redis-rdb-tools
//! and librdb dumps): every file parses to `Item::End` except the four that must fail, with the
//! right error; some files' contents are checked against what their projects' tests document.

use crate::rdb_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rdb_support::{Key, Parsed, b, corpus_dir, parse_all, parse_file, rdb_files};
use shardsync::rdb::{
    Flavor, Item, ParseOptions, RdbErrorKind, RdbParser, ValueKind, parse_dump_payload,
};

const MUST_FAIL: [&str; 4] = [
    "corrupt_ziplist.rdb",
    "corrupt_empty_keys.rdb",
    "invalid_chksum_v8.rdb",
    "future_v19.rdb",
];

fn corpus() -> PathBuf {
    corpus_dir()
}

fn file(dir: &Path, rel: &str) -> PathBuf {
    dir.join(rel)
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn key<'a>(p: &'a Parsed, name: &str) -> &'a Key {
    p.keys
        .iter()
        .find(|k| k.header.key == name.as_bytes())
        .unwrap_or_else(|| panic!("key {name} not found"))
}

fn sorted(v: &[Bytes]) -> Vec<Bytes> {
    let mut v = v.to_vec();
    v.sort();
    v
}

#[test]
fn every_file_parses_or_fails_as_documented() {
    let dir = corpus();
    let files = rdb_files(&dir);
    assert!(
        files.len() >= 70,
        "corpus looks incomplete: {} files",
        files.len()
    );
    let mut ok = 0;
    for f in &files {
        let name = name_of(f);
        let res = parse_file(f, ParseOptions::default());
        if MUST_FAIL.contains(&name.as_str()) {
            let err = res.expect_err(&format!("{name} must fail"));
            let msg = err.to_string();
            match name.as_str() {
                "future_v19.rdb" => {
                    assert!(
                        matches!(err.kind, RdbErrorKind::UnsupportedVersion(99)),
                        "{msg}"
                    );
                    assert!(msg.contains("unsupported RDB version 99"), "{msg}");
                }
                "invalid_chksum_v8.rdb" => {
                    assert!(matches!(err.kind, RdbErrorKind::Checksum { .. }), "{msg}");
                    assert!(msg.contains("checksum mismatch"), "{msg}");
                }
                "corrupt_ziplist.rdb" => {
                    assert!(matches!(err.kind, RdbErrorKind::Corrupt(_)), "{msg}");
                    assert!(msg.contains("invalid ziplist"), "{msg}");
                    assert!(err.key.is_some(), "{msg}");
                }
                "corrupt_empty_keys.rdb" => {
                    assert!(matches!(err.kind, RdbErrorKind::EmptyKey), "{msg}");
                    assert!(
                        msg.contains("empty key") && msg.contains("(key \"set\")"),
                        "{msg}"
                    );
                }
                _ => unreachable!(),
            }
        } else {
            let parsed = res.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(matches!(parsed.end, Some(Item::End { .. })));
            ok += 1;
        }
    }
    assert_eq!(ok + MUST_FAIL.len(), files.len());
}

#[test]
fn chunking_and_capture_do_not_change_content() {
    let dir = corpus();
    let small = ParseOptions {
        chunk_elements: 3,
        chunk_bytes: 7,
        capture_dump_max: 0,
        capture_strings: true,
        ..Default::default()
    };
    let capture = ParseOptions {
        chunk_elements: 3,
        chunk_bytes: 7,
        capture_dump_max: 1 << 20,
        capture_strings: true,
        ..Default::default()
    };
    for f in rdb_files(&dir) {
        let name = name_of(&f);
        if MUST_FAIL.contains(&name.as_str()) {
            continue;
        }
        let base = parse_file(&f, ParseOptions::default()).unwrap();
        let chunked = parse_file(&f, small.clone()).unwrap();
        let captured = parse_file(&f, capture.clone()).unwrap();
        assert!(chunked.max_chunk_elems <= 3, "{name}");
        assert!(chunked.max_string_part <= 7, "{name}");
        assert_eq!(base.keys.len(), chunked.keys.len(), "{name}");
        assert_eq!(base.keys.len(), captured.keys.len(), "{name}");
        for ((a, c), d) in base.keys.iter().zip(&chunked.keys).zip(&captured.keys) {
            assert_eq!(a.header, c.header, "{name}");
            assert_eq!(a.header, d.header, "{name}");
            assert!(a.value.same_content(&c.value), "{name}: {:?}", a.header.key);
            if a.header.kind == ValueKind::Module {
                // Modules are always captured.
                assert!(a.dump.is_some() && d.dump.is_some(), "{name}");
                assert_eq!(a.dump, d.dump);
                let v = parse_dump_payload(a.dump.as_ref().unwrap(), &small).unwrap();
                assert_eq!(v.kind, ValueKind::Module);
                assert!(v.chunks.is_empty());
                continue;
            }
            assert!(a.dump.is_none(), "{name}: captured without being asked");
            // Every corpus value is small: captured whole, and no chunk leaked.
            let dump = d
                .dump
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: not captured"));
            assert_eq!(d.value.chunks, 0, "{name}: chunks emitted despite capture");
            let v = parse_dump_payload(dump, &small).unwrap();
            assert_eq!(v.rdb_type, a.header.rdb_type);
            assert_eq!(v.kind, a.header.kind);
            let mut redecoded = rdb_support::Value::default();
            for c in v.chunks {
                redecoded.add(c);
            }
            assert!(
                redecoded.same_content(&a.value),
                "{name}: {:?}",
                a.header.key
            );
        }
    }
}

#[test]
fn tiny_capture_limit_falls_back_to_streaming() {
    let dir = corpus();
    let f = file(&dir, "redis-rdb-tools/linkedlist.rdb");
    let opts = ParseOptions {
        chunk_elements: 100,
        chunk_bytes: 1 << 20,
        capture_dump_max: 200,
        capture_strings: true,
        ..Default::default()
    };
    let parsed = parse_file(&f, opts).unwrap();
    let base = parse_file(&f, ParseOptions::default()).unwrap();
    let (a, c) = (&base.keys[0], &parsed.keys[0]);
    assert!(c.dump.is_none());
    assert!(a.value.same_content(&c.value));
    assert!(c.value.chunks > 1);
}

#[test]
fn encodings_rdb_matches_redis_test_suite() {
    // Expected values from Redis' tests/integration/rdb.tcl "RDB encoding loading test".
    let dir = corpus();
    let p = parse_file(
        &file(&dir, "redis-tests-assets/encodings.rdb"),
        ParseOptions::default(),
    )
    .unwrap();
    assert_eq!(p.keys.len(), 13);
    let s = |n: &str| key(&p, n).value.string.clone();
    assert_eq!(s("compressible"), vec![b'a'; 137]);
    assert_eq!(s("number"), b"10");
    assert_eq!(s("string"), b"Hello World");
    let hash = |n: &str| {
        let mut v: Vec<(Bytes, Bytes)> = key(&p, n)
            .value
            .hash
            .iter()
            .map(|f| (f.field.clone(), f.value.clone()))
            .collect();
        v.sort();
        v
    };
    let pairs = |xs: &[(&str, &str)]| -> Vec<(Bytes, Bytes)> {
        xs.iter().map(|(a, c)| (b(a), b(c))).collect()
    };
    assert_eq!(
        hash("hash"),
        pairs(&[
            ("a", "1"),
            ("aa", "10"),
            ("aaa", "100"),
            ("b", "2"),
            ("bb", "20"),
            ("bbb", "200"),
            ("c", "3"),
            ("cc", "30"),
            ("ccc", "300"),
            ("ddd", "400"),
            ("eee", "5000000000")
        ])
    );
    assert_eq!(
        hash("hash_zipped"),
        pairs(&[("a", "1"), ("b", "2"), ("c", "3")])
    );
    let list8: Vec<Bytes> = ["1", "2", "3", "a", "b", "c", "100000", "6000000000"]
        .iter()
        .map(|x| b(x))
        .collect();
    assert_eq!(key(&p, "list_zipped").value.list, list8);
    assert_eq!(
        key(&p, "list").value.list,
        [list8.clone(), list8.clone(), list8.clone()].concat()
    );
    let set = |n: &str| sorted(&key(&p, n).value.set);
    let bs = |xs: &[&str]| sorted(&xs.iter().map(|x| b(x)).collect::<Vec<_>>());
    assert_eq!(
        set("set"),
        bs(&["1", "100000", "2", "3", "6000000000", "a", "b", "c"])
    );
    assert_eq!(set("set_zipped_1"), bs(&["1", "2", "3", "4"]));
    assert_eq!(
        set("set_zipped_2"),
        bs(&["100000", "200000", "300000", "400000"])
    );
    assert_eq!(
        set("set_zipped_3"),
        bs(&[
            "1000000000",
            "2000000000",
            "3000000000",
            "4000000000",
            "5000000000",
            "6000000000"
        ])
    );
    let zset = |n: &str| {
        let mut v = key(&p, n).value.zset.clone();
        v.sort_by(|a, c| a.1.total_cmp(&c.1).then(a.0.cmp(&c.0)));
        v
    };
    let zs =
        |xs: &[(&str, f64)]| -> Vec<(Bytes, f64)> { xs.iter().map(|(m, s)| (b(m), *s)).collect() };
    assert_eq!(
        zset("zset_zipped"),
        zs(&[("a", 1.0), ("b", 2.0), ("c", 3.0)])
    );
    assert_eq!(
        zset("zset"),
        zs(&[
            ("a", 1.0),
            ("b", 2.0),
            ("c", 3.0),
            ("aa", 10.0),
            ("bb", 20.0),
            ("cc", 30.0),
            ("aaa", 100.0),
            ("bbb", 200.0),
            ("ccc", 300.0),
            ("aaaa", 1000.0),
            ("cccc", 123456789.0),
            ("bbbb", 5000000000.0)
        ])
    );
}

#[test]
fn redis_rdb_tools_dumps() {
    // Contents as documented by redis-rdb-tools' tests/parser_tests.py.
    let dir = corpus();
    let d = |n: &str| {
        parse_file(
            &file(&dir, &format!("redis-rdb-tools/{n}")),
            ParseOptions::default(),
        )
        .unwrap()
    };

    assert!(d("empty_database.rdb").keys.is_empty());

    let p = d("multiple_databases.rdb");
    assert_eq!(p.keys.len(), 2);
    assert_eq!(key(&p, "key_in_zeroth_database").header.db, 0);
    assert_eq!(key(&p, "key_in_zeroth_database").value.string, b"zero");
    assert_eq!(key(&p, "key_in_second_database").header.db, 2);
    assert_eq!(key(&p, "key_in_second_database").value.string, b"second");

    let p = d("keys_with_expiry.rdb");
    let k = key(&p, "expires_ms_precision");
    // 2022-12-25 10:11:12.573 UTC
    assert_eq!(k.header.expire_ms, Some(1_671_963_072_573));
    assert_eq!(k.value.string, b"2022-12-25 10:11:12.573 UTC");

    let ints = |n: &str, k: &str| {
        let p = d(n);
        let mut v: Vec<i64> = key(&p, k)
            .value
            .set
            .iter()
            .map(|m| std::str::from_utf8(m).unwrap().parse().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        ints("intset_16.rdb", "intset_16"),
        vec![0x7ffc, 0x7ffd, 0x7ffe]
    );
    assert_eq!(
        ints("intset_32.rdb", "intset_32"),
        vec![0x7ffe_fffc, 0x7ffe_fffd, 0x7ffe_fffe]
    );
    assert_eq!(
        ints("intset_64.rdb", "intset_64"),
        vec![
            0x7ffe_fffe_fffe_fffc,
            0x7ffe_fffe_fffe_fffd,
            0x7ffe_fffe_fffe_fffe
        ]
    );

    let p = d("ziplist_with_integers.rdb");
    let expected: Vec<i64> = (0..=12)
        .chain([
            -2,
            13,
            25,
            -61,
            63,
            16380,
            -16000,
            65535,
            -65523,
            4194304,
            i64::MAX,
        ])
        .collect();
    let got: Vec<i64> = key(&p, "ziplist_with_integers")
        .value
        .list
        .iter()
        .map(|m| std::str::from_utf8(m).unwrap().parse().unwrap())
        .collect();
    assert_eq!(got, expected);

    let p = d("sorted_set_as_ziplist.rdb");
    let z = &key(&p, "sorted_set_as_ziplist").value.zset;
    assert_eq!(
        z,
        &vec![
            (b("8b6ba6718a786daefa69438148361901"), 1.0),
            (b("cb7a24bb7528f934b841b34c3a73e0c7"), 2.37),
            (b("523af537946b79c4f8369ed39ba78605"), 3.423)
        ]
    );

    for n in ["zipmap_that_compresses_easily.rdb", "hash_as_ziplist.rdb"] {
        let p = d(n);
        let h = &p.keys[0].value.hash;
        let got: BTreeMap<Bytes, Bytes> = h
            .iter()
            .map(|f| (f.field.clone(), f.value.clone()))
            .collect();
        let want: BTreeMap<Bytes, Bytes> =
            [("a", "aa"), ("aa", "aaaa"), ("aaaaa", "aaaaaaaaaaaaaa")]
                .iter()
                .map(|(f, v)| (b(f), b(v)))
                .collect();
        assert_eq!(got, want, "{n}");
    }

    let p = d("integer_keys.rdb");
    assert_eq!(p.keys.len(), 6);
    let find = |k: &str| key(&p, k).value.string.clone();
    assert_eq!(find("125"), b"Positive 8 bit integer");
    assert_eq!(find("-123"), b"Negative 8 bit integer");
    assert_eq!(find("43947"), b"Positive 16 bit integer");
    assert_eq!(find("-29477"), b"Negative 16 bit integer");
    assert_eq!(find("183358245"), b"Positive 32 bit integer");
    assert_eq!(find("-183358245"), b"Negative 32 bit integer");

    let p = d("redis_50_with_streams.rdb");
    assert!(p.keys.iter().any(|k| k.header.kind == ValueKind::Stream));
}

#[test]
fn librdb_dumps() {
    let dir = corpus();
    let d =
        |n: &str| parse_file(&file(&dir, &format!("librdb/{n}")), ParseOptions::default()).unwrap();

    let p = d("100_lists.rdb");
    assert_eq!(p.keys.len(), 100);
    assert!(p.keys.iter().all(|k| k.header.kind == ValueKind::List));

    let p = d("stream_v11.rdb");
    let s = &key(&p, "mystream").value;
    let meta = s.meta.as_ref().unwrap();
    assert_eq!(meta.length, s.entries.len() as u64);
    assert_eq!(meta.last_id, s.entries.last().unwrap().id);
    assert_eq!(meta.first_id, Some(s.entries[0].id));
    assert_eq!(s.groups.len(), 2);
    for g in &s.groups {
        // Each pending entry has an owner among the group's consumers.
        for pe in &g.pending {
            assert!(g.consumers.iter().any(|c| c.name == pe.consumer));
        }
        assert!(g.consumers.iter().all(|c| c.active_time_ms.is_some()));
    }

    let p = d("function2.rdb");
    let funcs: Vec<&Bytes> = p
        .others
        .iter()
        .filter_map(|i| match i {
            Item::Function { code } => Some(code),
            _ => None,
        })
        .collect();
    assert_eq!(funcs.len(), 2);
    assert!(funcs.iter().all(|c| c.starts_with(b"#!lua name=")));

    let p = d("cluster_slot_info.rdb");
    assert!(p.others.iter().any(|i| matches!(i, Item::SlotInfo { .. })));

    for n in ["module.rdb", "module_aux.rdb", "module_aux_v12.rdb"] {
        let p = d(n);
        for k in &p.keys {
            if k.header.kind == ValueKind::Module {
                assert!(k.dump.is_some(), "{n}");
            }
        }
    }
    let p = d("module_aux_empty.rdb");
    assert!(p.others.iter().any(|i| matches!(i, Item::ModuleAux { .. })));

    let p = d("hash_lp_with_hexpire_v12.rdb");
    let h = &key(&p, "myhash").value.hash;
    assert_eq!(h.len(), 3);
    assert_eq!(h.iter().filter(|f| f.expire_ms.is_some()).count(), 2);

    let p = d("mem_policy_lfu.rdb");
    assert!(p.keys[0].header.freq.is_some());
    let p = d("mem_policy_lru.rdb");
    assert!(p.keys[0].header.idle_secs.is_some());

    let p = d("multiple_dbs.rdb");
    let dbs: Vec<u32> = p.keys.iter().map(|k| k.header.db).collect();
    assert_eq!(dbs.len(), 3);
    assert!(dbs.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn empty_keys_are_skipped_when_continuing() {
    let dir = corpus();
    let f = std::fs::File::open(file(&dir, "redis-tests-assets/corrupt_empty_keys.rdb")).unwrap();
    let mut p = RdbParser::new(f, ParseOptions::default());
    let mut empty = Vec::new();
    let mut keys = 0;
    loop {
        match p.next_item() {
            Ok(Some(Item::KeyStart(_))) => keys += 1,
            Ok(Some(Item::End { .. })) => break,
            Ok(Some(_)) => {}
            Ok(None) => panic!("no End"),
            Err(e) => {
                assert!(matches!(e.kind, RdbErrorKind::EmptyKey), "{e}");
                empty.push(e.key.unwrap());
            }
        }
    }
    assert_eq!(keys, 0);
    assert_eq!(empty.len(), 9);
    assert!(empty.contains(&b("list_quicklist_empty_ziplist")));
    assert_eq!(p.next_item().unwrap(), None);
}

#[test]
fn header_and_offsets() {
    let dir = corpus();
    let path = file(&dir, "librdb/single_key.rdb");
    let data = std::fs::read(&path).unwrap();
    let mut p = RdbParser::new(&data[..], ParseOptions::default());
    assert_eq!(p.header(), None);
    assert!(matches!(
        p.next_item().unwrap(),
        Some(Item::Header {
            flavor: Flavor::Redis,
            ..
        })
    ));
    assert_eq!(p.header().map(|h| h.0), Some(Flavor::Redis));
    while p.next_item().unwrap().is_some() {}
    assert_eq!(p.bytes_read(), data.len() as u64);
    // The same file from a reader that returns one byte at a time.
    struct OneByte<'a>(&'a [u8]);
    impl std::io::Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }
    let a = parse_all(OneByte(&data), ParseOptions::default()).unwrap();
    let b2 = parse_all(&data[..], ParseOptions::default()).unwrap();
    assert_eq!(a.keys.len(), b2.keys.len());
}

#[test]
fn truncated_files_fail_cleanly() {
    let dir = corpus();
    for rel in [
        "librdb/stream_v11.rdb",
        "redis-tests-assets/encodings.rdb",
        "librdb/module.rdb",
    ] {
        let data = std::fs::read(file(&dir, rel)).unwrap();
        for cut in 0..data.len() {
            let r = parse_all(
                &data[..cut],
                ParseOptions {
                    capture_dump_max: 4096,
                    capture_strings: true,
                    ..ParseOptions::default()
                },
            );
            let e = r.expect_err("truncated file must fail");
            assert!(e.offset <= cut as u64, "{rel} cut {cut}: {e}");
        }
    }
}
