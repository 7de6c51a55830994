//! The host's dataplane: where a validated [`RuleSet`] becomes kernel state.
//!
//! The stream client only sees the [`Dataplane`] trait, so it can be tested with a
//! recording fake and a load generator can stub it. The real implementation,
//! [`IptablesDataplane`], renders rules into chains the agent owns in the `mangle` table
//! of each address family ([`render`]; where those chains are is [`layout`]), reads what
//! the kernel holds ([`observe`]), plans the change ([`plan`]), applies it in one
//! `iptables-restore --noflush` transaction per family ([`iptables`]), reads it back and
//! repairs it when something else changed it. [`backend`] finds out what the host's iptables can do;
//! [`generation`] reads the nf_tables ruleset generation, which tells a drift check that
//! nothing changed without reading the table.

use std::{collections::BTreeMap, future::Future, ops::AddAssign};

use teefleet_model::{HostId, RuleSet, SessionName};

pub mod backend;
pub mod devices;
pub mod generation;
pub mod iptables;
pub mod layout;
pub mod observe;
pub mod plan;
pub mod render;
pub mod tools;
pub mod tunnel;

pub use backend::DataplaneInfo;
pub use iptables::IptablesDataplane;
pub use layout::Family;
pub use observe::Observed;
pub use tools::{Iptables, Variant};

/// Something that can make the host mirror exactly the traffic a rule set describes.
///
/// `apply` replaces whatever set was applied before; an empty set removes everything the
/// agent installed. An implementation must leave the previous set in place when it fails,
/// so a failed push never leaves a half-applied set behind.
pub trait Dataplane: Send + Sync + 'static {
    fn apply(&self, set: &RuleSet) -> impl Future<Output = Result<(), ApplyError>> + Send;

    /// Compares the kernel with the applied set, restores it if something else changed it,
    /// and reads the counters. A dataplane without kernel state has nothing to check.
    fn check(&self) -> impl Future<Output = Result<Check, ApplyError>> + Send {
        async { Ok(Check::default()) }
    }

    /// What the host's dataplane is and can do, as found at start.
    fn info(&self) -> DataplaneInfo {
        DataplaneInfo::default()
    }
}

/// Mirrored packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl AddAssign for Counter {
    fn add_assign(&mut self, other: Counter) {
        self.packets = self.packets.saturating_add(other.packets);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// The result of one drift check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    /// What was found changed and put back, per family.
    pub repairs: Vec<Repair>,
    /// Per session, cumulative since the dataplane was created (re-applies and repairs
    /// reset the kernel's counters; the dataplane carries the sums across).
    pub counters: BTreeMap<SessionName, Counter>,
    /// On a collector: what arrived per session and source host, cumulative like
    /// `counters`.
    pub arrivals: BTreeMap<(SessionName, HostId), Counter>,
    /// When the oldest of the kernel reads behind these counters began (a check may reuse
    /// a recent read); `None` when there was nothing to read.
    pub read_at: Option<std::time::Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    pub scope: Scope,
    /// What had changed, for a person (e.g. "chain TEEFLEET-PRE was flushed").
    pub drift: String,
}

/// What a repair put back: one family's chains, or the tunnel devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Rules(Family),
    Tunnels,
}

impl Scope {
    /// `ipv4`, `ipv6` or `tunnels`, for logs and events.
    pub fn label(self) -> &'static str {
        match self {
            Scope::Rules(family) => family.label(),
            Scope::Tunnels => "tunnels",
        }
    }
}

/// Why a rule set could not be applied. The previous set is still in place.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("session {session} mirrors IPv6 traffic, but ip6tables is not usable on this host: {reason}")]
    Ipv6Unavailable { session: SessionName, reason: String },

    #[error("could not run {program}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{program} did not finish within {secs} s")]
    Timeout { program: &'static str, secs: u64 },

    /// The command ran and failed. For `iptables-restore`, `input_line` is the line of
    /// our input it rejected, so the Nack tells the operator what the kernel refused.
    #[error("{program} failed ({status}): {stderr}{}", input_line.as_ref().map(|(n, l)| format!(" (input line {n}: {l})")).unwrap_or_default())]
    Failed { program: &'static str, status: String, stderr: String, input_line: Option<(usize, String)> },

    /// `iptables-save` exits 0 but cannot show a table that another nft tool created with
    /// features it does not understand; writing to it could destroy that tool's rules.
    #[error("iptables-save cannot read the mangle table: {0}")]
    Incompatible(String),

    /// `ip` printed something we cannot read.
    #[error("cannot read the host's devices: {0}")]
    Unreadable(String),

    /// The restore succeeded but reading back does not show what was applied.
    #[error("{} rules read back differ from what was applied: {detail}", family.label())]
    Verify { family: Family, detail: String },
}
