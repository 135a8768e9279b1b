//! Ziplist decoding (RDB types 10, 12, 13 and quicklist v1 nodes): header, entries with their
//! `prevlen` back-links (validated), string and integer encodings of every width.

use super::cursor::{BlobError, Cursor, DecodeResult, Elem};

const ZIP_END: u8 = 0xff;

/// Decode a whole ziplist blob into its elements, validating the structure.
#[cfg(test)]
pub(crate) fn decode(blob: &[u8]) -> DecodeResult<Vec<Elem<'_>>> {
    let mut out = Vec::new();
    walk(blob, |e| out.push(e))?;
    Ok(out)
}

/// Position of the first entry.
pub(crate) const FIRST: usize = 10;

/// Validates the whole ziplist, handing each element to `f`; returns the element count.
pub(crate) fn walk<'a>(blob: &'a [u8], f: impl FnMut(Elem<'a>)) -> DecodeResult<u64> {
    walk_inner(blob, f).map_err(|e| e.within("ziplist", blob))
}

fn walk_inner<'a>(blob: &'a [u8], mut f: impl FnMut(Elem<'a>)) -> DecodeResult<u64> {
    let mut c = Cursor::new(blob);
    let zlbytes = c.u32_le()? as usize;
    let zltail = c.u32_le()? as usize;
    let zllen = c.u16_le()?;
    if zlbytes != blob.len() {
        return Err(BlobError::Detail(format!(
            "ziplist header says {zlbytes} bytes, blob has {}",
            blob.len()
        )));
    }
    if zltail >= blob.len() || zltail < 10 {
        return Err(BlobError::Detail(format!(
            "ziplist tail offset {zltail} out of range"
        )));
    }
    let mut n = 0u64;
    let mut prev_len = 0usize;
    let mut last_start = None;
    loop {
        let start = c.pos();
        if c.peek()? == ZIP_END {
            c.u8()?;
            break;
        }
        let prevlen = read_prevlen(&mut c)?;
        if prevlen != prev_len {
            return Err(BlobError::Detail(format!(
                "ziplist entry at {start} has prevlen {prevlen}, previous entry is {prev_len} bytes"
            )));
        }
        f(read_entry(&mut c)?);
        n += 1;
        prev_len = c.pos() - start;
        last_start = Some(start);
    }
    if c.remaining() != 0 {
        return Err("ziplist has bytes after its end marker".into());
    }
    match last_start {
        Some(s) if s != zltail => {
            return Err(BlobError::Detail(format!(
                "ziplist tail offset {zltail} != last entry at {s}"
            )));
        }
        None if zltail != 10 => return Err("empty ziplist with bad tail offset".into()),
        _ => {}
    }
    if zllen != u16::MAX && u64::from(zllen) != n {
        return Err(BlobError::CountMismatch {
            what: "ziplist",
            header: zllen as u64,
            found: n,
        });
    }
    Ok(n)
}

/// The entry at `pos` of a ziplist already validated by [`walk`], and the position after it.
pub(crate) fn at(blob: &[u8], pos: usize) -> DecodeResult<(Elem<'_>, usize)> {
    let mut c = Cursor::new(blob);
    c.take(pos)?;
    read_prevlen(&mut c)?;
    let elem = read_entry(&mut c)?;
    Ok((elem, c.pos()))
}

fn read_prevlen(c: &mut Cursor<'_>) -> DecodeResult<usize> {
    let b = c.u8()?;
    if b < 254 {
        Ok(usize::from(b))
    } else if b == 254 {
        Ok(c.u32_le()? as usize)
    } else {
        Err("ziplist prevlen byte 255".into())
    }
}

