//! The controller's Prometheus metrics and the local `/metrics` endpoint that serves them.
//! Counters are kept here, so the code that refuses a call or ignores a report only says
//! which. What is state kept elsewhere (agents connected, sessions by status) is read when
//! scraped, so nothing is spent on it while nobody scrapes.
//!
//! Every label is bounded by something the operator controls or a fixed list: a reason, an
//! operation, a status, a session; never a host, whose count grows with the fleet.

use std::{
    net::SocketAddr,
    sync::{Arc, LazyLock, atomic::AtomicU64},
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Metric, Registry},
};
use teefleet_model::SessionName;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    cloud::CloudError,
    delivery::Window,
    push::Hub,
    status::{SessionState, StatusView},
    store::{SessionRecord, Store, StoreError},
};

/// Upper bounds (seconds) of the push-to-ack histogram: an agent on the same network acks
/// an unchanged kernel in about a millisecond; a slow `iptables-restore` on a loaded host
/// takes seconds, and 30 s is where something is wrong.
const PUSH_ACK_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// How old the sessions-by-status gauge may be when scraped. Reading it costs a query per
/// session, so several Prometheus servers scraping every few seconds share one read.
const SESSIONS_MAX_AGE: Duration = Duration::from_secs(30);
/// How long a scrape waits for the sessions before it shows the last values it has.
const SESSIONS_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Database errors by kind. Every one passes through one conversion (`StoreError`'s from
/// sqlx's), which holds no state to count with; so the family is the process's, registered
/// by every `Metrics` (more than one only in tests, which then see each other's errors).
static DATABASE_ERRORS: LazyLock<Family<Kind, Counter>> = LazyLock::new(|| {
    let family = Family::default();
    // Every kind has a sample from the start, so `rate()` sees the first error.
    for kind in ["unavailable", "conflict", "other"] {
        let _ = family.get_or_create(&Kind { kind });
    }
    family
});

/// Counts a database error; called where every sqlx error becomes a `StoreError`.
pub(crate) fn database_error(e: &StoreError) {
    let kind = if e.is_unavailable() {
        "unavailable"
    } else if e.is_conflict() {
        "conflict"
    } else {
        "other"
    };
    DATABASE_ERRORS.get_or_create(&Kind { kind }).inc();
}

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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    /// The EC2 action, in snake case: describe_instances, modify_instance_attribute.
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Failure {
    operation: &'static str,
    /// not_found, unavailable or refused (`CloudError`).
    error: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Session {
    session: String,
}

/// The label of a session status; every status has a sample, zero when no session has it.
fn status_label(state: SessionState) -> &'static str {
    match state {
        SessionState::Pending => "pending",
        SessionState::Active => "active",
        SessionState::Degraded => "degraded",
    }
}

const STATES: [SessionState; 3] = [SessionState::Pending, SessionState::Active, SessionState::Degraded];

/// A packet count as a gauge's value; no count comes near `i64::MAX`.
fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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
    sessions: Family<Status, Gauge>,
    agents_connected: Gauge,
    pushes: Counter,
    push_ack: Histogram,
    ec2_calls: Family<Operation, Counter>,
    ec2_failures: Family<Failure, Counter>,
    sent_packets: Family<Session, Gauge>,
    delivered_packets: Family<Session, Gauge>,
    lost_packets: Family<Session, Gauge>,
    loss_ratio: Family<Session, Gauge<f64, AtomicU64>>,
    /// When the sessions were last read for the gauge; the lock makes scrapes that arrive
    /// together share one read.
    sessions_read: tokio::sync::Mutex<Option<Instant>>,
    /// The sessions whose delivery series are shown, so the next read removes the rest.
    delivery_shown: std::sync::Mutex<std::collections::BTreeSet<SessionName>>,
}

