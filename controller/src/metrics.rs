//! The controller's Prometheus metrics and the local `/metrics` endpoint that serves them.
//! Counters are kept here, so the code that refuses a call or ignores a report only says
//! which.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refusal {
    /// admin, agent or enroll.
    kind: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    refused_calls: Family<Refusal, Counter>,
    refused_connections: Family<Reason, Counter>,
    connections: Gauge,
    connection_limit: Gauge,
    open_files_limit: Gauge,
    ignored_reports: Family<Reason, Counter>,
    ended_streams: Family<Reason, Counter>,
    unaudited_refusals: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("teefleet_controller");
        let refused_calls = Family::default();
        registry.register(
            "refused_calls",
            "Calls refused for want of a valid token, certificate or role, by kind (admin, agent, enroll) and reason",
            refused_calls.clone(),
        );
        let refused_connections = Family::default();
        registry.register(
            "refused_connections",
            "Connections closed before their first call: over a cap, or no TLS handshake or HTTP/2 preface in time",
            refused_connections.clone(),
        );
        let connections = Gauge::default();
        registry.register("connections", "Open client connections", connections.clone());
        let connection_limit = Gauge::default();
        registry.register("connection_limit", "The most client connections served at once", connection_limit.clone());
        let open_files_limit = Gauge::default();
        registry.register("open_files_limit", "The process's soft limit of open files", open_files_limit.clone());
        let ignored_reports = Family::default();
        registry.register(
            "ignored_agent_reports",
            "Agent reports not recorded: a Hello, Ack or Nack naming a version never pushed to the host",
            ignored_reports.clone(),
        );
        let ended_streams = Family::default();
        registry.register(
            "ended_agent_streams",
            "Agent streams the controller ended because of what the agent sent (too_large, malformed)",
            ended_streams.clone(),
        );
        let unaudited_refusals = Counter::default();
        registry.register(
            "unaudited_refusals",
            "Refused calls over the audit log's rate limit, recorded in a summary row instead of one row each",
            unaudited_refusals.clone(),
        );
        Self {
            registry,
            refused_calls,
            refused_connections,
            connections,
            connection_limit,
            open_files_limit,
            ignored_reports,
            ended_streams,
            unaudited_refusals,
        }
    }
}

impl Metrics {
    pub fn refused_call(&self, kind: &'static str, reason: &'static str) {
        self.refused_calls.get_or_create(&Refusal { kind, reason }).inc();
    }

    pub fn refused_connection(&self, reason: &'static str) {
        self.refused_connections.get_or_create(&Reason { reason }).inc();
    }

    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    pub fn limits(&self, connections: usize, open_files: u64) {
        self.connection_limit.set(i64::try_from(connections).unwrap_or(i64::MAX));
        self.open_files_limit.set(i64::try_from(open_files).unwrap_or(i64::MAX));
    }

    pub fn ignored_report(&self, reason: &'static str) {
        self.ignored_reports.get_or_create(&Reason { reason }).inc();
    }

    pub fn ended_stream(&self, reason: &'static str) {
        self.ended_streams.get_or_create(&Reason { reason }).inc();
    }

    pub fn unaudited(&self, refusals: u64) {
        self.unaudited_refusals.inc_by(refusals);
    }

    /// The OpenMetrics text of every metric.
    pub fn text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Binds at once, so a taken port is a start-up error, then serves `/metrics` until
/// `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "serving /metrics");
    let app = Router::new().route("/metrics", get(text)).with_state(metrics);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
            error!(error = %e, "the metrics endpoint stopped");
        }
    }))
}

async fn text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prometheus_style_and_labelled() {
        let m = Metrics::default();
        m.refused_call("admin", "unknown_token");
        m.refused_call("admin", "unknown_token");
        m.refused_connection("address_cap");
        m.connection_opened();
        m.ignored_report("stale_hello");
        let text = m.text();
        for line in [
            "teefleet_controller_refused_calls_total{kind=\"admin\",reason=\"unknown_token\"} 2",
            "teefleet_controller_refused_connections_total{reason=\"address_cap\"} 1",
            "teefleet_controller_connections 1",
            "teefleet_controller_ignored_agent_reports_total{reason=\"stale_hello\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
