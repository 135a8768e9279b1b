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

/// Decode a zipmap blob into (field, value) pairs.
pub(crate) fn decode(blob: &[u8]) -> DecodeResult<Vec<(&[u8], &[u8])>> {
    decode_inner(blob).map_err(|e| e.within("zipmap", blob))
}

fn decode_inner(blob: &[u8]) -> DecodeResult<Vec<(&[u8], &[u8])>> {
    let mut c = Cursor::new(blob);
    let _zmlen = c.u8()?;
    let mut out = Vec::new();
    while let Some(klen) = read_len(&mut c)? {
        let key = c.take(klen)?;
        let vlen = read_len(&mut c)?.ok_or("zipmap ends between a field and its value")?;
        let free = usize::from(c.u8()?);
        let value = c.take(vlen)?;
        c.take(free)?;
        out.push((key, value));
    }
    if c.remaining() != 0 {
        return Err("zipmap has bytes after its end marker".into());
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
