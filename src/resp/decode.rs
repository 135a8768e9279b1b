//! Incremental RESP decoding. [`frame_len`] tells whether a whole frame is present and how long it
//! is, without allocating; [`decode`] then cuts the frame off the buffer and builds it from slices of
//! the same memory. Every length is bounded so hostile input cannot make us allocate without limit.

use bytes::{Bytes, BytesMut};

use super::Frame;

/// Largest bulk string accepted (Redis's default `proto-max-bulk-len`).
pub const MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Largest aggregate (array, map, set) element count accepted.
const MAX_AGGREGATE_LEN: usize = 1 << 30;
/// Largest nesting depth accepted.
const MAX_DEPTH: usize = 64;
/// Longest line (simple string, error, number) accepted.
const MAX_LINE: usize = 64 * 1024;

/// Malformed RESP input. `offset` is the position in the buffer given to the decoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol error at byte {offset}: {what}")]
pub struct RespError {
    pub offset: usize,
    pub what: String,
}

fn err<T>(offset: usize, what: impl Into<String>) -> Result<T, RespError> {
    Err(RespError {
        offset,
        what: what.into(),
    })
}

/// Finds the CRLF-terminated line starting at `pos`; returns the line without CRLF and the
/// position after it, or `None` if the line is not complete yet.
fn line(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = &buf[pos.min(buf.len())..];
    match memchr_lf(rest) {
        Some(i) => {
            if i == 0 || rest[i - 1] != b'\r' {
                return err(pos + i, "line not terminated by CRLF");
            }
            Ok(Some((&rest[..i - 1], pos + i + 1)))
        }
        None if rest.len() > MAX_LINE => err(pos, "line too long"),
        None => Ok(None),
    }
}

fn memchr_lf(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'\n')
}

fn parse_int(s: &[u8], offset: usize) -> Result<i64, RespError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
        .map_or_else(
            || {
                err(
                    offset,
                    format!("invalid integer {:?}", String::from_utf8_lossy(s)),
                )
            },
            Ok,
        )
}

fn parse_len(s: &[u8], offset: usize, max: usize) -> Result<Option<usize>, RespError> {
    let n = parse_int(s, offset)?;
    if n == -1 {
        return Ok(None);
    }
    if n < 0 || n as u64 > max as u64 {
        return err(offset, format!("invalid length {n}"));
    }
    Ok(Some(n as usize))
}

/// Returns the byte length of the complete frame at the start of `buf`, `Ok(None)` if more
/// bytes are needed, or an error if the bytes are not RESP.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, RespError> {
    skip(buf, 0, 0)
}

fn skip(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, RespError> {
    if depth > MAX_DEPTH {
        return err(pos, "nesting too deep");
    }
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((l, next)) = line(buf, pos + 1)? else {
        return Ok(None);
    };
    match tag {
        b'+' | b'-' | b':' | b',' | b'#' | b'(' | b'_' => Ok(Some(next)),
        b'$' | b'=' | b'!' => match parse_len(l, pos + 1, MAX_BULK_LEN)? {
            None => Ok(Some(next)),
            Some(n) => {
                let end = next + n + 2;
                if buf.len() < end {
                    return Ok(None);
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return err(end - 2, "bulk string not followed by CRLF");
                }
                Ok(Some(end))
            }
        },
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let Some(n) = parse_len(l, pos + 1, MAX_AGGREGATE_LEN)? else {
                if tag == b'|' {
                    return err(pos, "attribute without a length");
                }
                return Ok(Some(next));
            };
            let n = if tag == b'%' || tag == b'|' { n * 2 } else { n };
            let mut p = next;
            for _ in 0..n {
                match skip(buf, p, depth + 1)? {
                    Some(q) => p = q,
                    None => return Ok(None),
                }
            }
            if tag == b'|' {
                // An attribute precedes the real reply; it is part of this frame.
                return skip(buf, p, depth + 1);
            }
            Ok(Some(p))
        }
        other => err(pos, format!("unexpected type byte {:?}", other as char)),
    }
}

/// Decodes one complete frame from the front of `buf`, removing its bytes. Returns the frame and
/// how many bytes it took, or `Ok(None)` (buffer untouched) if it is not complete yet.
pub fn decode(buf: &mut BytesMut) -> Result<Option<(Frame, usize)>, RespError> {
    let Some(len) = frame_len(buf)? else {
        return Ok(None);
    };
    let bytes = buf.split_to(len).freeze();
    let (frame, used) = build(&bytes, 0)?;
    debug_assert_eq!(used, len);
    Ok(Some((frame, len)))
}

