//! The session status view: whether each source has applied the session, and what the
//! session as a whole is. Pure, so every rule of it is a table test.

use teefleet_model::{Encap, HostId};

use crate::{
    delivery::SessionDelivery,
    report::Traffic,
    store::{SdcState, SessionRecord, SourceStatus},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Some source has not yet applied a rule set containing the session, or the
    /// collector does not accept clones yet.
    Pending,
    /// Every source has applied it and the collector accepts clones.
    Active,
    /// A source rejected its rule set or is disconnected, or an EC2 call failed.
    Degraded,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    pub host_id: HostId,
    pub applied: bool,
    pub connected: bool,
    pub error: Option<String>,
    pub desired_version: u64,
    pub applied_version: u64,
    pub traffic: Traffic,
    pub from_tags: bool,
    /// The host's Source/Dest Check when the session has teefleet manage it.
    pub source_dest_check: Option<SdcState>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusView {
    pub state: SessionState,
    pub hosts: Vec<HostView>,
    pub problems: Vec<String>,
    /// The session's traffic summed over its hosts.
    pub total: Traffic,
    /// What reached the collector; `None` until [`StatusView::with_delivery`].
    pub delivery: Option<SessionDelivery>,
}

impl StatusView {
    /// The view with the session's delivery: a source losing more clones than the session
    /// may makes it degraded, saying how much; unknown delivery is shown, not a problem.
    pub fn with_delivery(mut self, delivery: SessionDelivery) -> Self {
        if !delivery.losses.is_empty() {
            self.state = SessionState::Degraded;
            self.problems.extend(delivery.losses.iter().cloned());
        }
        self.delivery = Some(delivery);
        self
    }
}

pub fn session_status(record: &SessionRecord) -> StatusView {
    let hosts: Vec<HostView> = record.sources.iter().map(host_view).collect();
    let mut problems = Vec::new();
    if let Some(err) = &record.collector_ec2_error {
        problems.push(format!("collector {}: {err}", record.spec.collector()));
    }
    // Sources the session should have and does not: its tags could not be resolved, or
    // matched instances it cannot use.
    if let Some(problem) = &record.resolve_problem {
        problems.push(format!("source tags: {problem}"));
    }
    // A VXLAN clone is addressed to the collector: its check may stay as it is. With
    // disable_source_check, inbound clones leave a source only once its check is off.
    let collector_ready = record.collector_encap == Encap::Vxlan || record.collector_sdc == SdcState::Disabled;
    let sources_waiting: Vec<&HostView> = if record.spec.disable_source_check() {
        // A host off EC2 has no check to wait for.
        let in_ec2 = |h: &&HostView| h.host_id.as_str().parse::<teefleet_model::InstanceId>().is_ok();
        hosts.iter().filter(in_ec2).filter(|h| h.source_dest_check != Some(SdcState::Disabled)).collect()
    } else {
        Vec::new()
    };
    let collector_ready = collector_ready && sources_waiting.is_empty();
    let degraded = !problems.is_empty() || hosts.iter().any(|h| !h.connected || h.error.is_some());
    let state = if degraded {
        SessionState::Degraded
    } else if hosts.iter().all(|h| h.applied) && collector_ready {
        SessionState::Active
    } else {
        SessionState::Pending
    };
    // A session of tags only may match nothing yet; it is not active, since nothing mirrors.
    let state = if state == SessionState::Active && hosts.is_empty() { SessionState::Pending } else { state };
    if hosts.is_empty() && !record.spec.selectors().is_empty() {
        let tags: Vec<String> = record.spec.selectors().iter().map(ToString::to_string).collect();
        problems
            .push(format!("no running instance carries {} yet; it becomes a source when one does", tags.join(" and ")));
    }
    if state == SessionState::Pending && !collector_ready {
        let mut waiting: Vec<String> = sources_waiting.iter().map(|h| format!("source {}", h.host_id)).collect();
        if !(record.collector_encap == Encap::Vxlan || record.collector_sdc == SdcState::Disabled) {
            waiting.insert(0, format!("collector {}", record.spec.collector()));
        }
        problems.push(format!("waiting for Source/Dest Check to be disabled on {}", waiting.join(", ")));
    }
    let total = Traffic::total(hosts.iter().map(|h| &h.traffic));
    StatusView { state, hosts, problems, total, delivery: None }
}

fn host_view(s: &SourceStatus) -> HostView {
    let applied = s.required_version > 0 && s.applied_version >= s.required_version;
    // A rejection matters only if it came after the last version the host applied: an
    // older failure was superseded by a later success.
    let error = match (&s.last_error, s.nacked_version) {
        (Some(err), Some(nacked)) if !applied && nacked > s.applied_version => Some(err.clone()),
        _ if !s.connected => Some("agent is not connected".to_owned()),
        _ => None,
    };
    HostView {
        host_id: s.host_id.clone(),
        applied,
        connected: s.connected,
        error,
        desired_version: s.desired_version,
        applied_version: s.applied_version,
        // A disconnected agent's last rates are not the current ones; its counts still are
        // the last known.
        traffic: if s.connected { s.traffic } else { s.traffic.without_rates() },
        from_tags: s.from_tags,
        source_dest_check: s.source_dest_check,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use teefleet_model::{Filter, SessionSpec};

    use super::*;

    fn source(required: u64, applied: u64, connected: bool, nack: Option<(u64, &str)>) -> SourceStatus {
        SourceStatus {
            host_id: "h1".parse().expect("host"),
            required_version: required,
            connected,
            desired_version: required,
            applied_version: applied,
            nacked_version: nack.map(|(v, _)| v),
            last_error: nack.map(|(_, e)| e.to_owned()),
            traffic: Traffic::default(),
            from_tags: false,
            source_dest_check: None,
        }
    }

    fn record(sources: Vec<SourceStatus>, sdc: SdcState, ec2_error: Option<&str>) -> SessionRecord {
        SessionRecord {
            spec: SessionSpec::new(
                "s".parse().expect("name"),
                sources.iter().map(|s| s.host_id.clone()).collect(),
                "i-0123456789abcdef0".parse().expect("id"),
                Filter::default(),
            )
            .expect("spec"),
            created_at: Utc::now(),
            expires_at: None,
            collector_ip: "10.0.0.9".parse().expect("ip"),
            collector_sdc: sdc,
            collector_encap: Encap::None,
            collector_ec2_error: ec2_error.map(str::to_owned),
            sources,
            resolve_problem: None,
            collector_agent: crate::delivery::CollectorAgent::Present,
        }
    }

    #[test]
    fn a_session_that_turns_sources_checks_off_waits_for_them() {
        let mut r = record(vec![source(3, 3, true, None)], SdcState::Disabled, None);
        r.spec = r.spec.clone().with_disable_source_check(true);
        assert_eq!(session_status(&r).state, SessionState::Active, "h1 is not in EC2: no check to wait for");
        r.sources[0].host_id = "i-0123456789abcdef1".parse().expect("host");
        let view = session_status(&r);
        assert_eq!(view.state, SessionState::Pending);
        assert_eq!(view.problems, ["waiting for Source/Dest Check to be disabled on source i-0123456789abcdef1"]);
        r.sources[0].source_dest_check = Some(SdcState::Disabled);
        assert_eq!(session_status(&r).state, SessionState::Active);
    }

    /// A session of tags only, whose tags matched `sources`.
    fn tag_record(sources: Vec<SourceStatus>, resolve_problem: Option<&str>) -> SessionRecord {
        let spec = SessionSpec::selecting(
            "s".parse().expect("name"),
            Vec::new(),
            vec!["role=web".parse().expect("tag"), "env=prod".parse().expect("tag")],
            "i-0123456789abcdef0".parse().expect("id"),
            Filter::default(),
        )
        .expect("spec");
        let named = record(vec![source(3, 3, true, None)], SdcState::Disabled, None);
        SessionRecord { spec, sources, resolve_problem: resolve_problem.map(str::to_owned), ..named }
    }

    #[test]
    fn states() {
        use SdcState::*;
        use SessionState::*;
        let cases: &[(&str, SourceStatus, SdcState, Option<&str>, SessionState)] = &[
            ("applied, collector ready", source(3, 3, true, None), Disabled, None, Active),
            ("applied a later version", source(3, 5, true, None), Disabled, None, Active),
            ("not yet applied", source(3, 2, true, None), Disabled, None, Pending),
            ("applied, collector not ready", source(3, 3, true, None), Enabled, None, Pending),
            ("rejected", source(3, 2, true, Some((3, "iptables: bad"))), Disabled, None, Degraded),
            ("old rejection superseded", source(3, 4, true, Some((2, "old"))), Disabled, None, Active),
            ("disconnected", source(3, 3, false, None), Disabled, None, Degraded),
            ("ec2 failed", source(3, 3, true, None), Enabled, Some("throttled"), Degraded),
        ];
        for (what, src, sdc, err, want) in cases {
            let view = session_status(&record(vec![src.clone()], *sdc, *err));
            assert_eq!(view.state, *want, "{what}");
        }
    }

    #[test]
    fn rejection_reason_is_shown_per_host() {
        let view =
            session_status(&record(vec![source(3, 2, true, Some((3, "line 2 failed")))], SdcState::Disabled, None));
        assert_eq!(view.hosts[0].error.as_deref(), Some("line 2 failed"));
        assert!(!view.hosts[0].applied);
    }

    #[test]
    fn traffic_is_summed_and_a_disconnected_host_has_no_rate() {
        let t = |packets: u64, pps: f64| Traffic::reported(packets, packets * 100, pps, pps * 100.0).0;
        let mut a = source(3, 3, true, None);
        a.traffic = t(10, 2.0);
        let mut b = source(3, 3, false, None);
        b.host_id = "h2".parse().expect("host");
        b.traffic = t(5, 1.0);
        let view = session_status(&record(vec![a, b], SdcState::Disabled, None));
        assert_eq!(view.hosts[1].traffic, t(5, 0.0));
        assert_eq!(view.total, t(15, 2.0));
    }

    #[test]
    fn a_session_whose_tags_match_nothing_waits_and_says_so() {
        let view = session_status(&tag_record(vec![], None));
        assert_eq!(view.state, SessionState::Pending);
        assert_eq!(
            view.problems,
            ["no running instance carries env=prod and role=web yet; it becomes a source when one does"]
        );
        let tagged = SourceStatus { from_tags: true, ..source(3, 3, true, None) };
        let view = session_status(&tag_record(vec![tagged], None));
        assert_eq!((view.state, view.problems.len(), view.hosts[0].from_tags), (SessionState::Active, 0, true));
    }

    #[test]
    fn a_failed_resolution_degrades_the_session() {
        let view = session_status(&tag_record(vec![source(3, 3, true, None)], Some("EC2 unreachable")));
        assert_eq!(view.state, SessionState::Degraded);
        assert_eq!(view.problems, ["source tags: EC2 unreachable"]);
    }
}
