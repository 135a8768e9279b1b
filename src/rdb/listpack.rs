//! Listpack decoding (hash/zset/set listpacks, quicklist v2 nodes, stream nodes): header,
//! every integer and string encoding, and the per-entry back-length, which is validated.

use super::cursor::{BlobError, Cursor, DecodeResult, Elem};

const LP_EOF: u8 = 0xff;

#[cfg(test)]
/// Decode a whole listpack blob into its elements, validating the structure.
pub(crate) fn decode(blob: &[u8]) -> DecodeResult<Vec<Elem<'_>>> {
    let mut out = Vec::new();
    walk(blob, |e| out.push(e))?;
    Ok(out)
}

/// Position of the first entry.
pub(crate) const FIRST: usize = 6;

/// Validates the whole listpack, handing each element to `f`; returns the element count.
pub(crate) fn walk<'a>(blob: &'a [u8], f: impl FnMut(Elem<'a>)) -> DecodeResult<u64> {
    walk_inner(blob, f).map_err(|e| e.within("listpack", blob))
}

fn walk_inner<'a>(blob: &'a [u8], mut f: impl FnMut(Elem<'a>)) -> DecodeResult<u64> {
    let mut c = Cursor::new(blob);
    let total = c.u32_le()? as usize;
    let count = c.u16_le()?;
    if total != blob.len() {
        return Err(BlobError::Detail(format!(
            "listpack header says {total} bytes, blob has {}",
            blob.len()
        )));
    }
    let mut n = 0u64;
    loop {
        if c.peek()? == LP_EOF {
            c.u8()?;
            break;
        }
        let start = c.pos();
        let elem = read_entry(&mut c)?;
        let entry_len = c.pos() - start;
        check_backlen(&mut c, entry_len)?;
        f(elem);
        n += 1;
    }
    if c.remaining() != 0 {
        return Err("listpack has bytes after its end marker".into());
    }
    if count != u16::MAX && u64::from(count) != n {
        return Err(BlobError::CountMismatch {
            what: "listpack",
            header: count as u64,
            found: n,
        });
    }
    Ok(n)
}

/// The entry at `pos` of a listpack already validated by [`walk`], and the position after it.
pub(crate) fn at(blob: &[u8], pos: usize) -> DecodeResult<(Elem<'_>, usize)> {
    let mut c = Cursor::new(blob);
    c.take(pos)?;
    let elem = read_entry(&mut c)?;
    let entry_len = c.pos() - pos;
    c.take(backlen_size(entry_len))?;
    Ok((elem, c.pos()))
}

fn read_entry<'a>(c: &mut Cursor<'a>) -> DecodeResult<Elem<'a>> {
    let b = c.u8()?;
    if b & 0x80 == 0 {
        return Ok(Elem::Int(i64::from(b & 0x7f)));
    }
    if b & 0xc0 == 0x80 {
        return Ok(Elem::Str(c.take(usize::from(b & 0x3f))?));
    }
    if b & 0xe0 == 0xc0 {
        let v = (u16::from(b & 0x1f) << 8) | u16::from(c.u8()?);
        let v = i64::from(v);
        return Ok(Elem::Int(if v >= 1 << 12 { v - (1 << 13) } else { v }));
    }
    if b & 0xf0 == 0xe0 {
        let len = (usize::from(b & 0x0f) << 8) | usize::from(c.u8()?);
        return Ok(Elem::Str(c.take(len)?));
    }
    match b {
        0xf0 => {
            let len = c.u32_le()? as usize;
            Ok(Elem::Str(c.take(len)?))
        }
        0xf1 => Ok(Elem::Int(i64::from(i16::from_le_bytes(c.array()?)))),
        0xf2 => {
            let x: [u8; 3] = c.array()?;
            Ok(Elem::Int(i64::from(
                i32::from_le_bytes([0, x[0], x[1], x[2]]) >> 8,
            )))
        }
        0xf3 => Ok(Elem::Int(i64::from(i32::from_le_bytes(c.array()?)))),
        0xf4 => Ok(Elem::Int(i64::from_le_bytes(c.array()?))),
        other => Err(BlobError::BadEncoding {
            what: "listpack entry",
            byte: other,
        }),
    }
}

