//! Admin requests: what an operator asks for, checked field by field before anything is
//! looked up or stored. fleetctl encodes with the same code, so it can check locally too.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use teefleet_model::{
    Cidr, CollectorId, Encap, Filter, FilterChange, HostId, MaxLoss, MaxPps, PortRange, Sample, SessionName,
    SessionSpec, SessionUpdate, TagSelector, Throttle, Ttl, TtlChange, ValidationError, Vni, check_collector_ipv6,
    check_gateway, limits,
};

use crate::{enums, rules::at, v1 as pb};

/// Parses one text field, reporting any error under `name`.
pub fn field<T: FromStr<Err = ValidationError>>(name: &str, value: &str) -> Result<T, ValidationError> {
    value.parse().map_err(|e: ValidationError| ValidationError::new(name, e.reason))
}

/// A list field, counted before any element is parsed (so a request with a million of
/// them costs nothing), then each element parsed and named by its index.
fn list<'a, T: FromStr<Err = ValidationError>>(
    name: &'a str,
    values: &'a [String],
    max: usize,
    too_many: impl FnOnce() -> String,
) -> Result<impl Iterator<Item = Result<T, ValidationError>> + 'a, ValidationError> {
    if values.len() > max {
        return Err(ValidationError::new(name, too_many()));
    }
    Ok(values.iter().enumerate().map(move |(i, v)| field(&format!("{name}[{i}]"), v)))
}

fn source_list(values: &[String]) -> Result<impl Iterator<Item = Result<HostId, ValidationError>>, ValidationError> {
    named_source_list("sources", values)
}

fn named_source_list<'a>(
    name: &'a str,
    values: &'a [String],
) -> Result<impl Iterator<Item = Result<HostId, ValidationError>> + 'a, ValidationError> {
    list(name, values, limits::MAX_SOURCES, || format!("at most {} sources per session", limits::MAX_SOURCES))
}

fn tag_list(values: &[String]) -> Result<impl Iterator<Item = Result<TagSelector, ValidationError>>, ValidationError> {
    named_tag_list("source_tags", values)
}

fn named_tag_list<'a>(
    name: &'a str,
    values: &'a [String],
) -> Result<impl Iterator<Item = Result<TagSelector, ValidationError>> + 'a, ValidationError> {
    list(name, values, limits::MAX_SELECTORS, || {
        format!(
            "{} tags given; at most {} per session (an instance must carry all of them)",
            values.len(),
            limits::MAX_SELECTORS
        )
    })
}

fn cidr_list(values: &[String]) -> Result<impl Iterator<Item = Result<Cidr, ValidationError>>, ValidationError> {
    list("cidrs", values, limits::MAX_CIDRS, || format!("at most {} CIDRs per session", limits::MAX_CIDRS))
}

/// A session's named sources.
fn sources(values: &[String]) -> Result<Vec<HostId>, ValidationError> {
    source_list(values)?.collect()
}

/// The session's tags, each `KEY=VALUE`.
fn source_tags(values: &[String]) -> Result<Vec<TagSelector>, ValidationError> {
    tag_list(values)?.collect()
}

/// The problems of a list: its count, or else each bad element.
fn list_problems<T>(
    parsed: Result<impl Iterator<Item = Result<T, ValidationError>>, ValidationError>,
) -> Vec<ValidationError> {
    match parsed {
        Err(e) => vec![e],
        Ok(items) => items.filter_map(Result::err).collect(),
    }
}

/// An optional override of the collector's IPv4 address; empty means "use the
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
    check_gateway(ip).map_err(at("ip"))?;
    Ok(Some(v4))
}

/// An optional override of the collector's IPv6 address; empty means "use the
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
    check_collector_ipv6(v6)?;
    Ok(Some(v6))
}

/// A collector's encapsulation; empty means the default, VXLAN.
pub fn encap(text: &str) -> Result<Encap, ValidationError> {
    if text.is_empty() { Ok(Encap::default()) } else { text.parse() }
}

