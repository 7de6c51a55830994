//! Replies built from the controller's own records (sessions with their status,
//! collectors, hosts). Conversions of domain types (requests, rule sets, agents' reports)
//! are `teefleet-proto`'s.

use teefleet_model::{SessionSpec, Vni};
use teefleet_proto::v1 as pb;

use crate::{
    delivery::{Delivery, Window},
    preflight::{CheckChange, CollectorFacts, Preflight},
    status::{SessionState, StatusView},
    store::{CollectorRecord, HostRecord, SessionRecord},
};

pub fn pb_session(r: &SessionRecord, status: &StatusView, window: Window) -> pb::Session {
    let delivery = status.delivery.as_ref();
    let total = delivery.and_then(|d| d.total);
    pb::Session {
        sent_packets: total.map(|t| t.sent),
        delivered_packets: total.map(|t| t.delivered),
        loss_ratio: total.and_then(|t| t.loss_ratio),
        window_seconds: u32::try_from(window.length.num_seconds()).unwrap_or(u32::MAX),
        max_loss: r.spec.max_loss().get(),
        delivery_unknown: delivery.and_then(|d| d.unknown.clone()).unwrap_or_default(),
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
            .map(|h| {
                let delivery = delivery.and_then(|d| d.hosts.get(&h.host_id));
                let figures = match delivery {
                    Some(Delivery::Known(f)) => Some(*f),
                    _ => None,
                };
                pb::SessionHostStatus {
                    sent_packets: figures.map(|f| f.sent),
                    delivered_packets: figures.map(|f| f.delivered),
                    loss_ratio: figures.and_then(|f| f.loss_ratio),
                    delivery_unknown: match delivery {
                        Some(Delivery::Unknown(why)) => why.clone(),
                        _ => String::new(),
                    },
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
                }
            })
            .collect(),
        problems: status.problems.clone(),
        created_at: r.created_at.to_rfc3339(),
        expires_at: r.expires_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
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

/// `enabled -> disabled`, or empty for no change.
fn check_change(change: Option<CheckChange>) -> String {
    change.map(|(now, want)| format!("{} -> {}", now.as_str(), want.as_str())).unwrap_or_default()
}

pub fn pb_preflight(
    spec: &SessionSpec,
    collector: &CollectorRecord,
    facts: &CollectorFacts,
    plan: &Preflight,
) -> pb::SessionPreflight {
    pb::SessionPreflight {
        name: spec.name().to_string(),
        collector: collector.instance_id.to_string(),
        encap: collector.encap.to_string(),
        vni: plan.vni.map_or(0, Vni::get),
        collector_subnet_id: collector.subnet_id.clone(),
        collector_agent: facts.agent.as_str().to_owned(),
        collector_source_dest_check: check_change(plan.collector_check),
        sources: plan
            .sources
            .iter()
            .map(|s| pb::PreflightSource {
                host_id: s.host.to_string(),
                from_tags: s.from_tags,
                subnet_id: s.subnet_id.clone().unwrap_or_default(),
                agent: s.agent.as_str().to_owned(),
                encap: s.encap.to_string(),
                gateways: s.gateways.iter().map(ToString::to_string).collect(),
                source_dest_check: check_change(s.check),
                rule_count: u32::try_from(s.rules).unwrap_or(u32::MAX),
            })
            .collect(),
        problems: plan
            .problems
            .iter()
            .map(|p| pb::PreflightProblem {
                host_id: p.host.clone().unwrap_or_default(),
                message: p.message.clone(),
                refuses: p.refuses,
            })
            .collect(),
        would_create: plan.would_create(),
    }
}
