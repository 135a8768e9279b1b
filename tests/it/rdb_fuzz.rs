//! Robustness: random byte mutations, insertions and truncations of corpus files (and of `DUMP`
//! payloads) never panic, never loop forever; they parse or fail with an error.

use crate::rdb_support;

use proptest::prelude::*;
use rdb_support::{corpus_dir, rdb_files};
use shardsync::rdb::{Item, ParseOptions, RdbParser, parse_dump_payload};

fn samples() -> Vec<Vec<u8>> {
    let dir = corpus_dir();
    rdb_files(&dir)
        .into_iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter(|d| d.len() <= 40_000)
        .collect()
}

/// Run the parser to its end or first non-recoverable error; bounded.
fn drive(data: &[u8], opts: ParseOptions) -> Vec<bytes::Bytes> {
    let mut dumps = Vec::new();
    let mut p = RdbParser::new(data, opts);
    for _ in 0..200_000 {
        match p.next_item() {
            Ok(Some(Item::KeyEnd { dump: Some(d) })) => dumps.push(d),
            Ok(Some(_)) => {}
            Ok(None) => return dumps,
            Err(e) => {
                let _ = e.to_string();
                if !matches!(e.kind, shardsync::rdb::RdbErrorKind::EmptyKey) {
                    return dumps;
                }
            }
        }
    }
    panic!("parser did not terminate");
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<usize>().prop_map(Mutation::Remove),
    ]
}

fn apply(mut data: Vec<u8>, muts: &[Mutation], cut: Option<usize>) -> Vec<u8> {
    for m in muts {
        if data.is_empty() {
            break;
        }
        match *m {
            Mutation::Set(i, b) => {
                let n = data.len();
                data[i % n] = b;
            }
            Mutation::Insert(i, b) => {
                let n = data.len();
                data.insert(i % (n + 1), b);
            }
            Mutation::Remove(i) => {
                let n = data.len();
                data.remove(i % n);
            }
        }
    }
    if let Some(c) = cut {
        let n = data.len();
        data.truncate(c % (n + 1));
    }
    data
}

/// Cases per property: `default`, or `SHARDSYNC_FUZZ_CASES` for a long run (e.g. 200000).
pub fn fuzz_cases(default: u32) -> u32 {
    std::env::var("SHARDSYNC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(800), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..512),
        magic in any::<bool>(),
    ) {
        let data = if magic { [b"REDIS0011".as_slice(), &data].concat() } else { data };
        drive(&data, ParseOptions { chunk_elements: 3, chunk_bytes: 8, capture_dump_max: 512, ..Default::default() });
        let _ = parse_dump_payload(&data, &ParseOptions::default());
    }

    /// The streaming `DUMP` reader gives exactly the chunks of the one-shot decoder.
    #[test]
    fn dump_reader_agrees_with_parse_dump_payload(
        idx in any::<usize>(),
        muts in proptest::collection::vec(mutation(), 0..3),
    ) {
        let files = samples();
        prop_assume!(!files.is_empty());
        let opts = ParseOptions { chunk_elements: 4, chunk_bytes: 16, capture_dump_max: 1 << 16, ..Default::default() };
        let dumps = drive(&files[idx % files.len()], opts.clone());
        for d in dumps.iter().take(5) {
            let mut data = apply(d.to_vec(), &muts, None);
            if data.len() > 10 {
                data.truncate(data.len() - 8);
                let crc = crc::Crc::<u64>::new(&crc::CRC_64_REDIS).checksum(&data);
                data.extend_from_slice(&crc.to_le_bytes());
            }
            let whole = parse_dump_payload(&data, &opts);
            let valid = shardsync::rdb::validate_dump_payload(&data, &opts);
            prop_assert_eq!(whole.is_ok(), valid.is_ok());
            if let Ok(v) = whole {
                let mut r = shardsync::rdb::DumpReader::new(&data, &opts).expect("footer ok");
                let mut chunks = Vec::new();
                while r.next_chunks(&mut chunks).expect("validated") {}
                // NaN scores are not equal to themselves: compare the debug text.
                prop_assert_eq!(format!("{chunks:?}"), format!("{:?}", v.chunks));
            }
        }
    }

    #[test]
    fn mutated_corpus_never_panics(
        idx in any::<usize>(),
        muts in proptest::collection::vec(mutation(), 1..8),
        cut in proptest::option::of(any::<usize>()),
        capture in any::<bool>(),
    ) {
        let files = samples();
        if files.is_empty() {
            return Ok(());
        }
        let data = apply(files[idx % files.len()].clone(), &muts, cut);
        let opts = ParseOptions {
            chunk_elements: 5,
            chunk_bytes: 64,
            capture_dump_max: if capture { 1 << 16 } else { 0 },
            capture_strings: true,
            ..Default::default()
        };
        drive(&data, opts);
    }

    #[test]
    fn mutated_dump_payloads_never_panic(
        idx in any::<usize>(),
        muts in proptest::collection::vec(mutation(), 0..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let files = samples();
        if files.is_empty() {
            return Ok(());
        }
        let opts = ParseOptions { chunk_elements: 4, chunk_bytes: 16, capture_dump_max: 1 << 16, capture_strings: true, ..Default::default() };
        let dumps = drive(&files[idx % files.len()], opts.clone());
        if let Some(d) = dumps.first() {
            let data = apply(d.to_vec(), &muts, cut);
            let _ = parse_dump_payload(&data, &opts);
            // With a recomputed (valid) checksum the value decoder itself is exercised.
            if data.len() > 10 {
                let mut fixed = data[..data.len() - 8].to_vec();
                let crc = crc::Crc::<u64>::new(&crc::CRC_64_REDIS).checksum(&fixed);
                fixed.extend_from_slice(&crc.to_le_bytes());
                let _ = parse_dump_payload(&fixed, &opts);
            }
        }
    }
}

#[test]
fn random_garbage_after_valid_magic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let mut data = b"REDIS0011".to_vec();
        let n = next() % 300;
        data.extend((0..n).map(|_| next() as u8));
        drive(
            &data,
            ParseOptions {
                chunk_elements: 3,
                chunk_bytes: 8,
                capture_dump_max: 512,
                capture_strings: true,
                ..Default::default()
            },
        );
    }
}