/// A session's lifetime in seconds; 0 means it lives until deleted.
pub fn session_ttl(seconds: u64) -> Result<Option<Ttl>, ValidationError> {
    (seconds != 0).then(|| Ttl::from_secs(seconds)).transpose().map_err(at("ttl_seconds"))
}

/// The VNI a session asks for; 0 lets the controller choose.
fn vni(value: u32) -> Result<Option<Vni>, ValidationError> {
    (value != 0).then(|| Vni::new(value)).transpose()
}

impl TryFrom<&pb::CreateSessionRequest> for SessionSpec {
    type Error = ValidationError;

    fn try_from(req: &pb::CreateSessionRequest) -> Result<Self, Self::Error> {
        let name: SessionName = field("name", &req.name)?;
        let sources = sources(&req.sources)?;
        let tags = source_tags(&req.source_tags)?;
        let collector: CollectorId = field("collector", &req.collector)?;
        let filter = req.filter.as_ref().map(Filter::try_from).transpose().map_err(|e| e.within("filter"))?;
        Ok(SessionSpec::selecting(name, sources, tags, collector, filter.unwrap_or_default())?
            .with_allow_routed(req.allow_routed)
            .with_vni(vni(req.vni)?)
            .with_disable_source_check(req.disable_source_check)
            .with_max_loss(req.max_loss.map(MaxLoss::new).transpose()?.unwrap_or_default()))
    }
}

/// Every problem of a create-session request, not only the first: each field is checked
/// on its own, and the checks across fields (ports need tcp or udp, the collector is not
/// a source) once every field is valid. fleetctl shows them all before sending.
pub fn create_session_problems(req: &pb::CreateSessionRequest) -> Vec<ValidationError> {
    let mut problems = Vec::new();
    problems.extend(field::<SessionName>("name", &req.name).err());
    problems.extend(list_problems(source_list(&req.sources)));
    problems.extend(list_problems(tag_list(&req.source_tags)));
    problems.extend(field::<CollectorId>("collector", &req.collector).err());
    problems.extend(vni(req.vni).err());
    problems.extend(req.max_loss.map(MaxLoss::new).and_then(Result::err));
    problems.extend(session_ttl(req.ttl_seconds).err());
    if let Some(f) = &req.filter {
        let within = |e: ValidationError| e.within("filter");
        problems.extend(enums::direction(f.direction).map_err(within).err());
        problems.extend(enums::protocol(f.protocol).map_err(within).err());
        problems.extend(f.ports.map(PortRange::try_from).transpose().map_err(at("port")).map_err(within).err());
        problems.extend(list_problems(cidr_list(&f.cidrs)).into_iter().map(within));
        problems.extend(Throttle::from_zeroable(f.sample, 0).map_err(within).err());
        problems.extend(Throttle::from_zeroable(0.0, f.max_pps).map_err(within).err());
    }
    if problems.is_empty() {
        problems.extend(SessionSpec::try_from(req).err());
    }
    problems
}

impl From<&SessionSpec> for pb::CreateSessionRequest {
    fn from(spec: &SessionSpec) -> Self {
        pb::CreateSessionRequest {
            name: spec.name().to_string(),
            sources: spec.sources().iter().map(ToString::to_string).collect(),
            collector: spec.collector().to_string(),
            filter: Some(spec.filter().into()),
            allow_routed: spec.allow_routed(),
            source_tags: spec.selectors().iter().map(ToString::to_string).collect(),
            vni: spec.vni().map_or(0, Vni::get),
            disable_source_check: spec.disable_source_check(),
            max_loss: Some(spec.max_loss().get()),
            ttl_seconds: 0,
        }
    }
}

impl TryFrom<&pb::UpdateSessionRequest> for SessionUpdate {
    type Error = ValidationError;