fn read_entry<'a>(c: &mut Cursor<'a>) -> DecodeResult<Elem<'a>> {
    let enc = c.u8()?;
    match enc >> 6 {
        0 => Ok(Elem::Str(c.take(usize::from(enc & 0x3f))?)),
        1 => {
            let lo = c.u8()?;
            let len = (usize::from(enc & 0x3f) << 8) | usize::from(lo);
            Ok(Elem::Str(c.take(len)?))
        }
        2 => {
            if enc != 0x80 {
                return Err(BlobError::BadEncoding {
                    what: "ziplist string",
                    byte: enc,
                });
            }
            let len = u32::from_be_bytes(c.array()?) as usize;
            Ok(Elem::Str(c.take(len)?))
        }
        _ => match enc {
            0xc0 => Ok(Elem::Int(i64::from(i16::from_le_bytes(c.array()?)))),
            0xd0 => Ok(Elem::Int(i64::from(i32::from_le_bytes(c.array()?)))),
            0xe0 => Ok(Elem::Int(i64::from_le_bytes(c.array()?))),
            0xf0 => {
                let b: [u8; 3] = c.array()?;
                let v = i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8;
                Ok(Elem::Int(i64::from(v)))
            }
            0xfe => Ok(Elem::Int(i64::from(c.u8()? as i8))),
            0xf1..=0xfd => Ok(Elem::Int(i64::from(enc & 0x0f) - 1)),
            _ => Err(BlobError::BadEncoding {
                what: "ziplist entry",
                byte: enc,
            }),
        },
    }
}

/// Test helper: build a ziplist from already-encoded entry bodies (encoding + data).
#[cfg(test)]
pub(crate) fn build(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut prev = 0usize;
    let mut tail = 10usize;
    for e in entries {
        tail = 10 + body.len();
        let mut entry = Vec::new();
        if prev < 254 {
            entry.push(prev as u8);
        } else {
            entry.push(254);
            entry.extend_from_slice(&(prev as u32).to_le_bytes());
        }
        entry.extend_from_slice(e);
        prev = entry.len();
        body.extend_from_slice(&entry);
    }
    let total = 10 + body.len() + 1;
    let mut out = Vec::new();
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&(tail as u32).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    out.push(ZIP_END);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding() {
        let long = vec![b'x'; 300];
        let mut e14 = vec![0x40 | 1, 44];
        e14.extend_from_slice(&long);
        let huge = vec![b'y'; 20000];
        let mut e32 = vec![0x80];
        e32.extend_from_slice(&(huge.len() as u32).to_be_bytes());
        e32.extend_from_slice(&huge);
        let entries = vec![
            vec![0x03, b'a', b'b', b'c'],
            e14,
            e32,
            {
                let mut v = vec![0xc0];
                v.extend_from_slice(&(-1234i16).to_le_bytes());
                v
            },
            {
                let mut v = vec![0xd0];
                v.extend_from_slice(&(-123_456_789i32).to_le_bytes());
                v
            },
            {
                let mut v = vec![0xe0];
                v.extend_from_slice(&i64::MIN.to_le_bytes());
                v
            },
            vec![0xf0, 0xff, 0xff, 0x7f],
            vec![0xf0, 0x00, 0x00, 0x80],
            vec![0xfe, 0x80],
            vec![0xf1],
            vec![0xfd],
        ];
        let zl = build(&entries);
        let got = decode(&zl).unwrap();
        assert_eq!(got.len(), 11);
        assert_eq!(got[0], Elem::Str(b"abc"));
        assert_eq!(got[1], Elem::Str(&long[..]));
        assert_eq!(got[2], Elem::Str(&huge[..]));
        assert_eq!(got[3], Elem::Int(-1234));
        assert_eq!(got[4], Elem::Int(-123_456_789));
        assert_eq!(got[5], Elem::Int(i64::MIN));
        assert_eq!(got[6], Elem::Int(8_388_607));
        assert_eq!(got[7], Elem::Int(-8_388_608));
        assert_eq!(got[8], Elem::Int(-128));
        assert_eq!(got[9], Elem::Int(0));
        assert_eq!(got[10], Elem::Int(12));
    }

    #[test]
    fn corrupt_inputs() {
        let zl = build(&[vec![0x01, b'a'], vec![0x01, b'b']]);
        // Truncations and bad prevlen never panic, always fail.
        for cut in 0..zl.len() {
            assert!(decode(&zl[..cut]).is_err());
        }
        let mut bad = zl.clone();
        bad[13] = 7; // second entry's prevlen
        assert!(decode(&bad).is_err());
        let mut bad = zl.clone();
        bad[8] = 5; // entry count
        assert!(decode(&bad).is_err());
        assert!(decode(&build(&[])).unwrap().is_empty());
    }
}
