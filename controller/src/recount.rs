//! What collectors count follows their sources' addresses: a source saying Hello from an
//! address it did not have changes what its collector must count. Agents say Hello in
//! bursts (a rollout, a controller restart), and each recount compiles every collector,
//! so requests are coalesced into one recount at most every `COALESCE` per replica.

use std::{sync::Arc, time::Duration};

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
}

impl Recount {
    /// Starts the task that recounts when asked, until `shutdown`.
    pub fn start(store: Store, shutdown: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let recount = Recount::default();
        (recount.clone(), tokio::spawn(run(store, recount.wake, shutdown)))
    }

    /// A source's addresses changed: its collectors' counting rules must follow.
    pub fn request(&self) {
        // A request made while a recount runs is kept, and starts the next one.
        self.wake.notify_one();
    }
}

async fn run(store: Store, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(COALESCE) => {}
        }
        match store.recompile_collectors().await {
            Ok(changed) => debug!(collectors = changed.len(), "recounted what collectors count"),
            Err(e) => {
                warn!(error = %e, retry_in = ?RETRY, "could not recompile what collectors count; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => wake.notify_one(),
                }
            }
        }
    }
}
