//! RESP codec: the [`Frame`] type for RESP2 and RESP3 values and an incremental decoder that
//! works on whatever bytes have arrived so far. Pure code, no I/O: callers own the buffers.

mod decode;
mod frame;

pub use decode::{
    DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_FRAME_ELEMENTS, Decoder, Limits, MAX_BULK_LEN, RespError,
    decode, frame_len,
};
pub use frame::Frame;
