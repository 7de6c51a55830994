//! What agents report (Hello's dataplane, Health's counters), both ways: the agent
//! encodes, the controller decodes into the model's self-bounding types. A report is
//! never refused as a whole: what does not fit is dropped and returned for the caller to
//! log, so the host stays managed.

use std::collections::BTreeSet;

use teefleet_model::{
    EventKind, HostId, SessionName, ValidationError,
    report::{
        ArrivalCounters, Arrived, Dataplane, HostEvent, MAX_ARRIVAL_COUNTERS, MAX_COUNTERS, SessionCounters, Traffic,
    },
};

use crate::v1 as pb;

/// An agent's dataplane report, bounded; errors are named `dataplane.*`.
pub fn dataplane(d: &pb::Dataplane) -> (Dataplane, Vec<ValidationError>) {
    let (dataplane, dropped) = Dataplane::reported(&d.backend, &d.iptables_version, d.ipv6, &d.problems);
    (dataplane, dropped.into_iter().map(|e| e.within("dataplane")).collect())
}

impl From<&Dataplane> for pb::Dataplane {
    fn from(d: &Dataplane) -> Self {
        pb::Dataplane {
            backend: d.backend().to_owned(),
            iptables_version: d.iptables_version().to_owned(),
            ipv6: d.ipv6(),
            problems: d.problems().to_vec(),
        }
    }
}

