//! Conversions between `fleet.v1` messages and domain types: requests are validated into
//! domain types here and nowhere else.

use std::net::IpAddr;

use teefleet_model::{
    Cidr, Direction, Filter, HostId, InstanceId, MaxPps, MirrorRule, PortRange, Protocol, RuleDirection, RuleSet,
    Sample, SessionName, Throttle, ValidationError,
};
use teefleet_proto::v1 as pb;

use crate::{
    status::{SessionState, StatusView},
    store::{CollectorRecord, HostRecord, SessionRecord},
};

fn field<T: std::str::FromStr<Err = ValidationError>>(name: &str, value: &str) -> Result<T, ValidationError> {
    value.parse().map_err(|e: ValidationError| ValidationError::new(name, e.reason))
}

pub fn session_name(value: &str) -> Result<SessionName, ValidationError> {
    field("name", value)
}

pub fn instance_id(name: &str, value: &str) -> Result<InstanceId, ValidationError> {
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

/// Parses an optional collector address override; empty means "use the instance's".
pub fn collector_ip(value: &str) -> Result<Option<IpAddr>, ValidationError> {
    if value.is_empty() {
        return Ok(None);
    }
    let ip: IpAddr =
        value.parse().map_err(|_| ValidationError::new("ip", format!("{value:?} is not an IP address")))?;
    if ip.is_ipv6() {
        return Err(ValidationError::new("ip", "IPv6 collectors are not supported yet"));
    }
    teefleet_model::check_gateway(ip).map_err(|e| ValidationError::new("ip", e.reason))?;
    Ok(Some(ip))
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
        sources: r.spec.sources().iter().map(ToString::to_string).collect(),
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
                ..Default::default()
            })
            .collect(),
        problems: status.problems.clone(),
        created_at: r.created_at.to_rfc3339(),
        ..Default::default()
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
        ..Default::default()
    }
}

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
        ..Default::default()
    }
}

pub fn pb_rule_set(set: &RuleSet) -> pb::RuleSet {
    pb::RuleSet { version: set.version(), rules: set.rules().iter().map(pb_rule).collect() }
}

fn pb_rule(r: &MirrorRule) -> pb::MirrorRule {
    pb::MirrorRule {
        session: r.session().to_string(),
        direction: match r.direction() {
            RuleDirection::Ingress => pb::Direction::Ingress,
            RuleDirection::Egress => pb::Direction::Egress,
        }
        .into(),
        gateway: r.gateway().to_string(),
        protocol: pb_protocol(r.protocol()).into(),
        ports: r.ports().map(pb_ports),
        peer_cidr: r.peer().map(|c| c.to_string()).unwrap_or_default(),
        sample: r.throttle().sample.map_or(0.0, Sample::fraction),
        max_pps: r.throttle().max_pps.map_or(0, MaxPps::get),
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
    fn defaults_are_both_and_all() {
        let f = filter(None).expect("default");
        assert_eq!((f.direction(), f.protocol()), (Direction::Both, Protocol::All));
    }

    #[test]
    fn collector_ip_override() {
        assert_eq!(collector_ip("").expect("empty"), None);
        assert!(collector_ip("10.0.0.1").expect("v4").is_some());
        for bad in ["0.0.0.0", "x", "fe80::1", "224.0.0.1"] {
            assert_eq!(collector_ip(bad).unwrap_err().field, "ip", "{bad}");
        }
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
