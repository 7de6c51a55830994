//! The agent streams this replica holds, and delivery of desired rule sets to them. The
//! fan-out task reads changed sets from the store in batches and hands each stream its own
//! set through a watch channel, so a change to 10 000 hosts costs a few queries, not one
//! per stream, and a stream that is busy sees only the latest set.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use teefleet_model::{HostId, RuleSet};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The latest desired set handed to a stream; `None` until the first delivery.
pub type Desired = watch::Receiver<Option<Arc<RuleSet>>>;

struct Entry {
    connection_id: i64,
    /// The desired version the stream has (read at Hello, or delivered since).
    known: Option<u64>,
    desired: watch::Sender<Option<Arc<RuleSet>>>,
    cut: CancellationToken,
    /// The client certificate's fingerprint, re-checked at every resync (`None` with
    /// --insecure).
    certificate: Option<[u8; 32]>,
}

/// What a stream waits on: new desired sets, and being cut off when its host is revoked.
/// The set channel closes when a newer stream for the same host replaces this one.
pub struct Registration {
    pub desired: Desired,
    pub cut: CancellationToken,
}

#[derive(Clone, Default)]
pub struct Hub {
    streams: Arc<Mutex<HashMap<HostId, Entry>>>,
}

impl Hub {
    fn streams(&self) -> MutexGuard<'_, HashMap<HostId, Entry>> {
        // The map stays consistent even if a holder panicked: every update is one insert,
        // remove or field write.
        self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a host's stream before it reads its desired set, so no delivery can fall
    /// between the read and the registration; a newer stream replaces an older one.
    pub fn register(&self, host: &HostId, connection_id: i64, certificate: Option<[u8; 32]>) -> Registration {
        let (tx, rx) = watch::channel(None);
        let cut = CancellationToken::new();
        let entry = Entry { connection_id, known: None, desired: tx, cut: cut.clone(), certificate };
        self.streams().insert(host.clone(), entry);
        Registration { desired: rx, cut }
    }

    /// Records the version the stream read itself, unless a delivery already gave it one.
    pub fn read_at_hello(&self, host: &HostId, connection_id: i64, version: u64) {
        if let Some(e) = self.streams().get_mut(host).filter(|e| e.connection_id == connection_id) {
            e.known.get_or_insert(version);
        }
    }

    /// Ends the host's stream, if it has one here; true if it had.
    pub fn cut_off(&self, host: &HostId) -> bool {
        self.streams().remove(host).map(|e| e.cut.cancel()).is_some()
    }

    pub fn unregister(&self, host: &HostId, connection_id: i64) {
        let mut streams = self.streams();
        if streams.get(host).is_some_and(|e| e.connection_id == connection_id) {
            streams.remove(host);
        }
    }

    /// How many streams this replica holds.
    pub fn connected(&self) -> usize {
        self.streams().len()
    }

    /// Every host with a stream here.
    pub fn hosts(&self) -> Vec<HostId> {
        self.streams().keys().cloned().collect()
    }

    /// Those of `hosts` with a stream here.
    pub fn held(&self, hosts: &[HostId]) -> Vec<HostId> {
        let streams = self.streams();
        hosts.iter().filter(|h| streams.contains_key(*h)).cloned().collect()
    }

    /// Those of `versions` whose stream has another version than the one given.
    pub fn stale(&self, versions: &[(HostId, u64)]) -> Vec<HostId> {
        let streams = self.streams();
        versions
            .iter()
            .filter(|(h, v)| streams.get(h).is_some_and(|e| e.known != Some(*v)))
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// Hands each set to its host's stream unless the stream has that version; returns how
    /// many streams got a new set.
    pub fn deliver(&self, sets: Vec<(HostId, RuleSet)>) -> usize {
        let mut streams = self.streams();
        let mut delivered = 0;
        for (host, set) in sets {
            let Some(entry) = streams.get_mut(&host) else { continue };
            if entry.known == Some(set.version()) {
                continue;
            }
            entry.known = Some(set.version());
            // A send fails only when the stream is already ending; its unregister follows.
            let _ = entry.desired.send(Some(Arc::new(set)));
            delivered += 1;
        }
        delivered
    }

    /// Each TLS stream's host and certificate fingerprint.
    pub fn certificates(&self) -> Vec<(HostId, [u8; 32])> {
        self.streams().iter().filter_map(|(h, e)| e.certificate.map(|c| (h.clone(), c))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> HostId {
        name.parse().expect("host")
    }

    fn set(version: u64) -> RuleSet {
        RuleSet::new(version, Vec::new()).expect("set")
    }

    #[test]
    fn delivers_only_new_versions_to_held_hosts() {
        let hub = Hub::default();
        let (a, b) = (host("a"), host("b"));
        let mut ra = hub.register(&a, 1, None);
        hub.read_at_hello(&a, 1, 3);
        assert_eq!(hub.deliver(vec![(a.clone(), set(3)), (b.clone(), set(1))]), 0, "a has 3; b is not here");
        assert_eq!(hub.stale(&[(a.clone(), 3), (b.clone(), 9)]), Vec::<HostId>::new());
        assert_eq!(hub.stale(&[(a.clone(), 4)]), vec![a.clone()]);
        assert_eq!(hub.deliver(vec![(a.clone(), set(4))]), 1);
        assert!(ra.desired.has_changed().expect("open"));
        assert_eq!(ra.desired.borrow_and_update().as_ref().map(|s| s.version()), Some(4));
        hub.read_at_hello(&a, 1, 3);
        assert_eq!(hub.stale(&[(a.clone(), 4)]), Vec::<HostId>::new(), "a delivery outranks the Hello read");
        assert_eq!(hub.held(&[a.clone(), b]), vec![a]);
    }

    #[test]
    fn newer_stream_wins_and_stale_unregister_is_ignored() {
        let hub = Hub::default();
        let h = host("h1");
        let old = hub.register(&h, 1, None);
        let _new = hub.register(&h, 2, None);
        assert!(old.desired.has_changed().is_err(), "the replaced stream's channel is closed");
        hub.unregister(&h, 1);
        assert_eq!(hub.hosts(), vec![h.clone()]);
        hub.unregister(&h, 2);
        assert!(hub.hosts().is_empty());
    }

    #[test]
    fn cutting_off_ends_only_that_host() {
        let hub = Hub::default();
        let (a, b) = (host("a"), host("b"));
        let ra = hub.register(&a, 1, Some([1; 32]));
        let rb = hub.register(&b, 2, None);
        assert_eq!(hub.certificates(), vec![(a.clone(), [1; 32])]);
        assert!(hub.cut_off(&a));
        assert!(ra.cut.is_cancelled() && !rb.cut.is_cancelled());
        assert!(!hub.cut_off(&a), "a host without a stream has nothing to cut");
    }
}
