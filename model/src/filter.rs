use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use crate::{Throttle, ValidationError, limits};

/// Which packets of a source host to mirror, relative to that host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
    #[default]
    Both,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
            Direction::Both => "both",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ingress" => Ok(Direction::Ingress),
            "egress" => Ok(Direction::Egress),
            "both" => Ok(Direction::Both),
            _ => Err(ValidationError::new("direction", format!("{s:?} is not one of ingress, egress, both"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    All,
    Tcp,
    Udp,
    Icmp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::All => "all",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }

    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Protocol::All),
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "icmp" => Ok(Protocol::Icmp),
            _ => Err(ValidationError::new("protocol", format!("{s:?} is not one of tcp, udp, icmp, all"))),
        }
    }
}

/// An inclusive range of ports, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "(u32, u32)", into = "(u32, u32)")]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    pub fn new(first: u32, last: u32) -> Result<Self, ValidationError> {
        let port = |p: u32| {
            u16::try_from(p)
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| ValidationError::new("port", format!("{p} is not a port (1-65535)")))
        };
        let (first, last) = (port(first)?, port(last)?);
        if first > last {
            return Err(ValidationError::new("port", format!("range {first}-{last} is reversed")));
        }
        Ok(Self { first, last })
    }

    pub fn first(self) -> u16 {
        self.first
    }

    pub fn last(self) -> u16 {
        self.last
    }
}

impl TryFrom<(u32, u32)> for PortRange {
    type Error = ValidationError;
    fn try_from((first, last): (u32, u32)) -> Result<Self, Self::Error> {
        Self::new(first, last)
    }
}

impl From<PortRange> for (u32, u32) {
    fn from(r: PortRange) -> Self {
        (r.first.into(), r.last.into())
    }
}

impl FromStr for PortRange {
    type Err = ValidationError;
    /// `N` or `N-M`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let num = |p: &str| {
            p.parse::<u32>().map_err(|_| ValidationError::new("port", format!("{s:?} is not a port or a range N-M")))
        };
        match s.split_once('-') {
            Some((a, b)) => Self::new(num(a)?, num(b)?),
            None => {
                let p = num(s)?;
                Self::new(p, p)
            }
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last { write!(f, "{}", self.first) } else { write!(f, "{}-{}", self.first, self.last) }
    }
}

