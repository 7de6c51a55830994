//! The local HTTP endpoints: `/healthz` (the process answers), `/readyz` (the desired
//! version is applied and drift checks are current) and `/metrics` (OpenMetrics text,
//! which Prometheus reads).

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::status::Status;

/// Binds at once, so a taken port is a start-up error, then serves until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    status: Arc<Status>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(status);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
            error!(error = %e, "the metrics endpoint stopped");
        }
    }))
}

async fn readyz(State(status): State<Arc<Status>>) -> impl IntoResponse {
    match status.readiness() {
        Ok(why) => (StatusCode::OK, format!("ready: {why}\n")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

async fn metrics(State(status): State<Arc<Status>>) -> impl IntoResponse {
    // What prometheus-client writes: counters' `_total` and the closing `# EOF` are
    // OpenMetrics, which the older text format would misread.
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], status.metrics())
}
