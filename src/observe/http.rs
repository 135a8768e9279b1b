//! The observability listener: `GET /metrics` (Prometheus text format, from the recorder's
//! handle), `GET /status` (JSON, see [`crate::observe::status::Status`]) and `GET /healthz`.
//!
//! A deliberately tiny HTTP/1.1 responder over tokio instead of hyper/axum: three read-only GET
//! routes without request bodies, one response per connection (`Connection: close`). That is all
//! Prometheus, Grafana, curl and `shardsync status` need, it adds no dependency, and it cannot
//! be made to buffer much: the request head is capped at 8 KiB and must arrive within 5 s.
//! [`get`] is the matching client used by `shardsync status` and the tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::observe::status::StatusBoard;

const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` and serves until the returned task is aborted. Returns the bound address (useful
/// with port 0) and the accept loop's task.
pub async fn serve(
    addr: SocketAddr,
    board: Arc<StatusBoard>,
    handle: PrometheusHandle,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        format!("metrics: cannot listen on {addr}: {e} (choose another --metrics-addr or \"off\")")
    })?;
    let bound = listener.local_addr().map_err(|e| format!("metrics: {e}"))?;
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((sock, _)) => {
                    let (b, h) = (board.clone(), handle.clone());
                    tokio::spawn(async move {
                        let _ = respond(sock, &b, &h).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok((bound, task))
}

/// Reads one request head and answers it.
async fn respond(
    mut sock: TcpStream,
    board: &StatusBoard,
    handle: &PrometheusHandle,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        loop {
            let n = sock.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if head.len() > MAX_HEAD {
                return Ok(false);
            }
        }
    })
    .await;
    let (status, ctype, body) = match complete {
        Ok(Ok(true)) => route(&head, board, handle),
        Ok(Ok(false)) => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let head_only = head.starts_with(b"HEAD ");
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    sock.write_all(&out).await?;
    sock.shutdown().await
}

fn route(
    head: &[u8],
    board: &StatusBoard,
    handle: &PrometheusHandle,
) -> (&'static str, &'static str, String) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", "text/plain", "only GET\n".into());
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        "/status" => match serde_json::to_string_pretty(&board.snapshot()) {
            Ok(mut j) => {
                j.push('\n');
                ("200 OK", "application/json", j)
            }
            Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
        },
        "/healthz" => ("200 OK", "text/plain", "ok\n".into()),
        "/" => (
            "200 OK",
            "text/html; charset=utf-8",
            "<html><body><h1>shardsync</h1><ul><li><a href=\"/metrics\">/metrics</a></li>\
             <li><a href=\"/status\">/status</a></li></ul></body></html>\n"
                .into(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".into()),
    }
}

/// A minimal `GET http://addr/path`: returns (status code, body). For `shardsync status`.
pub async fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let work = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let text = String::from_utf8_lossy(&resp);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("{addr} did not answer with HTTP"))?;
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("{addr} did not answer with HTTP"))?;
        Ok((code, body.to_string()))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("{addr} did not answer within {} s", timeout.as_secs()))?
}
