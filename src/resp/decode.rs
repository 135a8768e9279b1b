//! Incremental RESP decoding. A [`Decoder`] validates the pending frame as bytes arrive and
//! remembers how far it got (position, open aggregates, where the current line's search stopped),
//! so each byte is checked once however the frame is cut into reads; once the frame is whole it
//! is cut off the buffer and built from slices of the same memory. [`Limits`] bound a whole frame
//! (bytes and elements), each bulk string, each line and the nesting depth, so hostile input
//! fails with an error naming the limit instead of growing the buffer without end.

use bytes::{Bytes, BytesMut};

use super::Frame;

/// Largest bulk string accepted (Redis's default `proto-max-bulk-len`).
pub const MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Default cap on a whole frame: a largest bulk plus room for the rest of its command.
pub const DEFAULT_MAX_FRAME_BYTES: usize = MAX_BULK_LEN + (1 << 20);
/// Default cap on the elements (at every nesting level together) of one frame.
pub const DEFAULT_MAX_FRAME_ELEMENTS: u64 = 16 << 20;
/// Largest aggregate (array, map, set) element count accepted by the stateless helpers.
const MAX_AGGREGATE_LEN: usize = 1 << 30;
/// Largest nesting depth accepted.
const MAX_DEPTH: usize = 64;
/// Longest line (simple string, error, number) accepted.
const MAX_LINE: usize = 64 * 1024;
/// The smallest encoding of any element (`_\r\n`): an announced count implies at least this
/// many bytes per element.
const MIN_ELEMENT_BYTES: u64 = 3;

/// What one frame may cost. The defaults accept anything Redis itself sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes in one whole frame (a command of the replication stream, one reply).
    pub max_frame_bytes: usize,
    /// Most elements in one frame, counted over every nesting level.
    pub max_frame_elements: u64,
    /// Most bytes in one bulk string.
    pub max_bulk_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_frame_elements: DEFAULT_MAX_FRAME_ELEMENTS,
            max_bulk_bytes: MAX_BULK_LEN,
        }
    }
}

impl Limits {
    /// Limits for request/response work (handshake, INFO, target replies): 64 MiB per frame.
    pub fn replies() -> Limits {
        Limits {
            max_frame_bytes: 64 << 20,
            max_frame_elements: 4 << 20,
            max_bulk_bytes: 64 << 20,
        }
    }
}

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

/// Resumable validation state of the frame at the front of the buffer.
#[derive(Clone, Debug)]
struct Scan {
    /// Bytes of the pending frame validated so far (the start of the next element header).
    pos: usize,
    /// How far the search for the end of the header line at `pos` has looked.
    lf_from: usize,
    /// End of the bulk string whose header was read at an earlier call (header already
    /// validated), when its bytes had not all arrived.
    bulk_end: Option<usize>,
    /// Elements still expected by each open aggregate, innermost last.
    open: [u64; MAX_DEPTH],
    depth: usize,
    /// Elements announced so far in this frame.
    elements: u64,
}

impl Default for Scan {
    fn default() -> Self {
        Scan {
            pos: 0,
            lf_from: 0,
            bulk_end: None,
            open: [0; MAX_DEPTH],
            depth: 0,
            elements: 0,
        }
    }
}

