//! Conversions between `fleet.v1` messages and domain types: requests are validated into
//! domain types here and nowhere else.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use chrono::{DateTime, Utc};
use teefleet_model::text::printable;
use teefleet_model::{
    Cidr, CollectorId, Direction, Encap, EventKind, Filter, HostId, InstanceId, IpFamily, MaxPps, MirrorRule,
    PortRange, Protocol, RuleDirection, RuleSet, Sample, SessionName, TagSelector, Throttle, ValidationError, Vni,
};
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

fn field<T: std::str::FromStr<Err = ValidationError>>(name: &str, value: &str) -> Result<T, ValidationError> {
    value.parse().map_err(|e: ValidationError| ValidationError::new(name, e.reason))
}

pub fn session_name(value: &str) -> Result<SessionName, ValidationError> {
    field("name", value)
}

pub fn instance_id(name: &str, value: &str) -> Result<InstanceId, ValidationError> {
    field(name, value)
}

pub fn collector_id(name: &str, value: &str) -> Result<CollectorId, ValidationError> {
    field(name, value)
}

pub fn host_id(name: &str, value: &str) -> Result<HostId, ValidationError> {
    field(name, value)
}

pub fn sources(values: &[String]) -> Result<Vec<HostId>, ValidationError> {
    if values.len() > teefleet_model::limits::MAX_SOURCES {
        return Err(ValidationError::new(
            "sources",
            format!("at most {} sources per session", teefleet_model::limits::MAX_SOURCES),
        ));
    }
    values.iter().enumerate().map(|(i, s)| host_id(&format!("sources[{i}]"), s)).collect()
}

/// The session's tags, each `KEY=VALUE`; counted before any is parsed, so a request with
/// a million of them costs nothing.
pub fn source_tags(values: &[String]) -> Result<Vec<TagSelector>, ValidationError> {
    if values.len() > teefleet_model::limits::MAX_SELECTORS {
        return Err(ValidationError::new(
            "source_tags",
            format!(
                "{} tags given; at most {} per session (an instance must carry all of them)",
                values.len(),
                teefleet_model::limits::MAX_SELECTORS
            ),
        ));
    }
    values.iter().enumerate().map(|(i, t)| field(&format!("source_tags[{i}]"), t)).collect()
}

pub fn filter(f: Option<&pb::Filter>) -> Result<Filter, ValidationError> {
    let Some(f) = f else { return Ok(Filter::default()) };
    let direction = match pb::Direction::try_from(f.direction) {
        Ok(pb::Direction::Unspecified | pb::Direction::Both) => Direction::Both,
        Ok(pb::Direction::Ingress) => Direction::Ingress,
        Ok(pb::Direction::Egress) => Direction::Egress,
        Err(_) => return Err(ValidationError::new("filter.direction", format!("unknown direction {}", f.direction))),
    };
    let protocol = protocol("filter.protocol", f.protocol)?;
    let ports = f
        .ports
        .map(|p| PortRange::new(p.first, p.last).map_err(|e| ValidationError::new("filter.port", e.reason)))
        .transpose()?;
    if f.cidrs.len() > teefleet_model::limits::MAX_CIDRS {
        return Err(ValidationError::new(
            "filter.cidrs",
            format!("at most {} CIDRs per session", teefleet_model::limits::MAX_CIDRS),
        ));
    }
    let cidrs = f
        .cidrs
        .iter()
        .enumerate()
        .map(|(i, c)| field::<Cidr>(&format!("filter.cidrs[{i}]"), c))
        .collect::<Result<_, _>>()?;
    Ok(Filter::new(direction, protocol, ports, cidrs)
        .map_err(|e| e.within("filter"))?
        .with_throttle(Throttle::from_zeroable(f.sample, f.max_pps).map_err(|e| e.within("filter"))?))
}

fn protocol(name: &str, value: i32) -> Result<Protocol, ValidationError> {
    match pb::Protocol::try_from(value) {
        Ok(pb::Protocol::Unspecified | pb::Protocol::All) => Ok(Protocol::All),
        Ok(pb::Protocol::Tcp) => Ok(Protocol::Tcp),
        Ok(pb::Protocol::Udp) => Ok(Protocol::Udp),
        Ok(pb::Protocol::Icmp) => Ok(Protocol::Icmp),
        Err(_) => Err(ValidationError::new(name, format!("unknown protocol {value}"))),
    }
}

