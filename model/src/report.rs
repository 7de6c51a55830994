//! What agents report about their hosts: the dataplane they found and their rules'
//! counters. The controller does not trust agents to send tidy data, so these types bound
//! themselves when built from a report: whatever does not fit is dropped and returned, so
//! the caller can log it, and a report never refuses the stream (the host stays managed).

use serde::{Deserialize, Serialize};

use crate::{EventKind, HostId, SessionName, ValidationError, text::printable};

/// The most problems kept from one dataplane report.
pub const MAX_PROBLEMS: usize = 16;
/// The longest problem text kept, in bytes.
pub const MAX_PROBLEM_LEN: usize = 512;
/// The longest iptables version text kept, in bytes.
pub const MAX_VERSION_LEN: usize = 128;
/// The most per-session counters kept from one report.
pub const MAX_COUNTERS: usize = 1024;
/// The longest event message kept, in bytes.
pub const MAX_EVENT_MESSAGE: usize = 1024;
/// The latest time an event may carry, in Unix milliseconds: the end of year 9999, which
/// every timestamp column and date library holds.
pub const MAX_EVENT_TIME_MS: u64 = 253_402_300_799_999;

/// The agent's dataplane as it last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dataplane {
    backend: String,
    iptables_version: String,
    ipv6: bool,
    problems: Vec<String>,
}

impl Dataplane {
    /// The dataplane a report describes, and what of it was dropped.
    pub fn reported(
        backend: &str,
        iptables_version: &str,
        ipv6: bool,
        problems: &[String],
    ) -> (Self, Vec<ValidationError>) {
        let mut dropped = Vec::new();
        let backend = if backend.is_empty() || is_token(backend) {
            backend.to_owned()
        } else {
            dropped
                .push(ValidationError::new("backend", format!("{:?} is not a backend name", printable(backend, 64))));
            String::new()
        };
        if problems.len() > MAX_PROBLEMS {
            dropped.push(ValidationError::new(
                "problems",
                format!("{} problems reported; kept the first {MAX_PROBLEMS}", problems.len()),
            ));
        }
        let dataplane = Self {
            backend,
            iptables_version: printable(iptables_version, MAX_VERSION_LEN),
            ipv6,
            problems: problems.iter().take(MAX_PROBLEMS).map(|p| printable(p, MAX_PROBLEM_LEN)).collect(),
        };
        (dataplane, dropped)
    }

    /// "nft" or "legacy"; empty if the agent could not tell.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    pub fn iptables_version(&self) -> &str {
        &self.iptables_version
    }

    pub fn ipv6(&self) -> bool {
        self.ipv6
    }

    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

/// A token such as "nft": short, lower case, nothing a terminal would interpret.
fn is_token(value: &str) -> bool {
    (1..=16).contains(&value.len())
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Mirrored traffic: cumulative counts and the rates over the agent's last interval,
/// which are finite and not negative.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Traffic {
    packets: u64,
    bytes: u64,
    packets_per_second: f64,
    bytes_per_second: f64,
}

impl Traffic {
    /// Counts and rates as an agent reports them; a rate that is not a finite
    /// non-negative number is no rate (0), and is returned as dropped.
    pub fn reported(packets: u64, bytes: u64, pps: f64, bps: f64) -> (Self, Vec<ValidationError>) {
        let mut dropped = Vec::new();
        let mut rate = |field: &str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                value
            } else {
                dropped.push(ValidationError::new(field, format!("{value} is not a rate")));
                0.0
            }
        };
        let traffic = Self {
            packets,
            bytes,
            packets_per_second: rate("packets_per_second", pps),
            bytes_per_second: rate("bytes_per_second", bps),
        };
        (traffic, dropped)
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn packets_per_second(&self) -> f64 {
        self.packets_per_second
    }

    pub fn bytes_per_second(&self) -> f64 {
        self.bytes_per_second
    }

    /// Rates only describe the agent's last interval: once the agent is gone they describe
    /// nothing, while the counts remain what it last saw.
    pub fn without_rates(self) -> Self {
        Self { packets_per_second: 0.0, bytes_per_second: 0.0, ..self }
    }

    /// Sums several hosts' traffic; counts saturate rather than wrap.
    pub fn total<'a>(all: impl IntoIterator<Item = &'a Traffic>) -> Self {
        all.into_iter().fold(Traffic::default(), |sum, t| Traffic {
            packets: sum.packets.saturating_add(t.packets),
            bytes: sum.bytes.saturating_add(t.bytes),
            packets_per_second: sum.packets_per_second + t.packets_per_second,
            bytes_per_second: sum.bytes_per_second + t.bytes_per_second,
        })
    }
}

/// One session's traffic on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionCounters {
    pub session: SessionName,
    #[serde(flatten)]
    pub traffic: Traffic,
}

/// What a collector counted of one session's clones from one source host, cumulative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Arrived {
    pub packets: u64,
    pub bytes: u64,
}

/// [`Arrived`] for one session and source host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrivalCounters {
    pub session: SessionName,
    pub source: HostId,
    #[serde(flatten)]
    pub arrived: Arrived,
}

/// The most arrival counters kept from one report: one per session and source host a
/// collector can be asked to count.
pub const MAX_ARRIVAL_COUNTERS: usize = crate::limits::MAX_ARRIVALS;

/// Something an agent did or saw on its own, such as repairing drifted rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEvent {
    kind: EventKind,
    message: String,
    at_unix_ms: u64,
}

impl HostEvent {
    /// The message is cut to [`MAX_EVENT_MESSAGE`] printable bytes; a time the agent's
    /// clock could not give (zero, or beyond [`MAX_EVENT_TIME_MS`]) becomes `received`.
    pub fn new(kind: EventKind, message: &str, at_unix_ms: u64, received_unix_ms: u64) -> Self {
        let at_unix_ms = if (1..=MAX_EVENT_TIME_MS).contains(&at_unix_ms) { at_unix_ms } else { received_unix_ms };
        Self { kind, message: printable(message, MAX_EVENT_MESSAGE), at_unix_ms }
    }

    pub fn kind(&self) -> &EventKind {
        &self.kind
    }

    /// Printable, at most [`MAX_EVENT_MESSAGE`] bytes.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// By the agent's clock, when it could tell.
    pub fn at_unix_ms(&self) -> u64 {
        self.at_unix_ms
    }
}