/// A new metric, registered under `name`.
fn registered<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("teefleet_controller");
        let sessions = Family::<Status, Gauge>::default();
        for state in STATES {
            sessions.get_or_create(&Status { status: status_label(state) }).set(0);
        }
        r.register(
            "sessions",
            "Sessions by status (pending, active, degraded), read from the database at most every 30 s",
            sessions.clone(),
        );
        let push_ack = Histogram::new(PUSH_ACK_BUCKETS);
        r.register(
            "push_to_ack_seconds",
            "Time from sending a rule set on an agent stream to the agent's Ack of that version",
            push_ack.clone(),
        );
        r.register(
            "database_errors",
            "Database statements that failed, by kind (unavailable, conflict, other)",
            DATABASE_ERRORS.clone(),
        );
        Self {
            refused_calls: registered(
                &mut r,
                "refused_calls",
                "Calls refused for want of a valid token, certificate or role, by kind (admin, agent, enroll) and reason",
            ),
            refused_connections: registered(
                &mut r,
                "refused_connections",
                "Connections closed before their first call: over a cap, or no TLS handshake or HTTP/2 preface in time",
            ),
            connections: registered(&mut r, "connections", "Open client connections"),
            connection_limit: registered(&mut r, "connection_limit", "The most client connections served at once"),
            open_files_limit: registered(&mut r, "open_files_limit", "The process's soft limit of open files"),
            ignored_reports: registered(
                &mut r,
                "ignored_agent_reports",
                "Agent reports not recorded: a Hello, Ack or Nack naming a version never pushed to the host",
            ),
            ended_streams: registered(
                &mut r,
                "ended_agent_streams",
                "Agent streams the controller ended because of what the agent sent (too_large, malformed)",
            ),
            unaudited_refusals: registered(
                &mut r,
                "unaudited_refusals",
                "Refused calls over the audit log's rate limit, recorded in a summary row instead of one row each",
            ),
            agents_connected: registered(
                &mut r,
                "agents_connected",
                "Agent streams this replica holds (sum over replicas for the fleet)",
            ),
            pushes: registered(&mut r, "pushes", "Rule sets sent on agent streams"),
            ec2_calls: registered(
                &mut r,
                "ec2_calls",
                "EC2 calls by operation (a tag search counts once, however many pages it reads)",
            ),
            ec2_failures: registered(
                &mut r,
                "ec2_failures",
                "EC2 calls that failed, by operation and error (not_found, unavailable, refused)",
            ),
            sent_packets: registered(
                &mut r,
                "session_sent_packets",
                "Clones the session's sources sent over the delivery window",
            ),
            delivered_packets: registered(
                &mut r,
                "session_delivered_packets",
                "Clones the session's collector received over the delivery window",
            ),
            lost_packets: registered(
                &mut r,
                "session_lost_packets",
                "Clones sent and not received over the delivery window",
            ),
            loss_ratio: registered(
                &mut r,
                "session_loss_ratio",
                "Lost over sent in the delivery window, 0 to 1; no sample while unknown",
            ),
            sessions,
            push_ack,
            sessions_read: tokio::sync::Mutex::new(None),
            delivery_shown: std::sync::Mutex::default(),
            // Last, as the fields above borrow it to register.
            registry: r,
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

    /// A rule set was sent on an agent stream.
    pub fn pushed(&self) {
        self.pushes.inc();
    }

    /// The agent acknowledged a version `elapsed` after it was sent.
    pub fn acked(&self, elapsed: Duration) {
        self.push_ack.observe(elapsed.as_secs_f64());
    }

    /// One EC2 call of `operation` and its outcome.
    pub fn ec2_call(&self, operation: &'static str, failure: Option<&CloudError>) {
        self.ec2_calls.get_or_create(&Operation { operation }).inc();
        if let Some(e) = failure {
            self.ec2_failures.get_or_create(&Failure { operation, error: e.kind() }).inc();
        }
    }

    /// Sets the sessions-by-status gauge to the count of each status in `states`.
    pub fn sessions(&self, states: impl IntoIterator<Item = SessionState>) {
        let mut counts = [0_i64; STATES.len()];
        for state in states {
            if let Some(i) = STATES.iter().position(|s| *s == state) {
                counts[i] += 1;
            }
        }
        for (state, count) in STATES.iter().zip(counts) {
            self.sessions.get_or_create(&Status { status: status_label(*state) }).set(count);
        }
    }

    pub fn agents_connected(&self, streams: usize) {
        self.agents_connected.set(i64::try_from(streams).unwrap_or(i64::MAX));
    }

    /// Publishes one session's delivery over the last window: the clones its sources
    /// `sent`, those its collector `delivered`, and `loss_ratio` (lost over sent, 0 to 1),
    /// `None` while delivery is unknown (a collector with no agent, or one silent), which
    /// removes the ratio's sample rather than showing 0 or 1. `lost` is `sent - delivered`,
    /// never below 0. Call it each time the window is computed for the session, and
    /// [`Metrics::forget_session`] when the session is deleted, so that series exist only
    /// for live sessions.
    pub fn session_delivery(&self, session: &SessionName, sent: u64, delivered: u64, loss_ratio: Option<f64>) {
        let label = Session { session: session.to_string() };
        self.sent_packets.get_or_create(&label).set(gauge(sent));
        self.delivered_packets.get_or_create(&label).set(gauge(delivered));
        self.lost_packets.get_or_create(&label).set(gauge(sent.saturating_sub(delivered)));
        match loss_ratio.filter(|r| !r.is_nan()) {
            Some(ratio) => {
                self.loss_ratio.get_or_create(&label).set(ratio.clamp(0.0, 1.0));
            }
            None => {
                self.loss_ratio.remove(&label);
            }
        }
    }

    /// Shows each session's delivery, and forgets sessions that are gone (deleted on any
    /// replica) or whose delivery became unknown.
    fn delivery_of(&self, records: &[SessionRecord], views: &[StatusView]) {
        let mut shown = self.delivery_shown.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut now_shown = std::collections::BTreeSet::new();
        for (record, view) in records.iter().zip(views) {
            if let Some(total) = view.delivery.as_ref().and_then(|d| d.total) {
                self.session_delivery(record.spec.name(), total.sent, total.delivered, total.loss_ratio);
                now_shown.insert(record.spec.name().clone());
            }
        }
        for gone in shown.difference(&now_shown) {
            self.forget_session(gone);
        }
        *shown = now_shown;
    }

    /// Removes a deleted session's delivery series.
    pub fn forget_session(&self, session: &SessionName) {
        let label = Session { session: session.to_string() };
        self.sent_packets.remove(&label);
        self.delivered_packets.remove(&label);
        self.lost_packets.remove(&label);
        self.loss_ratio.remove(&label);
    }

    /// Reads the sessions' statuses for the gauge unless they were read within
    /// `SESSIONS_MAX_AGE`. When the database cannot answer, the gauge keeps its last
    /// values (the error is counted with the other database errors).
    async fn read_sessions(&self, store: &Store, window: Window) {
        let mut read = self.sessions_read.lock().await;
        if read.is_some_and(|at| at.elapsed() < SESSIONS_MAX_AGE) {
            return;
        }
        // A failed read is not retried before the next period either, so an outage does
        // not make every scrape wait for the timeout.
        *read = Some(Instant::now());
        let read = async {
            let records = store.list_sessions().await?;
            let views = crate::sessions::views(store, &records, window).await?;
            Ok::<_, crate::store::StoreError>((records, views))
        };
        match tokio::time::timeout(SESSIONS_READ_TIMEOUT, read).await {
            Ok(Ok((records, views))) => {
                self.sessions(views.iter().map(|v| v.state));
                self.delivery_of(&records, &views);
            }
            Ok(Err(e)) => warn!(error = %e, "could not read the sessions for /metrics; showing the last counts"),
            Err(_) => warn!(
                timeout = ?SESSIONS_READ_TIMEOUT,
                "reading the sessions for /metrics timed out; showing the last counts"
            ),
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What a scrape reads besides the counters: the state the gauges show.
pub(crate) struct Scrape {
    pub metrics: Arc<Metrics>,
    pub store: Store,
    pub hub: Hub,
    /// How sessions' delivery is judged, as for `session get`.
    pub delivery: Window,
}

/// Binds at once, so a taken port is a start-up error, then serves `/metrics` until
/// `shutdown`.
pub(crate) async fn serve(
    addr: SocketAddr,
    scrape: Scrape,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "serving /metrics");
    let app = Router::new().route("/metrics", get(text)).with_state(Arc::new(scrape));
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
            error!(error = %e, "the metrics endpoint stopped");
        }
    }))
}