/// An incremental decoder for one byte stream. Between calls the caller may only append to the
/// buffer (or consume frames through [`Decoder::decode`]); anything else needs [`Decoder::reset`].
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    limits: Limits,
    scan: Scan,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            scan: Scan::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Forgets the pending frame's progress (after the buffer was changed by other means).
    pub fn reset(&mut self) {
        self.scan = Scan::default();
    }

    /// Bytes of the pending (incomplete) frame validated so far.
    pub fn pending_bytes(&self) -> usize {
        self.scan.pos
    }

    /// Decodes one complete frame from the front of `buf`, removing its bytes. Returns the frame
    /// and how many bytes it took, or `Ok(None)` (buffer untouched) if it is not complete yet.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<(Frame, usize)>, RespError> {
        let Some(len) = self.frame_len(buf)? else {
            return Ok(None);
        };
        let bytes = buf.split_to(len).freeze();
        let (frame, used) = build(&bytes, 0, &self.limits)?;
        debug_assert_eq!(used, len);
        Ok(Some((frame, len)))
    }

    /// The byte length of the complete frame at the start of `buf` (and the state is reset for
    /// the next one), `Ok(None)` if more bytes are needed (progress is kept), or an error.
    pub fn frame_len(&mut self, buf: &[u8]) -> Result<Option<usize>, RespError> {
        let r = self.scan_frame(buf);
        match r {
            Ok(None) => {}
            _ => self.scan = Scan::default(),
        }
        r
    }

    fn too_big(&self, at: usize, need: u64) -> RespError {
        RespError {
            offset: at,
            what: format!(
                "frame of at least {need} bytes exceeds the limit of {} bytes (max_frame_bytes)",
                self.limits.max_frame_bytes
            ),
        }
    }

    fn scan_frame(&mut self, buf: &[u8]) -> Result<Option<usize>, RespError> {
        let max_frame = self.limits.max_frame_bytes as u64;
        loop {
            let s = &mut self.scan;
            let pos = s.pos;
            if let Some(end) = s.bulk_end {
                if buf.len() < end {
                    return Ok(None);
                }
                if buf.get(end - 2..end) != Some(b"\r\n".as_slice()) {
                    return err(end - 2, "bulk string not followed by CRLF");
                }
                s.bulk_end = None;
                s.pos = end;
                if let Some(done) = self.complete() {
                    return Ok(Some(done));
                }
                continue;
            }
            let Some(&tag) = buf.get(pos) else {
                return Ok(None);
            };
            // Find the end of the header line, resuming where the last search stopped.
            let from = s.lf_from.max(pos + 1);
            let rest = buf.get(from..).unwrap_or(&[]);
            let Some(i) = memchr_lf(rest) else {
                s.lf_from = buf.len();
                if buf.len() - pos > MAX_LINE {
                    return err(pos, format!("line longer than {MAX_LINE} bytes"));
                }
                if buf.len() as u64 > max_frame {
                    return Err(self.too_big(pos, buf.len() as u64));
                }
                return Ok(None);
            };
            let lf = from + i;
            if lf - pos > MAX_LINE + 1 {
                return err(pos, format!("line longer than {MAX_LINE} bytes"));
            }
            if buf.get(lf - 1) != Some(&b'\r') || lf == pos + 1 {
                return err(lf, "line not terminated by CRLF");
            }
            let l = &buf[pos + 1..lf - 1];
            let next = lf + 1;
            s.lf_from = 0;
            if next as u64 > max_frame {
                return Err(self.too_big(pos, next as u64));
            }
            match tag {
                b'+' | b'-' | b':' | b',' | b'#' | b'(' | b'_' => {
                    s.pos = next;
                }
                b'$' | b'=' | b'!' => match parse_len(l, pos + 1, usize::MAX)? {
                    None => s.pos = next,
                    Some(n) => {
                        if n > self.limits.max_bulk_bytes {
                            return err(
                                pos + 1,
                                format!(
                                    "bulk string of {n} bytes exceeds the limit of {} bytes",
                                    self.limits.max_bulk_bytes
                                ),
                            );
                        }
                        let end = next as u64 + n as u64 + 2;
                        if end > max_frame {
                            return Err(self.too_big(pos, end));
                        }
                        s.bulk_end = Some(end as usize);
                        continue;
                    }
                },
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = match parse_len(l, pos + 1, MAX_AGGREGATE_LEN)? {
                        Some(n) => n as u64,
                        None if tag == b'|' => return err(pos, "attribute without a length"),
                        None => 0,
                    };
                    // Maps and attributes hold pairs; an attribute also precedes its reply.
                    let n = match tag {
                        b'%' => n * 2,
                        b'|' => n * 2 + 1,
                        _ => n,
                    };
                    s.pos = next;
                    if n > 0 {
                        s.elements += n;
                        if s.elements > self.limits.max_frame_elements {
                            return err(
                                pos,
                                format!(
                                    "frame announces {} elements, more than the limit of {} (max_frame_elements)",
                                    s.elements, self.limits.max_frame_elements
                                ),
                            );
                        }
                        let least =
                            (next as u64).saturating_add(n.saturating_mul(MIN_ELEMENT_BYTES));
                        if least > max_frame {
                            return Err(self.too_big(pos, least));
                        }
                        if s.depth >= MAX_DEPTH {
                            return err(pos, "nesting too deep");
                        }
                        s.open[s.depth] = n;
                        s.depth += 1;
                        continue;
                    }
                }
                other => return err(pos, format!("unexpected type byte {:?}", other as char)),
            }
            if let Some(done) = self.complete() {
                return Ok(Some(done));
            }
        }
    }

    /// One element ended at `scan.pos`: closes the aggregates it completes; returns the frame's
    /// length when the top-level value is complete.
    fn complete(&mut self) -> Option<usize> {
        let s = &mut self.scan;
        while s.depth > 0 {
            let top = &mut s.open[s.depth - 1];
            *top -= 1;
            if *top > 0 {
                return None;
            }
            s.depth -= 1;
        }
        Some(s.pos)
    }
}

/// Returns the byte length of the complete frame at the start of `buf`, `Ok(None)` if more
/// bytes are needed, or an error if the bytes are not RESP. Stateless: scans from the start
/// every time, with the default [`Limits`]; streams use a [`Decoder`].
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, RespError> {
    Decoder::default().frame_len(buf)
}

