//! What is the controller's own on the wire: agents' reports bounded into `report`'s
//! types, and replies built from stored records. Conversions of domain types (requests,
//! rule sets) are `teefleet-proto`'s.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use teefleet_model::text::printable;
use teefleet_model::{EventKind, SessionName, ValidationError, Vni};
use teefleet_proto::v1 as pb;

use crate::{
    report::{Dataplane, HostEvent, SessionCounters, Traffic},
    status::{SessionState, StatusView},
    store::{CollectorRecord, HostRecord, SessionRecord},
};

/// Bounds on what an agent reports, so one host cannot make the controller store or show
/// unbounded data.
const MAX_COUNTERS: usize = 1024;
const MAX_PROBLEMS: usize = 16;
const MAX_PROBLEM_LEN: usize = 512;
const MAX_VERSION_LEN: usize = 128;

/// A token such as "nft": short, lower case, nothing a terminal would interpret.
fn token(value: &str) -> bool {
    (1..=16).contains(&value.len())
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// An agent's dataplane report, with whatever does not fit dropped and reported back for
/// the caller to log: a report never refuses the stream, so the host stays managed.
pub fn dataplane(d: &pb::Dataplane) -> (Dataplane, Vec<ValidationError>) {
    let mut dropped = Vec::new();
    let backend = if d.backend.is_empty() || token(&d.backend) {
        d.backend.clone()
    } else {
        dropped.push(ValidationError::new(
            "dataplane.backend",
            format!("{:?} is not a backend name", printable(&d.backend, 64)),
        ));
        String::new()
    };
    if d.problems.len() > MAX_PROBLEMS {
        dropped.push(ValidationError::new(
            "dataplane.problems",
            format!("{} problems reported; kept the first {MAX_PROBLEMS}", d.problems.len()),
        ));
    }
    let problems = d.problems.iter().take(MAX_PROBLEMS).map(|p| printable(p, MAX_PROBLEM_LEN)).collect();
    let dataplane = Dataplane {
        backend,
        iptables_version: printable(&d.iptables_version, MAX_VERSION_LEN),
        ipv6: d.ipv6,
        problems,
    };
    (dataplane, dropped)
}

/// A rate an agent reported; anything but a finite non-negative number is no rate.
fn rate(field: String, value: f64, dropped: &mut Vec<ValidationError>) -> f64 {
    if value.is_finite() && value >= 0.0 {
        value
    } else {
        dropped.push(ValidationError::new(field, format!("{value} is not a rate")));
        0.0
    }
}

/// An agent's per-session counters, sorted by session. Entries naming no valid session,
/// repeats of a session and entries beyond the limit are dropped and reported back.
pub fn counters(values: &[pb::SessionCounters]) -> (Vec<SessionCounters>, Vec<ValidationError>) {
    let mut dropped = Vec::new();
    if values.len() > MAX_COUNTERS {
        dropped.push(ValidationError::new(
            "counters",
            format!("{} entries reported; kept the first {MAX_COUNTERS}", values.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, c) in values.iter().take(MAX_COUNTERS).enumerate() {
        let session: SessionName = match c.session.parse() {
            Ok(name) => name,
            Err(e) => {
                dropped.push(ValidationError::new(format!("counters[{i}].session"), e.reason));
                continue;
            }
        };
        if !seen.insert(session.clone()) {
            dropped.push(ValidationError::new(format!("counters[{i}]"), format!("session {session} is repeated")));
            continue;
        }
        let traffic = Traffic {
            packets: c.packets,
            bytes: c.bytes,
            packets_per_second: rate(format!("counters[{i}].packets_per_second"), c.packets_per_second, &mut dropped),
            bytes_per_second: rate(format!("counters[{i}].bytes_per_second"), c.bytes_per_second, &mut dropped),
        };
        out.push(SessionCounters { session, traffic });
    }
    out.sort_by(|a, b| a.session.cmp(&b.session));
    (out, dropped)
}

/// An agent's event. Its message is cut to a bounded printable text; a time the agent's
/// clock could not give (zero, or beyond what a timestamp holds) becomes `received`.
pub fn host_event(e: &pb::HostEvent, received: DateTime<Utc>) -> Result<HostEvent, ValidationError> {
    let kind: EventKind = e.kind.parse()?;
    let at = i64::try_from(e.at_unix_ms)
        .ok()
        .filter(|&ms| ms > 0)
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or(received);
    Ok(HostEvent::new(kind, &e.message, at))
}

pub fn pb_session(r: &SessionRecord, status: &StatusView) -> pb::Session {
    pb::Session {
        name: r.spec.name().to_string(),
        sources: r.sources.iter().map(|s| s.host_id.to_string()).collect(),
        source_tags: r.spec.selectors().iter().map(ToString::to_string).collect(),
        allow_routed: r.spec.allow_routed(),
        vni: r.spec.vni().map_or(0, Vni::get),
        encap: r.collector_encap.to_string(),
        disable_source_check: r.spec.disable_source_check(),
        collector: r.spec.collector().to_string(),
        filter: Some(r.spec.filter().into()),
        state: match status.state {
            SessionState::Pending => pb::SessionState::Pending,
            SessionState::Active => pb::SessionState::Active,
            SessionState::Degraded => pb::SessionState::Degraded,
        }
        .into(),
        hosts: status
            .hosts
            .iter()
            .map(|h| pb::SessionHostStatus {
                host_id: h.host_id.to_string(),
                applied: h.applied,
                connected: h.connected,
                error: h.error.clone().unwrap_or_default(),
                desired_version: h.desired_version,
                applied_version: h.applied_version,
                packets: h.traffic.packets,
                bytes: h.traffic.bytes,
                packets_per_second: h.traffic.packets_per_second,
                bytes_per_second: h.traffic.bytes_per_second,
                from_tags: h.from_tags,
                source_dest_check: h.source_dest_check.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            })
            .collect(),
        problems: status.problems.clone(),
        created_at: r.created_at.to_rfc3339(),
        packets: status.total.packets,
        bytes: status.total.bytes,
        packets_per_second: status.total.packets_per_second,
        bytes_per_second: status.total.bytes_per_second,
    }
}

pub fn pb_collector(c: &CollectorRecord) -> pb::Collector {
    pb::Collector {
        instance_id: c.instance_id.to_string(),
        ip: c.ip.to_string(),
        subnet_id: c.subnet_id.clone(),
        session_count: c.session_count,
        source_dest_check: c.source_dest_check.as_str().to_owned(),
        original_source_dest_check: c.original_source_dest_check,
        ec2_error: c.ec2_error.clone().unwrap_or_default(),
        ipv6: c.ipv6.map(|ip| ip.to_string()).unwrap_or_default(),
        encap: c.encap.to_string(),
    }
}

/// A host as ListHosts shows it; GetHost adds its events.
pub fn pb_host(h: &HostRecord) -> pb::Host {
    pb::Host {
        host_id: h.host_id.to_string(),
        agent_version: h.agent_version.clone(),
        addresses: h.addresses.clone(),
        connected: h.connected,
        desired_version: h.desired_version,
        applied_version: h.applied_version,
        last_error: h.last_error.clone().unwrap_or_default(),
        last_seen: h.last_seen.map(|t| t.to_rfc3339()).unwrap_or_default(),
        rule_count: h.rule_count,
        dataplane: h.dataplane.as_ref().map(|d| pb::Dataplane {
            backend: d.backend.clone(),
            iptables_version: d.iptables_version.clone(),
            ipv6: d.ipv6,
            problems: d.problems.clone(),
        }),
        drift_repairs: h.drift_repairs,
        events: Vec::new(),
        counters: h.counters.iter().map(pb_counters).collect(),
    }
}

fn pb_counters(c: &SessionCounters) -> pb::SessionCounters {
    pb::SessionCounters {
        session: c.session.to_string(),
        packets: c.traffic.packets,
        bytes: c.traffic.bytes,
        packets_per_second: c.traffic.packets_per_second,
        bytes_per_second: c.traffic.bytes_per_second,
    }
}

pub fn pb_host_event(e: &HostEvent) -> pb::HostEvent {
    pb::HostEvent {
        kind: e.kind.to_string(),
        message: e.message.clone(),
        // Events are stored from a u64 of milliseconds or the receive time, both after 1970.
        at_unix_ms: u64::try_from(e.at.timestamp_millis()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataplane_reports_are_bounded() {
        let (d, dropped) = dataplane(&pb::Dataplane {
            backend: "nft".into(),
            iptables_version: "iptables v1.8.9 (nf_tables)\n".into(),
            ipv6: true,
            problems: vec!["TEE missing".into()],
        });
        assert!(dropped.is_empty());
        assert_eq!(
            (d.backend.as_str(), d.iptables_version.as_str(), d.ipv6),
            ("nft", "iptables v1.8.9 (nf_tables) ", true)
        );
        let (d, dropped) = dataplane(&pb::Dataplane {
            backend: "\x1b[31mred".into(),
            problems: vec!["p".repeat(2000); 40],
            ..Default::default()
        });
        assert_eq!(d.backend, "");
        assert_eq!(d.problems.len(), MAX_PROBLEMS);
        assert!(d.problems.iter().all(|p| p.len() == MAX_PROBLEM_LEN));
        let fields: Vec<_> = dropped.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["dataplane.backend", "dataplane.problems"]);
    }

    #[test]
    fn bad_counters_are_dropped_and_the_rest_kept_in_order() {
        let c = |session: &str, pps: f64| pb::SessionCounters {
            session: session.into(),
            packets: 7,
            bytes: 700,
            packets_per_second: pps,
            bytes_per_second: 1.0,
        };
        let (kept, dropped) = counters(&[c("web", 1.0), c("bad name", 1.0), c("db", f64::NAN), c("web", 2.0)]);
        let names: Vec<_> = kept.iter().map(|c| c.session.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        assert_eq!(kept[0].traffic.packets_per_second, 0.0);
        assert_eq!(kept[1].traffic.packets_per_second, 1.0, "the first report of a session wins");
        let fields: Vec<_> = dropped.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["counters[1].session", "counters[2].packets_per_second", "counters[3]"]);
        let many: Vec<_> = (0..MAX_COUNTERS + 5).map(|i| c(&format!("s{i}"), 0.0)).collect();
        let (kept, dropped) = counters(&many);
        assert_eq!((kept.len(), dropped[0].field.as_str()), (MAX_COUNTERS, "counters"));
    }

    #[test]
    fn events_are_checked_and_timed() {
        let now = Utc::now();
        let e = |kind: &str, message: &str, at_unix_ms| pb::HostEvent {
            kind: kind.into(),
            message: message.into(),
            at_unix_ms,
        };
        let ok = host_event(&e("drift_repaired", "jump moved", 1_700_000_000_000), now).expect("valid");
        assert_eq!(ok.at.timestamp_millis(), 1_700_000_000_000);
        assert_eq!(pb_host_event(&ok).at_unix_ms, 1_700_000_000_000);
        assert_eq!(host_event(&e("x", "", 0), now).expect("valid").at, now);
        assert_eq!(host_event(&e("x", "", u64::MAX), now).expect("valid").at, now);
        assert_eq!(host_event(&e("x", &"m".repeat(5000), 1), now).expect("valid").message.len(), 1024);
        assert_eq!(host_event(&e("Bad Kind", "", 1), now).unwrap_err().field, "kind");
    }
}
