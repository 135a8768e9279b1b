//! The RDB parser and the DUMP payload decoder on arbitrary bytes: never panic, always end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardsync::rdb::{ParseOptions, RdbErrorKind, RdbParser, parse_dump_payload};

fuzz_target!(|data: &[u8]| {
    let opts = ParseOptions {
        chunk_elements: 7,
        chunk_bytes: 100,
        capture_dump_max: if data.first().is_some_and(|b| b & 1 == 1) { 4096 } else { 0 },
        ..ParseOptions::default()
    };
    let mut p = RdbParser::new(data, opts.clone());
    for _ in 0..1_000_000 {
        match p.next_item() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                let _ = e.to_string();
                if !matches!(e.kind, RdbErrorKind::EmptyKey) {
                    break;
                }
            }
        }
    }
    let _ = parse_dump_payload(data, &opts);
});
