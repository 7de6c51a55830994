//! The compiler: mirroring sessions in, one rule list per source host out. Pure, so the
//! controller can recompute any host's desired state from the database at any time and
//! compare it with what it last pushed.

use std::{collections::BTreeMap, net::IpAddr};

use crate::{
    Arrival, Direction, Filter, HostId, IpFamily, MirrorRule, RuleDirection, SessionName, Tunnel, ValidationError, Vni,
};

/// What the compiler needs of one session: its sources, its filter, where its collector is
/// on the network (at most one address per family) and, for VXLAN delivery, its VNI.
#[derive(Debug, Clone)]
pub struct CompileInput {
    pub name: SessionName,
    /// The collector's host, whose agent counts what arrives.
    pub collector: HostId,
    pub sources: Vec<HostId>,
    pub collector_ips: Vec<IpAddr>,
    pub filter: Filter,
    /// `Some`: clones travel inside VXLAN with this VNI; `None`: raw TEE.
    pub vni: Option<Vni>,
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

/// What each collector's agent counts: per session, per source host and per address it
/// sends from, the clones arriving. A VXLAN clone's outer source is the source's address of
/// the tunnel's family; a raw clone keeps the headers of the packet, so each address of a
/// family the collector takes is counted. Addresses that cannot be a source of clones
/// (loopback, link-local, multicast) are skipped; a source with none is not counted. A
/// collector counts at most [`crate::limits::MAX_ARRIVALS`]: the first in session and
/// source order; the others' delivery shows as unknown rather than the set being refused.
pub fn compile_arrivals(
    sessions: &[CompileInput],
    addresses: &BTreeMap<HostId, Vec<IpAddr>>,
) -> BTreeMap<HostId, Vec<Arrival>> {
    let mut out: BTreeMap<HostId, Vec<Arrival>> = BTreeMap::new();
    for s in sessions {
        let families: Vec<IpFamily> = match s.vni {
            Some(_) => outer_remote(s).map(IpFamily::of).into_iter().collect(),
            None => s.collector_ips.iter().copied().map(IpFamily::of).collect(),
        };
        let arrivals = out.entry(s.collector.clone()).or_default();
        for source in &s.sources {
            let from = addresses
                .get(source)
                .into_iter()
                .flatten()
                .copied()
                .filter(|ip| families.contains(&IpFamily::of(*ip)) && sends_clones(*ip));
            arrivals.extend(from.map(|ip| Arrival::new(s.name.clone(), source.clone(), ip, s.vni)));
        }
    }
    for arrivals in out.values_mut() {
        arrivals.sort();
        arrivals.dedup();
        arrivals.truncate(crate::limits::MAX_ARRIVALS);
    }
    out
}

fn sends_clones(ip: IpAddr) -> bool {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || link_local)
}

/// The collector address a session's VXLAN tunnel leads to: its IPv4 address, or its IPv6
/// address if it has no IPv4 one.
fn outer_remote(s: &CompileInput) -> Option<IpAddr> {
    s.collector_ips.iter().find(|ip| ip.is_ipv4()).or(s.collector_ips.first()).copied()
}

fn directions(s: &CompileInput) -> &'static [RuleDirection] {
    match s.filter.direction() {
        Direction::Ingress => &[RuleDirection::Ingress],
        Direction::Egress => &[RuleDirection::Egress],
        Direction::Both => &[RuleDirection::Ingress, RuleDirection::Egress],
    }
}

fn session_rules(s: &CompileInput) -> Result<Vec<MirrorRule>, ValidationError> {
    if s.collector_ips.is_empty() {
        return Err(ValidationError::new("collector", "the collector has no address"));
    }
    match s.vni {
        Some(vni) => tunnelled_rules(s, vni),
        None => raw_rules(s),
    }
}

/// VXLAN: both families' traffic (or the families of the filter's CIDRs) goes into one
/// tunnel to the collector's IPv4 address, or its IPv6 address if it has no IPv4 one.
fn tunnelled_rules(s: &CompileInput, vni: Vni) -> Result<Vec<MirrorRule>, ValidationError> {
    let remote = outer_remote(s).ok_or_else(|| ValidationError::new("collector", "the collector has no address"))?;
    let tunnel = Tunnel::new(vni, remote)?;
    let mut rules = Vec::new();
    for family in [IpFamily::Ipv4, IpFamily::Ipv6] {
        let peers: Vec<_> = if s.filter.cidrs().is_empty() {
            vec![None]
        } else {
            let of_family = s.filter.cidrs().iter().copied().filter(|c| IpFamily::of(c.addr()) == family);
            of_family.map(Some).collect()
        };
        for &direction in directions(s) {
            for &peer in &peers {
                let rule = MirrorRule::tunnelled(
                    s.name.clone(),
                    direction,
                    family,
                    tunnel,
                    s.filter.protocol(),
                    s.filter.ports(),
                    peer,
                )?;
                rules.push(rule.with_throttle(s.filter.throttle()));
            }
        }
    }
    Ok(rules)
}

