//! `FUNCTION DUMP` / `FUNCTION RESTORE` payloads: the libraries of a server as function records
//! (the RDB's `FUNCTION2` opcode and the library code, as in an RDB file), then the 2-byte RDB
//! version and the CRC64, both little-endian.

use bytes::Bytes;

use super::error::{RdbError, RdbErrorKind};
use super::parser::{DUMP_FOOTER, MAX_REDIS_VERSION, VALKEY_VERSIONS};
use super::reader::{CRC64, Source};

/// The `FUNCTION2` opcode that precedes each library's code.
const OPCODE_FUNCTION2: u8 = 245;

/// The libraries of a `FUNCTION DUMP` payload.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionPayload {
    /// RDB version from the footer (80+ is Valkey's numbering).
    pub version: u16,
    /// Each library's code (`#!<engine> name=<lib> …`), in payload order.
    pub libraries: Vec<Bytes>,
}

fn err(offset: usize, kind: RdbErrorKind) -> RdbError {
    RdbError {
        offset: offset as u64,
        key: None,
        kind,
    }
}

/// Decodes a `FUNCTION DUMP` payload. A zero CRC is accepted (checksums disabled).
pub fn parse_function_payload(payload: &[u8]) -> Result<FunctionPayload, RdbError> {
    let n = payload.len();
    if n < DUMP_FOOTER {
        return Err(err(n, RdbErrorKind::UnexpectedEof));
    }
    let (body_and_ver, crc_bytes) = payload.split_at(n - 8);
    let (body, ver_bytes) = body_and_ver.split_at(n - DUMP_FOOTER);
    let version = u16::from_le_bytes([ver_bytes[0], ver_bytes[1]]);
    let mut crc = [0u8; 8];
    crc.copy_from_slice(crc_bytes);
    let expected = u64::from_le_bytes(crc);
    let computed = CRC64.checksum(body_and_ver);
    if expected != 0 && expected != computed {
        return Err(err(n - 8, RdbErrorKind::Checksum { expected, computed }));
    }
    let v = u32::from(version);
    if !(VALKEY_VERSIONS.contains(&v) || (10..=MAX_REDIS_VERSION).contains(&v)) {
        return Err(err(n - DUMP_FOOTER, RdbErrorKind::UnsupportedVersion(v)));
    }
    let mut src = Source::new(body);
    let mut libraries = Vec::new();
    while let Some(op) = src.try_read_u8()? {
        if op != OPCODE_FUNCTION2 {
            return Err(src.corrupt(format!(
                "function payload: opcode {op} where a library (245) was expected"
            )));
        }
        libraries.push(src.read_string()?);
    }
    Ok(FunctionPayload { version, libraries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::parser::finish_dump_payload;

    fn payload(libs: &[&str], version: u32) -> Vec<u8> {
        let mut raw = Vec::new();
        for l in libs {
            raw.push(OPCODE_FUNCTION2);
            assert!(l.len() < 64);
            raw.push(l.len() as u8);
            raw.extend_from_slice(l.as_bytes());
        }
        finish_dump_payload(raw, version)
    }

    #[test]
    fn libraries_in_order() {
        let p = payload(&["#!lua name=a\nx", "#!lua name=b\ny"], 80);
        let got = parse_function_payload(&p).unwrap();
        assert_eq!(got.version, 80);
        assert_eq!(got.libraries, ["#!lua name=a\nx", "#!lua name=b\ny"]);
        assert!(
            parse_function_payload(&payload(&[], 10))
                .unwrap()
                .libraries
                .is_empty()
        );
    }

    #[test]
    fn bad_payloads_are_errors() {
        let mut p = payload(&["#!lua name=a\nx"], 10);
        let last = p.len() - 1;
        p[last] ^= 1;
        assert!(matches!(
            parse_function_payload(&p).unwrap_err().kind,
            RdbErrorKind::Checksum { .. }
        ));
        assert!(parse_function_payload(&payload(&["x"], 9)).is_err());
        assert!(parse_function_payload(b"short").is_err());
        let mut raw = vec![1u8, 2];
        raw.extend_from_slice(&[0; 10]);
        assert!(parse_function_payload(&raw).is_err());
        // Truncated string.
        let mut p = payload(&["#!lua name=a\nx"], 10);
        p.remove(3);
        let n = p.len();
        p[n - 8..].copy_from_slice(&[0; 8]);
        assert!(parse_function_payload(&p).is_err());
    }
}
