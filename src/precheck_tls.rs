//! Precheck of a `rediss://` side's TLS: one connection to the given address with the side's TLS
//! settings, then one `PING` (a server that checks client certificates refuses only after the
//! handshake). The row names the TLS version and what was verified; a failure says what to change
//! (CA file, server name, client certificate, `redis://` for a port without TLS). Every other node
//! of a cluster is reached with the same settings during discovery.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Endpoint;
use crate::net::stream::{self, Stream};
use crate::precheck::Check;

/// The `source TLS` / `target TLS` row, or `None` for a side without TLS.
pub async fn check(side: &'static str, ep: &Endpoint) -> Option<Check> {
    let tls = ep.tls.as_ref()?;
    let name = if side == "source" {
        "source TLS"
    } else {
        "target TLS"
    };
    let row = |ok: bool, warning: bool, detail: String| Check {
        name,
        ok,
        warning,
        detail,
    };
    let mut s = match stream::connect(ep).await {
        Ok(s) => s,
        Err(e) => return Some(row(false, false, format!("{side} {e}"))),
    };
    if let Err(e) = ping(side, &mut s).await {
        return Some(row(
            false,
            false,
            format!("{side} TLS with {ep} failed: {e}"),
        ));
    }
    let version = match &s {
        Stream::Tls(t, _) => t
            .get_ref()
            .1
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_else(|| "TLS".into()),
        Stream::Plain(_) => "TLS".into(),
    };
    let client_cert = if tls.options().cert_file.is_some() {
        ", client certificate sent"
    } else {
        ""
    };
    Some(if tls.options().insecure {
        row(
            true,
            true,
            format!(
                "{version} with {ep}, the certificate is NOT verified (--tls-insecure / {side}.tls.insecure): anyone on the path can impersonate the server{client_cert}"
            ),
        )
    } else {
        let trusted = match &tls.options().ca_file {
            Some(f) => format!("the CA of {}", f.display()),
            None => "the system's CAs".into(),
        };
        row(
            true,
            false,
            format!(
                "{version} with {ep}, certificate valid for {:?} and signed by {trusted}{client_cert}",
                tls.server_name()
            ),
        )
    })
}

/// Sends `PING` and reads the start of any reply (`+PONG`, or `-NOAUTH` before the login).
async fn ping(side: &str, s: &mut Stream) -> std::io::Result<()> {
    let io = async {
        s.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut b = [0u8; 64];
        match s.read(&mut b).await? {
            0 => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the server closed the connection after the TLS handshake (does it check client certificates? give one with --{side}-tls-cert-file and --{side}-tls-key-file)"
                ),
            )),
            _ => Ok(()),
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), io).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer to PING within 10 s after the TLS handshake",
        )),
    }
}
