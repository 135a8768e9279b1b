//! RESP codec: the [`Frame`] type for RESP2 and RESP3 values and an incremental decoder that
//! works on whatever bytes have arrived so far. Pure code, no I/O: callers own the buffers.

mod decode;
mod frame;

pub use decode::{decode, frame_len, RespError, MAX_BULK_LEN};
pub use frame::Frame;
