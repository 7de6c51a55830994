//! What collectors count follows Hellos: a source saying Hello from an address it did not
//! have changes what its collector must count, and a collector's agent saying Hello for
//! the first time must be told everything it counts. Agents say Hello in bursts (a
//! rollout, a controller restart), so the hosts are gathered and recompiled together at
//! most every `COALESCE` per replica: one transaction under the compile lock, not one
//! per Hello.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use teefleet_model::HostId;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::store::Store;

/// How long a request waits for others to join it.
const COALESCE: Duration = Duration::from_secs(1);
/// How long a failed recount waits before it is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Asks for a recount; cheap to clone.
#[derive(Clone, Default)]
pub struct Recount {
    wake: Arc<Notify>,
    hosts: Arc<Mutex<BTreeSet<HostId>>>,
}

impl Recount {
    /// Starts the task that recounts when asked, until `shutdown`.
    pub fn start(store: Store, shutdown: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let recount = Recount::default();
        (recount.clone(), tokio::spawn(run(store, recount.clone(), shutdown)))
    }

    /// What collectors count of `host` must be compiled again.
    pub fn request(&self, host: HostId) {
        self.pending().insert(host);
        // A request made while a recount runs is kept, and starts the next one.
        self.wake.notify_one();
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeSet<HostId>> {
        self.hosts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn run(store: Store, recount: Recount, shutdown: CancellationToken) {
    let wake = recount.wake.clone();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(COALESCE) => {}
        }
        let hosts: Vec<HostId> = std::mem::take(&mut *recount.pending()).into_iter().collect();
        if hosts.is_empty() {
            continue;
        }
        match store.recompile_collectors(&hosts).await {
            Ok(changed) => debug!(hosts = hosts.len(), changed = changed.len(), "recounted what collectors count"),
            Err(e) => {
                recount.pending().extend(hosts);
                warn!(error = %e, retry_in = ?RETRY, "could not recompile what collectors count; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => wake.notify_one(),
                }
            }
        }
    }
}
