//! The observability listener: `GET /metrics` (Prometheus text format, from the recorder's
//! handle), `GET /status` (JSON, see [`crate::observe::status::Status`]) and `GET /healthz`,
//! served by hyper (HTTP/1.1, keep-alive). [`get`] is the matching client used by
//! `shardsync status` and the tests.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections are served at once (more wait in the kernel's
//! accept queue); a request head must arrive within [`HEADER_TIMEOUT`] and hyper caps its size;
//! request bodies are never read.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::observe::status::StatusBoard;

/// Connections served at the same time.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body [`get`] accepts.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Why the listener could not start or a request failed; never contains a password.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "metrics: cannot listen on {addr}: {source} (choose another --metrics-addr or \"off\")"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot connect to {addr}: {why} (is shardsync running with --metrics-addr {addr}?)")]
    Connect { addr: String, why: String },
    #[error("{addr}: {why}")]
    Exchange { addr: String, why: String },
    #[error("{addr} did not answer within {} s", .timeout.as_secs())]
    Timeout { addr: String, timeout: Duration },
}

/// Binds `addr`. Returns the bound address (useful with port 0) and the accept loop, which
/// serves until it is dropped (the caller runs it under the run's [`crate::supervise::Tree`]).
pub async fn serve(
    addr: SocketAddr,
    board: Arc<StatusBoard>,
    handle: PrometheusHandle,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send + 'static), HttpError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let task = async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            match listener.accept().await {
                Ok((sock, _)) => {
                    let (board, handle) = (board.clone(), handle.clone());
                    tokio::spawn(async move {
                        serve_connection(sock, board, handle).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    // e.g. out of file descriptors: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    Ok((bound, task))
}

async fn serve_connection(sock: TcpStream, board: Arc<StatusBoard>, handle: PrometheusHandle) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let response = route(&req, &board, &handle);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(sock), service);
    // A client that goes away or sends garbage only ends its own connection.
    let _ = conn.await;
}

fn route(
    req: &Request<Incoming>,
    board: &StatusBoard,
    handle: &PrometheusHandle,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        "/status" => match serde_json::to_string_pretty(&board.snapshot()) {
            Ok(mut j) => {
                j.push('\n');
                reply(StatusCode::OK, "application/json", j)
            }
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><body><h1>shardsync</h1><ul><li><a href=\"/metrics\">/metrics</a></li>\
             <li><a href=\"/status\">/status</a></li></ul></body></html>\n",
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

fn reply(code: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
    r
}

/// `GET http://addr/path` with hyper's client: returns (status code, body). For `shardsync
/// status`.
pub async fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), HttpError> {
    let exchange = |why: String| HttpError::Exchange {
        addr: addr.to_string(),
        why,
    };
    let work = async {
        let sock = TcpStream::connect(addr)
            .await
            .map_err(|e| HttpError::Connect {
                addr: addr.to_string(),
                why: e.to_string(),
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock))
            .await
            .map_err(|e| exchange(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let req = Request::get(path)
            .header(HOST, addr)
            .body(Empty::<Bytes>::new())
            .map_err(|e| exchange(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| exchange(format!("did not answer with HTTP: {e}")))?;
        let code = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| exchange(e.to_string()))?
            .to_bytes();
        driver.abort();
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HttpError::Timeout {
            addr: addr.to_string(),
            timeout,
        })?
}
