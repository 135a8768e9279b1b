//! One decoded RESP value.

use bytes::Bytes;

/// A RESP2 or RESP3 value. Strings are `Bytes` slices of the receive buffer (no copy).
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Simple(Bytes),
    Error(Bytes),
    Integer(i64),
    Bulk(Bytes),
    /// RESP2 null bulk / null array, RESP3 `_`.
    Null,
    Array(Vec<Frame>),
    // RESP3 types.
    Double(f64),
    Boolean(bool),
    BigNumber(Bytes),
    Verbatim(Bytes),
    Map(Vec<(Frame, Frame)>),
    Set(Vec<Frame>),
    Push(Vec<Frame>),
}

impl Frame {
    /// The bytes of a simple string, bulk string or verbatim string.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Frame::Simple(b) | Frame::Bulk(b) | Frame::Verbatim(b) => Some(b),
            _ => None,
        }
    }

    /// For an array of bulk strings (a command), its arguments.
    pub fn into_args(self) -> Option<Vec<Bytes>> {
        match self {
            Frame::Array(items) => items
                .into_iter()
                .map(|f| match f {
                    Frame::Bulk(b) | Frame::Simple(b) => Some(b),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_))
    }

    /// Escaped text for logs and error messages (see [`crate::escape`]; cut after 200 bytes).
    pub fn to_text(&self) -> String {
        match self {
            Frame::Simple(b) | Frame::Error(b) | Frame::Bulk(b) | Frame::Verbatim(b) => {
                crate::escape::text(b)
            }
            other => crate::escape::text(format!("{other:?}")),
        }
    }
}