    fn try_from(req: &pb::UpdateSessionRequest) -> Result<Self, Self::Error> {
        Ok(SessionUpdate {
            filter: FilterChange {
                direction: req.direction.map(enums::direction).transpose().map_err(at("direction"))?,
                protocol: req.protocol.map(enums::protocol).transpose().map_err(at("protocol"))?,
                ports: update_ports(req)?,
                cidrs: req.cidrs.as_ref().map(|c| cidr_list(&c.cidrs)?.collect()).transpose()?,
                sample: update_sample(req)?,
                max_pps: update_max_pps(req)?,
            },
            add_sources: named_source_list("add_sources", &req.add_sources)?.collect::<Result<_, _>>()?,
            remove_sources: named_source_list("remove_sources", &req.remove_sources)?.collect::<Result<_, _>>()?,
            add_tags: named_tag_list("add_source_tags", &req.add_source_tags)?.collect::<Result<_, _>>()?,
            remove_tags: named_tag_list("remove_source_tags", &req.remove_source_tags)?.collect::<Result<_, _>>()?,
            ttl: update_ttl(req)?,
            max_loss: req.max_loss.map(MaxLoss::new).transpose()?,
            ..SessionUpdate::new(field("name", &req.name)?)
        })
    }
}

fn update_ports(req: &pb::UpdateSessionRequest) -> Result<Option<Option<PortRange>>, ValidationError> {
    req.port.as_ref().map(|p| p.ports.map(PortRange::try_from).transpose()).transpose().map_err(at("port"))
}

fn update_sample(req: &pb::UpdateSessionRequest) -> Result<Option<Option<Sample>>, ValidationError> {
    req.sample.map(|s| Throttle::from_zeroable(s, 0).map(|t| t.sample)).transpose()
}

fn update_max_pps(req: &pb::UpdateSessionRequest) -> Result<Option<Option<MaxPps>>, ValidationError> {
    req.max_pps.map(|m| Throttle::from_zeroable(0.0, m).map(|t| t.max_pps)).transpose()
}

fn update_ttl(req: &pb::UpdateSessionRequest) -> Result<TtlChange, ValidationError> {
    Ok(match req.ttl_seconds.map(session_ttl).transpose()? {
        None => TtlChange::Keep,
        Some(None) => TtlChange::Clear,
        Some(Some(ttl)) => TtlChange::Set(ttl),
    })
}

/// Every problem of an update-session request, each field checked on its own, in the
/// request's order; fleetctl shows them all before sending.
pub fn update_session_problems(req: &pb::UpdateSessionRequest) -> Vec<ValidationError> {
    let mut problems = Vec::new();
    problems.extend(field::<SessionName>("name", &req.name).err());
    problems.extend(req.direction.map(enums::direction).transpose().map_err(at("direction")).err());
    problems.extend(req.protocol.map(enums::protocol).transpose().map_err(at("protocol")).err());
    problems.extend(update_ports(req).err());
    problems.extend(req.cidrs.as_ref().map(|c| list_problems(cidr_list(&c.cidrs))).unwrap_or_default());
    problems.extend(update_sample(req).err());
    problems.extend(update_max_pps(req).err());
    problems.extend(list_problems(named_source_list("add_sources", &req.add_sources)));
    problems.extend(list_problems(named_source_list("remove_sources", &req.remove_sources)));
    problems.extend(list_problems(named_tag_list("add_source_tags", &req.add_source_tags)));
    problems.extend(list_problems(named_tag_list("remove_source_tags", &req.remove_source_tags)));
    problems.extend(update_ttl(req).err());
    problems.extend(req.max_loss.map(MaxLoss::new).and_then(Result::err));
    problems
}

fn texts<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

