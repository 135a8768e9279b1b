//! The RESP decoder on arbitrary bytes, whole and cut into reads: never panics, and a decoder fed
//! piece by piece (resuming its progress) gives exactly what one decoding the whole buffer gives.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardsync::resp::{Decoder, Frame, Limits, RespError};

fn run(d: &mut Decoder, buf: &mut BytesMut, out: &mut Vec<(Frame, usize)>) -> Option<RespError> {
    loop {
        match d.decode(buf) {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_frame_bytes: 4096,
        max_frame_elements: 512,
        max_bulk_bytes: 1024,
    };
    let mut whole_frames = Vec::new();
    let whole_err = run(&mut Decoder::new(limits), &mut BytesMut::from(data), &mut whole_frames);

    // The same bytes in reads of `cut` bytes (1..=32).
    let step = usize::from(cut % 32) + 1;
    let mut d = Decoder::new(limits);
    let mut buf = BytesMut::new();
    let mut split_frames = Vec::new();
    let mut split_err = None;
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        if let Some(e) = run(&mut d, &mut buf, &mut split_frames) {
            split_err = Some(e);
            break;
        }
    }
    // NaN doubles are not equal to themselves: compare the debug text.
    assert_eq!(format!("{whole_frames:?}"), format!("{split_frames:?}"));
    assert_eq!(whole_err.is_some(), split_err.is_some(), "{whole_err:?} vs {split_err:?}");
    if whole_err.is_none() {
        // Never more than one frame's limit pending.
        assert!(buf.len() <= limits.max_frame_bytes + step);
    }
    let _ = shardsync::resp::frame_len(data);
});
