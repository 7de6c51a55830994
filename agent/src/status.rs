//! What the agent is doing, shared by the stream, the drift loop and the local HTTP
//! endpoints: readiness, Prometheus metrics, and the counters sent in Health.

use std::{
    collections::BTreeMap,
    sync::{Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter as PromCounter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use teefleet_model::{HostId, RuleSet, SessionName};

use crate::{
    config::ControllerUrl,
    firewall::{self, Check, Counter, render::rules_of},
    notify,
};

/// Upper bounds (seconds) of the apply duration histogram.
const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// A drift check older than this many intervals makes the agent unready.
const STALE_CHECKS: u32 = 3;

/// One session's counters and their rate over the last drift interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rated {
    pub counter: Counter,
    pub packets_per_second: f64,
    pub bytes_per_second: f64,
}

#[derive(Debug)]
pub struct Status {
    drift_interval: Duration,
    inner: Mutex<Inner>,
    /// Whether systemd was told the agent started (see [`crate::notify`]).
    started: notify::Started,
}

#[derive(Debug, Default)]
struct Inner {
    applied_version: u64,
    /// A stream has been open since start, so the controller had its say about the version.
    synced: bool,
    /// Why the controller last refused the agent's certificate (revoked, expired, unknown),
    /// until a stream opens again.
    refused: Option<String>,
    /// The latest pushed version and, if it failed, why.
    last_push: Option<(u64, Option<String>)>,
    last_check: Option<Instant>,
    check_error: Option<String>,
    counters: BTreeMap<SessionName, Rated>,
    counters_at: Option<Instant>,
    arrivals: BTreeMap<(SessionName, HostId), Counter>,
    counters_read_at: Option<Instant>,
    /// Changed only under the same lock as the rest, so a scrape sees one moment.
    metrics: Metrics,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabel {
    family: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UrlLabel {
    url: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabel {
    session: String,
}

/// The Prometheus registry and the metrics in it.
#[derive(Debug)]
struct Metrics {
    registry: Registry,
    applies: PromCounter,
    apply_failures: PromCounter,
    apply_duration: Histogram,
    drift_checks: PromCounter,
    drift_repairs: PromCounter,
    rules: Family<FamilyLabel, Gauge>,
    applied_version: Gauge,
    controller: Family<UrlLabel, Gauge>,
    mirrored_packets: Family<SessionLabel, PromCounter>,
    mirrored_bytes: Family<SessionLabel, PromCounter>,
}

impl Default for Metrics {
    fn default() -> Self {
        // prometheus-client adds the `_total` of counters and the period after each help.
        let mut registry = Registry::with_prefix("teefleet_agent");
        let applies = PromCounter::default();
        registry.register("applies", "Rule set applies attempted", applies.clone());
        let apply_failures = PromCounter::default();
        registry.register("apply_failures", "Rule set applies that failed", apply_failures.clone());
        let apply_duration = Histogram::new(BUCKETS);
        registry.register("apply_duration_seconds", "Time to apply and verify a rule set", apply_duration.clone());
        let drift_checks = PromCounter::default();
        registry.register("drift_checks", "Drift checks run", drift_checks.clone());
        let drift_repairs = PromCounter::default();
        registry.register(
            "drift_repairs",
            "Times our rules were found changed by something else and restored",
            drift_repairs.clone(),
        );
        let rules = Family::<FamilyLabel, Gauge>::default();
        // Every family has a sample, zero until rules of it are applied.
        for family in firewall::Family::ALL {
            rules.get_or_create(&FamilyLabel { family: family.label() }).set(0);
        }
        registry.register("rules", "Mirroring rules applied, by address family", rules.clone());
        let applied_version = Gauge::default();
        registry.register("applied_version", "The rule set version applied", applied_version.clone());
        let controller = Family::default();
        registry.register(
            "controller_info",
            "The controller replica the stream is open with; no sample while disconnected",
            controller.clone(),
        );
        let mirrored_packets = Family::default();
        registry.register(
            "mirrored_packets",
            "Packets matched by the session's mirroring rules (egress clones count twice, see the README)",
            mirrored_packets.clone(),
        );
        let mirrored_bytes = Family::default();
        registry.register("mirrored_bytes", "Bytes matched by the session's mirroring rules", mirrored_bytes.clone());
        Self {
            registry,
            applies,
            apply_failures,
            apply_duration,
            drift_checks,
            drift_repairs,
            rules,
            applied_version,
            controller,
            mirrored_packets,
            mirrored_bytes,
        }
    }
}

impl Metrics {
    /// Shows the sessions' kernel counters as they are: their sums are kept by the
    /// dataplane, so the samples are set rather than counted here, and a session no
    /// longer applied loses its samples.
    fn mirrored(&self, counters: &BTreeMap<SessionName, Rated>) {
        self.mirrored_packets.clear();
        self.mirrored_bytes.clear();
        for (session, rated) in counters {
            let label = SessionLabel { session: session.to_string() };
            self.mirrored_packets.get_or_create(&label).inner().store(rated.counter.packets, Ordering::Relaxed);
            self.mirrored_bytes.get_or_create(&label).inner().store(rated.counter.bytes, Ordering::Relaxed);
        }
    }
}

/// A gauge's value from a count; no count the agent keeps comes near `i64::MAX`.
fn gauge(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

impl Status {
    pub fn new(drift_interval: Duration) -> Self {
        Self { drift_interval, inner: Mutex::new(Inner::default()), started: notify::Started::default() }
    }

    /// The agent has started: its saved set or the controller's first push is applied (or
    /// there was nothing to push, or [`notify::READY_WAIT`] passed). Tells systemd once.
    pub fn started(&self, why: &str) {
        self.started.started(why);
    }

    pub fn is_started(&self) -> bool {
        self.started.is_started()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section only assigns fields, so a panic cannot leave them torn.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An apply attempt (a push, or the saved set at start) and how long it took.
    pub fn record_apply(&self, set: &RuleSet, elapsed: Duration, ok: bool) {
        let mut s = self.lock();
        s.metrics.applies.inc();
        s.metrics.apply_duration.observe(elapsed.as_secs_f64());
        if ok {
            s.applied_version = set.version();
            s.metrics.applied_version.set(gauge(set.version()));
            for family in firewall::Family::ALL {
                let rules = rules_of(set, family).len();
                s.metrics.rules.get_or_create(&FamilyLabel { family: family.label() }).set(gauge(rules));
            }
        } else {
            s.metrics.apply_failures.inc();
        }
    }

    /// A set the controller pushed: `error` is `None` when it was applied and saved.
    pub fn record_push(&self, version: u64, error: Option<String>) {
        self.lock().last_push = Some((version, error));
    }

    /// A stream opened with the replica at `controller`: the controller accepts the agent.
    pub fn record_synced(&self, controller: &ControllerUrl) {
        let mut s = self.lock();
        s.synced = true;
        s.refused = None;
        s.metrics.controller.clear();
        s.metrics.controller.get_or_create(&UrlLabel { url: controller.to_string() }).set(1);
    }

    /// The stream ended; the agent is looking for a replica.
    pub fn record_disconnected(&self) {
        self.lock().metrics.controller.clear();
    }

    /// The controller refused the agent's certificate: the applied rules stay, but the
    /// controller's later changes cannot arrive, so the agent is not ready.
    pub fn record_refused(&self, why: String) {
        self.lock().refused = Some(why);
    }

    /// A drift check's result; counters' rates are taken against the previous check.
    pub fn record_check(&self, result: Result<&Check, String>) {
        let now = Instant::now();
        let mut s = self.lock();
        s.metrics.drift_checks.inc();
        s.last_check = Some(now);
        let check = match result {
            Ok(check) => check,
            Err(e) => {
                s.check_error = Some(e);
                return;
            }
        };
        s.check_error = None;
        s.metrics.drift_repairs.inc_by(check.repairs.len() as u64);
        let elapsed = s.counters_at.map(|at| now.duration_since(at).as_secs_f64()).filter(|secs| *secs > 0.0);
        let counters = check
            .counters
            .iter()
            .map(|(session, counter)| {
                let before = s.counters.get(session).map(|r| r.counter).unwrap_or_default();
                let rate = |now: u64, then: u64| elapsed.map_or(0.0, |secs| now.saturating_sub(then) as f64 / secs);
                let rated = Rated {
                    counter: *counter,
                    packets_per_second: rate(counter.packets, before.packets),
                    bytes_per_second: rate(counter.bytes, before.bytes),
                };
                (session.clone(), rated)
            })
            .collect();
        s.metrics.mirrored(&counters);
        s.counters = counters;
        s.counters_at = Some(now);
        s.arrivals = check.arrivals.clone();
        s.counters_read_at = check.read_at.or(Some(now));
    }

    pub fn counters(&self) -> BTreeMap<SessionName, Rated> {
        self.lock().counters.clone()
    }

    /// On a collector: what arrived per session and source host, as last read.
    pub fn arrivals(&self) -> BTreeMap<(SessionName, HostId), Counter> {
        self.lock().arrivals.clone()
    }

    /// How long ago the kernel reads behind the counters began, if there were any.
    pub fn counters_age(&self) -> Option<Duration> {
        self.lock().counters_read_at.map(|at| at.elapsed())
    }

    pub fn drift_repairs(&self) -> u64 {
        self.lock().metrics.drift_repairs.get()
    }

    /// `Ok(why)` when the desired version is applied and the last drift check is recent
    /// and passed; otherwise `Err(why not)`.
    pub fn readiness(&self) -> Result<String, String> {
        let s = self.lock();
        if let Some(why) = &s.refused {
            return Err(format!(
                "the controller refuses this agent's certificate (applied version {} stays in place): {why}",
                s.applied_version
            ));
        }
        if !s.synced {
            return Err(format!(
                "not yet in touch with the controller since start (applied version {})",
                s.applied_version
            ));
        }
        if let Some((version, Some(error))) = &s.last_push {
            return Err(format!("version {version} from the controller failed to apply: {error}"));
        }
        let limit = self.drift_interval * STALE_CHECKS;
        match s.last_check {
            None => return Err("no drift check has run yet".to_owned()),
            Some(at) if at.elapsed() > limit => {
                return Err(format!("the last drift check was {} s ago", at.elapsed().as_secs()));
            }
            Some(_) => {}
        }
        if let Some(error) = &s.check_error {
            return Err(format!("the last drift check failed: {error}"));
        }
        Ok(format!("applied version {}", s.applied_version))
    }

    /// The OpenMetrics text exposition of the agent's metrics.
    pub fn metrics(&self) -> String {
        let s = self.lock();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &s.metrics.registry);
        out
    }
}
#[cfg(test)]
mod tests {
    use teefleet_model::{MirrorRule, Protocol, RuleDirection};

    use super::*;

    fn set(version: u64) -> RuleSet {
        let rule = MirrorRule::new(
            "web".parse().expect("name"),
            RuleDirection::Ingress,
            "fd00::5".parse().expect("ip"),
            Protocol::Tcp,
            None,
            None,
        )
        .expect("rule");
        RuleSet::new(version, vec![rule]).expect("set")
    }

    #[test]
    fn readiness_needs_sync_success_and_a_recent_check() {
        let status = Status::new(Duration::from_secs(5));
        assert!(status.readiness().unwrap_err().contains("not yet in touch"));
        let controller: ControllerUrl = "https://c".parse().expect("url");
        status.record_synced(&controller);
        assert!(status.readiness().unwrap_err().contains("no drift check"));
        status.record_check(Ok(&Check::default()));
        assert_eq!(status.readiness(), Ok("applied version 0".to_owned()));
        status.record_push(3, Some("iptables-restore failed".to_owned()));
        assert!(status.readiness().unwrap_err().contains("version 3"));
        status.record_apply(&set(4), Duration::from_millis(3), true);
        status.record_push(4, None);
        status.record_check(Err("iptables-save failed".to_owned()));
        assert!(status.readiness().unwrap_err().contains("drift check failed"));
        status.record_check(Ok(&Check::default()));
        assert_eq!(status.readiness(), Ok("applied version 4".to_owned()));
        status.record_refused("host h1's certificate was revoked".to_owned());
        let why = status.readiness().unwrap_err();
        assert!(why.contains("revoked") && why.contains("applied version 4 stays"), "{why}");
        status.record_synced(&controller);
        assert_eq!(status.readiness(), Ok("applied version 4".to_owned()), "a new stream clears it");
        status.record_disconnected();
        assert_eq!(
            status.readiness(),
            Ok("applied version 4".to_owned()),
            "a lost stream leaves the rules as they are"
        );
    }

    #[test]
    fn metrics_text() {
        let status = Status::new(Duration::from_secs(5));
        status.record_apply(&set(4), Duration::from_millis(30), true);
        status.record_apply(&set(5), Duration::from_secs(20), false);
        let web: SessionName = "web".parse().expect("name");
        let check = Check {
            repairs: vec![crate::firewall::Repair {
                scope: crate::firewall::Scope::Rules(crate::firewall::Family::V6),
                drift: "x".into(),
            }],
            counters: [(web.clone(), Counter { packets: 10, bytes: 1000 })].into(),
            ..Check::default()
        };
        status.record_check(Ok(&check));
        let text = status.metrics();
        for line in [
            "teefleet_agent_applies_total 2",
            "teefleet_agent_apply_failures_total 1",
            "teefleet_agent_apply_duration_seconds_bucket{le=\"0.025\"} 0",
            "teefleet_agent_apply_duration_seconds_bucket{le=\"0.05\"} 1",
            // OpenMetrics writes every bound as a float.
            "teefleet_agent_apply_duration_seconds_bucket{le=\"10.0\"} 1",
            "teefleet_agent_apply_duration_seconds_bucket{le=\"+Inf\"} 2",
            "teefleet_agent_apply_duration_seconds_count 2",
            "teefleet_agent_drift_repairs_total 1",
            "teefleet_agent_rules{family=\"ipv4\"} 0",
            "teefleet_agent_rules{family=\"ipv6\"} 1",
            "teefleet_agent_applied_version 4",
            "teefleet_agent_mirrored_packets_total{session=\"web\"} 10",
            "# TYPE teefleet_agent_apply_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert_eq!(status.counters()[&web].packets_per_second, 0.0, "no rate from a single reading");
    }

    #[test]
    fn the_connected_replica_is_a_metric() {
        let status = Status::new(Duration::from_secs(5));
        let samples = |status: &Status| {
            status
                .metrics()
                .lines()
                .filter(|l| l.starts_with("teefleet_agent_controller_info"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert!(samples(&status).is_empty(), "none before a stream opens");
        status.record_synced(&"https://[fd00::7]:7300".parse().expect("url"));
        assert_eq!(samples(&status), ["teefleet_agent_controller_info{url=\"https://[fd00::7]:7300\"} 1"]);
        status.record_disconnected();
        assert!(samples(&status).is_empty(), "none while disconnected");
        // A label value is escaped (a URL cannot hold these, but the exposition must not
        // depend on that).
        status.lock().metrics.controller.get_or_create(&UrlLabel { url: "a\"b\\c\nd".to_owned() }).set(1);
        assert_eq!(samples(&status), ["teefleet_agent_controller_info{url=\"a\\\"b\\\\c\\nd\"} 1"]);
    }

    #[test]
    fn rates_are_taken_over_the_last_interval() {
        let status = Status::new(Duration::from_secs(5));
        let web: SessionName = "web".parse().expect("name");
        let reading =
            |packets, bytes| Check { counters: [(web.clone(), Counter { packets, bytes })].into(), ..Check::default() };
        let started = Instant::now();
        status.record_check(Ok(&reading(10, 1000)));
        std::thread::sleep(Duration::from_millis(20));
        status.record_check(Ok(&reading(30, 5000)));
        let elapsed = started.elapsed().as_secs_f64();
        let rated = status.counters()[&web];
        assert_eq!(rated.counter, Counter { packets: 30, bytes: 5000 });
        // 20 packets and 4 000 bytes over at least the 20 ms slept (and at most `elapsed`).
        assert!(rated.packets_per_second <= 20.0 / 0.02 && rated.packets_per_second >= 20.0 / elapsed, "{rated:?}");
        assert!(rated.bytes_per_second <= 4000.0 / 0.02 && rated.bytes_per_second >= 4000.0 / elapsed, "{rated:?}");
        // A session that disappears from the counters is no longer reported.
        status.record_check(Ok(&Check::default()));
        assert!(status.counters().is_empty());
    }
}