/// Parses an optional override of the collector's IPv4 address; empty means "use the
/// instance's".
pub fn collector_ip(value: &str) -> Result<Option<Ipv4Addr>, ValidationError> {
    if value.is_empty() {
        return Ok(None);
    }
    let ip: IpAddr =
        value.parse().map_err(|_| ValidationError::new("ip", format!("{value:?} is not an IP address")))?;
    let IpAddr::V4(v4) = ip else {
        return Err(ValidationError::new("ip", format!("{ip} is an IPv6 address; give it as the collector's ipv6")));
    };
    teefleet_model::check_gateway(ip).map_err(|e| ValidationError::new("ip", e.reason))?;
    Ok(Some(v4))
}

/// Parses an optional override of the collector's IPv6 address; empty means "use the
/// instance's, if it has one".
pub fn collector_ipv6(value: &str) -> Result<Option<Ipv6Addr>, ValidationError> {
    if value.is_empty() {
        return Ok(None);
    }
    let bad = |why: String| ValidationError::new("ipv6", why);
    let ip: IpAddr = value.parse().map_err(|_| bad(format!("{value:?} is not an IP address")))?;
    let IpAddr::V6(v6) = ip else {
        return Err(bad(format!("{ip} is an IPv4 address; give it as the collector's ip")));
    };
    unicast_ipv6(v6).map_err(bad)?;
    Ok(Some(v6))
}

/// Whether an IPv6 address can be a TEE gateway: unicast, not link-local (which needs an
/// interface to mean anything) and not an IPv4 address in disguise.
pub fn unicast_ipv6(ip: Ipv6Addr) -> Result<(), String> {
    if ip.to_ipv4_mapped().is_some() {
        return Err(format!("{ip} is an IPv4-mapped address; give the IPv4 address as the collector's ip"));
    }
    if ip.is_unicast_link_local() {
        return Err(format!("{ip} is link-local; the collector needs a global or unique local address"));
    }
    teefleet_model::check_gateway(IpAddr::V6(ip)).map_err(|e| e.reason)
}

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

fn pb_direction(d: Direction) -> pb::Direction {
    match d {
        Direction::Ingress => pb::Direction::Ingress,
        Direction::Egress => pb::Direction::Egress,
        Direction::Both => pb::Direction::Both,
    }
}

fn pb_protocol(p: Protocol) -> pb::Protocol {
    match p {
        Protocol::All => pb::Protocol::All,
        Protocol::Tcp => pb::Protocol::Tcp,
        Protocol::Udp => pb::Protocol::Udp,
        Protocol::Icmp => pb::Protocol::Icmp,
    }
}

fn pb_ports(p: PortRange) -> pb::PortRange {
    pb::PortRange { first: p.first().into(), last: p.last().into() }
}

