//! Wakes the stream of each connected agent whose desired rule set changed. The stream
//! then reads the desired set from the store itself, so a wake-up carries no data and a
//! missed one is repaired by the stream's periodic re-read.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use teefleet_model::HostId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Each connected host's stream: its connection id and what wakes it.
type Streams = HashMap<HostId, (i64, Arc<Notify>, CancellationToken)>;

/// What a stream waits on: wake-ups, and being cut off when its host is revoked.
pub struct Registration {
    pub wake: Arc<Notify>,
    pub cut: CancellationToken,
}

#[derive(Clone, Default)]
pub struct Hub {
    streams: Arc<Mutex<Streams>>,
}

impl Hub {
    fn streams(&self) -> MutexGuard<'_, Streams> {
        // The map stays consistent even if a holder panicked: every update is one insert
        // or remove.
        self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a host's stream; a newer stream for the same host replaces an older one.
    pub fn register(&self, host: &HostId, connection_id: i64) -> Registration {
        let registration = Registration { wake: Arc::new(Notify::new()), cut: CancellationToken::new() };
        self.streams().insert(host.clone(), (connection_id, registration.wake.clone(), registration.cut.clone()));
        registration
    }

    /// Ends the host's stream, if it has one here; true if it had.
    pub fn cut_off(&self, host: &HostId) -> bool {
        self.streams().remove(host).map(|(_, _, cut)| cut.cancel()).is_some()
    }

    pub fn unregister(&self, host: &HostId, connection_id: i64) {
        let mut streams = self.streams();
        if streams.get(host).is_some_and(|(id, ..)| *id == connection_id) {
            streams.remove(host);
        }
    }

    pub fn notify(&self, hosts: &[HostId]) {
        let streams = self.streams();
        for host in hosts {
            if let Some((_, notify, _)) = streams.get(host) {
                notify.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn newer_stream_wins_and_stale_unregister_is_ignored() {
        let hub = Hub::default();
        let h: HostId = "h1".parse().expect("host");
        let _old = hub.register(&h, 1);
        let new = hub.register(&h, 2);
        hub.unregister(&h, 1);
        hub.notify(std::slice::from_ref(&h));
        tokio::time::timeout(std::time::Duration::from_secs(1), new.wake.notified()).await.expect("woken");
        hub.unregister(&h, 2);
        assert!(hub.streams().is_empty());
    }

    #[test]
    fn cutting_off_ends_only_that_host() {
        let hub = Hub::default();
        let (a, b): (HostId, HostId) = ("a".parse().expect("host"), "b".parse().expect("host"));
        let ra = hub.register(&a, 1);
        let rb = hub.register(&b, 2);
        assert!(hub.cut_off(&a));
        assert!(ra.cut.is_cancelled() && !rb.cut.is_cancelled());
        assert!(!hub.cut_off(&a), "a host without a stream has nothing to cut");
    }
}