impl From<&SessionUpdate> for pb::UpdateSessionRequest {
    fn from(u: &SessionUpdate) -> Self {
        let f = &u.filter;
        pb::UpdateSessionRequest {
            name: u.name.to_string(),
            direction: f.direction.map(|d| pb::Direction::from(d).into()),
            protocol: f.protocol.map(|p| pb::Protocol::from(p).into()),
            port: f.ports.map(|ports| pb::PortsUpdate { ports: ports.map(pb::PortRange::from) }),
            cidrs: f.cidrs.as_ref().map(|c| pb::CidrsUpdate { cidrs: texts(c) }),
            sample: f.sample.map(|s| s.map_or(0.0, Sample::fraction)),
            max_pps: f.max_pps.map(|m| m.map_or(0, MaxPps::get)),
            add_sources: texts(&u.add_sources),
            remove_sources: texts(&u.remove_sources),
            add_source_tags: texts(&u.add_tags),
            remove_source_tags: texts(&u.remove_tags),
            ttl_seconds: match u.ttl {
                TtlChange::Keep => None,
                TtlChange::Clear => Some(0),
                TtlChange::Set(ttl) => Some(ttl.secs()),
            },
            max_loss: u.max_loss.map(MaxLoss::get),
        }
    }
}

impl TryFrom<&pb::Filter> for Filter {
    type Error = ValidationError;

    /// Fields are named within the filter (`cidrs[1]`); a request names it `filter`.
    fn try_from(f: &pb::Filter) -> Result<Self, Self::Error> {
        let direction = enums::direction(f.direction)?;
        let protocol = enums::protocol(f.protocol)?;
        let ports = f.ports.map(PortRange::try_from).transpose().map_err(at("port"))?;
        let cidrs = cidr_list(&f.cidrs)?.collect::<Result<_, _>>()?;
        Ok(Filter::new(direction, protocol, ports, cidrs)?.with_throttle(Throttle::from_zeroable(f.sample, f.max_pps)?))
    }
}

impl From<&Filter> for pb::Filter {
    fn from(f: &Filter) -> Self {
        pb::Filter {
            direction: pb::Direction::from(f.direction()).into(),
            protocol: pb::Protocol::from(f.protocol()).into(),
            ports: f.ports().map(pb::PortRange::from),
            cidrs: f.cidrs().iter().map(ToString::to_string).collect(),
            sample: f.throttle().sample.map_or(0.0, Sample::fraction),
            max_pps: f.throttle().max_pps.map_or(0, MaxPps::get),
        }
    }
}

#[cfg(test)]
mod tests {
    use teefleet_model::{Direction, Protocol};

    use super::*;

