//! Intset decoding (RDB type 11): a sorted array of 16-, 32- or 64-bit little-endian integers.

use super::cursor::{Cursor, DecodeResult};

/// Decode an intset blob into its integers (validated: width, length, strictly ascending).
pub(crate) fn decode(blob: &[u8]) -> DecodeResult<Vec<i64>> {
    decode_inner(blob).map_err(|e| format!("invalid intset ({} bytes): {e}", blob.len()))
}

fn decode_inner(blob: &[u8]) -> DecodeResult<Vec<i64>> {
    let mut c = Cursor::new(blob);
    let width = c.u32_le()? as usize;
    let len = c.u32_le()? as usize;
    if !matches!(width, 2 | 4 | 8) {
        return Err(format!("intset with invalid encoding {width}"));
    }
    if len.checked_mul(width) != Some(c.remaining()) {
        return Err(format!(
            "intset of {len} x {width}-byte integers does not fit a {}-byte blob",
            blob.len()
        ));
    }
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        let v = match width {
            2 => i64::from(i16::from_le_bytes(c.array()?)),
            4 => i64::from(i32::from_le_bytes(c.array()?)),
            _ => i64::from_le_bytes(c.array()?),
        };
        if out.last().is_some_and(|&p: &i64| p >= v) {
            return Err("intset is not strictly ascending".into());
        }
        out.push(v);
    }
    Ok(out)
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
