//! How clones reach a collector: raw TEE to an on-link address, or inside VXLAN (UDP 4789,
//! one VNI per session) to an address anywhere the host can route to, the format AWS
//! Traffic Mirroring uses.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{ValidationError, check_gateway};

/// A VXLAN network identifier: 1 to 16 777 215 (24 bits; 0 is reserved here for "none").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Vni(u32);

impl Vni {
    pub const MIN: u32 = 1;
    pub const MAX: u32 = (1 << 24) - 1;

    pub fn new(value: u32) -> Result<Vni, ValidationError> {
        if (Self::MIN..=Self::MAX).contains(&value) {
            Ok(Vni(value))
        } else {
            Err(ValidationError::new("vni", format!("{value} is not a VXLAN VNI (1 to {})", Self::MAX)))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Vni {
    type Error = ValidationError;
    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Vni::new(value)
    }
}

impl From<Vni> for u32 {
    fn from(vni: Vni) -> u32 {
        vni.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Vni {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value = s
            .trim()
            .parse::<u32>()
            .map_err(|_| ValidationError::new("vni", format!("{:?} is not a number from 1 to {}", s, Vni::MAX)))?;
        Vni::new(value)
    }
}

/// An IP address family: which traffic a rule mirrors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    Ipv4,
    Ipv6,
}

impl IpFamily {
    pub fn of(ip: IpAddr) -> IpFamily {
        if ip.is_ipv4() { IpFamily::Ipv4 } else { IpFamily::Ipv6 }
    }
}

/// How a collector takes its clones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// Inside VXLAN, from the source's own address: no Source/Dest Check changes, any
    /// subnet the source can route to.
    #[default]
    Vxlan,
    /// Raw TEE (the manual recipe): same subnet only, the collector's check off, and for
    /// inbound mirroring the sources' checks off too.
    None,
}

impl Encap {
    pub fn as_str(self) -> &'static str {
        match self {
            Encap::Vxlan => "vxlan",
            Encap::None => "none",
        }
    }
}

impl fmt::Display for Encap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encap {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vxlan" => Ok(Encap::Vxlan),
            "none" => Ok(Encap::None),
            other => Err(ValidationError::new("encap", format!("{other:?} is not vxlan or none"))),
        }
    }
}

/// The VXLAN tunnel of one session on one host: its VNI and the collector's address the
/// outer packets go to (of either family, whatever the traffic inside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawTunnel", into = "RawTunnel")]
pub struct Tunnel {
    vni: Vni,
    remote: IpAddr,
}

impl Tunnel {
    pub fn new(vni: Vni, remote: IpAddr) -> Result<Tunnel, ValidationError> {
        check_gateway(remote).map_err(|e| ValidationError::new("remote", e.reason))?;
        Ok(Tunnel { vni, remote })
    }

    pub fn vni(self) -> Vni {
        self.vni
    }

    pub fn remote(self) -> IpAddr {
        self.remote
    }
}

#[derive(Serialize, Deserialize)]
struct RawTunnel {
    vni: Vni,
    remote: IpAddr,
}

impl TryFrom<RawTunnel> for Tunnel {
    type Error = ValidationError;
    fn try_from(r: RawTunnel) -> Result<Self, Self::Error> {
        Tunnel::new(r.vni, r.remote)
    }
}

impl From<Tunnel> for RawTunnel {
    fn from(t: Tunnel) -> Self {
        RawTunnel { vni: t.vni, remote: t.remote }
    }
}

/// Where one rule sends its clones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Delivery {
    /// TEE to the collector's address of the rule's family, which must be on-link.
    Raw { gateway: IpAddr },
    /// TEE into the host's VXLAN device for the tunnel.
    Vxlan(Tunnel),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnis_are_24_bits_and_never_zero() {
        assert!(Vni::new(0).is_err());
        assert_eq!(Vni::new(1).map(Vni::get), Ok(1));
        assert_eq!(Vni::new(16_777_215).map(Vni::get), Ok(16_777_215));
        let err = "16777216".parse::<Vni>().unwrap_err();
        assert_eq!(err.to_string(), "vni: 16777216 is not a VXLAN VNI (1 to 16777215)");
        assert!("seven".parse::<Vni>().is_err());
        assert!(serde_json::from_str::<Vni>("0").is_err());
    }

    #[test]
    fn encapsulations_parse_and_print() {
        for e in [Encap::Vxlan, Encap::None] {
            assert_eq!(e.as_str().parse::<Encap>(), Ok(e));
        }
        assert_eq!(Encap::default(), Encap::Vxlan);
        assert!("gre".parse::<Encap>().is_err());
    }

    #[test]
    fn a_tunnel_needs_a_usable_remote() {
        let vni = Vni::new(7).expect("vni");
        assert!(Tunnel::new(vni, "0.0.0.0".parse().expect("ip")).is_err());
        assert!(Tunnel::new(vni, "10.0.0.9".parse().expect("ip")).is_ok());
        let json = r#"{"vni":7,"remote":"255.255.255.255"}"#;
        assert!(serde_json::from_str::<Tunnel>(json).is_err());
    }
}
