//! Things the agent did or saw on its own (a drift repair, an ignored state file, a failed
//! certificate renewal), queued
//! for the controller. The queue is bounded: during a long outage the oldest events are
//! kept and new ones are dropped with a warning, so memory stays flat.

use std::time::SystemTime;

use tokio::sync::mpsc;
use tracing::warn;

/// How many events wait for the controller at most.
const CAPACITY: usize = 64;
/// Longer messages are cut, so one event cannot grow a stream message without bound.
const MAX_MESSAGE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    DriftRepaired,
    StateIgnored,
    ApplyFailed,
    RepairFailed,
    RenewFailed,
}

impl EventKind {
    /// The wire name (`HostEvent.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::DriftRepaired => "drift_repaired",
            EventKind::StateIgnored => "state_ignored",
            EventKind::ApplyFailed => "apply_failed",
            EventKind::RepairFailed => "repair_failed",
            EventKind::RenewFailed => "renew_failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub message: String,
    pub at: SystemTime,
}

#[derive(Debug, Clone)]
pub struct EventSender(mpsc::Sender<Event>);

pub type EventReceiver = mpsc::Receiver<Event>;

pub fn channel() -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(CAPACITY);
    (EventSender(tx), rx)
}

impl EventSender {
    /// Queues an event without waiting; drops it when the queue is full.
    pub fn send(&self, kind: EventKind, message: impl Into<String>) {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let event = Event { kind, message, at: SystemTime::now() };
        if let Err(mpsc::error::TrySendError::Full(event)) = self.0.try_send(event) {
            warn!(kind = event.kind.as_str(), message = %event.message, "event queue full; dropping the event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_one_the_controller_accepts() {
        let all = [
            EventKind::DriftRepaired,
            EventKind::StateIgnored,
            EventKind::ApplyFailed,
            EventKind::RepairFailed,
            EventKind::RenewFailed,
        ];
        for kind in all {
            assert!(kind.as_str().parse::<teefleet_model::EventKind>().is_ok(), "{kind:?}");
        }
    }

    #[test]
    fn bounded_and_truncated() {
        let (tx, mut rx) = channel();
        tx.send(EventKind::StateIgnored, "é".repeat(MAX_MESSAGE));
        let first = rx.try_recv().expect("queued");
        assert!(first.message.len() <= MAX_MESSAGE && first.message.chars().all(|c| c == 'é'));
        for i in 0..CAPACITY + 5 {
            tx.send(EventKind::DriftRepaired, format!("{i}"));
        }
        let kept: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok()).map(|e| e.message).collect();
        assert_eq!(kept.len(), CAPACITY);
        assert_eq!(kept.first().map(String::as_str), Some("0"), "the oldest are kept");
    }
}
