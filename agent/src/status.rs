//! What the agent is doing, shared by the stream, the drift loop and the local HTTP
//! endpoints: readiness, Prometheus metrics, and the counters sent in Health.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::Mutex,
    time::{Duration, Instant},
};

use teefleet_model::{RuleSet, SessionName};

use crate::{
    config::ControllerUrl,
    firewall::{Check, Counter, layout::ByFamily, render::rules_of},
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
}

#[derive(Debug, Default)]
struct Inner {
    applied_version: u64,
    rules_by_family: ByFamily<usize>,
    /// A stream has been open since start, so the controller had its say about the version.
    synced: bool,
    /// The replica the stream is open with, if it is.
    controller: Option<String>,
    /// Why the controller last refused the agent's certificate (revoked, expired, unknown),
    /// until a stream opens again.
    refused: Option<String>,
    /// The latest pushed version and, if it failed, why.
    last_push: Option<(u64, Option<String>)>,
    last_check: Option<Instant>,
    check_error: Option<String>,
    drift_checks: u64,
    drift_repairs: u64,
    applies: u64,
    apply_failures: u64,
    bucket_counts: [u64; BUCKETS.len()],
    duration_sum: f64,
    counters: BTreeMap<SessionName, Rated>,
    counters_at: Option<Instant>,
}

impl Status {
    pub fn new(drift_interval: Duration) -> Self {
        Self { drift_interval, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section only assigns fields, so a panic cannot leave them torn.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An apply attempt (a push, or the saved set at start) and how long it took.
    pub fn record_apply(&self, set: &RuleSet, elapsed: Duration, ok: bool) {
        let mut s = self.lock();
        s.applies += 1;
        let secs = elapsed.as_secs_f64();
        s.duration_sum += secs;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            s.bucket_counts[i] += 1;
        }
        if ok {
            s.applied_version = set.version();
            s.rules_by_family = ByFamily::from_fn(|f| rules_of(set, f).len());
        } else {
            s.apply_failures += 1;
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
        s.controller = Some(controller.to_string());
    }

    /// The stream ended; the agent is looking for a replica.
    pub fn record_disconnected(&self) {
        self.lock().controller = None;
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
        s.drift_checks += 1;
        s.last_check = Some(now);
        let check = match result {
            Ok(check) => check,
            Err(e) => {
                s.check_error = Some(e);
                return;
            }
        };
        s.check_error = None;
        s.drift_repairs += check.repairs.len() as u64;
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
        s.counters = counters;
        s.counters_at = Some(now);
    }

    pub fn counters(&self) -> BTreeMap<SessionName, Rated> {
        self.lock().counters.clone()
    }

    pub fn drift_repairs(&self) -> u64 {
        self.lock().drift_repairs
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

    /// The Prometheus text exposition of the agent's metrics.
    pub fn metrics(&self) -> String {
        let s = self.lock();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let one = |v: u64| vec![(String::new(), v.to_string())];
        metric("teefleet_agent_applies_total", "counter", "Rule set applies attempted.", &one(s.applies));
        metric(
            "teefleet_agent_apply_failures_total",
            "counter",
            "Rule set applies that failed.",
            &one(s.apply_failures),
        );
        let mut histogram = Vec::new();
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(s.bucket_counts) {
            cumulative += count;
            histogram.push((format!("_bucket{{le=\"{bound}\"}}"), cumulative.to_string()));
        }
        histogram.push(("_bucket{le=\"+Inf\"}".to_owned(), s.applies.to_string()));
        histogram.push(("_sum".to_owned(), s.duration_sum.to_string()));
        histogram.push(("_count".to_owned(), s.applies.to_string()));
        metric(
            "teefleet_agent_apply_duration_seconds",
            "histogram",
            "Time to apply and verify a rule set.",
            &histogram,
        );
        metric("teefleet_agent_drift_checks_total", "counter", "Drift checks run.", &one(s.drift_checks));
        metric(
            "teefleet_agent_drift_repairs_total",
            "counter",
            "Times our rules were found changed by something else and restored.",
            &one(s.drift_repairs),
        );
        let rules: Vec<_> =
            s.rules_by_family.iter().map(|(f, n)| (format!("{{family=\"{}\"}}", f.label()), n.to_string())).collect();
        metric("teefleet_agent_rules", "gauge", "Mirroring rules applied, by address family.", &rules);
        metric("teefleet_agent_applied_version", "gauge", "The rule set version applied.", &one(s.applied_version));
        let connected: Vec<_> =
            s.controller.iter().map(|url| (format!("{{url=\"{}\"}}", label_value(url)), "1".to_owned())).collect();
        metric(
            "teefleet_agent_controller_info",
            "gauge",
            "The controller replica the stream is open with; no sample while disconnected.",
            &connected,
        );
        let per_session = |f: fn(&Rated) -> u64| -> Vec<(String, String)> {
            // Session names are [A-Za-z0-9._-], so they need no escaping in a label.
            s.counters.iter().map(|(name, r)| (format!("{{session=\"{name}\"}}"), f(r).to_string())).collect()
        };
        metric(
            "teefleet_agent_mirrored_packets_total",
            "counter",
            "Packets matched by the session's mirroring rules (egress clones count twice, see the README).",
            &per_session(|r| r.counter.packets),
        );
        metric(
            "teefleet_agent_mirrored_bytes_total",
            "counter",
            "Bytes matched by the session's mirroring rules.",
            &per_session(|r| r.counter.bytes),
        );
        out
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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
        };
        status.record_check(Ok(&check));
        let text = status.metrics();
        for line in [
            "teefleet_agent_applies_total 2",
            "teefleet_agent_apply_failures_total 1",
            "teefleet_agent_apply_duration_seconds_bucket{le=\"0.025\"} 0",
            "teefleet_agent_apply_duration_seconds_bucket{le=\"0.05\"} 1",
            "teefleet_agent_apply_duration_seconds_bucket{le=\"10\"} 1",
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
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn rates_are_taken_over_the_last_interval() {
        let status = Status::new(Duration::from_secs(5));
        let web: SessionName = "web".parse().expect("name");
        let reading =
            |packets, bytes| Check { repairs: vec![], counters: [(web.clone(), Counter { packets, bytes })].into() };
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
