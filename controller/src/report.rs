//! What agents report about their hosts: the dataplane they found, their rules' counters
//! and the events they saw (the model's types, which bound themselves; `teefleet-proto`
//! decodes them), and what the controller keeps of them.

pub use teefleet_model::report::{ArrivalCounters, Dataplane, HostEvent, SessionCounters, Traffic};

/// The most events kept per host; older ones are dropped as new ones arrive.
pub const MAX_EVENTS_PER_HOST: i64 = 50;

/// What an agent says in its periodic Health message, once validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Health {
    pub rule_count: u32,
    pub drift_repairs: u64,
    pub counters: Vec<SessionCounters>,
    /// Only set when it differs from what is stored, to spare the write.
    pub dataplane: Option<Dataplane>,
    /// The counters as read at one time, kept to compare delivery; `None` when the host
    /// counts nothing.
    pub sample: Option<CounterSample>,
}

/// One Health's counters, kept for a while so delivery can be compared over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterSample {
    /// When the counters were read, on the controller's clock: the report's arrival less
    /// the age the agent gave.
    pub read_at: chrono::DateTime<chrono::Utc>,
    /// A source's mirrored clones per session.
    pub sent: Vec<SessionCounters>,
    /// A collector's arrivals per session and source host.
    pub arrived: Vec<ArrivalCounters>,
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
