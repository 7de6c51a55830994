use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{
    Arrival, Cidr, Delivery, IpFamily, PortRange, Protocol, SessionName, Throttle, Tunnel, ValidationError, Vni,
    filter::check_gateway, limits,
};

/// The chain a rule lives in: packets arriving at the host, or leaving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleDirection {
    Ingress,
    Egress,
}

/// One TEE rule on one host: clone the matching packets of one address family to the
/// collector, raw or inside the session's VXLAN tunnel. The collector's own traffic is
/// never mirrored to itself; the renderer adds that exclusion to every rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRule", into = "RawRule")]
pub struct MirrorRule {
    session: SessionName,
    direction: RuleDirection,
    family: IpFamily,
    delivery: Delivery,
    protocol: Protocol,
    ports: Option<PortRange>,
    peer: Option<Cidr>,
    throttle: Throttle,
}

impl MirrorRule {
    /// A peer of `/0` is every address, so it is stored as no peer: two rules that match
    /// the same packets are equal, and a set cannot hold both and clone every packet twice.
    pub fn new(
        session: SessionName,
        direction: RuleDirection,
        gateway: IpAddr,
        protocol: Protocol,
        ports: Option<PortRange>,
        peer: Option<Cidr>,
    ) -> Result<Self, ValidationError> {
        check_gateway(gateway)?;
        if let Some(peer) = peer
            && peer.is_ipv4() != gateway.is_ipv4()
        {
            return Err(ValidationError::new(
                "peer_cidr",
                format!("{peer} is not of the same address family as the collector {gateway}"),
            ));
        }
        let family = IpFamily::of(gateway);
        Self::build(session, direction, family, Delivery::Raw { gateway }, protocol, ports, peer)
    }

    /// A rule that mirrors `family`'s traffic into a VXLAN tunnel; the tunnel's remote may
    /// be of the other family.
    pub fn tunnelled(
        session: SessionName,
        direction: RuleDirection,
        family: IpFamily,
        tunnel: Tunnel,
        protocol: Protocol,
        ports: Option<PortRange>,
        peer: Option<Cidr>,
    ) -> Result<Self, ValidationError> {
        if let Some(peer) = peer
            && IpFamily::of(peer.addr()) != family
        {
            return Err(ValidationError::new("peer_cidr", format!("{peer} is not of the rule's address family")));
        }
        Self::build(session, direction, family, Delivery::Vxlan(tunnel), protocol, ports, peer)
    }

    fn build(
        session: SessionName,
        direction: RuleDirection,
        family: IpFamily,
        delivery: Delivery,
        protocol: Protocol,
        ports: Option<PortRange>,
        peer: Option<Cidr>,
    ) -> Result<Self, ValidationError> {
        if ports.is_some() && !protocol.has_ports() {
            return Err(ValidationError::new("ports", format!("ports need tcp or udp, not {}", protocol.as_str())));
        }
        let peer = peer.filter(|p| p.prefix() != 0);
        Ok(Self { session, direction, family, delivery, protocol, ports, peer, throttle: Throttle::default() })
    }

    pub fn session(&self) -> &SessionName {
        &self.session
    }

    pub fn direction(&self) -> RuleDirection {
        self.direction
    }

    /// The address family of the traffic the rule mirrors.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// The collector's address, for a raw rule.
    pub fn gateway(&self) -> Option<IpAddr> {
        match self.delivery {
            Delivery::Raw { gateway } => Some(gateway),
            Delivery::Vxlan(_) => None,
        }
    }

    /// The tunnel, for a VXLAN rule.
    pub fn tunnel(&self) -> Option<Tunnel> {
        match self.delivery {
            Delivery::Vxlan(t) => Some(t),
            Delivery::Raw { .. } => None,
        }
    }

