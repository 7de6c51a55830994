//! One host of the lab, as the network and the bridges' checks both see it.

use std::net::{Ipv4Addr, Ipv6Addr};

/// One host of the lab: a namespace with `eth0` on its subnet's bridge, and an EC2 instance.
#[derive(Debug, Clone)]
pub struct Host {
    /// The lab's name for it, e.g. `source1`.
    pub name: String,
    /// The network namespace, e.g. `tf213-7-source1`.
    pub netns: String,
    /// Which subnet it is in: 0 (with the root namespace) or 1 (behind the router).
    pub subnet: usize,
    /// The IPv4 address on `eth0`.
    pub ip: Ipv4Addr,
    /// The IPv6 (ULA) address on `eth0`.
    pub ip6: Ipv6Addr,
    /// The root-namespace end of the veth: the bridge port.
    pub(crate) veth: String,
}

impl Host {
    /// The bridge port of the host's veth, where its Source/Dest Check is enforced.
    pub fn veth(&self) -> &str {
        &self.veth
    }
}