/// The back-length (`lpEncodeBacklen`) stores the entry length in 7-bit groups, most
/// significant first; every byte but the first has its high bit set. Its size follows from the
/// entry length, so it is read forwards and must decode to exactly that length.
fn check_backlen(c: &mut Cursor<'_>, entry_len: usize) -> DecodeResult<()> {
    let raw = c.take(backlen_size(entry_len))?;
    let mut value = 0usize;
    for (i, &b) in raw.iter().enumerate() {
        let flagged = b & 0x80 != 0;
        if flagged != (i > 0) {
            return Err("bad listpack back-length".into());
        }
        value = (value << 7) | usize::from(b & 0x7f);
    }
    if value != entry_len {
        return Err(BlobError::Detail(format!(
            "listpack back-length {value}, entry is {entry_len} bytes"
        )));
    }
    Ok(())
}

/// Length of the back-length field for an entry of `len` bytes.
pub(crate) fn backlen_size(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2_097_150 => 3,
        2_097_151..=268_435_454 => 4,
        _ => 5,
    }
}

/// Test helper: encode one listpack entry (encoding + data + back-length).
#[cfg(test)]
pub(crate) fn entry(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    let l = body.len();
    let n = backlen_size(l);
    for i in (0..n).rev() {
        let group = ((l >> (7 * i)) & 0x7f) as u8;
        out.push(if i == n - 1 { group } else { group | 0x80 });
    }
    out
}

/// Test helper: a listpack string entry, using the smallest string encoding.
#[cfg(test)]
pub(crate) fn str_entry(s: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    if s.len() < 64 {
        body.push(0x80 | s.len() as u8);
    } else if s.len() < 4096 {
        body.push(0xe0 | (s.len() >> 8) as u8);
        body.push(s.len() as u8);
    } else {
        body.push(0xf0);
        body.extend_from_slice(&(s.len() as u32).to_le_bytes());
    }
    body.extend_from_slice(s);
    entry(&body)
}

/// Test helper: a listpack integer entry, using the smallest integer encoding.
#[cfg(test)]
pub(crate) fn int_entry(v: i64) -> Vec<u8> {
    let body = if (0..=127).contains(&v) {
        vec![v as u8]
    } else if (-4096..4096).contains(&v) {
        let u = (v as u16) & 0x1fff;
        vec![0xc0 | (u >> 8) as u8, u as u8]
    } else if (i16::MIN as i64..=i16::MAX as i64).contains(&v) {
        let mut b = vec![0xf1];
        b.extend_from_slice(&(v as i16).to_le_bytes());
        b
    } else if (-(1 << 23)..(1 << 23)).contains(&v) {
        let mut b = vec![0xf2];
        b.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
        b
    } else if (i32::MIN as i64..=i32::MAX as i64).contains(&v) {
        let mut b = vec![0xf3];
        b.extend_from_slice(&(v as i32).to_le_bytes());
        b
    } else {
        let mut b = vec![0xf4];
        b.extend_from_slice(&v.to_le_bytes());
        b
    };
    entry(&body)
}

/// Test helper: assemble a listpack from encoded entries.
#[cfg(test)]
pub(crate) fn build(entries: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = entries.concat();
    let total = 6 + body.len() + 1;
    let mut out = Vec::new();
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    out.push(LP_EOF);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding() {
        let mid = vec![b'm'; 1000];
        let big = vec![b'b'; 70000];
        let ints = [
            0i64,
            127,
            -1,
            4095,
            -4096,
            30000,
            -30000,
            8_000_000,
            -8_000_000,
            2_000_000_000,
            -2_000_000_000,
            i64::MAX,
            i64::MIN,
        ];
        let mut entries = vec![str_entry(b"hi"), str_entry(&mid), str_entry(&big)];
        entries.extend(ints.iter().map(|&v| int_entry(v)));
        let lp = build(&entries);
        let got = decode(&lp).unwrap();
        assert_eq!(got[0], Elem::Str(b"hi"));
        assert_eq!(got[1], Elem::Str(&mid[..]));
        assert_eq!(got[2], Elem::Str(&big[..]));
        let got_ints: Vec<i64> = got[3..].iter().map(|e| e.as_int().unwrap()).collect();
        assert_eq!(got_ints, ints);
        // Each integer used a distinct width, as intended.
        assert_eq!(int_entry(8_000_000)[0], 0xf2);
        assert_eq!(int_entry(-4096)[0], 0xd0);
    }

    #[test]
    fn corrupt_inputs() {
        let lp = build(&[str_entry(b"abc"), int_entry(5)]);
        for cut in 0..lp.len() {
            assert!(decode(&lp[..cut]).is_err());
        }
        let mut bad = lp.clone();
        bad[10] = 9; // back-length of the first entry
        assert!(decode(&bad).is_err());
        let mut bad = lp.clone();
        bad[6] = 0xf5; // invalid encoding byte
        assert!(decode(&bad).is_err());
        assert!(decode(&build(&[])).unwrap().is_empty());
    }
}
