//! Wakes the stream of each connected agent whose desired rule set changed. The stream
//! then reads the desired set from the store itself, so a wake-up carries no data and a
//! missed one is repaired by the stream's periodic re-read.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use teefleet_model::HostId;
use tokio::sync::Notify;

/// Each connected host's stream: its connection id and what wakes it.
type Streams = HashMap<HostId, (i64, Arc<Notify>)>;

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
    pub fn register(&self, host: &HostId, connection_id: i64) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        self.streams().insert(host.clone(), (connection_id, notify.clone()));
        notify
    }

    pub fn unregister(&self, host: &HostId, connection_id: i64) {
        let mut streams = self.streams();
        if streams.get(host).is_some_and(|(id, _)| *id == connection_id) {
            streams.remove(host);
        }
    }

    pub fn notify(&self, hosts: &[HostId]) {
        let streams = self.streams();
        for host in hosts {
            if let Some((_, notify)) = streams.get(host) {
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
        tokio::time::timeout(std::time::Duration::from_secs(1), new.notified()).await.expect("woken");
        hub.unregister(&h, 2);
        assert!(hub.streams().is_empty());
    }
}