fn raw_rules(s: &CompileInput) -> Result<Vec<MirrorRule>, ValidationError> {
    // A peer network can only be mirrored to a collector address of its own family.
    if let Some(orphan) =
        s.filter.cidrs().iter().find(|c| !s.collector_ips.iter().any(|ip| ip.is_ipv4() == c.is_ipv4()))
    {
        let family = if orphan.is_ipv4() { "IPv4" } else { "IPv6" };
        return Err(ValidationError::new(
            "cidr",
            format!("{orphan} is {family} but the collector has no {family} address"),
        ));
    }
    let mut rules = Vec::new();
    // Each family the collector has mirrors that family's traffic. No CIDR means any peer:
    // one rule per direction and family. Otherwise one rule per CIDR, since an iptables
    // rule matches a single source or destination network.
    for &gateway in &s.collector_ips {
        let peers: Vec<_> = if s.filter.cidrs().is_empty() {
            vec![None]
        } else {
            s.filter.cidrs().iter().copied().filter(|c| c.is_ipv4() == gateway.is_ipv4()).map(Some).collect()
        };
        for &direction in directions(s) {
            for &peer in &peers {
                let rule =
                    MirrorRule::new(s.name.clone(), direction, gateway, s.filter.protocol(), s.filter.ports(), peer)?;
                rules.push(rule.with_throttle(s.filter.throttle()));
            }
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
            collector: "c1".parse().expect("host"),
            sources: sources.iter().map(|s| s.parse().expect("host")).collect(),
            collector_ips: collector.split(',').map(|ip| ip.parse().expect("ip")).collect(),
            filter,
            vni: None,
        }
    }

    fn vxlan(name: &str, sources: &[&str], collector: &str, vni: u32, filter: Filter) -> CompileInput {
        CompileInput { vni: Some(Vni::new(vni).expect("vni")), ..input(name, sources, collector, filter) }
    }

    #[test]
    fn vxlan_mirrors_both_families_into_one_tunnel_to_the_ipv4_address() {
        let out = compile(&[vxlan("s", &["h1"], "fd00::9,10.0.0.9", 42, Filter::default())]).expect("compiles");
        let rules = &out[&"h1".parse().expect("host")];
        assert_eq!(rules.len(), 4, "{rules:?}");
        let tunnel = Tunnel::new(Vni::new(42).expect("vni"), "10.0.0.9".parse().expect("ip")).expect("tunnel");
        assert!(rules.iter().all(|r| r.tunnel() == Some(tunnel)));
        assert_eq!(rules.iter().filter(|r| r.family() == IpFamily::Ipv6).count(), 2);
        // The outer packets' address is never mirrored; IPv6 rules have nothing of theirs to skip.
        let excluded: Vec<_> = rules.iter().map(|r| r.excluded().map(|ip| ip.to_string())).collect();
        assert_eq!(excluded.iter().filter(|e| e.as_deref() == Some("10.0.0.9")).count(), 2, "{excluded:?}");
        // An IPv6-only collector gets IPv4 traffic inside IPv6 VXLAN.
        let out = compile(&[vxlan("s", &["h1"], "fd00::9", 42, Filter::default())]).expect("compiles");
        let rules = &out[&"h1".parse().expect("host")];
        assert_eq!(rules.len(), 4);
        assert!(rules.iter().all(|r| r.tunnel().map(|t| t.remote().to_string()).as_deref() == Some("fd00::9")));
    }

    #[test]
    fn vxlan_cidrs_of_either_family_need_no_collector_address_of_it() {
        let f = Filter::new(Direction::Ingress, Protocol::All, None, vec!["2001:db8::/32".parse().expect("cidr")])
            .expect("filter");
        let out = compile(&[vxlan("web", &["h1"], "10.0.0.9", 7, f)]).expect("compiles");
        let rules = &out[&"h1".parse().expect("host")];
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].family(), IpFamily::Ipv6);
    }

    #[test]
    fn both_directions_any_peer() {
        let out = compile(&[input("s", &["h1", "h2"], "10.0.0.9", Filter::default())]).expect("compiles");
        assert_eq!(out.len(), 2);
        let rules = &out[&"h1".parse().expect("host")];
        let dirs: Vec<_> = rules.iter().map(|r| r.direction()).collect();
        assert_eq!(dirs, [RuleDirection::Ingress, RuleDirection::Egress]);
        assert!(
            rules
                .iter()
                .all(|r| r.peer().is_none() && r.gateway().map(|g| g.to_string()).as_deref() == Some("10.0.0.9"))
        );
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
    fn a_cidr_without_a_collector_address_of_its_family_is_refused() {
        let f = Filter::new(Direction::Both, Protocol::All, None, vec!["2001:db8::/32".parse().expect("cidr")])
            .expect("filter");
        let err = compile(&[input("web", &["h1"], "10.0.0.9", f)]).unwrap_err();
        assert_eq!(err.to_string(), "session web.cidr: 2001:db8::/32 is IPv6 but the collector has no IPv6 address");
    }

    #[test]
    fn a_dual_stack_collector_mirrors_each_family_to_its_own_address() {
        let any = compile(&[input("s", &["h1"], "10.0.0.9,fd00::9", Filter::default())]).expect("compiles");
        let gateways: Vec<_> =
            any[&"h1".parse().expect("host")].iter().filter_map(|r| r.gateway()).map(|g| g.to_string()).collect();
        assert_eq!(gateways.len(), 4);
        assert_eq!(gateways.iter().filter(|g| g.contains(':')).count(), 2);
        // CIDRs of one family only mirror that family.
        let f = Filter::new(Direction::Ingress, Protocol::All, None, vec!["fd00:1::/64".parse().expect("cidr")])
            .expect("filter");
        let v6 = compile(&[input("s", &["h1"], "10.0.0.9,fd00::9", f)]).expect("compiles");
        let rules = &v6[&"h1".parse().expect("host")];
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].gateway().map(|g| g.to_string()).as_deref(), Some("fd00::9"));
    }

    #[test]
    fn the_throttle_reaches_every_rule() {
        let t =
            crate::Throttle::new(Some("0.01".parse().expect("sample")), Some(crate::MaxPps::new(500).expect("pps")));
        let f = Filter::default().with_throttle(t);
        let out = compile(&[input("s", &["h1"], "10.0.0.9,fd00::9", f)]).expect("compiles");
        assert!(out[&"h1".parse().expect("host")].iter().all(|r| r.throttle() == t));
    }

    /// A session chosen by tag may cover far more hosts than it may name: nothing in the
    /// compiler bounds a session's sources.
    #[test]
    fn a_session_may_cover_the_largest_tier() {
        let mut s = input("tier", &[], "10.0.0.9", Filter::default());
        s.sources = (0..crate::limits::MAX_SESSION_HOSTS).map(|i| format!("h{i}").parse().expect("host")).collect();
        let out = compile(&[s]).expect("compiles");
        assert_eq!(out.len(), crate::limits::MAX_SESSION_HOSTS);
        assert!(out.values().all(|rules| rules.len() == 2));
    }

    #[test]
    fn collectors_count_each_source_address_of_the_family_their_clones_arrive_in() {
        let addresses: BTreeMap<HostId, Vec<IpAddr>> =
            [("h1", vec!["10.0.1.5", "fd00::5", "fe80::1", "127.0.0.1"]), ("h2", vec!["10.0.1.6"]), ("h3", vec![])]
                .into_iter()
                .map(|(h, ips)| (h.parse().expect("host"), ips.into_iter().map(|ip| ip.parse().expect("ip")).collect()))
                .collect();
        let tunnelled = vxlan("t", &["h1", "h2", "h3", "h4"], "fd00::9,10.0.0.9", 42, Filter::default());
        let raw = input("r", &["h1"], "10.0.0.9,fd00::9", Filter::default());
        let out = compile_arrivals(&[tunnelled, raw], &addresses);
        let shown: Vec<String> = out[&"c1".parse().expect("host")]
            .iter()
            .map(|a| format!("{} {} {} {:?}", a.session(), a.source(), a.from(), a.vni().map(Vni::get)))
            .collect();
        assert_eq!(
            shown,
            [
                "r h1 10.0.1.5 None",
                "r h1 fd00::5 None",
                // IPv4 outer headers only: the tunnel leads to the collector's IPv4 address.
                "t h1 10.0.1.5 Some(42)",
                "t h2 10.0.1.6 Some(42)",
            ]
        );
        assert!(compile_arrivals(&[], &addresses).is_empty());

        // More sources than a collector may count: the first ones are, and the set stays valid.
        let mut tier = vxlan("tier", &[], "10.0.0.9", 7, Filter::default());
        tier.sources =
            (0..crate::limits::MAX_ARRIVALS + 5).map(|i| format!("h{i:06}").parse().expect("host")).collect();
        let many: BTreeMap<HostId, Vec<IpAddr>> = tier
            .sources
            .iter()
            .enumerate()
            .map(|(i, h)| (h.clone(), vec![IpAddr::from([10, 1, (i >> 8) as u8, (i & 0xff) as u8])]))
            .collect();
        let counted = compile_arrivals(&[tier], &many).remove(&"c1".parse().expect("host")).expect("counted");
        assert_eq!(counted.len(), crate::limits::MAX_ARRIVALS);
        assert_eq!(counted[0].source().as_str(), "h000000");
        assert!(crate::RuleSet::default().with_arrivals(counted).is_ok());
    }

    #[test]
    fn no_sessions_no_hosts() {
        assert!(compile(&[]).expect("compiles").is_empty());
    }
}
