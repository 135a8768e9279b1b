//! The replica handshake (`PING`, `REPLCONF`, `PSYNC`) and the RDB transfer header, as Redis's
//! `replication.c` expects them from a replica.

use bytes::Buf;

use crate::cmd::Cmd;
use crate::net::{NetError, RespConn};
use crate::resp::Frame;

/// Where to resume: the replication ID and the offset of the last byte applied.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplPosition {
    pub replid: String,
    pub offset: u64,
    /// The source database selected at `offset`: a master does not repeat its `SELECT` after
    /// a partial resync, so a resumed stream starts in this database.
    #[serde(default)]
    pub db: u32,
}

/// The master's answer to `PSYNC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PsyncReply {
    /// A full sync follows: an RDB, then the stream from `offset`.
    FullResync(ReplPosition),
    /// The stream continues after our offset; `new_replid` is set after a failover.
    Continue { new_replid: Option<String> },
}

/// How the RDB payload is framed on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RdbFraming {
    /// `$<len>\r\n` followed by exactly `len` bytes (disk-based sync).
    Length(u64),
    /// `$EOF:<40-byte mark>\r\n`, the payload ends with the same 40 bytes (diskless sync).
    EofMark([u8; 40]),
}

fn unexpected(conn: &RespConn, what: &str, reply: &Frame) -> NetError {
    NetError::Unexpected {
        addr: conn.addr.clone(),
        what: what.to_string(),
        reply: reply.to_text(),
    }
}

/// The Valkey version shardsync declares as a replica (`REPLCONF version`): the newest whose RDB
/// format the parser reads. Valkey 9+ sends a replica that declares no version (or an older one)
/// an RDB in version 11 for compatibility, and that RDB cannot hold Valkey 9 data (hash fields
/// with TTLs): the master's BGSAVE fails ("Can't store key … in RDB version 11") and the full
/// sync never completes. Declared, the master sends its own format (`VALKEY080`).
pub const VALKEY_REPLICA_VERSION: &str = "9.1.0";

/// Whether to declare [`VALKEY_REPLICA_VERSION`] to `source` (Valkey 8.0+ knows `REPLCONF
/// version`; Redis would refuse it).
pub fn declares_version(source: &crate::net::server_info::ServerInfo) -> bool {
    source.valkey_at_least(8, 0)
}

/// Runs the handshake after `RespConn::connect` (which authenticated) and sends `PSYNC`.
/// `declare_version` sends `REPLCONF version` [`VALKEY_REPLICA_VERSION`] (see
/// [`declares_version`]); a master that refuses it is still replicated from.
pub async fn handshake(
    conn: &mut RespConn,
    listening_port: u16,
    resume: Option<&ReplPosition>,
    declare_version: bool,
) -> Result<PsyncReply, NetError> {
    let ping = conn.request(&crate::cmd!["PING"]).await?;
    if ping.is_error() {
        return Err(unexpected(conn, "PING", &ping));
    }
    let r = conn
        .request(&crate::cmd![
            "REPLCONF",
            "listening-port",
            listening_port as u64
        ])
        .await?;
    if r.is_error() {
        return Err(unexpected(conn, "REPLCONF listening-port", &r));
    }
    let r = conn
        .request(&crate::cmd!["REPLCONF", "capa", "eof", "capa", "psync2"])
        .await?;
    if r.is_error() {
        return Err(unexpected(conn, "REPLCONF capa", &r));
    }
    if declare_version {
        let r = conn
            .request(&crate::cmd!["REPLCONF", "version", VALKEY_REPLICA_VERSION])
            .await?;
        if r.is_error() {
            tracing::warn!(addr = %conn.addr, reply = %r.to_text(),
                "the source refused REPLCONF version; it may send an RDB older than its own format");
        }
    }
    let psync = match resume {
        Some(p) => Cmd::new([
            "PSYNC".to_string(),
            p.replid.clone(),
            p.offset.saturating_add(1).to_string(),
        ]),
        None => crate::cmd!["PSYNC", "?", "-1"],
    };
    conn.send(&psync).await?;
    let line = read_line_skipping_keepalives(conn).await?;
    let text = String::from_utf8_lossy(&line).into_owned();
    let mut words = text.split_whitespace();
    match words.next() {
        Some("+FULLRESYNC") => {
            let replid = words.next().unwrap_or_default().to_string();
            let offset = words.next().and_then(|w| w.parse::<u64>().ok());
            match offset {
                // Redis keeps offsets in a signed 64-bit integer: anything above cannot be real,
                // and would wrap the stream offset.
                Some(offset) if offset > MAX_REPL_OFFSET => Err(NetError::Unexpected {
                    addr: conn.addr.clone(),
                    what: format!(
                        "PSYNC with a replication offset above {MAX_REPL_OFFSET} (2^63-1, the largest Redis can have)"
                    ),
                    reply: text,
                }),
                Some(offset) if replid.len() == 40 => Ok(PsyncReply::FullResync(ReplPosition {
                    replid,
                    offset,
                    db: 0,
                })),
                _ => Err(NetError::Unexpected {
                    addr: conn.addr.clone(),
                    what: "PSYNC".into(),
                    reply: crate::escape::text(&line),
                }),
            }
        }
        Some("+CONTINUE") => Ok(PsyncReply::Continue {
            new_replid: words.next().map(str::to_string),
        }),
        _ => Err(NetError::Unexpected {
            addr: conn.addr.clone(),
            what: "PSYNC (does the server allow replication? a -NOPERM or -ERR means no)".into(),
            reply: crate::escape::text(&line),
        }),
    }
}

