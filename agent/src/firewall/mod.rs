//! The host's dataplane: where a validated [`RuleSet`] becomes kernel state.
//!
//! The stream client only sees the [`Dataplane`] trait, so it can be tested with a
//! recording fake and a load generator can stub it. The real implementation,
//! [`IptablesDataplane`], renders rules into chains the agent owns in the `mangle` table
//! ([`render`]) and applies them in one `iptables-restore --noflush` transaction
//! ([`iptables`]).

use std::{future::Future, net::IpAddr};

use teefleet_model::{RuleSet, SessionName};

pub mod iptables;
pub mod render;

pub use iptables::{Iptables, IptablesDataplane};
pub use render::{Family, Observed};

/// Something that can make the host mirror exactly the traffic a rule set describes.
///
/// `apply` replaces whatever set was applied before; an empty set removes everything the
/// agent installed. An implementation must leave the previous set in place when it fails,
/// so a failed push never leaves a half-applied set behind.
pub trait Dataplane: Send + Sync + 'static {
    fn apply(&self, set: &RuleSet) -> impl Future<Output = Result<(), ApplyError>> + Send;
}

/// Why a rule set could not be applied. The previous set is still in place.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// ip6tables support comes later; the renderer takes a [`Family`] so it can be added.
    #[error("IPv6 collectors are not supported yet (session {session}, collector {gateway})")]
    Ipv6Unsupported { session: SessionName, gateway: IpAddr },

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
}
