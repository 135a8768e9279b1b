//! What shardsync tells the people who run it: the metric catalog ([`telemetry`]), per-shard
//! progress ([`progress`]), the `/status` board and `shardsync status` ([`status`]), and the HTTP
//! endpoints serving `/metrics`, `/status` and `/healthz` ([`http`]).

pub mod http;
pub mod progress;
pub mod status;
pub mod telemetry;