/// Largest replication offset a master can announce (`long long` in Redis).
pub const MAX_REPL_OFFSET: u64 = i64::MAX as u64;

/// Largest RDB transfer accepted (`$<len>`): 1 TiB, far above any real dataset; a larger length
/// is a broken or hostile peer.
pub const MAX_RDB_TRANSFER: u64 = 1 << 40;

/// Reads a CRLF line, dropping the bare `\n` keep-alives a master sends while it prepares.
async fn read_line_skipping_keepalives(conn: &mut RespConn) -> Result<Vec<u8>, NetError> {
    // The buffer is consumed here by lines, not frames.
    conn.dec.reset();
    loop {
        while conn.buf.first() == Some(&b'\n') {
            conn.buf.advance(1);
        }
        if let Some(pos) = conn.buf.iter().position(|&b| b == b'\n') {
            let mut line = conn.buf.split_to(pos + 1).to_vec();
            line.truncate(pos);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(line);
        }
        if conn.buf.len() > 4096 {
            return Err(NetError::Unexpected {
                addr: conn.addr.clone(),
                what: "the replication handshake".into(),
                reply: "a line longer than 4096 bytes".into(),
            });
        }
        match tokio::time::timeout(crate::net::REPLY_TIMEOUT * 4, conn.fill()).await {
            Ok(r) => {
                r?;
            }
            Err(_) => {
                return Err(NetError::Timeout {
                    addr: conn.addr.clone(),
                    secs: crate::net::REPLY_TIMEOUT.as_secs() * 4,
                });
            }
        }
    }
}

/// Reads the RDB header line (`$<len>` or `$EOF:<mark>`) after `+FULLRESYNC`.
pub async fn read_rdb_framing(conn: &mut RespConn) -> Result<RdbFraming, NetError> {
    let line = read_line_skipping_keepalives(conn).await?;
    let bad = |conn: &RespConn| NetError::Unexpected {
        addr: conn.addr.clone(),
        what: "the RDB transfer header".into(),
        reply: crate::escape::text_limited(&line, 80),
    };
    if let Some(mark) = line.strip_prefix(b"$EOF:") {
        let mark: [u8; 40] = mark.try_into().map_err(|_| bad(conn))?;
        return Ok(RdbFraming::EofMark(mark));
    }
    if let Some(len) = line.strip_prefix(b"$") {
        let text = std::str::from_utf8(len).unwrap_or("");
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u64>() {
                Ok(n) if n <= MAX_RDB_TRANSFER => Ok(RdbFraming::Length(n)),
                _ => Err(NetError::Unexpected {
                    addr: conn.addr.clone(),
                    what: format!(
                        "an RDB size above the limit of {MAX_RDB_TRANSFER} bytes (1 TiB) in the RDB transfer header"
                    ),
                    reply: String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned(),
                }),
            };
        }
        return Err(bad(conn));
    }
    if line.starts_with(b"-") {
        return Err(NetError::Unexpected {
            addr: conn.addr.clone(),
            what: "the RDB transfer".into(),
            reply: crate::escape::text(&line),
        });
    }
    Err(bad(conn))
}
