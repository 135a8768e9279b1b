//! A raw RESP connection over TCP or TLS ([`stream`]): connect with a timeout, log in, send
//! commands, read frames. Used where shardsync speaks the protocol itself (the replication link
//! and the target writers' pipelines); ordinary request/response work uses redis-rs.

pub mod backoff;
pub mod client;
pub mod server_info;
pub mod stream;
pub mod tls;
pub mod topology;

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cmd::Cmd;
use crate::config::Endpoint;
use crate::resp::{Decoder, Frame, Limits, RespError};

/// Why talking to a server failed. Messages name the server and say what to do; they never
/// contain a password.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot connect to {addr}: {why} (is the server running and reachable?)")]
    Connect { addr: String, why: String },
    #[error("TLS with {addr} failed: {why}")]
    Tls { addr: String, why: String },
    #[error("{addr} rejected the password ({reply}); check the password given for it")]
    Auth { addr: String, reply: String },
    #[error(
        "{addr} requires a password and none was given (set it in the URL or the *_PASSWORD env var)"
    )]
    NoAuth { addr: String },
    #[error("connection to {addr} closed")]
    Closed { addr: String },
    #[error("I/O error with {addr}: {why}")]
    Io { addr: String, why: String },
    #[error("{addr} sent bytes that are not RESP: {source}")]
    Protocol { addr: String, source: RespError },
    #[error("{addr} did not answer within {secs} s")]
    Timeout { addr: String, secs: u64 },
    #[error("{addr} answered {what}: {reply}")]
    Unexpected {
        addr: String,
        what: String,
        reply: String,
    },
    /// A request/response exchange ([`client`]) failed; `why` ends with what to do.
    #[error("{role} {addr}: {why}")]
    Client {
        role: String,
        addr: String,
        why: String,
    },
    #[error("{role} {addr}: CLUSTER NODES: {source}")]
    Table {
        role: String,
        addr: String,
        source: crate::router::TableError,
    },
    #[error(
        "{role} cluster: slots {slots} are not served by any master; fix the cluster (e.g. redis-cli --cluster fix) first"
    )]
    Uncovered { role: String, slots: String },
}

impl NetError {
    /// A failed exchange with `ep` in `role` ("source", "target"); `why` says what to do.
    pub fn client(role: &str, ep: &Endpoint, why: impl Into<String>) -> NetError {
        NetError::Client {
            role: role.to_string(),
            addr: ep.to_string(),
            why: why.into(),
        }
    }
}

/// A connection (TCP or TLS) with its receive buffer.
pub struct RespConn {
    pub stream: stream::Stream,
    pub buf: BytesMut,
    pub addr: String,
    /// Progress on the frame at the front of `buf` (replies: [`Limits::replies`]).
    pub dec: Decoder,
}

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

impl RespConn {
    /// Connects (with [`CONNECT_TIMEOUT`]) and, when the endpoint has a password, authenticates.
    pub async fn connect(ep: &Endpoint) -> Result<RespConn, NetError> {
        let addr = ep.to_string();
        let stream = stream::connect(ep).await?;
        let mut conn = RespConn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            addr,
            dec: Decoder::new(Limits::replies()),
        };
        if let Some(pw) = &ep.password {
            let auth = match &ep.username {
                Some(u) => Cmd::new(["AUTH", u.as_str(), pw.expose()].map(String::from)),
                None => Cmd::new(["AUTH", pw.expose()].map(String::from)),
            };
            if let Frame::Error(e) = conn.request(&auth).await? {
                return Err(NetError::Auth {
                    addr: conn.addr,
                    reply: crate::escape::text(&e),
                });
            }
        }
        Ok(conn)
    }

    fn io_err(&self, e: std::io::Error) -> NetError {
        NetError::Io {
            addr: self.addr.clone(),
            why: e.to_string(),
        }
    }

    /// Sends one command (not flushed through any buffer: written whole).
    pub async fn send(&mut self, cmd: &Cmd) -> Result<(), NetError> {
        let mut out = BytesMut::with_capacity(cmd.encoded_len());
        cmd.encode(&mut out);
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| self.io_err(e))
    }

    /// Reads more bytes into the buffer; errors on EOF.
    pub async fn fill(&mut self) -> Result<usize, NetError> {
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err(NetError::Closed {
                addr: self.addr.clone(),
            }),
            Ok(n) => Ok(n),
            Err(e) => Err(self.io_err(e)),
        }
    }

    /// Reads one whole frame (waiting at most [`REPLY_TIMEOUT`]).
    pub async fn read_frame(&mut self) -> Result<Frame, NetError> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            if let Some((f, _)) =
                self.dec
                    .decode(&mut self.buf)
                    .map_err(|source| NetError::Protocol {
                        addr: self.addr.clone(),
                        source,
                    })?
            {
                return Ok(f);
            }
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(NetError::Timeout {
                        addr: self.addr.clone(),
                        secs: REPLY_TIMEOUT.as_secs(),
                    });
                }
            };
        }
    }

    /// Sends a command and reads its reply. A `NOAUTH` error becomes [`NetError::NoAuth`].
    pub async fn request(&mut self, cmd: &Cmd) -> Result<Frame, NetError> {
        self.send(cmd).await?;
        let f = self.read_frame().await?;
        if let Frame::Error(e) = &f
            && e.starts_with(b"NOAUTH")
        {
            return Err(NetError::NoAuth {
                addr: self.addr.clone(),
            });
        }
        Ok(f)
    }
}
