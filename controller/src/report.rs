//! What agents report about their hosts: the dataplane they found, their rules' counters
//! and the events they saw. Agents are not trusted to send tidy data, so every value here
//! is bounded and printable by construction (`grpc::convert` builds them from the wire).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use teefleet_model::{EventKind, SessionName, text::printable};

/// The most events kept per host; older ones are dropped as new ones arrive.
pub const MAX_EVENTS_PER_HOST: i64 = 50;
/// The longest event message kept, in bytes.
pub const MAX_EVENT_MESSAGE: usize = 1024;

/// The agent's dataplane as it last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dataplane {
    /// "nft" or "legacy"; empty if the agent could not tell.
    pub backend: String,
    pub iptables_version: String,
    pub ipv6: bool,
    pub problems: Vec<String>,
}

/// Mirrored traffic: cumulative counts and the rates over the agent's last interval.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub packets_per_second: f64,
    pub bytes_per_second: f64,
}

impl Traffic {
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

/// What an agent says in its periodic Health message, once validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Health {
    pub rule_count: u32,
    pub drift_repairs: u64,
    pub counters: Vec<SessionCounters>,
    /// Only set when it differs from what is stored, to spare the write.
    pub dataplane: Option<Dataplane>,
}

/// Something an agent did or saw on its own, such as repairing drifted rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEvent {
    pub kind: EventKind,
    /// Printable and at most `MAX_EVENT_MESSAGE` bytes.
    pub message: String,
    /// By the agent's clock.
    pub at: DateTime<Utc>,
}

impl HostEvent {
    pub fn new(kind: EventKind, message: &str, at: DateTime<Utc>) -> Self {
        Self { kind, message: printable(message, MAX_EVENT_MESSAGE), at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_saturate_and_counters_keep_their_json_shape() {
        let big = Traffic { packets: u64::MAX, bytes: 1, packets_per_second: 1.5, bytes_per_second: 2.0 };
        let sum = Traffic::total(&[big, big]);
        assert_eq!((sum.packets, sum.bytes, sum.packets_per_second), (u64::MAX, 2, 3.0));
        let c = SessionCounters { session: "web".parse().expect("name"), traffic: big };
        let json = serde_json::to_value(&c).expect("json");
        assert_eq!(json["session"], "web");
        assert_eq!(json["packets"], u64::MAX);
        let back: SessionCounters = serde_json::from_value(json).expect("back");
        assert_eq!(back, c);
    }
}
