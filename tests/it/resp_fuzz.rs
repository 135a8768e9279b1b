//! Property tests of the RESP codec: arbitrary bytes never panic, a frame is only reported
//! complete when all its bytes are there, and encoding a command then decoding it gives the same
//! arguments back, however the bytes are cut into reads.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use shardsync::cmd::Cmd;
use shardsync::resp::{Decoder, Limits, decode, frame_len};

use crate::rdb_fuzz::fuzz_cases;

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(2000), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::from(&data[..]);
        let _ = frame_len(&data);
        let _ = decode(&mut buf);
    }

    #[test]
    fn resp_shaped_garbage_never_panics(parts in proptest::collection::vec(
        prop_oneof![
            Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b"%".to_vec()), Just(b"|".to_vec()),
            Just(b"\r\n".to_vec()), Just(b"-1".to_vec()), Just(b"3".to_vec()), Just(b"abc".to_vec()),
            Just(b":".to_vec()), Just(b",".to_vec()), Just(b"999999999999".to_vec()),
        ], 0..40)) {
        let data: Vec<u8> = parts.concat();
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(_)) = decode(&mut buf) {}
    }

    #[test]
    fn commands_round_trip_across_any_cut(
        args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
        cut in 0usize..400,
    ) {
        let cmd = Cmd { args: args.iter().map(|a| Bytes::from(a.clone())).collect() };
        let mut wire = BytesMut::new();
        cmd.encode(&mut wire);
        let cut = cut.min(wire.len());
        let mut buf = BytesMut::from(&wire[..cut]);
        if cut < wire.len() {
            prop_assert_eq!(decode(&mut buf).expect("prefix is valid"), None);
            buf.extend_from_slice(&wire[cut..]);
        }
        let (frame, used) = decode(&mut buf).expect("valid").expect("complete");
        prop_assert_eq!(used, wire.len());
        prop_assert_eq!(frame.into_args().expect("array of bulks"), cmd.args);
        prop_assert!(buf.is_empty());
    }

    /// Fed in reads of any size, the resumable decoder gives exactly what decoding the whole
    /// buffer gives (frames and whether it fails), and never holds more than a frame's limit.
    #[test]
    fn split_reads_agree_with_whole(
        parts in proptest::collection::vec(prop_oneof![
            Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b"%".to_vec()), Just(b"|".to_vec()),
            Just(b"~".to_vec()), Just(b">".to_vec()), Just(b"+OK".to_vec()), Just(b"_".to_vec()),
            Just(b"\r\n".to_vec()), Just(b"-1".to_vec()), Just(b"2".to_vec()), Just(b"3".to_vec()),
            Just(b"abc".to_vec()), Just(b":".to_vec()), Just(b",".to_vec()), Just(b"1000".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..4),
        ], 0..60),
        step in 1usize..20,
    ) {
        let data: Vec<u8> = parts.concat();
        let limits = Limits { max_frame_bytes: 256, max_frame_elements: 64, max_bulk_bytes: 128 };
        let run = |d: &mut Decoder, buf: &mut BytesMut, out: &mut Vec<String>| -> bool {
            loop {
                match d.decode(buf) {
                    Ok(Some((f, n))) => out.push(format!("{f:?}/{n}")),
                    Ok(None) => return false,
                    Err(_) => return true,
                }
            }
        };
        let mut whole = Vec::new();
        let whole_err = run(&mut Decoder::new(limits), &mut BytesMut::from(&data[..]), &mut whole);
        let mut d = Decoder::new(limits);
        let mut buf = BytesMut::new();
        let mut split = Vec::new();
        let mut split_err = false;
        for piece in data.chunks(step) {
            buf.extend_from_slice(piece);
            if run(&mut d, &mut buf, &mut split) {
                split_err = true;
                break;
            }
            prop_assert!(buf.len() <= limits.max_frame_bytes + step);
        }
        prop_assert_eq!(whole, split);
        prop_assert_eq!(whole_err, split_err);
    }
}
