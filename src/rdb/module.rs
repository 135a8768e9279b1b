//! Module values (`MODULE_2`) and module AUX records: walked field by field (signed/unsigned
//! integers, floats, doubles, strings) up to the module EOF marker, without the module.

use std::io::Read;

use super::reader::{Result, Source};

const MODULE_OPCODE_EOF: u64 = 0;
const MODULE_OPCODE_SINT: u64 = 1;
const MODULE_OPCODE_UINT: u64 = 2;
const MODULE_OPCODE_FLOAT: u64 = 3;
const MODULE_OPCODE_DOUBLE: u64 = 4;
const MODULE_OPCODE_STRING: u64 = 5;

/// Skip typed module fields until (and including) the module EOF opcode.
pub(crate) fn skip_fields<R: Read>(src: &mut Source<R>) -> Result<()> {
    loop {
        match src.read_len()? {
            MODULE_OPCODE_EOF => return Ok(()),
            MODULE_OPCODE_SINT | MODULE_OPCODE_UINT => {
                src.read_len()?;
            }
            MODULE_OPCODE_FLOAT => src.skip(4)?,
            MODULE_OPCODE_DOUBLE => src.skip(8)?,
            MODULE_OPCODE_STRING => src.skip_string()?,
            other => return Err(src.corrupt(format!("unknown module field opcode {other}"))),
        }
    }
}

/// Skip a whole `MODULE_2` value (module id, then fields). Returns the module id.
pub(crate) fn skip_value<R: Read>(src: &mut Source<R>) -> Result<u64> {
    let id = src.read_len()?;
    skip_fields(src)?;
    Ok(id)
}

/// The 9-character module type name encoded in the upper 54 bits of a module id.
pub(crate) fn module_name(id: u64) -> String {
    const CHARSET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut name = String::with_capacity(9);
    let mut bits = id >> 10;
    let mut chars = [0u8; 9];
    for slot in chars.iter_mut().rev() {
        *slot = CHARSET.get((bits & 63) as usize).copied().unwrap_or(b'?');
        bits >>= 6;
    }
    name.extend(chars.iter().map(|&c| c as char));
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_all_field_kinds() {
        let mut b = vec![0x05]; // module id
        b.extend_from_slice(&[1, 0x05, 2, 0x40, 0x10, 3, 0, 0, 0, 0, 4]);
        b.extend_from_slice(&[0u8; 8]);
        b.extend_from_slice(&[5, 0x02, b'h', b'i', 0]);
        b.push(0xaa); // next byte after the value
        let mut s = Source::new(&b[..]);
        assert_eq!(skip_value(&mut s).unwrap(), 5);
        assert_eq!(s.read_u8().unwrap(), 0xaa);
        let mut bad = Source::new(&[0x05, 9][..]);
        assert!(skip_value(&mut bad).is_err());
    }
}
