use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{Cidr, PortRange, Protocol, SessionName, Throttle, ValidationError, filter::check_gateway, limits};

/// The chain a rule lives in: packets arriving at the host, or leaving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleDirection {
    Ingress,
    Egress,
}

/// One TEE rule on one host: clone the matching packets to `gateway`. The collector's own
/// traffic is never mirrored to itself; the renderer adds that exclusion to every rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRule", into = "RawRule")]
pub struct MirrorRule {
    session: SessionName,
    direction: RuleDirection,
    gateway: IpAddr,
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
        if ports.is_some() && !protocol.has_ports() {
            return Err(ValidationError::new("ports", format!("ports need tcp or udp, not {}", protocol.as_str())));
        }
        if let Some(peer) = peer
            && peer.is_ipv4() != gateway.is_ipv4()
        {
            return Err(ValidationError::new(
                "peer_cidr",
                format!("{peer} is not of the same address family as the collector {gateway}"),
            ));
        }
        let peer = peer.filter(|p| p.prefix() != 0);
        Ok(Self { session, direction, gateway, protocol, ports, peer, throttle: Throttle::default() })
    }

    pub fn session(&self) -> &SessionName {
        &self.session
    }

    pub fn direction(&self) -> RuleDirection {
        self.direction
    }

    pub fn gateway(&self) -> IpAddr {
        self.gateway
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
    gateway: IpAddr,
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
        Ok(MirrorRule::new(r.session, r.direction, r.gateway, r.protocol, r.ports, r.peer)?.with_throttle(r.throttle))
    }
}

impl From<MirrorRule> for RawRule {
    fn from(r: MirrorRule) -> Self {
        RawRule {
            session: r.session,
            direction: r.direction,
            gateway: r.gateway,
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
        Ok(Self { version, rules })
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

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[derive(Serialize, Deserialize)]
struct RawRuleSet {
    version: u64,
    rules: Vec<MirrorRule>,
}

impl TryFrom<RawRuleSet> for RuleSet {
    type Error = ValidationError;
    fn try_from(r: RawRuleSet) -> Result<Self, Self::Error> {
        RuleSet::new(r.version, r.rules)
    }
}

impl From<RuleSet> for RawRuleSet {
    fn from(r: RuleSet) -> Self {
        RawRuleSet { version: r.version, rules: r.rules }
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
