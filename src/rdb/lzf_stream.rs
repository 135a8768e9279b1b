//! Step-wise inflation of an LZF-compressed string value: reads the compressed bytes from the
//! source in pieces and hands out the inflated bytes one part at a time, keeping only the last
//! 8 KiB of output (the farthest an LZF back reference reaches). Redis compresses every
//! compressible string over 20 bytes, so a large string of repetitive data is a few MiB in the
//! RDB and hundreds of MiB inflated: inflating it whole would make the value's size, not the
//! configured part size, decide memory.

use std::io::Read;

use bytes::Bytes;

use super::reader::{Result, Source};

/// The farthest back an LZF reference reaches (13 bits of offset, plus one).
const WINDOW: usize = 8192;
/// Compressed bytes read from the source at a time.
const READ_STEP: usize = 64 * 1024;
/// The longest token: a control byte and 32 literal bytes.
const MAX_TOKEN: usize = 33;

/// A token partly handed out: the rest of a literal run, or of a back reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    /// This many literal bytes follow in the input.
    Literal(usize),
    /// Copy this many bytes from `back` bytes before the end of the output.
    Copy {
        back: usize,
        left: usize,
    },
}

/// The progress of inflating one string.
#[derive(Debug)]
pub(crate) struct LzfStream {
    /// Compressed bytes still in the source.
    unread: u64,
    /// Compressed bytes read but not yet decoded (from `pos`).
    input: Vec<u8>,
    pos: usize,
    /// Inflated bytes still to come.
    left: u64,
    /// Inflated bytes handed out so far.
    out: u64,
    /// The last (up to) [`WINDOW`] inflated bytes handed out, for back references.
    window: Vec<u8>,
    pending: Pending,
}

impl LzfStream {
    /// After a string header announcing `clen` compressed bytes that inflate to `ulen`.
    pub(crate) fn new<R: Read>(src: &Source<R>, clen: u64, ulen: u64) -> Result<Self> {
        // A 2-byte back reference copies at most 264 bytes: a larger claim is corrupt.
        if ulen > clen.saturating_mul(140).saturating_add(64) {
            return Err(src.corrupt(format!(
                "LZF length {ulen} impossible for {clen} compressed bytes"
            )));
        }
        Ok(LzfStream {
            unread: clen,
            input: Vec::new(),
            pos: 0,
            left: ulen,
            out: 0,
            window: Vec::new(),
            pending: Pending::None,
        })
    }

    /// Inflated bytes still to come.
    pub(crate) fn left(&self) -> u64 {
        self.left
    }

    /// The next part of at most `max` inflated bytes (`max` ≥ 1). After the last part every
    /// compressed byte must have been used: leftovers, a short input or a token running past
    /// the announced length are corrupt.
    pub(crate) fn next_part<R: Read>(&mut self, src: &mut Source<R>, max: usize) -> Result<Bytes> {
        let want = self.left.min(max.max(1) as u64) as usize;
        // `buf` = window, then this part; references reach back into the window.
        let base = self.window.len();
        let mut buf = std::mem::take(&mut self.window);
        buf.reserve(want);
        while buf.len() - base < want {
            let room = want - (buf.len() - base);
            match self.pending {
                Pending::None => self.pending = self.token(src, buf.len())?,
                Pending::Literal(n) => {
                    let k = n.min(room);
                    buf.extend_from_slice(&self.input[self.pos..self.pos + k]);
                    self.pos += k;
                    self.pending = if k == n {
                        Pending::None
                    } else {
                        Pending::Literal(n - k)
                    };
                }
                Pending::Copy { back, left } => {
                    let k = left.min(room);
                    let from = buf.len() - back;
                    if back >= k {
                        buf.extend_from_within(from..from + k);
                    } else {
                        // Byte by byte: source and destination overlap in a run.
                        for i in from..from + k {
                            let b = buf[i];
                            buf.push(b);
                        }
                    }
                    self.pending = if k == left {
                        Pending::None
                    } else {
                        Pending::Copy {
                            back,
                            left: left - k,
                        }
                    };
                }
            }
        }
        let part = Bytes::copy_from_slice(&buf[base..]);
        self.left -= part.len() as u64;
        self.out += part.len() as u64;
        let keep = buf.len().min(WINDOW);
        buf.drain(..buf.len() - keep);
        self.window = buf;
        if self.left == 0 {
            self.fill(src)?;
            let unused = (self.input.len() - self.pos) as u64 + self.unread;
            if self.pending != Pending::None || unused != 0 {
                return Err(src.corrupt(format!(
                    "LZF data inflates past its length of {} bytes",
                    self.out
                )));
            }
        }
        Ok(part)
    }

