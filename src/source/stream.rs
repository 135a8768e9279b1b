//! The replication command stream: cuts RESP commands off the receive buffer, counts every byte
//! into the replication offset, keeps the current database, and drops what only concerns the
//! link itself (`PING`, `REPLCONF`, `SELECT`).

use bytes::BytesMut;

use crate::cmd::{Cmd, DbCmd};
use crate::resp::{Decoder, Limits, RespError};

/// Decoding state of one command stream.
#[derive(Debug)]
pub struct StreamDecoder {
    /// Replication offset after the last byte decoded.
    pub offset: u64,
    /// Database selected by the last `SELECT`.
    pub db: u32,
    /// Set when the master asked `REPLCONF GETACK`; the caller clears it after answering.
    pub getack: bool,
    /// Progress on the command at the front of the buffer, and the frame limits.
    resp: Decoder,
    /// The offset after each command pushed to `out` (the caller takes them with the commands).
    pub ends: Vec<u64>,
}

/// Why a stream could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("replication stream: {0}")]
    Resp(#[from] RespError),
    #[error("replication stream: expected a command (array of strings) at offset {0}")]
    NotACommand(u64),
    #[error("replication stream: invalid SELECT argument at offset {0}")]
    BadSelect(u64),
    #[error(
        "replication stream: the offset would pass 2^64 at {0} (a master's offset never gets there; the source is broken or hostile)"
    )]
    OffsetOverflow(u64),
}

impl StreamDecoder {
    pub fn new(offset: u64) -> StreamDecoder {
        StreamDecoder::with_limits(offset, Limits::default())
    }

    /// A decoder whose commands may be at most `limits` large (`sync.max_frame_bytes`).
    pub fn with_limits(offset: u64, limits: Limits) -> StreamDecoder {
        StreamDecoder {
            offset,
            db: 0,
            getack: false,
            resp: Decoder::new(limits),
            ends: Vec::new(),
        }
    }

    /// Decodes complete commands from `buf` into `out` until the buffer holds no whole command or
    /// `out` reaches `max_cmds`. Returns the bytes of command arguments added.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        out: &mut Vec<DbCmd>,
        max_cmds: usize,
    ) -> Result<usize, StreamError> {
        let mut bytes = 0;
        while out.len() < max_cmds {
            let Some((frame, len)) = self.resp.decode(buf)? else {
                break;
            };
            let at = self.offset;
            self.offset = self
                .offset
                .checked_add(len as u64)
                .ok_or(StreamError::OffsetOverflow(at))?;
            let args = frame
                .into_args()
                .filter(|a| !a.is_empty())
                .ok_or(StreamError::NotACommand(at))?;
            let cmd = Cmd { args };
            if cmd.is("PING") {
                continue;
            }
            if cmd.is("REPLCONF") {
                if cmd
                    .args
                    .get(1)
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"GETACK"))
                {
                    self.getack = true;
                }
                continue;
            }
            if cmd.is("SELECT") {
                self.db = cmd
                    .args
                    .get(1)
                    .and_then(|a| std::str::from_utf8(a).ok())
                    .and_then(|s| s.parse().ok())
                    .ok_or(StreamError::BadSelect(at))?;
                continue;
            }
            bytes += len;
            out.push(DbCmd { db: self.db, cmd });
            self.ends.push(self.offset);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_byte_and_filters_link_commands() {
        let mut buf = BytesMut::new();
        let wire: &[&[u8]] = &[
            b"*1\r\n$4\r\nPING\r\n",
            b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
            b"*3\r\n$8\r\nREPLCONF\r\n$6\r\nGETACK\r\n$1\r\n*\r\n",
            b"*2\r\n$3\r\nDEL\r\n$1\r",
        ];
        for w in wire {
            buf.extend_from_slice(w);
        }
        let mut d = StreamDecoder::new(100);
        let mut out = Vec::new();
        d.decode(&mut buf, &mut out, 100).unwrap();
        let whole: usize = wire[..4].iter().map(|w| w.len()).sum();
        assert_eq!(d.offset, 100 + whole as u64);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].db, 3);
        assert!(d.getack);
        assert_eq!(&buf[..], wire[4]);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut buf = BytesMut::from(&b":12\r\n"[..]);
        let r = StreamDecoder::new(0).decode(&mut buf, &mut Vec::new(), 10);
        assert!(matches!(r, Err(StreamError::NotACommand(0))), "{r:?}");
    }
}
