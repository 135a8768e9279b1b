//! Criterion micro-benchmarks of the hot paths of a full sync, on inputs built in memory (no
//! server, no file): the RDB parser on 100k small string keys, command encoding into an output
//! buffer, and RESP decoding of a run of `+OK` replies and of encoded commands.
//! `cargo bench --bench hot_paths`; CI only compiles them (clippy --all-targets).

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shardsync::cmd;
use shardsync::rdb::{Item, ParseOptions, RdbParser};
use shardsync::resp::decode;

const KEYS: usize = 100_000;

/// RDB length encoding (6-bit, 14-bit or 32-bit forms).
fn put_len(out: &mut Vec<u8>, n: usize) {
    if n < 64 {
        out.push(n as u8);
    } else if n < 16384 {
        out.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]);
    } else {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// An RDB v9 file of `KEYS` string keys with 64-byte values, checksum disabled (all zero).
fn string_rdb() -> Vec<u8> {
    let mut out = b"REDIS0009".to_vec();
    out.extend_from_slice(&[0xFE, 0]); // SELECTDB 0
    let value = [b'v'; 64];
    for i in 0..KEYS {
        out.push(0); // string type
        let key = format!("key:{i:08}");
        put_len(&mut out, key.len());
        out.extend_from_slice(key.as_bytes());
        put_len(&mut out, value.len());
        out.extend_from_slice(&value);
    }
    out.push(0xFF);
    out.extend_from_slice(&[0; 8]);
    out
}

fn rdb_parse(c: &mut Criterion) {
    let rdb = string_rdb();
    let mut g = c.benchmark_group("rdb_parse");
    g.throughput(Throughput::Elements(KEYS as u64));
    g.bench_function("strings_100k", |b| {
        b.iter(|| {
            let mut p = RdbParser::new(&rdb[..], ParseOptions::default());
            let mut keys = 0usize;
            while let Ok(Some(item)) = p.next_item() {
                keys += usize::from(matches!(item, Item::KeyStart(_)));
            }
            assert_eq!(keys, KEYS);
            black_box(keys)
        })
    });
    g.finish();
}

fn cmd_encode(c: &mut Criterion) {
    let cmds: Vec<_> = (0..1000)
        .map(|i| cmd!["SET", format!("key:{i:08}"), vec![b'v'; 64]])
        .collect();
    let mut g = c.benchmark_group("cmd_encode");
    g.throughput(Throughput::Elements(cmds.len() as u64));
    g.bench_function("set_64b_x1000", |b| {
        let mut buf = BytesMut::with_capacity(1 << 20);
        b.iter(|| {
            buf.clear();
            for c in &cmds {
                c.encode(&mut buf);
            }
            black_box(buf.len())
        })
    });
    g.finish();
}

fn resp_decode(c: &mut Criterion) {
    let oks: Vec<u8> = b"+OK\r\n".repeat(10_000);
    let mut encoded = BytesMut::new();
    for i in 0..10_000 {
        cmd!["SET", format!("key:{i:08}"), vec![b'v'; 64]].encode(&mut encoded);
    }
    let mut g = c.benchmark_group("resp_decode");
    g.throughput(Throughput::Elements(10_000));
    for (name, input) in [("ok_x10000", &oks[..]), ("set_x10000", &encoded[..])] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(input);
                let mut n = 0usize;
                while let Ok(Some(_)) = decode(&mut buf) {
                    n += 1;
                }
                assert_eq!(n, 10_000);
                black_box(n)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, rdb_parse, cmd_encode, resp_decode);
criterion_main!(benches);
