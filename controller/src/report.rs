//! What agents report about their hosts: the dataplane they found and their rules'
//! counters (the model's types, which bound themselves; `teefleet-proto` decodes them),
//! and the events they saw, bounded and printable by construction.

use chrono::{DateTime, Utc};
pub use teefleet_model::report::{Dataplane, SessionCounters, Traffic};
use teefleet_model::{EventKind, text::printable};

/// The most events kept per host; older ones are dropped as new ones arrive.
pub const MAX_EVENTS_PER_HOST: i64 = 50;
/// The longest event message kept, in bytes.
pub const MAX_EVENT_MESSAGE: usize = 1024;

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
        let (big, _) = Traffic::reported(u64::MAX, 1, 1.5, 2.0);
        let sum = Traffic::total(&[big, big]);
        assert_eq!((sum.packets(), sum.bytes(), sum.packets_per_second()), (u64::MAX, 2, 3.0));
        let c = SessionCounters { session: "web".parse().expect("name"), traffic: big };
        let json = serde_json::to_value(&c).expect("json");
        assert_eq!(json["session"], "web");
        assert_eq!(json["packets"], u64::MAX);
        let back: SessionCounters = serde_json::from_value(json).expect("back");
        assert_eq!(back, c);
    }
}
