//! Health reports written in batches: every agent reports every few seconds, so 10 000
//! agents would cost a thousand single-row transactions a second. Streams hand their
//! reports here; the writer keeps the latest per host and stores them all in one statement
//! per `FLUSH`. A failed write keeps the reports for the next try (newer ones win), so a
//! database outage loses no dataplane change; so does a host whose row a recompile held.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Duration,
};

use teefleet_model::HostId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    report::{CounterSample, Health},
    store::Store,
};

/// How long a report may wait to be stored: well inside the 30 s liveness window.
const FLUSH: Duration = Duration::from_secs(1);
/// Reports queued between the streams and the writer before a stream waits.
const QUEUE: usize = 16 * 1024;
/// How long counter samples are kept: twice the longest delivery window, and then some.
pub const SAMPLES_KEPT: Duration = Duration::from_secs(15 * 60);
/// How often samples older than that are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Samples kept while the database cannot take them: two minutes of 10 000 agents.
const MAX_PENDING_SAMPLES: usize = 120_000;

/// Where streams send their reports; cheap to clone.
#[derive(Clone)]
pub struct Heartbeats {
    tx: mpsc::Sender<(HostId, Health)>,
}

impl Heartbeats {
    /// Starts the writer, which stores what is pending one last time at `shutdown`.
    pub fn start(store: Store, shutdown: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx }, tokio::spawn(write(store, rx, shutdown)))
    }

    /// Queues a report; waits only if the writer is a whole queue behind.
    pub async fn submit(&self, host: HostId, health: Health) {
        if self.tx.send((host, health)).await.is_err() {
            debug!("health writer stopped; report dropped");
        }
    }
}

/// Takes a report's counter sample apart from the report: the latest report per host is
/// enough for the host's row, but delivery needs every reading. The oldest go first when
/// the database has been away for long.
fn sample(samples: &mut VecDeque<(HostId, CounterSample)>, host: &HostId, health: &mut Health) {
    if let Some(sample) = health.sample.take() {
        if samples.len() == MAX_PENDING_SAMPLES {
            samples.pop_front();
        }
        samples.push_back((host.clone(), sample));
    }
}

/// Keeps `newer`, and the dataplane of `older` when `newer` has none (it carries one only
/// when it changed).
fn merge(pending: &mut HashMap<HostId, Health>, host: HostId, mut newer: Health) {
    if let Some(older) = pending.remove(&host) {
        newer.dataplane = newer.dataplane.or(older.dataplane);
    }
    pending.insert(host, newer);
}

/// Puts reports that were not stored back into `pending`; those that arrived meanwhile
/// are newer and go on top of them.
fn keep(pending: &mut HashMap<HostId, Health>, reports: impl IntoIterator<Item = (HostId, Health)>) {
    for (host, older) in reports {
        if let Some(newer) = pending.insert(host.clone(), older) {
            merge(pending, host, newer);
        }
    }
}

async fn write(store: Store, mut rx: mpsc::Receiver<(HostId, Health)>, shutdown: CancellationToken) {
    let mut pending: HashMap<HostId, Health> = HashMap::new();
    let mut tick = tokio::time::interval(FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut samples = VecDeque::new();
    let mut pruned = tokio::time::Instant::now();
    loop {
        let last = tokio::select! {
            () = shutdown.cancelled() => true,
            _ = tick.tick() => false,
            report = rx.recv() => match report {
                Some((host, mut health)) => {
                    sample(&mut samples, &host, &mut health);
                    merge(&mut pending, host, health);
                    continue;
                }
                None => true,
            },
        };
        while let Ok((host, mut health)) = rx.try_recv() {
            sample(&mut samples, &host, &mut health);
            merge(&mut pending, host, health);
        }
        if !samples.is_empty() {
            let batch: Vec<(HostId, CounterSample)> = samples.drain(..).collect();
            if let Err(e) = store.add_counter_samples(&batch).await {
                debug!(error = %e, samples = batch.len(), "could not store counter samples; keeping them");
                samples.extend(batch);
                samples.drain(..samples.len().saturating_sub(MAX_PENDING_SAMPLES));
            }
        }
        if !pending.is_empty() {
            let batch: Vec<(HostId, Health)> = pending.drain().collect();
            match store.hosts_health(&batch).await {
                Ok(busy) => {
                    if failing {
                        warn!(hosts = batch.len(), "stored health reports again");
                        failing = false;
                    }
                    if !busy.is_empty() {
                        let busy: HashSet<HostId> = busy.into_iter().collect();
                        debug!(hosts = busy.len(), "hosts locked by a change; their health goes with the next batch");
                        keep(&mut pending, batch.into_iter().filter(|(host, _)| busy.contains(host)));
                    }
                }
                Err(e) => {
                    if !failing {
                        warn!(error = %e, hosts = batch.len(), "could not store health reports; keeping them");
                        failing = true;
                    }
                    keep(&mut pending, batch);
                }
            }
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = tokio::time::Instant::now();
            match store.prune_counter_samples(SAMPLES_KEPT).await {
                Ok(deleted) => debug!(deleted, "pruned counter samples"),
                Err(e) => debug!(error = %e, "could not prune counter samples; next time"),
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Dataplane;

    #[test]
    fn a_newer_report_keeps_an_older_dataplane_change() {
        let host: HostId = "h1".parse().expect("host");
        let (dataplane, _) = Dataplane::reported("nft", "", false, &[]);
        let mut pending = HashMap::new();
        merge(
            &mut pending,
            host.clone(),
            Health { rule_count: 1, dataplane: Some(dataplane.clone()), ..Health::default() },
        );
        merge(&mut pending, host.clone(), Health { rule_count: 2, ..Health::default() });
        let got = &pending[&host];
        assert_eq!((got.rule_count, got.dataplane.as_ref()), (2, Some(&dataplane)));
    }
}
