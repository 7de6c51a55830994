//! The compiler: mirroring sessions in, one rule list per source host out. Pure, so the
//! controller can recompute any host's desired state from the database at any time and
//! compare it with what it last pushed.

use std::{collections::BTreeMap, net::IpAddr};

use crate::{Direction, Filter, HostId, MirrorRule, RuleDirection, SessionName, ValidationError};

/// What the compiler needs of one session: its sources, its filter and where its
/// collector is on the network.
#[derive(Debug, Clone)]
pub struct CompileInput {
    pub name: SessionName,
    pub sources: Vec<HostId>,
    pub collector_ip: IpAddr,
    pub filter: Filter,
}

/// Compiles sessions into the rules each source host must hold, sorted and de-duplicated.
/// Hosts without any rule are absent from the map.
pub fn compile(sessions: &[CompileInput]) -> Result<BTreeMap<HostId, Vec<MirrorRule>>, ValidationError> {
    let mut out: BTreeMap<HostId, Vec<MirrorRule>> = BTreeMap::new();
    for session in sessions {
        let rules = session_rules(session).map_err(|e| e.within(format!("session {}", session.name)))?;
        for host in &session.sources {
            out.entry(host.clone()).or_default().extend(rules.iter().cloned());
        }
    }
    for rules in out.values_mut() {
        rules.sort();
        rules.dedup();
    }
    Ok(out)
}

fn session_rules(s: &CompileInput) -> Result<Vec<MirrorRule>, ValidationError> {
    let directions: &[RuleDirection] = match s.filter.direction() {
        Direction::Ingress => &[RuleDirection::Ingress],
        Direction::Egress => &[RuleDirection::Egress],
        Direction::Both => &[RuleDirection::Ingress, RuleDirection::Egress],
    };
    // No CIDR means any peer: one rule per direction. Otherwise one rule per CIDR, since
    // an iptables rule matches a single source or destination network.
    let peers: Vec<_> =
        if s.filter.cidrs().is_empty() { vec![None] } else { s.filter.cidrs().iter().copied().map(Some).collect() };
    let mut rules = Vec::with_capacity(directions.len() * peers.len());
    for &direction in directions {
        for &peer in &peers {
            rules.push(MirrorRule::new(
                s.name.clone(),
                direction,
                s.collector_ip,
                s.filter.protocol(),
                s.filter.ports(),
                peer,
            )?);
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PortRange, Protocol};

    fn input(name: &str, sources: &[&str], collector: &str, filter: Filter) -> CompileInput {
        CompileInput {
            name: name.parse().expect("name"),
            sources: sources.iter().map(|s| s.parse().expect("host")).collect(),
            collector_ip: collector.parse().expect("ip"),
            filter,
        }
    }

    #[test]
    fn both_directions_any_peer() {
        let out = compile(&[input("s", &["h1", "h2"], "10.0.0.9", Filter::default())]).expect("compiles");
        assert_eq!(out.len(), 2);
        let rules = &out[&"h1".parse().expect("host")];
        let dirs: Vec<_> = rules.iter().map(|r| r.direction()).collect();
        assert_eq!(dirs, [RuleDirection::Ingress, RuleDirection::Egress]);
        assert!(rules.iter().all(|r| r.peer().is_none() && r.gateway().to_string() == "10.0.0.9"));
    }

    #[test]
    fn one_rule_per_cidr_and_direction() {
        let f = Filter::new(
            Direction::Egress,
            Protocol::Tcp,
            Some(PortRange::new(443, 443).expect("port")),
            vec!["10.1.0.0/16".parse().expect("cidr"), "10.2.0.0/16".parse().expect("cidr")],
        )
        .expect("filter");
        let out = compile(&[input("s", &["h1"], "10.0.0.9", f)]).expect("compiles");
        let rules = &out[&"h1".parse().expect("host")];
        assert_eq!(rules.len(), 2);
        assert!(rules.iter().all(|r| r.direction() == RuleDirection::Egress && r.ports().is_some()));
    }

    #[test]
    fn sessions_merge_per_host_and_order_is_stable() {
        let a = input("a", &["h1"], "10.0.0.9", Filter::default());
        let b = input("b", &["h1", "h2"], "10.0.0.8", Filter::default());
        let ab = compile(&[a.clone(), b.clone()]).expect("compiles");
        let ba = compile(&[b, a]).expect("compiles");
        assert_eq!(ab, ba);
        assert_eq!(ab[&"h1".parse().expect("host")].len(), 4);
        assert_eq!(ab[&"h2".parse().expect("host")].len(), 2);
    }

    #[test]
    fn mixed_family_is_refused_with_the_session_named() {
        let f = Filter::new(Direction::Both, Protocol::All, None, vec!["2001:db8::/32".parse().expect("cidr")])
            .expect("filter");
        let err = compile(&[input("web", &["h1"], "10.0.0.9", f)]).unwrap_err();
        assert!(err.to_string().starts_with("session web.peer_cidr:"), "{err}");
    }

    #[test]
    fn no_sessions_no_hosts() {
        assert!(compile(&[]).expect("compiles").is_empty());
    }
}
