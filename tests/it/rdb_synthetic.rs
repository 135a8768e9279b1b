//! Hand-built RDB streams for what neither the corpus nor the available servers produce: Redis
//! 7.4+ hash field TTL types (24, 25), Valkey's type 22, large strings split into parts, the
//! capture limit, flavor-specific type numbering and checksum edge cases.

use bytes::Bytes;
use shardsync::rdb::{
    Chunk, HashField, Item, ParseOptions, RdbErrorKind, RdbParser, parse_dump_payload,
};

fn crc64(data: &[u8]) -> u64 {
    crc::Crc::<u64>::new(&crc::CRC_64_REDIS).checksum(data)
}

fn len(n: u64) -> Vec<u8> {
    if n < 64 {
        vec![n as u8]
    } else if n < 16384 {
        vec![0x40 | (n >> 8) as u8, n as u8]
    } else if n <= u32::MAX as u64 {
        let mut v = vec![0x80];
        v.extend_from_slice(&(n as u32).to_be_bytes());
        v
    } else {
        let mut v = vec![0x81];
        v.extend_from_slice(&n.to_be_bytes());
        v
    }
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut v = len(s.len() as u64);
    v.extend_from_slice(s);
    v
}

/// Listpack of small strings (< 64 bytes) and 64-bit integers.
enum Lp<'a> {
    S(&'a [u8]),
    I(i64),
}

