//! What a collector's agent counts: the clones of one session arriving from one source
//! address. The controller derives these from the sessions that deliver to a collector and
//! the addresses their sources reported; the agent turns each into kernel counting rules,
//! so an arrival costs no work in user space.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{HostId, IpFamily, SessionName, Vni};

/// Clones of `session` from the source host `source`, whose packets carry the address
/// `from`. With a VNI they arrive inside VXLAN from `from` (the outer source address);
/// without one they are raw copies from or to `from`, not addressed to the collector.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Arrival {
    session: SessionName,
    source: HostId,
    from: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vni: Option<Vni>,
}

impl Arrival {
    pub fn new(session: SessionName, source: HostId, from: IpAddr, vni: Option<Vni>) -> Self {
        Arrival { session, source, from, vni }
    }

    pub fn session(&self) -> &SessionName {
        &self.session
    }

    pub fn source(&self) -> &HostId {
        &self.source
    }

    pub fn from(&self) -> IpAddr {
        self.from
    }

    pub fn vni(&self) -> Option<Vni> {
        self.vni
    }

    /// The family of the packets counted: the outer header's for VXLAN.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.from)
    }
}