    /// Reads the next token's header; `have` is how many output bytes a reference can reach.
    fn token<R: Read>(&mut self, src: &mut Source<R>, have: usize) -> Result<Pending> {
        self.fill(src)?;
        let Some(&ctrl) = self.input.get(self.pos) else {
            return Err(src.corrupt(format!(
                "LZF data ends {} bytes short of its length",
                self.left
            )));
        };
        if ctrl < 32 {
            let run = usize::from(ctrl) + 1;
            if self.input.len() - self.pos - 1 < run {
                return Err(src.corrupt("LZF literal run past the end of the data"));
            }
            self.pos += 1;
            return Ok(Pending::Literal(run));
        }
        let mut len = usize::from(ctrl >> 5);
        let mut at = self.pos + 1;
        if len == 7 {
            len += usize::from(self.byte(src, at)?);
            at += 1;
        }
        let back = (usize::from(ctrl & 0x1f) << 8) + usize::from(self.byte(src, at)?) + 1;
        if back > have {
            return Err(src.corrupt("LZF back reference before the start of the string"));
        }
        self.pos = at + 1;
        Ok(Pending::Copy {
            back,
            left: len + 2,
        })
    }

    /// The compressed byte at `at`, which must exist.
    fn byte<R: Read>(&self, src: &Source<R>, at: usize) -> Result<u8> {
        self.input
            .get(at)
            .copied()
            .ok_or_else(|| src.corrupt("LZF back reference past the end of the data"))
    }

    /// Makes sure a whole token is buffered (or all the rest of the input is).
    fn fill<R: Read>(&mut self, src: &mut Source<R>) -> Result<()> {
        if self.input.len() - self.pos >= MAX_TOKEN || self.unread == 0 {
            return Ok(());
        }
        self.input.drain(..self.pos);
        self.pos = 0;
        let step = self.unread.min(READ_STEP as u64);
        let more = src.read_vec(step)?;
        self.unread -= step;
        self.input.extend_from_slice(&more);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inflates `c` (claimed to inflate to `ulen`) in parts of `max`; checks every part's size.
    fn inflate(c: &[u8], ulen: u64, max: usize) -> Result<Vec<u8>> {
        let mut src = Source::new(c);
        let mut z = LzfStream::new(&src, c.len() as u64, ulen)?;
        let mut out = Vec::new();
        while z.left() > 0 {
            let part = z.next_part(&mut src, max)?;
            assert!(
                !part.is_empty() && part.len() <= max,
                "part of {}",
                part.len()
            );
            out.extend_from_slice(&part);
        }
        Ok(out)
    }

    fn sample(n: usize) -> Vec<u8> {
        // Runs, repeats at many distances (up to the whole window) and some noise.
        let mut x = 0x9e37_79b9_u32;
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            match x >> 29 {
                0 => v.extend(std::iter::repeat_n(b'a', (x as usize >> 8) % 600)),
                1 | 2 if v.len() > 9000 => {
                    let back = 1 + (x as usize >> 4) % 8192;
                    let at = v.len() - back;
                    v.extend_from_within(at..at + ((x as usize >> 16) % 300).min(back));
                }
                _ => v.push((x >> 16) as u8),
            }
        }
        v.truncate(n);
        v
    }

    #[test]
    fn parts_of_any_size_give_the_whole_inflation() {
        for n in [21, 4096, 100_000, 300_000] {
            let data = sample(n);
            let c = lzf::compress(&data).expect("compressible");
            for max in [1, 2, 31, 33, 264, 1000, 8192, 65536, 1 << 20] {
                let got = inflate(&c, n as u64, max).expect("valid LZF");
                assert!(got == data, "n {n}, parts of {max}");
            }
        }
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let data = sample(50_000);
        let c = lzf::compress(&data).expect("compressible");
        let n = data.len() as u64;
        // Too short, too long, a claimed length that does not match.
        assert!(inflate(&c[..c.len() - 1], n, 4096).is_err());
        let mut more = c.clone();
        more.push(0);
        assert!(inflate(&more, n, 4096).is_err());
        assert!(inflate(&c, n - 1, 4096).is_err());
        assert!(inflate(&c, n + 1, 4096).is_err());
        // A reference before the start; an impossible ratio.
        assert!(inflate(&[0x20, 0x00, 0x00], 3, 2).is_err());
        assert!(inflate(&[0x00, b'a'], 1 << 20, 1024).is_err());
        // A literal run past the end of the data.
        assert!(inflate(&[0x05, b'a', b'b'], 6, 2).is_err());
    }
}