/// Decodes one complete frame from the front of `buf`, removing its bytes (stateless, default
/// [`Limits`]; streams use a [`Decoder`]). Returns the frame and how many bytes it took, or
/// `Ok(None)` (buffer untouched) if it is not complete yet.
pub fn decode(buf: &mut BytesMut) -> Result<Option<(Frame, usize)>, RespError> {
    Decoder::default().decode(buf)
}

/// Builds the frame at `pos` of a buffer already known to hold it whole.
fn build(b: &Bytes, pos: usize, lim: &Limits) -> Result<(Frame, usize), RespError> {
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
        b'$' | b'=' | b'!' => match parse_len(l, l_start, lim.max_bulk_bytes)? {
            None => (Frame::Null, next),
            Some(n) => {
                if b.len() < next + n + 2 {
                    return err(pos, "truncated frame");
                }
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
                    let (f, q) = build(b, p, lim)?;
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
                let (k, q) = build(b, p, lim)?;
                let (v, r) = build(b, q, lim)?;
                pairs.push((k, v));
                p = r;
            }
            if tag == b'|' {
                // Attributes carry metadata only: return the reply they decorate.
                return build(b, p, lim);
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

#[cfg(test)]
mod incremental_tests {
    use super::*;

    fn wire() -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n");
        w.extend_from_slice(b"+OK\r\n");
        w.extend_from_slice(b"%2\r\n+a\r\n*2\r\n:1\r\n_\r\n+b\r\n|1\r\n+x\r\n:2\r\n$-1\r\n");
        w.extend_from_slice(b"*0\r\n*-1\r\n>1\r\n~1\r\n#t\r\n");
        w
    }

    fn all(d: &mut Decoder, buf: &mut BytesMut) -> Vec<Frame> {
        let mut v = Vec::new();
        while let Some((f, _)) = d.decode(buf).unwrap() {
            v.push(f);
        }
        v
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let w = wire();
        let whole = all(&mut Decoder::default(), &mut BytesMut::from(&w[..]));
        assert_eq!(whole.len(), 6);
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in &w {
            buf.extend_from_slice(&[*b]);
            got.extend(all(&mut d, &mut buf));
        }
        assert_eq!(got, whole);
        assert!(buf.is_empty());
    }

    #[test]
    fn progress_is_kept_between_reads() {
        let mut d = Decoder::default();
        let mut buf = BytesMut::from(&b"*4\r\n$1\r\na\r\n:1\r\n"[..]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert_eq!(d.pending_bytes(), 15);
        buf.extend_from_slice(b"+x\r\n$2\r\nb");
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert_eq!(d.pending_bytes(), 19);
        buf.extend_from_slice(b"c\r\n");
        let (f, n) = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(n, 27);
        assert!(matches!(f, Frame::Array(ref v) if v.len() == 4));
        assert_eq!(d.pending_bytes(), 0);
    }

    #[test]
    fn huge_announce_fails_at_once_naming_the_limit() {
        let e = decode(&mut BytesMut::from(&b"*1073741824\r\n"[..])).unwrap_err();
        assert!(e.what.contains("max_frame_elements"), "{e}");
        let lim = Limits {
            max_frame_bytes: 1000,
            ..Limits::default()
        };
        let e = Decoder::new(lim)
            .decode(&mut BytesMut::from(&b"*500\r\n"[..]))
            .unwrap_err();
        assert!(e.what.contains("limit of 1000 bytes"), "{e}");
        let e = Decoder::new(lim)
            .decode(&mut BytesMut::from(&b"$2000\r\n"[..]))
            .unwrap_err();
        assert!(e.what.contains("limit of 1000 bytes"), "{e}");
    }

    #[test]
    fn endless_elements_hit_the_frame_cap() {
        let lim = Limits {
            max_frame_bytes: 4096,
            ..Limits::default()
        };
        let mut d = Decoder::new(lim);
        let mut buf = BytesMut::from(&b"*100000\r\n"[..]);
        let mut fed = 0;
        let e = loop {
            match d.decode(&mut buf) {
                Ok(None) => {
                    buf.extend_from_slice(b"$1\r\nx\r\n");
                    fed += 1;
                    assert!(fed < 10_000, "no error");
                }
                Ok(Some(_)) => panic!("complete?"),
                Err(e) => break e,
            }
        };
        assert!(e.what.contains("max_frame_bytes"), "{e}");
        assert!(buf.len() <= 4096 + 16);
    }

    #[test]
    fn endless_line_is_an_error() {
        let mut d = Decoder::default();
        let mut buf = BytesMut::from(&b"+"[..]);
        let e = loop {
            match d.decode(&mut buf) {
                Ok(None) => buf.extend_from_slice(&[b'a'; 1000]),
                Ok(Some(_)) => panic!("complete?"),
                Err(e) => break e,
            }
        };
        assert!(e.what.contains("line longer"), "{e}");
    }
}
