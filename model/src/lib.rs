//! Domain types and pure logic for teefleet: identifiers, filters, sessions, mirror rules
//! and the compiler that turns sessions into one rule set per host.
//!
//! Every type here is valid by construction: constructors and `FromStr` implementations
//! check their input, so a value that reaches a rule has already been validated. There is
//! no transport (tonic, sqlx, AWS) in this crate; conversions live at the edges.

mod arrival;
mod compile;
mod delivery;
mod duration;
mod error;
mod filter;
mod ids;
mod join;
mod listen;
mod loss;
pub mod report;
mod rule;
mod selector;
mod session;
#[cfg(any(test, feature = "proptest"))]
pub mod strategy;
pub mod text;
mod throttle;
mod ttl;
mod update;

#[cfg(test)]
mod hostile_input;

pub use arrival::Arrival;
pub use compile::{CompileInput, compile, compile_arrivals};
pub use delivery::{Delivery, Encap, IpFamily, Tunnel, Vni};
pub use duration::{parse_duration, parse_duration_or_seconds};
pub use error::ValidationError;
pub use filter::{Cidr, Direction, Filter, PortRange, Protocol, check_collector_ipv6, check_gateway};
pub use ids::{CollectorId, EventKind, HostId, InstanceId, SessionName};
pub use join::{IdentityEvidence, JoinProof};
pub use listen::Listen;
pub use loss::MaxLoss;
pub use rule::{MirrorRule, RuleDirection, RuleSet};
pub use selector::{TagSelector, carries_all};
pub use session::SessionSpec;
pub use throttle::{MaxPps, Sample, Throttle};
pub use ttl::{Ttl, TtlChange};
pub use update::{FilterChange, SessionUpdate};

/// Upper bounds on list inputs, so one request cannot make the controller or an agent do
/// unbounded work.
pub mod limits {
    /// Sources a session names.
    pub const MAX_SOURCES: usize = 1000;
    /// Tag selectors of one session (an instance must carry all of them).
    pub const MAX_SELECTORS: usize = 8;
    /// Sources of one session however they were chosen: named, plus every instance its
    /// selectors match. A tier of 10 000 hosts fits twice over; a selector that matches
    /// more is more likely a mistake (a tag every instance carries) than a tier.
    pub const MAX_SESSION_HOSTS: usize = 20_000;
    pub const MAX_CIDRS: usize = 32;
    pub const MAX_RULES: usize = 10_000;
    /// Arrivals one collector counts: a source address per session and source host.
    pub const MAX_ARRIVALS: usize = 40_000;
}