pub fn pb_filter(f: &Filter) -> pb::Filter {
    pb::Filter {
        direction: pb_direction(f.direction()).into(),
        protocol: pb_protocol(f.protocol()).into(),
        ports: f.ports().map(pb_ports),
        cidrs: f.cidrs().iter().map(ToString::to_string).collect(),
        sample: f.throttle().sample.map_or(0.0, Sample::fraction),
        max_pps: f.throttle().max_pps.map_or(0, MaxPps::get),
    }
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
        filter: Some(pb_filter(r.spec.filter())),
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

/// A collector's encapsulation; empty means the default, VXLAN.
pub fn encap(text: &str) -> Result<Encap, ValidationError> {
    if text.is_empty() { Ok(Encap::default()) } else { text.parse() }
}

/// The VNI a session asks for; 0 lets the controller choose.
pub fn vni(value: u32) -> Result<Option<Vni>, ValidationError> {
    (value != 0).then(|| Vni::new(value)).transpose()
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

pub fn pb_rule_set(set: &RuleSet) -> pb::RuleSet {
    pb::RuleSet { version: set.version(), rules: set.rules().iter().map(pb_rule).collect(), collector: set.collector() }
}

fn pb_rule(r: &MirrorRule) -> pb::MirrorRule {
    pb::MirrorRule {
        session: r.session().to_string(),
        direction: match r.direction() {
            RuleDirection::Ingress => pb::Direction::Ingress,
            RuleDirection::Egress => pb::Direction::Egress,
        }
        .into(),
        gateway: r.gateway().map(|g| g.to_string()).unwrap_or_default(),
        protocol: pb_protocol(r.protocol()).into(),
        ports: r.ports().map(pb_ports),
        peer_cidr: r.peer().map(|c| c.to_string()).unwrap_or_default(),
        sample: r.throttle().sample.map_or(0.0, Sample::fraction),
        max_pps: r.throttle().max_pps.map_or(0, MaxPps::get),
        vni: r.tunnel().map_or(0, |t| t.vni().get()),
        vxlan_remote: r.tunnel().map(|t| t.remote().to_string()).unwrap_or_default(),
        family: match (r.tunnel(), r.family()) {
            (None, _) => pb::IpFamily::Unspecified,
            (Some(_), IpFamily::Ipv4) => pb::IpFamily::Ipv4,
            (Some(_), IpFamily::Ipv6) => pb::IpFamily::Ipv6,
        }
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_errors_name_the_field() {
        let bad = |f: pb::Filter| filter(Some(&f)).unwrap_err().to_string();
        assert!(
            bad(pb::Filter { cidrs: vec!["10.0.0.0/8".into(), "nope".into()], ..Default::default() })
                .starts_with("filter.cidrs[1]: ")
        );
        assert!(bad(pb::Filter { direction: 42, ..Default::default() }).starts_with("filter.direction: "));
        assert!(bad(pb::Filter { protocol: 42, ..Default::default() }).starts_with("filter.protocol: "));
        let icmp_port = pb::Filter {
            protocol: pb::Protocol::Icmp.into(),
            ports: Some(pb::PortRange { first: 80, last: 80 }),
            ..Default::default()
        };
        assert_eq!(bad(icmp_port), "filter.port: a port needs protocol tcp or udp, not icmp");
        let zero = pb::Filter {
            protocol: pb::Protocol::Tcp.into(),
            ports: Some(pb::PortRange { first: 0, last: 0 }),
            ..Default::default()
        };
        assert!(bad(zero).starts_with("filter.port: "));
    }

    #[test]
    fn source_tags_name_the_entry_and_are_bounded() {
        let tags = |list: &[&str]| source_tags(&list.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>());
        let ok = tags(&["role=web", "env=prod"]).expect("valid");
        assert_eq!(ok.iter().map(ToString::to_string).collect::<Vec<_>>(), ["role=web", "env=prod"]);
        assert_eq!(
            tags(&["role=web", "role"]).unwrap_err().to_string(),
            "source_tags[1]: \"role\" is not KEY=VALUE, e.g. role=web"
        );
        let nine: Vec<String> = (0..9).map(|i| format!("k{i}=v")).collect();
        let err = source_tags(&nine).unwrap_err();
        assert_eq!(err.field, "source_tags");
        assert!(err.reason.starts_with("9 tags given; at most 8"), "{err}");
    }

    #[test]
    fn defaults_are_both_and_all() {
        let f = filter(None).expect("default");
        assert_eq!((f.direction(), f.protocol()), (Direction::Both, Protocol::All));
    }

    #[test]
    fn collector_ip_override() {
        assert_eq!(collector_ip("").expect("empty"), None);
        assert!(collector_ip("10.0.0.1").expect("v4").is_some());
        for bad in ["0.0.0.0", "x", "fe80::1", "224.0.0.1", "fd00::1"] {
            assert_eq!(collector_ip(bad).unwrap_err().field, "ip", "{bad}");
        }
    }

    #[test]
    fn collector_ipv6_override() {
        assert_eq!(collector_ipv6("").expect("empty"), None);
        assert_eq!(collector_ipv6("2001:db8::9").expect("v6"), "2001:db8::9".parse().ok());
        assert!(collector_ipv6("fd00::9").expect("unique local").is_some());
        for bad in ["10.0.0.1", "x", "::", "::1", "ff02::1", "fe80::1", "::ffff:10.0.0.1", "fd00::/64"] {
            let err = collector_ipv6(bad).unwrap_err();
            assert_eq!(err.field, "ipv6", "{bad}");
            assert!(!err.reason.is_empty());
        }
    }

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

    #[test]
    fn rule_sets_round_trip_into_proto() {
        let rule = MirrorRule::new(
            "s".parse().expect("name"),
            RuleDirection::Egress,
            "10.0.0.9".parse().expect("ip"),
            Protocol::Tcp,
            Some(PortRange::new(80, 81).expect("ports")),
            Some("10.1.0.0/16".parse().expect("cidr")),
        )
        .expect("rule");
        let set = RuleSet::new(7, vec![rule]).expect("set");
        let pb = pb_rule_set(&set);
        assert_eq!(pb.version, 7);
        assert_eq!(pb.rules[0].peer_cidr, "10.1.0.0/16");
        assert_eq!(pb.rules[0].ports, Some(pb::PortRange { first: 80, last: 81 }));
        assert_eq!(pb.rules[0].direction, i32::from(pb::Direction::Egress));
    }
}
