//! Acknowledgements written in batches. A change to a thousand hosts brings a thousand
//! Acks within milliseconds, and ten such changes at once ten thousand; one UPDATE each
//! made them ten thousand transactions competing with the next change for the database
//! and the CPUs. Streams hand their Acks here and go on; the writer stores what arrived
//! in one statement per `FLUSH` (short: the status view shows "applied" from it). A write
//! that fails, or finds a host's row held by a change, keeps those Acks for the next one.

use std::{collections::HashMap, time::Duration};

use teefleet_model::HostId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::store::{AckRecord, Store};

/// How long an Ack may wait to be stored.
const FLUSH: Duration = Duration::from_millis(25);
/// Acks queued between the streams and the writer before a stream waits.
const QUEUE: usize = 16 * 1024;

/// Where streams send their Acks; cheap to clone.
#[derive(Clone)]
pub struct Acks {
    tx: mpsc::Sender<(HostId, AckRecord)>,
}

impl Acks {
    /// Starts the writer, which stores what is pending one last time at `shutdown`.
    pub fn start(store: Store, shutdown: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx }, tokio::spawn(write(store, rx, shutdown)))
    }

    /// Queues the host's Ack of `version`; waits only if the writer is a whole queue behind.
    pub async fn submit(&self, host: HostId, ack: AckRecord) {
        if self.tx.send((host, ack)).await.is_err() {
            debug!("ack writer stopped; acknowledgement dropped");
        }
    }
}

/// Gathers what arrives within `FLUSH`, a stream's later Ack of a host replacing its
/// earlier one (pushes, and so Acks, only go up on a stream, and a newer stream's Hello
/// replaced what an older one acknowledged). True when the writer is to stop.
async fn gather(
    rx: &mut mpsc::Receiver<(HostId, AckRecord)>,
    pending: &mut HashMap<HostId, AckRecord>,
    shutdown: &CancellationToken,
) -> bool {
    let deadline = tokio::time::sleep(FLUSH);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return false,
            () = shutdown.cancelled() => return true,
            more = rx.recv() => match more {
                Some((host, ack)) => {
                    pending.insert(host, ack);
                }
                None => return true,
            },
        }
    }
}

async fn write(store: Store, mut rx: mpsc::Receiver<(HostId, AckRecord)>, shutdown: CancellationToken) {
    let mut pending: HashMap<HostId, AckRecord> = HashMap::new();
    let mut failing = false;
    loop {
        // Idle until the first Ack; with Acks kept from the last write, on at once.
        let last = if pending.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => true,
                first = rx.recv() => match first {
                    Some((host, ack)) => {
                        pending.insert(host, ack);
                        gather(&mut rx, &mut pending, &shutdown).await
                    }
                    None => true,
                },
            }
        } else {
            gather(&mut rx, &mut pending, &shutdown).await
        };
        while let Ok((host, ack)) = rx.try_recv() {
            pending.insert(host, ack);
        }
        if !pending.is_empty() {
            let batch: Vec<(HostId, AckRecord)> = pending.drain().collect();
            match store.hosts_ack(&batch).await {
                Ok(outcome) => {
                    if failing {
                        warn!(hosts = batch.len(), "stored acknowledgements again");
                        failing = false;
                    }
                    for (host, ack) in &batch {
                        if outcome.above_desired.contains(host) {
                            // Only after the database lost versions (a restore) can this happen.
                            warn!(host_id = %host, version = ack.version, "the acknowledged version is above the host's desired one");
                        }
                    }
                    if !outcome.busy.is_empty() {
                        debug!(
                            hosts = outcome.busy.len(),
                            "hosts locked by a change; their acks go with the next batch"
                        );
                        pending.extend(batch.into_iter().filter(|(h, _)| outcome.busy.contains(h)));
                    }
                }
                Err(e) => {
                    if !failing {
                        warn!(error = %e, hosts = batch.len(), "could not store acknowledgements; keeping them");
                        failing = true;
                    }
                    pending.extend(batch);
                    // Not in a tight loop while the database is away.
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }
        if last {
            return;
        }
    }
}
