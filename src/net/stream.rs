//! The byte stream to a server: plain TCP, or TLS over TCP for a `rediss://` endpoint. One
//! [`connect`] opens either (TCP connect and TLS handshake under one timeout), so every caller —
//! replication link, writers, redis-rs helper connections, verify — changes nothing else. TLS
//! failures surfacing later (a server that refuses the client certificate answers after the
//! handshake) are rewritten into messages that say what to change ([`crate::net::tls::explain`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp;
use tokio_rustls::client::TlsStream;

use crate::config::Endpoint;
use crate::net::{CONNECT_TIMEOUT, NetError};

/// A connection to one server.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>, Explain),
}

/// What a TLS error message needs: the side (for flag names) and the name verified.
#[derive(Clone)]
pub struct Explain {
    side: &'static str,
    name: Arc<str>,
}

impl Explain {
    fn error(&self, e: io::Error) -> io::Error {
        let is_tls = e
            .get_ref()
            .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some());
        if is_tls {
            io::Error::new(
                e.kind(),
                crate::net::tls::explain(self.side, &self.name, &e),
            )
        } else {
            e
        }
    }

    fn map<T>(&self, p: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match p {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.error(e))),
            p => p,
        }
    }
}

/// Opens a connection to `ep` (TLS when it has a TLS client): the TCP connection and then the
/// TLS handshake, each within [`CONNECT_TIMEOUT`].
pub async fn connect(ep: &Endpoint) -> Result<Stream, NetError> {
    let addr = ep.to_string();
    let tcp = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((ep.host.as_str(), ep.port)),
    )
    .await
    {
        Err(_) => {
            return Err(NetError::Connect {
                addr,
                why: format!("timed out after {} s", CONNECT_TIMEOUT.as_secs()),
            });
        }
        Ok(Err(e)) => {
            return Err(NetError::Connect {
                addr,
                why: e.to_string(),
            });
        }
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &ep.tls else {
        return Ok(Stream::Plain(tcp));
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, tls.handshake(tcp)).await {
        Ok(Ok(s)) => Ok(Stream::Tls(
            Box::new(s),
            Explain {
                side: tls.side(),
                name: tls.server_name().into(),
            },
        )),
        Ok(Err(e)) => Err(NetError::Tls {
            addr,
            why: tls.explain(&e),
        }),
        // A server without TLS on that port waits for the end of a command line that never comes.
        Err(_) => Err(NetError::Tls {
            addr,
            why: format!(
                "no TLS handshake within {} s; is this the server's tls-port? For a port without TLS use redis:// instead of rediss://",
                CONNECT_TIMEOUT.as_secs()
            ),
        }),
    }
}

impl Stream {
    /// True for a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(..))
    }

    /// Borrowed read and write halves, usable concurrently in one task.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Stream::Tls(s, x) => {
                let (r, w) = tokio::io::split(&mut **s);
                (ReadHalf::Tls(r, x.clone()), WriteHalf::Tls(w, x.clone()))
            }
        }
    }

    /// Owned read and write halves, usable from different tasks.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (OwnedReadHalf::Plain(r), OwnedWriteHalf::Plain(w))
            }
            Stream::Tls(s, x) => {
                let (r, w) = tokio::io::split(*s);
                (OwnedReadHalf::Tls(r, x.clone()), OwnedWriteHalf::Tls(w, x))
            }
        }
    }
}

/// The read half of [`Stream::split`].
pub enum ReadHalf<'a> {
    Plain(tcp::ReadHalf<'a>),
    Tls(tokio::io::ReadHalf<&'a mut TlsStream<TcpStream>>, Explain),
}

/// The write half of [`Stream::split`].
pub enum WriteHalf<'a> {
    Plain(tcp::WriteHalf<'a>),
    Tls(tokio::io::WriteHalf<&'a mut TlsStream<TcpStream>>, Explain),
}

/// The read half of [`Stream::into_split`].
pub enum OwnedReadHalf {
    Plain(tcp::OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>, Explain),
}

/// The write half of [`Stream::into_split`].
pub enum OwnedWriteHalf {
    Plain(tcp::OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>, Explain),
}

/// `AsyncRead` for an enum of a plain and a TLS variant (errors of the latter explained).
macro_rules! delegate_read {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Tls(s, x) => x.map(Pin::new(s).poll_read(cx, buf)),
                }
            }
        }
    };
}

/// `AsyncWrite` for an enum of a plain and a TLS variant (errors of the latter explained).
macro_rules! delegate_write {
    ($ty:ty) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Tls(s, x) => x.map(Pin::new(s).poll_write(cx, buf)),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    Self::Tls(s, x) => x.map(Pin::new(s).poll_write_vectored(cx, bufs)),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    Self::Plain(s) => s.is_write_vectored(),
                    Self::Tls(s, _) => s.is_write_vectored(),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_flush(cx),
                    Self::Tls(s, x) => x.map(Pin::new(s).poll_flush(cx)),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Tls(s, x) => x.map(Pin::new(s).poll_shutdown(cx)),
                }
            }
        }
    };
}

delegate_read!(Stream);
delegate_write!(Stream);
delegate_read!(ReadHalf<'_>);
delegate_write!(WriteHalf<'_>);
delegate_read!(OwnedReadHalf);
delegate_write!(OwnedWriteHalf);
