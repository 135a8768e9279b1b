//! Escaping of bytes that come from the data or from a peer (keys, values, server replies) before
//! they reach a log line, an error message or a terminal: quoted as `redis-cli` quotes them
//! (printable ASCII as is; `\n`, `\r`, `\t`, `\a`, `\b`, `\"`, `\\`; `\xHH` for everything else),
//! and cut after a limit with a marker saying how much was left out. A key holding a newline
//! therefore cannot forge a log line, and no escape sequence reaches a terminal.
//!
//! Use [`quoted`] (with the surrounding quotes, for keys and values) or [`text`] (without, for
//! server replies and messages embedded in a sentence); both take any bytes.

use std::fmt;

/// Bytes shown before the rest is replaced by `…(+N bytes)`.
pub const DEFAULT_LIMIT: usize = 200;

/// `bytes` escaped and quoted (`"a\nb"`), at most [`DEFAULT_LIMIT`] input bytes shown.
pub fn quoted(bytes: impl AsRef<[u8]>) -> String {
    Escaped::new(bytes.as_ref()).quoted().to_string()
}

/// The first argument of `cmd` (the key, for most commands), quoted for a log line; empty when
/// it has none.
pub fn quoted_key(cmd: &crate::cmd::Cmd) -> String {
    cmd.args.get(1).map(quoted).unwrap_or_default()
}

/// `bytes` escaped without quotes, at most [`DEFAULT_LIMIT`] input bytes shown.
pub fn text(bytes: impl AsRef<[u8]>) -> String {
    Escaped::new(bytes.as_ref()).to_string()
}

/// `bytes` escaped without quotes, at most `limit` input bytes shown.
pub fn text_limited(bytes: impl AsRef<[u8]>, limit: usize) -> String {
    Escaped::new(bytes.as_ref()).limit(limit).to_string()
}

/// A lazily escaped view of bytes, for `format!`/`tracing` fields without an allocation.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a> {
    bytes: &'a [u8],
    limit: usize,
    quotes: bool,
}

impl<'a> Escaped<'a> {
    pub fn new(bytes: &'a [u8]) -> Escaped<'a> {
        Escaped {
            bytes,
            limit: DEFAULT_LIMIT,
            quotes: false,
        }
    }

    /// Shows at most `limit` input bytes.
    pub fn limit(mut self, limit: usize) -> Escaped<'a> {
        self.limit = limit;
        self
    }

    /// Surrounds the text with double quotes.
    pub fn quoted(mut self) -> Escaped<'a> {
        self.quotes = true;
        self
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let shown = &self.bytes[..self.bytes.len().min(self.limit)];
        if self.quotes {
            f.write_str("\"")?;
        }
        let mut start = 0;
        for (i, &b) in shown.iter().enumerate() {
            let esc: Option<&str> = match b {
                b'\n' => Some("\\n"),
                b'\r' => Some("\\r"),
                b'\t' => Some("\\t"),
                0x07 => Some("\\a"),
                0x08 => Some("\\b"),
                b'"' => Some("\\\""),
                b'\\' => Some("\\\\"),
                0x20..=0x7e => None,
                _ => Some(""),
            };
            let Some(esc) = esc else { continue };
            // Runs of printable ASCII are written in one go (they are valid UTF-8).
            f.write_str(std::str::from_utf8(&shown[start..i]).unwrap_or_default())?;
            if esc.is_empty() {
                let hex = [b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]];
                f.write_str(std::str::from_utf8(&hex).unwrap_or_default())?;
            } else {
                f.write_str(esc)?;
            }
            start = i + 1;
        }
        f.write_str(std::str::from_utf8(&shown[start..]).unwrap_or_default())?;
        if self.quotes {
            f.write_str("\"")?;
        }
        if self.bytes.len() > shown.len() {
            write!(f, "…(+{} bytes)", self.bytes.len() - shown.len())?;
        }
        Ok(())
    }
}

/// Replaces control characters (and the escape character) in text meant for a terminal, for
/// strings that may already hold escaped data but must never carry raw control bytes.
pub fn terminal_safe(s: &str) -> String {
    if !s.chars().any(|c| c.is_control()) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_redis_cli() {
        assert_eq!(quoted(b"plain key:1"), "\"plain key:1\"");
        assert_eq!(quoted(b"a\nb\r\tc"), "\"a\\nb\\r\\tc\"");
        assert_eq!(quoted(b"q\"b\\"), "\"q\\\"b\\\\\"");
        assert_eq!(quoted(b"\x1b[31mred\x00\xff"), "\"\\x1b[31mred\\x00\\xff\"");
        assert_eq!(text("é".as_bytes()), "\\xc3\\xa9");
        assert_eq!(text(b""), "");
    }

    #[test]
    fn truncates_with_a_marker() {
        let long = vec![b'a'; 1234 + DEFAULT_LIMIT];
        let s = text(&long);
        assert!(s.ends_with("…(+1234 bytes)"), "{s}");
        assert_eq!(s.len(), DEFAULT_LIMIT + "…(+1234 bytes)".len());
        assert_eq!(text_limited(b"abcdef", 3), "abc…(+3 bytes)");
        assert_eq!(
            Escaped::new(b"k\n").quoted().limit(1).to_string(),
            "\"k\"…(+1 bytes)"
        );
    }

    #[test]
    fn nothing_unprintable_gets_through() {
        let all: Vec<u8> = (0..=255u8).collect();
        let s = Escaped::new(&all).limit(usize::MAX).to_string();
        assert!(s.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{s}");
        assert_eq!(terminal_safe("ok\x1b[2Jx\ny"), "ok\\u{1b}[2Jx\\ny");
    }
}
