//! Pre-encoded batches: the RESP bytes of a batch's commands in one buffer, made on the
//! producing side (the RDB loader's thread) so that the writer only copies bytes.
//!
//! Why: every key of a full sync used to be several small heap objects (its key and value
//! buffers, its command's argument vector) allocated on the parser's thread and freed on the
//! writer's after the target acknowledged them. glibc pays for that pattern far more than its
//! instruction count says (its per-thread caches never refill the allocating thread, so both
//! threads go to the shared arenas and consolidate their fast bins; `perf` put the allocator at
//! 35–40 % of the loader). [`pack`] copies a batch's commands into one buffer on the loader's
//! thread and points every argument at its place in that buffer, so the key and value buffers
//! are freed on the thread that allocated them, and the writer frees one buffer per batch.
//!
//! The commands stay whole ([`crate::cmd::Cmd`] with its arguments, now slices of the buffer):
//! the writer's rare paths (repairs of refused writes, `MOVED`/`ASK` redirects, the `EXECABORT`
//! retry, transactions, logs naming a key) read them as before. The one fast path is
//! [`Wire::command`]: the encoded bytes of command `i`, which the writer copies instead of
//! encoding.

use bytes::{BufMut, Bytes, BytesMut};

use crate::cmd::DbCmd;

/// The RESP encoding of every command of a batch, in order, in one buffer.
pub struct Wire {
    bytes: Bytes,
    /// `ends[i]`: where command `i`'s encoding ends in `bytes` (it starts where `i - 1` ends).
    ends: Vec<u32>,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Wire({} commands, {} bytes)",
            self.ends.len(),
            self.bytes.len()
        )
    }
}

impl Wire {
    /// Number of commands encoded.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The encoded bytes of command `i` (`None` past the end).
    pub fn command(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.bytes.get(start..end)
    }
}

/// Longest batch encoding packed: offsets are `u32`. A larger batch (only possible with a
/// `batch_max_bytes` over 4 GiB) is sent as it is.
const MAX_WIRE: usize = u32::MAX as usize;

/// Encodes `cmds` into one buffer and points their arguments at it (see the module
/// documentation). Returns `None`, leaving `cmds` untouched, when there is nothing to pack or
/// the encoding would not fit [`MAX_WIRE`].
pub fn pack(cmds: &mut [DbCmd]) -> Option<Wire> {
    if cmds.is_empty() {
        return None;
    }
    let total: usize = cmds.iter().map(|c| c.cmd.encoded_len()).sum();
    if total > MAX_WIRE {
        return None;
    }
    let mut buf = BytesMut::with_capacity(total);
    let mut ends = Vec::with_capacity(cmds.len());
    // (start, len) of every argument in `buf`, in order.
    let mut spans: Vec<(u32, u32)> =
        Vec::with_capacity(cmds.iter().map(|c| c.cmd.args.len()).sum());
    let mut itoa = itoa::Buffer::new();
    for c in cmds.iter() {
        let args = &c.cmd.args;
        buf.put_u8(b'*');
        buf.put_slice(itoa.format(args.len()).as_bytes());
        buf.put_slice(b"\r\n");
        for a in args {
            buf.put_u8(b'$');
            buf.put_slice(itoa.format(a.len()).as_bytes());
            buf.put_slice(b"\r\n");
            spans.push((buf.len() as u32, a.len() as u32));
            buf.put_slice(a);
            buf.put_slice(b"\r\n");
        }
        ends.push(buf.len() as u32);
    }
    let bytes = buf.freeze();
    let mut s = spans.into_iter();
    for c in cmds.iter_mut() {
        for a in c.cmd.args.iter_mut() {
            if let Some((start, len)) = s.next() {
                let (start, len) = (start as usize, len as usize);
                *a = bytes.slice(start..start + len);
            }
        }
    }
    Some(Wire { bytes, ends })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd;

    #[test]
    fn packed_commands_encode_as_before_and_keep_their_arguments() {
        let mut cmds = vec![
            DbCmd {
                db: 0,
                cmd: cmd!["MSET", "a", "1", "bb", Bytes::from_static(b"v\r\n")],
            },
            DbCmd {
                db: 3,
                cmd: cmd![
                    "RESTORE",
                    "k",
                    0u64,
                    Bytes::from(vec![0u8, 255, 10]),
                    "REPLACE"
                ],
            },
            DbCmd {
                db: 3,
                cmd: cmd!["SET", "", ""],
            },
        ];
        let before = cmds.clone();
        let w = pack(&mut cmds).expect("packed");
        assert_eq!(cmds, before);
        assert_eq!(w.len(), 3);
        for (i, c) in before.iter().enumerate() {
            let mut want = BytesMut::new();
            c.cmd.encode(&mut want);
            assert_eq!(w.command(i), Some(&want[..]));
        }
        assert_eq!(w.command(3), None);
        assert!(pack(&mut []).is_none());
    }
}
