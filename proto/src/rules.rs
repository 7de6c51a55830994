//! Rule sets, which the controller pushes and every agent re-validates: a controller bug
//! or compromise must not reach iptables.

use std::net::IpAddr;

use teefleet_model::{
    Arrival, Cidr, HostId, MaxPps, MirrorRule, PortRange, RuleSet, Sample, SessionName, Throttle, Tunnel,
    ValidationError, Vni,
};

use crate::{enums, v1 as pb};

impl TryFrom<pb::RuleSet> for RuleSet {
    type Error = ValidationError;

    /// One refused rule refuses the whole set, named by its index.
    fn try_from(set: pb::RuleSet) -> Result<Self, Self::Error> {
        let rules = set
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| MirrorRule::try_from(r).map_err(|e| e.within(format!("rules[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        let arrivals = set
            .arrivals
            .into_iter()
            .enumerate()
            .map(|(i, a)| Arrival::try_from(a).map_err(|e| e.within(format!("arrivals[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        RuleSet::new(set.version, rules)?.with_collector(set.collector).with_arrivals(arrivals)
    }
}

impl TryFrom<pb::Arrival> for Arrival {
    type Error = ValidationError;

    fn try_from(a: pb::Arrival) -> Result<Self, Self::Error> {
        let session: SessionName = a.session.parse().map_err(at("session"))?;
        let source: HostId = a.source.parse().map_err(at("source"))?;
        let from = address("address", &a.address)?;
        let vni = if a.vni == 0 { None } else { Some(Vni::new(a.vni)?) };
        Ok(Arrival::new(session, source, from, vni))
    }
}

impl From<&Arrival> for pb::Arrival {
    fn from(a: &Arrival) -> Self {
        pb::Arrival {
            session: a.session().to_string(),
            source: a.source().to_string(),
            address: a.from().to_string(),
            vni: a.vni().map_or(0, Vni::get),
        }
    }
}

impl From<&RuleSet> for pb::RuleSet {
    fn from(set: &RuleSet) -> Self {
        pb::RuleSet {
            version: set.version(),
            rules: set.rules().iter().map(pb::MirrorRule::from).collect(),
            collector: set.collector(),
            arrivals: set.arrivals().iter().map(pb::Arrival::from).collect(),
        }
    }
}

impl TryFrom<pb::MirrorRule> for MirrorRule {
    type Error = ValidationError;

    fn try_from(r: pb::MirrorRule) -> Result<Self, Self::Error> {
        let session: SessionName = r.session.parse().map_err(at("session"))?;
        let direction = enums::rule_direction(r.direction)?;
        let protocol = enums::protocol(r.protocol)?;
        let ports = r.ports.map(PortRange::try_from).transpose().map_err(at("ports"))?;
        let peer =
            if r.peer_cidr.is_empty() { None } else { Some(r.peer_cidr.parse::<Cidr>().map_err(at("peer_cidr"))?) };
        let throttle = Throttle::from_zeroable(r.sample, r.max_pps)?;
        let rule = if r.vni == 0 {
            let gateway = address("gateway", &r.gateway)?;
            MirrorRule::new(session, direction, gateway, protocol, ports, peer)?
        } else {
            let remote = address("vxlan_remote", &r.vxlan_remote)?;
            let tunnel = Tunnel::new(Vni::new(r.vni)?, remote).map_err(at("vxlan_remote"))?;
            MirrorRule::tunnelled(session, direction, enums::family(r.family)?, tunnel, protocol, ports, peer)?
        };
        Ok(rule.with_throttle(throttle))
    }
}

impl From<&MirrorRule> for pb::MirrorRule {
    fn from(r: &MirrorRule) -> Self {
        let throttle = r.throttle();
        pb::MirrorRule {
            session: r.session().to_string(),
            direction: pb::Direction::from(r.direction()).into(),
            gateway: r.gateway().map(|g| g.to_string()).unwrap_or_default(),
            protocol: pb::Protocol::from(r.protocol()).into(),
            ports: r.ports().map(pb::PortRange::from),
            peer_cidr: r.peer().map(|c| c.to_string()).unwrap_or_default(),
            sample: throttle.sample.map_or(0.0, Sample::fraction),
            max_pps: throttle.max_pps.map_or(0, MaxPps::get),
            vni: r.tunnel().map_or(0, |t| t.vni().get()),
            vxlan_remote: r.tunnel().map(|t| t.remote().to_string()).unwrap_or_default(),
            // Only a tunnelled rule carries its family: a raw rule's is its gateway's.
            family: r.tunnel().map_or(pb::IpFamily::Unspecified, |_| r.family().into()).into(),
        }
    }
}

impl TryFrom<pb::PortRange> for PortRange {
    type Error = ValidationError;

    fn try_from(p: pb::PortRange) -> Result<Self, Self::Error> {
        PortRange::new(p.first, p.last)
    }
}

impl From<PortRange> for pb::PortRange {
    fn from(p: PortRange) -> Self {
        pb::PortRange { first: p.first().into(), last: p.last().into() }
    }
}

/// Reports an error under the wire's field name, whatever name the model used.
pub(crate) fn at(field: &'static str) -> impl Fn(ValidationError) -> ValidationError {
    move |e| ValidationError::new(field, e.reason)
}

fn address(field: &'static str, text: &str) -> Result<IpAddr, ValidationError> {
    text.parse().map_err(|_| ValidationError::new(field, format!("{text:?} is not an IP address")))
}

#[cfg(test)]
mod tests {
    use teefleet_model::{IpFamily, Protocol, RuleDirection};

    use super::*;

    fn good() -> pb::MirrorRule {
        pb::MirrorRule {
            session: "web".into(),
            direction: pb::Direction::Ingress as i32,
            gateway: "10.0.0.5".into(),
            protocol: pb::Protocol::Tcp as i32,
            ports: Some(pb::PortRange { first: 80, last: 90 }),
            peer_cidr: "10.1.0.0/16".into(),
            sample: 0.25,
            max_pps: 100,
            ..Default::default()
        }
    }

    #[test]
    fn a_vxlan_rule_needs_its_vni_remote_and_family() {
        let vxlan = pb::MirrorRule {
            gateway: String::new(),
            vni: 42,
            vxlan_remote: "10.0.0.9".into(),
            family: pb::IpFamily::Ipv6 as i32,
            peer_cidr: String::new(),
            ..good()
        };
        let set = convert(vec![vxlan.clone()]).expect("valid");
        let tunnel = set.rules()[0].tunnel().expect("tunnelled");
        assert_eq!((tunnel.vni().get(), tunnel.remote().to_string()), (42, "10.0.0.9".to_owned()));
        assert_eq!(set.rules()[0].family(), IpFamily::Ipv6);
        let no_family = pb::MirrorRule { family: 0, ..vxlan.clone() };
        assert_eq!(convert(vec![no_family]).unwrap_err().to_string(), "rules[0].family: 0 is not IPV4 or IPV6");
        let big = pb::MirrorRule { vni: 1 << 24, ..vxlan.clone() };
        assert_eq!(convert(vec![big]).unwrap_err().field, "rules[0].vni");
        let remote = pb::MirrorRule { vxlan_remote: "0.0.0.0".into(), ..vxlan };
        assert_eq!(convert(vec![remote]).unwrap_err().field, "rules[0].vxlan_remote");
    }

    fn convert(rules: Vec<pb::MirrorRule>) -> Result<RuleSet, ValidationError> {
        RuleSet::try_from(pb::RuleSet { version: 3, rules, collector: false, arrivals: vec![] })
    }

    #[test]
    fn converts_a_valid_rule() {
        let set = convert(vec![good()]).expect("valid");
        assert_eq!(set.version(), 3);
        let r = &set.rules()[0];
        assert_eq!((r.session().as_str(), r.direction(), r.protocol()), ("web", RuleDirection::Ingress, Protocol::Tcp));
        assert_eq!(r.ports().map(|p| (p.first(), p.last())), Some((80, 90)));
        assert_eq!(r.peer().map(|p| p.to_string()), Some("10.1.0.0/16".into()));
        assert_eq!(
            (r.throttle().sample.map(|s| s.ppm()), r.throttle().max_pps.map(|m| m.get())),
            (Some(250_000), Some(100))
        );
        let unset = pb::MirrorRule { protocol: 0, ports: None, peer_cidr: String::new(), ..good() };
        let r = convert(vec![unset]).expect("valid");
        assert_eq!((r.rules()[0].protocol(), r.rules()[0].peer()), (Protocol::All, None));
    }

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(pb::MirrorRule, &str)> = vec![
            (pb::MirrorRule { session: "a b".into(), ..good() }, "rules[1].session"),
            (pb::MirrorRule { session: "-j ACCEPT".into(), ..good() }, "rules[1].session"),
            (pb::MirrorRule { direction: pb::Direction::Both as i32, ..good() }, "rules[1].direction"),
            (pb::MirrorRule { direction: 0, ..good() }, "rules[1].direction"),
            (pb::MirrorRule { gateway: "10.0.0.5 -j DROP".into(), ..good() }, "rules[1].gateway"),
            (pb::MirrorRule { gateway: "0.0.0.0".into(), ..good() }, "rules[1].gateway"),
            (pb::MirrorRule { protocol: 99, ..good() }, "rules[1].protocol"),
            (pb::MirrorRule { ports: Some(pb::PortRange { first: 0, last: 1 }), ..good() }, "rules[1].ports"),
            (pb::MirrorRule { protocol: pb::Protocol::Icmp as i32, ..good() }, "rules[1].ports"),
            (pb::MirrorRule { peer_cidr: "10.1.0.1/16".into(), ..good() }, "rules[1].peer_cidr"),
            (pb::MirrorRule { peer_cidr: "fd00::/8".into(), ..good() }, "rules[1].peer_cidr"),
            (pb::MirrorRule { sample: 1.5, ..good() }, "rules[1].sample"),
            (pb::MirrorRule { sample: f64::NAN, ..good() }, "rules[1].sample"),
            (pb::MirrorRule { max_pps: 2_000_000, ..good() }, "rules[1].max_pps"),
        ];
        for (bad, field) in cases {
            let err = convert(vec![good(), bad.clone()]).expect_err("invalid");
            assert_eq!(err.field, field, "{bad:?}: {err}");
            assert!(err.to_string().starts_with(field), "{err}");
        }
    }
}
