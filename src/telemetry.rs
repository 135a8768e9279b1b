//! The Prometheus exporter: installs the global `metrics` recorder and serves `/metrics`.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;

/// Buckets of `shardsync_write_batch_seconds` (so Grafana's `histogram_quantile` works).
const BATCH_SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Starts the exporter's HTTP listener on `addr`.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("shardsync_write_batch_seconds".into()),
            BATCH_SECONDS_BUCKETS,
        )
        .map_err(|e| format!("metrics: {e}"))?
        .install()
        .map_err(|e| {
            format!(
                "metrics: cannot serve on {addr}: {e} (choose another --metrics-addr or \"off\")"
            )
        })
}