/// A network in CIDR notation whose host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn addr(self) -> IpAddr {
        self.addr
    }

    pub fn prefix(self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn contains(self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| ValidationError::new("cidr", format!("{s:?} {why}"));
        let (addr, prefix) = s.split_once('/').ok_or_else(|| bad("is not in CIDR notation (ADDRESS/PREFIX)"))?;
        let addr: IpAddr = addr.parse().map_err(|_| bad("does not start with an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|&p| p <= max)
            .ok_or_else(|| bad(&format!("has a prefix length outside 0-{max}")))?;
        let cidr = Cidr { addr, prefix };
        if !cidr.contains(addr) {
            return Err(bad("has host bits set; did you mean the network address?"));
        }
        Ok(cidr)
    }
}

impl TryFrom<String> for Cidr {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Checks that an address can be a TEE gateway: a unicast address a host can send to.
pub fn check_gateway(ip: IpAddr) -> Result<(), ValidationError> {
    let bad = |why: &str| Err(ValidationError::new("gateway", format!("{ip} {why}")));
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() || v4 == Ipv4Addr::BROADCAST => bad("is not a usable TEE gateway"),
        IpAddr::V6(v6) if v6.is_unspecified() || v6 == Ipv6Addr::LOCALHOST => bad("is not a usable TEE gateway"),
        IpAddr::V4(v4) if v4.is_loopback() => bad("is a loopback address; the collector must be on-link"),
        ip if ip.is_multicast() => bad("is a multicast address; the collector must be a unicast address"),
        _ => Ok(()),
    }
}

/// Whether an IPv6 address can be a collector's: unicast, not link-local (which needs an
/// interface to mean anything) and not an IPv4 address in disguise.
pub fn check_collector_ipv6(ip: Ipv6Addr) -> Result<(), ValidationError> {
    let bad = |why: String| Err(ValidationError::new("ipv6", why));
    if ip.to_ipv4_mapped().is_some() {
        return bad(format!("{ip} is an IPv4-mapped address; give the IPv4 address as the collector's ip"));
    }
    if ip.is_unicast_link_local() {
        return bad(format!("{ip} is link-local; the collector needs a global or unique local address"));
    }
    check_gateway(IpAddr::V6(ip)).map_err(|e| ValidationError::new("ipv6", e.reason))
}

/// Which traffic of a source host a session mirrors.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Filter {
    direction: Direction,
    protocol: Protocol,
    ports: Option<PortRange>,
    cidrs: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Throttle::is_none")]
    throttle: Throttle,
}

impl Filter {
    /// Builds a filter; ports need tcp or udp, CIDRs are bounded, de-duplicated and
    /// normalised: a network inside another one of the list is dropped, since a rule for
    /// each would clone its packets twice.
    pub fn new(
        direction: Direction,
        protocol: Protocol,
        ports: Option<PortRange>,
        mut cidrs: Vec<Cidr>,
    ) -> Result<Self, ValidationError> {
        if ports.is_some() && !protocol.has_ports() {
            return Err(ValidationError::new(
                "port",
                format!("a port needs protocol tcp or udp, not {}", protocol.as_str()),
            ));
        }
        if cidrs.len() > limits::MAX_CIDRS {
            return Err(ValidationError::new("cidr", format!("at most {} CIDRs per session", limits::MAX_CIDRS)));
        }
        cidrs.sort();
        cidrs.dedup();
        let all = cidrs.clone();
        cidrs.retain(|c| !all.iter().any(|o| o != c && o.prefix() <= c.prefix() && o.contains(c.addr())));
        Ok(Self { direction, protocol, ports, cidrs, throttle: Throttle::default() })
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn ports(&self) -> Option<PortRange> {
        self.ports
    }

    pub fn cidrs(&self) -> &[Cidr] {
        &self.cidrs
    }

    pub fn throttle(&self) -> Throttle {
        self.throttle
    }

    pub fn with_throttle(self, throttle: Throttle) -> Self {
        Self { throttle, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!("80".parse::<PortRange>().map(|p| (p.first(), p.last())), Ok((80, 80)));
        assert_eq!("1000-2000".parse::<PortRange>().map(|p| p.to_string()), Ok("1000-2000".into()));
        for bad in ["0", "65536", "-1", "2000-1000", "80-", "a", "", "1-2-3", " 80"] {
            let e = bad.parse::<PortRange>().unwrap_err();
            assert_eq!(e.field, "port", "{bad:?}");
        }
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.0.0.0/8".parse().expect("valid");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("11.0.0.1".parse().expect("ip")));
        assert!("0.0.0.0/0".parse::<Cidr>().expect("valid").contains("1.2.3.4".parse().expect("ip")));
        assert!("2001:db8::/32".parse::<Cidr>().is_ok());
        for bad in ["10.0.0.1/8", "10.0.0.0", "10.0.0.0/33", "10.0.0/8", "x/8", "10.0.0.0/-1", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn filter_rules() {
        let port = Some(PortRange::new(80, 80).expect("valid"));
        assert!(Filter::new(Direction::Both, Protocol::Tcp, port, vec![]).is_ok());
        let e = Filter::new(Direction::Both, Protocol::Icmp, port, vec![]).unwrap_err();
        assert_eq!(e.to_string(), "port: a port needs protocol tcp or udp, not icmp");
        let many = (0..33).map(|i| format!("10.{i}.0.0/16").parse().expect("valid")).collect();
        assert!(Filter::new(Direction::Both, Protocol::All, None, many).is_err());
    }

    #[test]
    fn overlapping_cidrs_keep_only_the_widest() {
        let cidrs =
            ["10.1.2.0/24", "10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16", "fd00::/8", "fd00:1::/32", "10.0.0.0/8"];
        let f =
            Filter::new(Direction::Both, Protocol::All, None, cidrs.iter().map(|c| c.parse().expect("cidr")).collect())
                .expect("filter");
        let kept: Vec<String> = f.cidrs().iter().map(ToString::to_string).collect();
        assert_eq!(kept, ["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"]);
    }

    #[test]
    fn gateways() {
        for bad in ["0.0.0.0", "255.255.255.255", "127.0.0.1", "224.0.0.1", "::"] {
            assert!(check_gateway(bad.parse().expect("ip")).is_err(), "{bad}");
        }
        assert!(check_gateway("10.0.0.5".parse().expect("ip")).is_ok());
    }
}
