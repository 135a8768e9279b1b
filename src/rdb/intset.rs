//! Intset decoding (RDB type 11): a sorted array of 16-, 32- or 64-bit little-endian integers.

use super::cursor::{BlobError, Cursor, DecodeResult};

/// Decode an intset blob into its integers (validated: width, length, strictly ascending).
#[cfg(test)]
pub(crate) fn decode(blob: &[u8]) -> DecodeResult<Vec<i64>> {
    let mut out = Vec::new();
    walk(blob, |v| out.push(v))?;
    Ok(out)
}

/// Position of the first integer.
pub(crate) const FIRST: usize = 8;

/// Validates the whole intset, handing each integer to `f`; returns the count.
pub(crate) fn walk(blob: &[u8], f: impl FnMut(i64)) -> DecodeResult<u64> {
    walk_inner(blob, f).map_err(|e| e.within("intset", blob))
}

fn walk_inner(blob: &[u8], mut f: impl FnMut(i64)) -> DecodeResult<u64> {
    let mut c = Cursor::new(blob);
    let width = c.u32_le()? as usize;
    let len = c.u32_le()? as usize;
    if !matches!(width, 2 | 4 | 8) {
        return Err(BlobError::Detail(format!(
            "intset with invalid encoding {width}"
        )));
    }
    if len.checked_mul(width) != Some(c.remaining()) {
        return Err(BlobError::Detail(format!(
            "intset of {len} x {width}-byte integers does not fit a {}-byte blob",
            blob.len()
        )));
    }
    let mut last = None;
    for i in 0..len {
        let (v, _) = at(blob, FIRST + i * width)?;
        if last.is_some_and(|p: i64| p >= v) {
            return Err("intset is not strictly ascending".into());
        }
        last = Some(v);
        f(v);
    }
    Ok(len as u64)
}

/// The integer at `pos` of an intset (width from its header), and the position after it.
pub(crate) fn at(blob: &[u8], pos: usize) -> DecodeResult<(i64, usize)> {
    let mut c = Cursor::new(blob);
    let width = c.u32_le()? as usize;
    c.take(pos.saturating_sub(4))?;
    let v = match width {
        2 => i64::from(i16::from_le_bytes(c.array()?)),
        4 => i64::from(i32::from_le_bytes(c.array()?)),
        8 => i64::from_le_bytes(c.array()?),
        w => {
            return Err(BlobError::Detail(format!(
                "intset with invalid encoding {w}"
            )));
        }
    };
    Ok((v, c.pos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(width: u32, vals: &[i64]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&width.to_le_bytes());
        b.extend_from_slice(&(vals.len() as u32).to_le_bytes());
        for &v in vals {
            b.extend_from_slice(&v.to_le_bytes()[..width as usize]);
        }
        b
    }

    #[test]
    fn widths() {
        assert_eq!(decode(&build(2, &[-5, 0, 300])).unwrap(), vec![-5, 0, 300]);
        assert_eq!(
            decode(&build(4, &[-70000, 70000])).unwrap(),
            vec![-70000, 70000]
        );
        assert_eq!(
            decode(&build(8, &[i64::MIN, 1 << 40, i64::MAX])).unwrap(),
            vec![i64::MIN, 1 << 40, i64::MAX]
        );
    }

    #[test]
    fn corrupt() {
        assert!(decode(&build(3, &[1])).is_err());
        assert!(decode(&build(2, &[5, 1])).is_err());
        let b = build(4, &[1, 2]);
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err());
        }
        let mut huge = build(8, &[1]);
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
    }
}