async fn text(State(scrape): State<Arc<Scrape>>) -> impl IntoResponse {
    scrape.metrics.agents_connected(scrape.hub.connected());
    scrape.metrics.read_sessions(&scrape.store, scrape.delivery).await;
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], scrape.metrics.text())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    fn assert_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(has(text, line), "{line} in\n{text}");
        }
    }

    #[test]
    fn names_are_prometheus_style_and_labelled() {
        let m = Metrics::default();
        m.refused_call("admin", "unknown_token");
        m.refused_call("admin", "unknown_token");
        m.refused_connection("address_cap");
        m.connection_opened();
        m.ignored_report("stale_hello");
        let text = m.text();
        assert_lines(
            &text,
            &[
                "teefleet_controller_refused_calls_total{kind=\"admin\",reason=\"unknown_token\"} 2",
                "teefleet_controller_refused_connections_total{reason=\"address_cap\"} 1",
                "teefleet_controller_connections 1",
                "teefleet_controller_ignored_agent_reports_total{reason=\"stale_hello\"} 1",
            ],
        );
    }

    #[test]
    fn every_status_and_database_error_kind_has_a_sample_from_the_start() {
        let text = Metrics::default().text();
        for status in ["pending", "active", "degraded"] {
            let line = format!("teefleet_controller_sessions{{status=\"{status}\"}} 0");
            assert!(has(&text, &line), "{line} in\n{text}");
        }
        for kind in ["unavailable", "conflict", "other"] {
            // Other tests in this process may have counted errors: only the sample is certain.
            let sample = format!("teefleet_controller_database_errors_total{{kind=\"{kind}\"}} ");
            assert!(text.lines().any(|l| l.starts_with(&sample)), "{sample} in\n{text}");
        }
        assert!(has(&text, "teefleet_controller_agents_connected 0"), "{text}");
        assert!(has(&text, "teefleet_controller_pushes_total 0"), "{text}");
        assert!(has(&text, "# TYPE teefleet_controller_push_to_ack_seconds histogram"), "{text}");
    }

    #[test]
    fn sessions_are_counted_by_status() {
        let m = Metrics::default();
        m.sessions([SessionState::Active, SessionState::Degraded, SessionState::Active]);
        m.agents_connected(7);
        let text = m.text();
        assert_lines(
            &text,
            &[
                "teefleet_controller_sessions{status=\"pending\"} 0",
                "teefleet_controller_sessions{status=\"active\"} 2",
                "teefleet_controller_sessions{status=\"degraded\"} 1",
                "teefleet_controller_agents_connected 7",
            ],
        );
        m.sessions([]);
        assert!(
            has(&m.text(), "teefleet_controller_sessions{status=\"active\"} 0"),
            "a deleted session is not counted"
        );
    }

    #[test]
    fn database_errors_are_counted_by_kind_where_they_become_store_errors() {
        let m = Metrics::default();
        let count = |kind: &str| {
            let series = format!("teefleet_controller_database_errors_total{{kind=\"{kind}\"}} ");
            let text = m.text();
            let line = text.lines().find_map(|l| l.strip_prefix(series.as_str())).map(str::to_owned);
            line.and_then(|n| n.parse::<u64>().ok()).unwrap_or_else(|| panic!("{series} in\n{text}"))
        };
        // The family is the process's: other tests may count too, but never fewer.
        let (unavailable, other) = (count("unavailable"), count("other"));
        let _: StoreError = sqlx::Error::PoolTimedOut.into();
        let _: StoreError = sqlx::Error::RowNotFound.into();
        assert!(count("unavailable") > unavailable);
        assert!(count("other") > other);
    }

    #[test]
    fn push_to_ack_latency_falls_in_its_bucket() {
        let m = Metrics::default();
        m.pushed();
        m.pushed();
        m.acked(Duration::from_millis(3));
        let text = m.text();
        assert_lines(
            &text,
            &[
                "teefleet_controller_pushes_total 2",
                "teefleet_controller_push_to_ack_seconds_count 1",
                "teefleet_controller_push_to_ack_seconds_bucket{le=\"0.0025\"} 0",
                "teefleet_controller_push_to_ack_seconds_bucket{le=\"0.005\"} 1",
                "teefleet_controller_push_to_ack_seconds_bucket{le=\"30.0\"} 1",
            ],
        );
    }

    #[test]
    fn ec2_calls_and_failures_are_labelled_by_operation_and_error() {
        let m = Metrics::default();
        m.ec2_call("describe_instances", None);
        m.ec2_call("describe_instances", Some(&CloudError::Unavailable("throttled".into())));
        m.ec2_call("modify_instance_attribute", Some(&CloudError::Refused("no permission".into())));
        let text = m.text();
        assert_lines(
            &text,
            &[
                "teefleet_controller_ec2_calls_total{operation=\"describe_instances\"} 2",
                "teefleet_controller_ec2_calls_total{operation=\"modify_instance_attribute\"} 1",
                "teefleet_controller_ec2_failures_total{operation=\"describe_instances\",error=\"unavailable\"} 1",
                "teefleet_controller_ec2_failures_total{operation=\"modify_instance_attribute\",error=\"refused\"} 1",
            ],
        );
    }

    #[test]
    fn session_delivery_is_shown_per_session_and_forgotten_with_it() {
        let m = Metrics::default();
        let (web, db): (SessionName, SessionName) = ("web".parse().expect("name"), "db".parse().expect("name"));
        m.session_delivery(&web, 1000, 900, Some(0.1));
        m.session_delivery(&db, 50, 60, None);
        let text = m.text();
        assert_lines(
            &text,
            &[
                "teefleet_controller_session_sent_packets{session=\"web\"} 1000",
                "teefleet_controller_session_delivered_packets{session=\"web\"} 900",
                "teefleet_controller_session_lost_packets{session=\"web\"} 100",
                "teefleet_controller_session_loss_ratio{session=\"web\"} 0.1",
                "teefleet_controller_session_sent_packets{session=\"db\"} 50",
                "teefleet_controller_session_lost_packets{session=\"db\"} 0",
            ],
        );
        assert!(!text.contains("loss_ratio{session=\"db\"}"), "an unknown ratio has no sample:\n{text}");

        // Known, then unknown again: the stale ratio goes; out-of-range ratios are clamped.
        m.session_delivery(&web, 10, 0, Some(1.5));
        assert!(has(&m.text(), "teefleet_controller_session_loss_ratio{session=\"web\"} 1.0"), "{}", m.text());
        m.session_delivery(&web, 10, 10, Some(f64::NAN));
        assert!(!m.text().contains("loss_ratio{session=\"web\"}"), "NaN is unknown:\n{}", m.text());

        m.forget_session(&web);
        let text = m.text();
        assert!(!text.contains("session=\"web\""), "a deleted session has no series:\n{text}");
        assert!(text.contains("session=\"db\""), "{text}");
    }
}
