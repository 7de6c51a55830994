//! What is the controller's own on the wire: agents' reports bounded into `report`'s
//! types, and replies built from stored records. Conversions of domain types (requests,
//! rule sets) are `teefleet-proto`'s.

use chrono::{DateTime, Utc};
use teefleet_model::{EventKind, ValidationError, Vni};
use teefleet_proto::v1 as pb;

use crate::{
    report::HostEvent,
    status::{SessionState, StatusView},
    store::{CollectorRecord, HostRecord, SessionRecord},
};

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
                packets: h.traffic.packets(),
                bytes: h.traffic.bytes(),
                packets_per_second: h.traffic.packets_per_second(),
                bytes_per_second: h.traffic.bytes_per_second(),
                from_tags: h.from_tags,
                source_dest_check: h.source_dest_check.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            })
            .collect(),
        problems: status.problems.clone(),
        created_at: r.created_at.to_rfc3339(),
        packets: status.total.packets(),
        bytes: status.total.bytes(),
        packets_per_second: status.total.packets_per_second(),
        bytes_per_second: status.total.bytes_per_second(),
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
        dataplane: h.dataplane.as_ref().map(pb::Dataplane::from),
        drift_repairs: h.drift_repairs,
        events: Vec::new(),
        counters: h.counters.iter().map(pb::SessionCounters::from).collect(),
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
