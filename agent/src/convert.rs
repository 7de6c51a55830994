//! The one place where wire types become domain types on the agent.
//!
//! The controller is trusted to send well-formed sets, but the agent validates every
//! field again: a controller bug or compromise must not reach iptables. Errors name the
//! offending field (`rules[2].peer_cidr`) so a Nack tells the operator what to fix.

use teefleet_model::{
    Cidr, IpFamily, MirrorRule, PortRange, Protocol, RuleDirection, RuleSet, SessionName, Throttle, Tunnel,
    ValidationError, Vni,
};
use teefleet_proto::v1 as pb;

/// Converts and validates a pushed rule set.
pub fn rule_set_from_proto(set: pb::RuleSet) -> Result<RuleSet, ValidationError> {
    let rules = set
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| rule_from_proto(r).map_err(|e| e.within(format!("rules[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RuleSet::new(set.version, rules)?.with_collector(set.collector))
}

/// Reports a parse error under the proto field name, whatever name the model used.
fn at(field: &'static str) -> impl Fn(ValidationError) -> ValidationError {
    move |e| ValidationError::new(field, e.reason)
}

fn rule_from_proto(r: pb::MirrorRule) -> Result<MirrorRule, ValidationError> {
    let session: SessionName = r.session.parse().map_err(at("session"))?;
    let direction = match pb::Direction::try_from(r.direction) {
        Ok(pb::Direction::Ingress) => RuleDirection::Ingress,
        Ok(pb::Direction::Egress) => RuleDirection::Egress,
        // The compiler splits BOTH into two rules; anything else here is a controller bug.
        _ => {
            return Err(ValidationError::new("direction", format!("{} is not INGRESS or EGRESS", r.direction)));
        }
    };
    let protocol = match pb::Protocol::try_from(r.protocol) {
        // proto3 sends the zero value for a field that was never set; like Filter, it means all.
        Ok(pb::Protocol::Unspecified | pb::Protocol::All) => Protocol::All,
        Ok(pb::Protocol::Tcp) => Protocol::Tcp,
        Ok(pb::Protocol::Udp) => Protocol::Udp,
        Ok(pb::Protocol::Icmp) => Protocol::Icmp,
        Err(_) => {
            return Err(ValidationError::new("protocol", format!("{} is not a known protocol", r.protocol)));
        }
    };
    let ports = r.ports.map(|p| PortRange::new(p.first, p.last)).transpose().map_err(at("ports"))?;
    let peer = if r.peer_cidr.is_empty() { None } else { Some(r.peer_cidr.parse::<Cidr>().map_err(at("peer_cidr"))?) };
    let throttle = Throttle::from_zeroable(r.sample, r.max_pps)?;
    let rule = if r.vni == 0 {
        let gateway = address("gateway", &r.gateway)?;
        MirrorRule::new(session, direction, gateway, protocol, ports, peer)?
    } else {
        let tunnel =
            Tunnel::new(Vni::new(r.vni)?, address("vxlan_remote", &r.vxlan_remote)?).map_err(at("vxlan_remote"))?;
        let family = match pb::IpFamily::try_from(r.family) {
            Ok(pb::IpFamily::Ipv4) => IpFamily::Ipv4,
            Ok(pb::IpFamily::Ipv6) => IpFamily::Ipv6,
            _ => return Err(ValidationError::new("family", format!("{} is not IPV4 or IPV6", r.family))),
        };
        MirrorRule::tunnelled(session, direction, family, tunnel, protocol, ports, peer)?
    };
    Ok(rule.with_throttle(throttle))
}

fn address(field: &'static str, text: &str) -> Result<std::net::IpAddr, ValidationError> {
    text.parse().map_err(|_| ValidationError::new(field, format!("{text:?} is not an IP address")))
}

#[cfg(test)]
mod tests {
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
        rule_set_from_proto(pb::RuleSet { version: 3, rules, collector: false })
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