fn listpack(items: &[Lp<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for it in items {
        let mut e = Vec::new();
        match it {
            Lp::S(s) => {
                assert!(s.len() < 64);
                e.push(0x80 | s.len() as u8);
                e.extend_from_slice(s);
            }
            Lp::I(i) => {
                e.push(0xf4);
                e.extend_from_slice(&i.to_le_bytes());
            }
        }
        let l = e.len();
        assert!(l < 128);
        e.push(l as u8);
        body.extend(e);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&((6 + body.len() + 1) as u32).to_le_bytes());
    out.extend_from_slice(&(items.len() as u16).to_le_bytes());
    out.extend(body);
    out.push(0xff);
    out
}

fn file(magic: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = magic.to_vec();
    v.extend_from_slice(body);
    v.push(0xff);
    let crc = crc64(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

fn items(data: &[u8], opts: ParseOptions) -> Result<Vec<Item>, shardsync::rdb::RdbError> {
    let mut p = RdbParser::new(data, opts);
    let mut out = Vec::new();
    while let Some(i) = p.next_item()? {
        out.push(i);
    }
    Ok(out)
}

fn hash_fields(items: &[Item]) -> Vec<HashField> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Chunk(Chunk::HashFields(v)) => Some(v.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn hf(f: &str, v: &str, e: Option<i64>) -> HashField {
    HashField {
        field: Bytes::copy_from_slice(f.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
        expire_ms: e,
    }
}

fn type24_value() -> Vec<u8> {
    let mut v = 1_000_000i64.to_le_bytes().to_vec(); // min expire
    v.extend(len(3));
    for (ttl, f, val) in [(0u64, "a", "1"), (1, "b", "2"), (501, "c", "3")] {
        v.extend(len(ttl));
        v.extend(string(f.as_bytes()));
        v.extend(string(val.as_bytes()));
    }
    v
}

#[test]
fn redis_hash_metadata_type_24() {
    let mut body = vec![24];
    body.extend(string(b"h"));
    body.extend(type24_value());
    let it = items(&file(b"REDIS0012", &body), ParseOptions::default()).unwrap();
    assert_eq!(
        hash_fields(&it),
        vec![
            hf("a", "1", None),
            hf("b", "2", Some(1_000_000)),
            hf("c", "3", Some(1_000_500))
        ]
    );
    // The same numbers mean something else to Valkey.
    let err = items(&file(b"VALKEY080", &body), ParseOptions::default()).unwrap_err();
    assert!(matches!(err.kind, RdbErrorKind::UnknownType(24)), "{err}");
}

#[test]
fn redis_hash_listpack_ex_type_25() {
    let lp = listpack(&[
        Lp::S(b"f1"),
        Lp::S(b"v1"),
        Lp::I(0),
        Lp::S(b"f2"),
        Lp::I(42),
        Lp::I(2_000_000_000_000),
    ]);
    let mut body = vec![25];
    body.extend(string(b"h"));
    body.extend(2_000_000_000_000i64.to_le_bytes());
    body.extend(string(&lp));
    let it = items(&file(b"REDIS0012", &body), ParseOptions::default()).unwrap();
    assert_eq!(
        hash_fields(&it),
        vec![
            hf("f1", "v1", None),
            hf("f2", "42", Some(2_000_000_000_000))
        ]
    );
}

#[test]
fn valkey_hash_with_field_ttl_type_22() {
    let mut body = vec![22];
    body.extend(string(b"h"));
    body.extend(len(2));
    body.extend(string(b"a"));
    body.extend(string(b"1"));
    body.extend(1_900_000_000_000i64.to_le_bytes());
    body.extend(string(b"b"));
    body.extend(string(b"2"));
    body.extend((-1i64).to_le_bytes());
    let it = items(&file(b"VALKEY080", &body), ParseOptions::default()).unwrap();
    assert_eq!(
        hash_fields(&it),
        vec![hf("a", "1", Some(1_900_000_000_000)), hf("b", "2", None)]
    );
}

#[test]
fn dump_payload_roundtrip_for_type_24() {
    let mut raw = vec![24];
    raw.extend(type24_value());
    raw.extend(12u16.to_le_bytes());
    let crc = crc64(&raw);
    raw.extend(crc.to_le_bytes());
    let v = parse_dump_payload(&raw, &ParseOptions::default()).unwrap();
    assert_eq!(v.rdb_type, 24);
    assert_eq!(v.version, 12);
    assert_eq!(v.chunks.len(), 1);
    // Corrupted checksum is refused; zero checksum is accepted.
    let mut bad = raw.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert!(matches!(
        parse_dump_payload(&bad, &ParseOptions::default())
            .unwrap_err()
            .kind,
        RdbErrorKind::Checksum { .. }
    ));
    bad[n - 8..].fill(0);
    assert!(parse_dump_payload(&bad, &ParseOptions::default()).is_ok());
    // Trailing garbage inside the checksummed body is refused.
    let mut extra = raw[..raw.len() - 10].to_vec();
    extra.push(0);
    extra.extend(12u16.to_le_bytes());
    let crc = crc64(&extra);
    extra.extend(crc.to_le_bytes());
    assert!(parse_dump_payload(&extra, &ParseOptions::default()).is_err());
}

fn big_string_file(n: usize) -> (Vec<u8>, Vec<u8>) {
    let value: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let mut body = vec![0];
    body.extend(string(b"big"));
    body.extend(string(&value));
    (file(b"REDIS0011", &body), value)
}

#[test]
fn large_strings_stream_in_parts() {
    let (data, value) = big_string_file(10_000);
    let opts = ParseOptions {
        chunk_elements: 10,
        chunk_bytes: 1000,
        capture_dump_max: 0,
        capture_strings: true,
        ..Default::default()
    };
    let it = items(&data, opts).unwrap();
    let parts: Vec<&Bytes> = it
        .iter()
        .filter_map(|i| match i {
            Item::Chunk(Chunk::StringPart(b)) => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(parts.len(), 10);
    assert_eq!(
        parts
            .iter()
            .flat_map(|b| b.iter().copied())
            .collect::<Vec<_>>(),
        value
    );
    // The first part is out long before the whole value was read.
    let mut p = RdbParser::new(
        &data[..],
        ParseOptions {
            chunk_bytes: 1000,
            ..ParseOptions::default()
        },
    );
    loop {
        if let Some(Item::Chunk(_)) = p.next_item().unwrap() {
            break;
        }
    }
    assert!(
        p.bytes_read() < 2000,
        "read {} bytes before the first part",
        p.bytes_read()
    );
}

#[test]
fn capture_limit() {
    let (data, value) = big_string_file(10_000);
    // Too small: streamed, not captured.
    let opts = ParseOptions {
        chunk_elements: 10,
        chunk_bytes: 1000,
        capture_dump_max: 5000,
        capture_strings: true,
        ..Default::default()
    };
    let it = items(&data, opts).unwrap();
    assert!(it.iter().any(|i| matches!(i, Item::KeyEnd { dump: None })));
    assert_eq!(
        it.iter()
            .filter(|i| matches!(i, Item::Chunk(Chunk::StringPart(_))))
            .count(),
        10
    );
    // Big enough: captured, nothing streamed.
    let opts = ParseOptions {
        chunk_elements: 10,
        chunk_bytes: 1000,
        capture_dump_max: 20_000,
        capture_strings: true,
        ..Default::default()
    };
    let it = items(&data, opts).unwrap();
    assert!(!it.iter().any(|i| matches!(i, Item::Chunk(_))));
    let dump = it
        .iter()
        .find_map(|i| match i {
            Item::KeyEnd { dump } => dump.clone(),
            _ => None,
        })
        .unwrap();
    let mut want = vec![0];
    want.extend(string(&value));
    want.extend(11u16.to_le_bytes());
    let crc = crc64(&want);
    want.extend(crc.to_le_bytes());
    assert_eq!(&dump[..], &want[..]);
    // Exactly at the limit is still captured, one byte less is not.
    let exact = ParseOptions {
        capture_dump_max: want.len(),
        capture_strings: true,
        ..ParseOptions::default()
    };
    assert!(
        items(&data, exact)
            .unwrap()
            .iter()
            .any(|i| matches!(i, Item::KeyEnd { dump: Some(_) }))
    );
    let under = ParseOptions {
        capture_dump_max: want.len() - 1,
        capture_strings: true,
        ..ParseOptions::default()
    };
    assert!(
        items(&data, under)
            .unwrap()
            .iter()
            .any(|i| matches!(i, Item::KeyEnd { dump: None }))
    );
}

#[test]
fn capture_gives_up_early_on_large_collections() {
    // A plain list of 20000 elements; with a 1000-byte capture limit the parser must start
    // emitting chunks soon, not hold the whole list.
    let mut body = vec![1];
    body.extend(string(b"l"));
    body.extend(len(20_000));
    for i in 0..20_000u32 {
        body.extend(string(format!("item{i}").as_bytes()));
    }
    let data = file(b"REDIS0006", &body);
    let opts = ParseOptions {
        chunk_elements: 50,
        chunk_bytes: 1 << 20,
        capture_dump_max: 1000,
        capture_strings: true,
        ..Default::default()
    };
    let mut p = RdbParser::new(&data[..], opts);
    loop {
        if let Some(Item::Chunk(_)) = p.next_item().unwrap() {
            break;
        }
    }
    assert!(
        p.bytes_read() < 4000,
        "read {} bytes before the first chunk",
        p.bytes_read()
    );
    let mut n = 0;
    while let Some(i) = p.next_item().unwrap() {
        if let Item::Chunk(Chunk::ListItems(v)) = i {
            assert!(v.len() <= 50);
            n += v.len();
        }
    }
    assert!(n > 19_000);
}

#[test]
fn checksum_zero_and_old_versions() {
    // v5+ with a zero checksum: accepted, reported as absent.
    let mut data = b"REDIS0009".to_vec();
    data.push(0xff);
    data.extend([0u8; 8]);
    let it = items(&data, ParseOptions::default()).unwrap();
    assert_eq!(it.last(), Some(&Item::End { checksum: None }));
    // v4 has no checksum at all.
    let data = b"REDIS0004\xff".to_vec();
    let it = items(&data, ParseOptions::default()).unwrap();
    assert_eq!(it.last(), Some(&Item::End { checksum: None }));
    // Bad magic and unknown versions.
    let e = items(b"RUBBISH00\xff", ParseOptions::default()).unwrap_err();
    assert!(matches!(e.kind, RdbErrorKind::BadMagic(_)));
    let e = items(b"VALKEY081\xff", ParseOptions::default()).unwrap_err();
    assert!(matches!(e.kind, RdbErrorKind::UnsupportedVersion(81)));
    let e = items(b"REDIS0015\xff", ParseOptions::default()).unwrap_err();
    assert!(matches!(e.kind, RdbErrorKind::UnsupportedVersion(15)));
}

#[test]
fn errors_name_the_key_and_offset() {
    let mut body = vec![11]; // intset
    body.extend(string(b"myset"));
    body.extend(string(&[3, 0, 0, 0, 1, 0, 0, 0, 9, 9, 9])); // width 3: invalid
    let e = items(&file(b"REDIS0009", &body), ParseOptions::default()).unwrap_err();
    assert_eq!(e.key.as_deref(), Some(&b"myset"[..]));
    assert!(e.offset > 9);
    assert!(e.to_string().contains("intset"), "{e}");
}