    #[test]
    fn filter_errors_name_the_field() {
        let bad = |f: pb::Filter| Filter::try_from(&f).map_err(|e| e.within("filter")).unwrap_err().to_string();
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
        let f = Filter::try_from(&pb::Filter::default()).expect("default");
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
    fn a_request_s_problems_are_all_named_at_once() {
        let req = pb::CreateSessionRequest {
            name: "bad name".into(),
            sources: vec!["i-0123456789abcdef0".into(), "not an id".into()],
            collector: String::new(),
            filter: Some(pb::Filter {
                ports: Some(pb::PortRange { first: 0, last: 70000 }),
                cidrs: vec!["10.0.0.0/8".into(), "10.0.0.1/8".into()],
                sample: 2.0,
                ..Default::default()
            }),
            vni: 1 << 24,
            ..Default::default()
        };
        let fields: Vec<_> = create_session_problems(&req).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["name", "sources[1]", "collector", "vni", "filter.port", "filter.cidrs[1]", "filter.sample"],
            "each bad field once, in the request's order"
        );
        // Too many CIDRs is one problem, beside a bad direction named once.
        let many = pb::CreateSessionRequest {
            filter: Some(pb::Filter { direction: 42, cidrs: vec!["10.0.0.0/8".into(); 40], ..Default::default() }),
            ..req.clone()
        };
        let fields: Vec<_> = create_session_problems(&many).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["name", "sources[1]", "collector", "vni", "filter.direction", "filter.cidrs"]);
        // Only when every field is valid are the checks across fields made.
        let icmp_port = pb::CreateSessionRequest {
            name: "web".into(),
            sources: vec!["i-0123456789abcdef0".into()],
            collector: "i-0123456789abcdef1".into(),
            filter: Some(pb::Filter {
                protocol: pb::Protocol::Icmp.into(),
                ports: Some(pb::PortRange { first: 80, last: 80 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let problems = create_session_problems(&icmp_port);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].to_string(), "filter.port: a port needs protocol tcp or udp, not icmp");
        let fine = pb::CreateSessionRequest { filter: None, ..icmp_port };
        assert!(create_session_problems(&fine).is_empty());
        assert!(SessionSpec::try_from(&fine).is_ok());
    }

    #[test]
    fn an_update_survives_the_wire_and_its_problems_are_all_named() {
        let update = SessionUpdate {
            filter: FilterChange {
                direction: Some(Direction::Egress),
                protocol: Some(Protocol::Udp),
                ports: Some(None),
                cidrs: Some(vec!["10.0.0.0/8".parse().expect("cidr")]),
                sample: Some(Some(Sample::from_fraction(0.25).expect("sample"))),
                max_pps: Some(None),
            },
            add_sources: vec!["i-0123456789abcdef0".parse().expect("host")],
            remove_sources: vec!["h1".parse().expect("host")],
            add_tags: vec!["role=db".parse().expect("tag")],
            remove_tags: vec!["role=web".parse().expect("tag")],
            ttl: TtlChange::Set(Ttl::from_secs(3_600).expect("ttl")),
            ..SessionUpdate::new("web".parse().expect("name"))
        };
        let wire = pb::UpdateSessionRequest::from(&update);
        assert_eq!(SessionUpdate::try_from(&wire), Ok(update.clone()));
        assert!(update_session_problems(&wire).is_empty());
        let cleared = SessionUpdate { ttl: TtlChange::Clear, ..SessionUpdate::new("web".parse().expect("name")) };
        let wire = pb::UpdateSessionRequest::from(&cleared);
        assert_eq!((wire.ttl_seconds, wire.port.is_none(), wire.sample), (Some(0), true, None));
        assert_eq!(SessionUpdate::try_from(&wire), Ok(cleared));

        let bad = pb::UpdateSessionRequest {
            name: "bad name".into(),
            port: Some(pb::PortsUpdate { ports: Some(pb::PortRange { first: 0, last: 1 }) }),
            cidrs: Some(pb::CidrsUpdate { cidrs: vec!["10.0.0.0/8".into(), "nope".into()] }),
            sample: Some(2.0),
            add_sources: vec!["bad host!".into()],
            remove_source_tags: vec!["role".into()],
            ttl_seconds: Some(30),
            ..Default::default()
        };
        let fields: Vec<_> = update_session_problems(&bad).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["name", "port", "cidrs[1]", "sample", "add_sources[0]", "remove_source_tags[0]", "ttl_seconds"]
        );
        assert_eq!(SessionUpdate::try_from(&bad).unwrap_err().field, "port", "the first in decoding order");
        let ttl = pb::UpdateSessionRequest { name: "web".into(), ttl_seconds: Some(30), ..Default::default() };
        assert_eq!(
            SessionUpdate::try_from(&ttl).unwrap_err().to_string(),
            "ttl_seconds: 30s is not a session lifetime: give 1m to 30d"
        );
    }

    #[test]
    fn a_create_s_ttl_is_bounded() {
        assert_eq!(session_ttl(0), Ok(None));
        assert_eq!(session_ttl(7_200).map(|t| t.map(Ttl::secs)), Ok(Some(7_200)));
        let req = pb::CreateSessionRequest {
            name: "web".into(),
            sources: vec!["i-0123456789abcdef0".into()],
            collector: "i-0123456789abcdef1".into(),
            ttl_seconds: 31 * 86_400,
            ..Default::default()
        };
        let problems = create_session_problems(&req);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "ttl_seconds");
    }
}
