//! What shardsync tells the people who run it: the metric catalog ([`telemetry`]), per-shard
//! progress ([`progress`]), the `/status` board and `shardsync status` ([`status`]), and the HTTP
//! endpoints serving `/metrics`, `/status` and `/healthz` ([`http`]); the rate limit of repeated
//! log lines ([`lograte`]).

pub mod http;
pub mod lograte;
pub mod lossy;
pub mod progress;
pub mod status;
pub mod telemetry;