    /// The collector's address that the rule never mirrors (of the rule's family): the raw
    /// gateway, or the tunnel's remote when it is of the same family, so neither the
    /// collector's own traffic nor the outer packets are cloned.
    pub fn excluded(&self) -> Option<IpAddr> {
        match self.delivery {
            Delivery::Raw { gateway } => Some(gateway),
            Delivery::Vxlan(t) => Some(t.remote()).filter(|r| IpFamily::of(*r) == self.family),
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn ports(&self) -> Option<PortRange> {
        self.ports
    }

    pub fn peer(&self) -> Option<Cidr> {
        self.peer
    }

    pub fn throttle(&self) -> Throttle {
        self.throttle
    }

    /// Normalised like [`Throttle::new`] (the fields are public), for the same reason as
    /// the peer in [`MirrorRule::new`].
    pub fn with_throttle(self, throttle: Throttle) -> Self {
        Self { throttle: Throttle::new(throttle.sample, throttle.max_pps), ..self }
    }
}

/// The serialised shape of a rule, checked again on the way in so a state file or a
/// stored row cannot smuggle in an invalid rule.
#[derive(Serialize, Deserialize)]
struct RawRule {
    session: SessionName,
    direction: RuleDirection,
    /// Raw rules: the collector's address (the family is its family).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
    /// VXLAN rules: the tunnel and the family of the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vxlan: Option<Tunnel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    family: Option<IpFamily>,
    protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ports: Option<PortRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peer: Option<Cidr>,
    #[serde(default, skip_serializing_if = "Throttle::is_none")]
    throttle: Throttle,
}

impl TryFrom<RawRule> for MirrorRule {
    type Error = ValidationError;
    fn try_from(r: RawRule) -> Result<Self, Self::Error> {
        let rule = match (r.gateway, r.vxlan, r.family) {
            (Some(gateway), None, _) => MirrorRule::new(r.session, r.direction, gateway, r.protocol, r.ports, r.peer),
            (None, Some(tunnel), Some(family)) => {
                MirrorRule::tunnelled(r.session, r.direction, family, tunnel, r.protocol, r.ports, r.peer)
            }
            _ => Err(ValidationError::new("gateway", "a rule needs either a gateway or a VXLAN tunnel and a family")),
        };
        Ok(rule?.with_throttle(r.throttle))
    }
}

impl From<MirrorRule> for RawRule {
    fn from(r: MirrorRule) -> Self {
        let (gateway, vxlan, family) = match r.delivery {
            Delivery::Raw { gateway } => (Some(gateway), None, None),
            Delivery::Vxlan(tunnel) => (None, Some(tunnel), Some(r.family)),
        };
        RawRule {
            session: r.session,
            direction: r.direction,
            gateway,
            vxlan,
            family,
            protocol: r.protocol,
            ports: r.ports,
            peer: r.peer,
            throttle: r.throttle,
        }
    }
}

/// A host's whole desired rule set at one version. Rules are kept sorted and unique, so
/// two sets with the same rules compare equal whatever order they were built in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "RawRuleSet", into = "RawRuleSet")]
pub struct RuleSet {
    version: u64,
    rules: Vec<MirrorRule>,
    /// The host is a VXLAN collector: it takes clones on port 4789 and offers them
    /// decapsulated on a local device.
    collector: bool,
    /// On a collector: the clones it counts as they arrive, sorted and unique.
    arrivals: Vec<Arrival>,
}

impl RuleSet {
    /// The highest version a set may have: far below what a u64 or Postgres' bigint
    /// holds, so no arithmetic on a version can overflow, and exact in JSON numbers. A
    /// controller making a million changes a second would take 285 years to reach it.
    pub const MAX_VERSION: u64 = (1 << 53) - 1;

    pub fn new(version: u64, mut rules: Vec<MirrorRule>) -> Result<Self, ValidationError> {
        if version > Self::MAX_VERSION {
            return Err(ValidationError::new(
                "version",
                format!("{version} is above the highest rule-set version, {}", Self::MAX_VERSION),
            ));
        }
        if rules.len() > limits::MAX_RULES {
            return Err(ValidationError::new(
                "rules",
                format!("{} rules is more than the limit of {}", rules.len(), limits::MAX_RULES),
            ));
        }
        rules.sort();
        rules.dedup();
        // One VNI is one device on the host, with one remote.
        let mut remotes: std::collections::BTreeMap<Vni, IpAddr> = std::collections::BTreeMap::new();
        for tunnel in rules.iter().filter_map(MirrorRule::tunnel) {
            let remote = *remotes.entry(tunnel.vni()).or_insert(tunnel.remote());
            if remote != tunnel.remote() {
                return Err(ValidationError::new(
                    "rules",
                    format!("VNI {} leads to both {remote} and {}", tunnel.vni(), tunnel.remote()),
                ));
            }
        }
        Ok(Self { version, rules, collector: false, arrivals: Vec::new() })
    }

    /// The same set counting `arrivals` (a collector's), sorted and de-duplicated.
    pub fn with_arrivals(self, mut arrivals: Vec<Arrival>) -> Result<Self, ValidationError> {
        if arrivals.len() > limits::MAX_ARRIVALS {
            return Err(ValidationError::new(
                "arrivals",
                format!("{} arrivals is more than the limit of {}", arrivals.len(), limits::MAX_ARRIVALS),
            ));
        }
        arrivals.sort();
        arrivals.dedup();
        Ok(Self { arrivals, ..self })
    }

    pub fn arrivals(&self) -> &[Arrival] {
        &self.arrivals
    }

    /// The same set for a host that is (or is not) a VXLAN collector.
    pub fn with_collector(self, collector: bool) -> Self {
        Self { collector, ..self }
    }

    pub fn collector(&self) -> bool {
        self.collector
    }

    /// The VXLAN tunnels the set's rules use, one per VNI.
    pub fn tunnels(&self) -> Vec<Tunnel> {
        let mut tunnels: Vec<Tunnel> = self.rules.iter().filter_map(MirrorRule::tunnel).collect();
        tunnels.sort();
        tunnels.dedup();
        tunnels
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The version after `version`, if there is one below `MAX_VERSION`.
    pub fn next_version(version: u64) -> Option<u64> {
        version.checked_add(1).filter(|&v| v <= Self::MAX_VERSION)
    }

    pub fn rules(&self) -> &[MirrorRule] {
        &self.rules
    }

    /// Nothing to install: no rule, not a collector, nothing to count.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && !self.collector && self.arrivals.is_empty()
    }
}

#[derive(Serialize, Deserialize)]
struct RawRuleSet {
    version: u64,
    rules: Vec<MirrorRule>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    collector: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    arrivals: Vec<Arrival>,
}

impl TryFrom<RawRuleSet> for RuleSet {
    type Error = ValidationError;
    fn try_from(r: RawRuleSet) -> Result<Self, Self::Error> {
        RuleSet::new(r.version, r.rules)?.with_collector(r.collector).with_arrivals(r.arrivals)
    }
}

impl From<RuleSet> for RawRuleSet {
    fn from(r: RuleSet) -> Self {
        RawRuleSet { version: r.version, rules: r.rules, collector: r.collector, arrivals: r.arrivals }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sample;

    fn rule(gateway: &str, peer: &str) -> Result<MirrorRule, ValidationError> {
        let peer = Some(peer).filter(|p| !p.is_empty()).map(|p| p.parse().expect("cidr"));
        let (session, gateway) = ("s".parse().expect("name"), gateway.parse().expect("ip"));
        MirrorRule::new(session, RuleDirection::Ingress, gateway, Protocol::All, None, peer)
    }

    /// Both render as the same iptables rule; kept apart, a set installed it twice and
    /// every matching packet was cloned twice.
    #[test]
    fn rules_that_match_the_same_packets_are_one_rule() {
        let plain = rule("fd00::9", "").expect("rule");
        let full = Throttle { sample: Some(Sample::from_ppm(Sample::PER_MILLION).expect("all")), max_pps: None };
        let twins = vec![plain.clone(), rule("fd00::9", "::/0").expect("rule"), plain.clone().with_throttle(full)];
        assert_eq!(RuleSet::new(1, twins).expect("set").rules(), std::slice::from_ref(&plain));
        let read: MirrorRule = serde_json::from_value(serde_json::json!({
            "session": "s", "direction": "ingress", "gateway": "fd00::9", "protocol": "all",
            "peer": "::/0", "throttle": { "sample": 1_000_000 },
        }))
        .expect("a valid rule");
        assert_eq!(read, plain);
        assert!(rule("10.0.0.9", "::/0").is_err(), "the family is still checked first");
    }
}
