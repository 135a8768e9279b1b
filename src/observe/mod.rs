//! What shardsync tells the people who run it: the metric catalog ([`telemetry`]), the typed
//! events that write a happening's log line, metrics and status together ([`events`]), per-shard
//! progress ([`progress`]), the `/status` board and `shardsync status` ([`status`]), and the HTTP
//! endpoints serving `/metrics`, `/status` and `/healthz` ([`http`]); the rate limit of repeated
//! log lines ([`lograte`]).

pub mod events;
pub mod http;
pub mod lograte;
pub mod progress;
pub mod status;
pub mod telemetry;

/// Why observability could not start; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(
        "metrics: {why} (shardsync installs one metrics recorder per process: run one job per process)"
    )]
    Recorder { why: String },
    #[error(transparent)]
    Http(#[from] http::HttpError),
}