/// An agent's per-session counters, sorted by session. Entries naming no valid session,
/// repeats of a session (the first wins) and entries beyond the limit are dropped, and
/// so are rates that are no rates; each is returned, named by its index.
pub fn counters(values: &[pb::SessionCounters]) -> (Vec<SessionCounters>, Vec<ValidationError>) {
    let mut dropped = Vec::new();
    if values.len() > MAX_COUNTERS {
        dropped.push(ValidationError::new(
            "counters",
            format!("{} entries reported; kept the first {MAX_COUNTERS}", values.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut kept = Vec::new();
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
        let (traffic, bad) = Traffic::reported(c.packets, c.bytes, c.packets_per_second, c.bytes_per_second);
        dropped.extend(bad.into_iter().map(|e| e.within(format!("counters[{i}]"))));
        kept.push(SessionCounters { session, traffic });
    }
    kept.sort_by(|a, b| a.session.cmp(&b.session));
    (kept, dropped)
}

/// A collector's arrival counters, sorted by session and source. Entries naming no valid
/// session or host, repeats (the first wins) and entries beyond the limit are dropped and
/// returned, named by their index.
pub fn arrivals(values: &[pb::ArrivalCounters]) -> (Vec<ArrivalCounters>, Vec<ValidationError>) {
    let mut dropped = Vec::new();
    if values.len() > MAX_ARRIVAL_COUNTERS {
        dropped.push(ValidationError::new(
            "arrivals",
            format!("{} entries reported; kept the first {MAX_ARRIVAL_COUNTERS}", values.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut kept = Vec::new();
    for (i, a) in values.iter().take(MAX_ARRIVAL_COUNTERS).enumerate() {
        let named = a.session.parse::<SessionName>().map_err(|e| (format!("arrivals[{i}].session"), e.reason));
        let named = named.and_then(|session| {
            let source = a.source.parse::<HostId>().map_err(|e| (format!("arrivals[{i}].source"), e.reason))?;
            Ok((session, source))
        });
        let (session, source) = match named {
            Ok(named) => named,
            Err((field, reason)) => {
                dropped.push(ValidationError::new(field, reason));
                continue;
            }
        };
        if !seen.insert((session.clone(), source.clone())) {
            dropped.push(ValidationError::new(
                format!("arrivals[{i}]"),
                format!("session {session} from {source} is repeated"),
            ));
            continue;
        }
        kept.push(ArrivalCounters { session, source, arrived: Arrived { packets: a.packets, bytes: a.bytes } });
    }
    kept.sort_by(|a, b| (&a.session, &a.source).cmp(&(&b.session, &b.source)));
    (kept, dropped)
}

impl From<&ArrivalCounters> for pb::ArrivalCounters {
    fn from(a: &ArrivalCounters) -> Self {
        pb::ArrivalCounters {
            session: a.session.to_string(),
            source: a.source.to_string(),
            packets: a.arrived.packets,
            bytes: a.arrived.bytes,
        }
    }
}

impl From<&SessionCounters> for pb::SessionCounters {
    fn from(c: &SessionCounters) -> Self {
        pb::SessionCounters {
            session: c.session.to_string(),
            packets: c.traffic.packets(),
            bytes: c.traffic.bytes(),
            packets_per_second: c.traffic.packets_per_second(),
            bytes_per_second: c.traffic.bytes_per_second(),
        }
    }
}

/// An agent's event, with `received` standing in for a time its clock could not give.
pub fn host_event(e: &pb::HostEvent, received_unix_ms: u64) -> Result<HostEvent, ValidationError> {
    let kind: EventKind = e.kind.parse()?;
    Ok(HostEvent::new(kind, &e.message, e.at_unix_ms, received_unix_ms))
}

impl From<&HostEvent> for pb::HostEvent {
    fn from(e: &HostEvent) -> Self {
        pb::HostEvent { kind: e.kind().to_string(), message: e.message().to_owned(), at_unix_ms: e.at_unix_ms() }
    }
}

#[cfg(test)]
mod tests {
    use teefleet_model::report::{MAX_PROBLEM_LEN, MAX_PROBLEMS};

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
        assert_eq!((d.backend(), d.iptables_version(), d.ipv6()), ("nft", "iptables v1.8.9 (nf_tables) ", true));
        assert_eq!(pb::Dataplane::from(&d).problems, ["TEE missing"]);
        let (d, dropped) = dataplane(&pb::Dataplane {
            backend: "\x1b[31mred".into(),
            problems: vec!["p".repeat(2000); 40],
            ..Default::default()
        });
        assert_eq!(d.backend(), "");
        assert_eq!(d.problems().len(), MAX_PROBLEMS);
        assert!(d.problems().iter().all(|p| p.len() == MAX_PROBLEM_LEN));
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
        assert_eq!(kept[0].traffic.packets_per_second(), 0.0);
        assert_eq!(kept[1].traffic.packets_per_second(), 1.0, "the first report of a session wins");
        assert_eq!(pb::SessionCounters::from(&kept[1]), c("web", 1.0));
        let fields: Vec<_> = dropped.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["counters[1].session", "counters[2].packets_per_second", "counters[3]"]);
        let many: Vec<_> = (0..MAX_COUNTERS + 5).map(|i| c(&format!("s{i}"), 0.0)).collect();
        let (kept, dropped) = counters(&many);
        assert_eq!((kept.len(), dropped[0].field.as_str()), (MAX_COUNTERS, "counters"));
    }

    #[test]
    fn events_are_checked_and_timed() {
        let now = 1_800_000_000_000;
        let e = |kind: &str, message: &str, at_unix_ms| pb::HostEvent {
            kind: kind.into(),
            message: message.into(),
            at_unix_ms,
        };
        let ok = host_event(&e("drift_repaired", "jump moved", 1_700_000_000_000), now).expect("valid");
        assert_eq!(ok.at_unix_ms(), 1_700_000_000_000);
        assert_eq!(pb::HostEvent::from(&ok), e("drift_repaired", "jump moved", 1_700_000_000_000));
        assert_eq!(host_event(&e("x", "", 0), now).expect("valid").at_unix_ms(), now);
        assert_eq!(host_event(&e("x", "", u64::MAX), now).expect("valid").at_unix_ms(), now);
        assert_eq!(host_event(&e("x", &"m".repeat(5000), 1), now).expect("valid").message().len(), 1024);
        assert_eq!(host_event(&e("Bad Kind", "", 1), now).unwrap_err().field, "kind");
    }
}
