//! Sorted-set score formatting that round-trips exactly through Redis's `strtod`.
//!
//! Finite scores use the shortest representation that parses back to the same `f64` (ryu), with
//! a trailing `.0` dropped (`1`, `0.1`, `1e20`, `5e-324`, `3.0000000000000004`). Redis parses
//! scores with `strtod`, which accepts all of these forms (checked against real servers in the
//! tests). Infinities are written `inf` / `-inf`; NaN is not a valid score and yields `None`.

/// Formats a score for `ZADD`; `None` for NaN.
pub fn format_score(score: f64) -> Option<String> {
    if score.is_nan() {
        return None;
    }
    if score.is_infinite() {
        return Some(if score > 0.0 { "inf" } else { "-inf" }.to_string());
    }
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(score);
    Some(s.strip_suffix(".0").unwrap_or(s).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_round_trips() {
        let cases = [
            (0.1, "0.1"),
            (-0.0, "-0"),
            (0.0, "0"),
            (1.0, "1"),
            (1e300, "1e300"),
            (1e20, "1e20"),
            (1e-7, "1e-7"),
            (3.0000000000000004, "3.0000000000000004"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (-12.5, "-12.5"),
        ];
        for (v, s) in cases {
            assert_eq!(format_score(v).as_deref(), Some(s));
        }
        assert_eq!(format_score(f64::NAN), None);
        for v in [
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            -f64::MAX,
            123456789.12345679,
            1.0 / 3.0,
        ] {
            let s = format_score(v).unwrap();
            assert_eq!(s.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{s}");
        }
    }
}
