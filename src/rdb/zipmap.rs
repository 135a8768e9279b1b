//! Zipmap decoding (RDB type 9, Redis < 2.6 small hashes): `zmlen`, then key/value pairs with
//! 1- or 5-byte lengths and a free-space byte after each value, ended by 0xff.

use super::cursor::{Cursor, DecodeResult};

const ZM_BIGLEN: u8 = 254;
const ZM_END: u8 = 255;

fn read_len(c: &mut Cursor<'_>) -> DecodeResult<Option<usize>> {
    match c.u8()? {
        ZM_END => Ok(None),
        ZM_BIGLEN => Ok(Some(c.u32_le()? as usize)),
        n => Ok(Some(usize::from(n))),
    }
}

/// Where the first pair of a zipmap starts (after `zmlen`).
pub(crate) const FIRST: usize = 1;

/// Validates a whole zipmap without allocating per pair; returns its number of pairs.
pub(crate) fn walk(blob: &[u8]) -> DecodeResult<u64> {
    let mut pos = FIRST;
    let mut n = 0u64;
    let checked = (|| {
        if blob.is_empty() {
            return Err("empty zipmap".into());
        }
        while let Some((_, _, next)) = pair_at(blob, pos)? {
            pos = next;
            n += 1;
        }
        Ok(n)
    })();
    checked.map_err(|e: super::cursor::BlobError| e.within("zipmap", blob))
}

/// A field, its value, and where the next pair starts.
pub(crate) type Pair<'a> = (&'a [u8], &'a [u8], usize);

/// The (field, value) pair at `pos` and where the next one starts; `None` at the end marker
/// (which must be the blob's last byte).
pub(crate) fn pair_at(blob: &[u8], pos: usize) -> DecodeResult<Option<Pair<'_>>> {
    let mut c = Cursor::new(blob);
    c.take(pos)?;
    let Some(klen) = read_len(&mut c)? else {
        if c.remaining() != 0 {
            return Err("zipmap has bytes after its end marker".into());
        }
        return Ok(None);
    };
    let key = c.take(klen)?;
    let vlen = read_len(&mut c)?.ok_or("zipmap ends between a field and its value")?;
    let free = usize::from(c.u8()?);
    let value = c.take(vlen)?;
    c.take(free)?;
    Ok(Some((key, value, c.pos())))
}

/// Decode a zipmap blob into (field, value) pairs at once (tests).
#[cfg(test)]
pub(crate) fn decode(blob: &[u8]) -> DecodeResult<Vec<(&[u8], &[u8])>> {
    walk(blob)?;
    let mut out = Vec::new();
    let mut pos = FIRST;
    while let Some((k, v, next)) = pair_at(blob, pos)? {
        out.push((k, v));
        pos = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_big_lengths() {
        let big = vec![b'v'; 300];
        let mut b = vec![2u8];
        b.extend_from_slice(&[1, b'a', 2, 0, b'x', b'y']);
        b.extend_from_slice(&[1, b'b', ZM_BIGLEN]);
        b.extend_from_slice(&300u32.to_le_bytes());
        b.push(2); // free bytes
        b.extend_from_slice(&big);
        b.extend_from_slice(&[0, 0, ZM_END]);
        let got = decode(&b).unwrap();
        assert_eq!(got, vec![(&b"a"[..], &b"xy"[..]), (&b"b"[..], &big[..])]);
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err());
        }
    }
}