/// Builds the frame at `pos` of a buffer already known to hold it whole.
fn build(b: &Bytes, pos: usize) -> Result<(Frame, usize), RespError> {
    let Some(&tag) = b.get(pos) else {
        return err(pos, "truncated frame");
    };
    let (l, next) = match line(b, pos + 1)? {
        Some(x) => x,
        None => return err(pos, "truncated frame"),
    };
    let l_start = pos + 1;
    let l_end = l_start + l.len();
    let text = || b.slice(l_start..l_end);
    Ok(match tag {
        b'+' => (Frame::Simple(text()), next),
        b'-' => (Frame::Error(text()), next),
        b':' => (Frame::Integer(parse_int(l, l_start)?), next),
        b'(' => (Frame::BigNumber(text()), next),
        b'_' => (Frame::Null, next),
        b'#' => (Frame::Boolean(l == b"t"), next),
        b',' => {
            let s = std::str::from_utf8(l).unwrap_or("");
            let v = match s {
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                "nan" => f64::NAN,
                _ => match s.parse::<f64>() {
                    Ok(v) => v,
                    Err(_) => return err(l_start, "invalid double"),
                },
            };
            (Frame::Double(v), next)
        }
        b'$' | b'=' | b'!' => match parse_len(l, l_start, MAX_BULK_LEN)? {
            None => (Frame::Null, next),
            Some(n) => {
                let data = b.slice(next..next + n);
                let f = match tag {
                    b'$' => Frame::Bulk(data),
                    b'=' => Frame::Verbatim(data),
                    _ => Frame::Error(data),
                };
                (f, next + n + 2)
            }
        },
        b'*' | b'~' | b'>' => match parse_len(l, l_start, MAX_AGGREGATE_LEN)? {
            None => (Frame::Null, next),
            Some(n) => {
                let mut items = Vec::with_capacity(n.min(1024));
                let mut p = next;
                for _ in 0..n {
                    let (f, q) = build(b, p)?;
                    items.push(f);
                    p = q;
                }
                let f = match tag {
                    b'*' => Frame::Array(items),
                    b'~' => Frame::Set(items),
                    _ => Frame::Push(items),
                };
                (f, p)
            }
        },
        b'%' | b'|' => {
            let n = parse_len(l, l_start, MAX_AGGREGATE_LEN)?.unwrap_or(0);
            let mut pairs = Vec::with_capacity(n.min(1024));
            let mut p = next;
            for _ in 0..n {
                let (k, q) = build(b, p)?;
                let (v, r) = build(b, q)?;
                pairs.push((k, v));
                p = r;
            }
            if tag == b'|' {
                // Attributes carry metadata only: return the reply they decorate.
                return build(b, p);
            }
            (Frame::Map(pairs), p)
        }
        other => return err(pos, format!("unexpected type byte {:?}", other as char)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &[u8]) -> Result<Option<(Frame, usize)>, RespError> {
        decode(&mut BytesMut::from(s))
    }

    #[test]
    fn decodes_resp2() {
        let (f, n) = dec(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(n, 26);
        assert_eq!(
            f.into_args().unwrap(),
            vec![Bytes::from("SET"), Bytes::from("k"), Bytes::new()]
        );
        assert_eq!(
            dec(b"+OK\r\n").unwrap().unwrap().0,
            Frame::Simple("OK".into())
        );
        assert_eq!(
            dec(b"-ERR x\r\n").unwrap().unwrap().0,
            Frame::Error("ERR x".into())
        );
        assert_eq!(dec(b":-12\r\n").unwrap().unwrap().0, Frame::Integer(-12));
        assert_eq!(dec(b"$-1\r\n").unwrap().unwrap().0, Frame::Null);
        assert_eq!(dec(b"*-1\r\n").unwrap().unwrap().0, Frame::Null);
    }

    #[test]
    fn decodes_resp3() {
        let (f, _) = dec(b"%1\r\n+a\r\n,1.5\r\n").unwrap().unwrap();
        assert_eq!(
            f,
            Frame::Map(vec![(Frame::Simple("a".into()), Frame::Double(1.5))])
        );
        assert_eq!(dec(b"#t\r\n").unwrap().unwrap().0, Frame::Boolean(true));
        assert_eq!(dec(b"_\r\n").unwrap().unwrap().0, Frame::Null);
        let (f, _) = dec(b"|1\r\n+ttl\r\n:3\r\n:42\r\n").unwrap().unwrap();
        assert_eq!(f, Frame::Integer(42));
        let (f, _) = dec(b">2\r\n+message\r\n=7\r\ntxt:abc\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            f,
            Frame::Push(vec![
                Frame::Simple("message".into()),
                Frame::Verbatim("txt:abc".into())
            ])
        );
    }

    #[test]
    fn incomplete_leaves_buffer() {
        let full = b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n";
        for cut in 0..full.len() {
            let mut b = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut b).unwrap(), None, "cut {cut}");
            assert_eq!(b.len(), cut);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(dec(b"?what\r\n").is_err());
        assert!(dec(b"$3\r\nabcd\r\n").is_err());
        assert!(dec(b"*1\r\n:x\r\n").is_err());
        assert!(dec(b"$-5\r\n").is_err());
        assert!(dec(b"+no cr\n").is_err());
        // Found by tests/resp_fuzz.rs: a null attribute used to index past the frame.
        assert!(dec(b"|-1\r\n").is_err());
    }
}
