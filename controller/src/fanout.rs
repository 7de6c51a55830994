//! Gets desired-set changes to the streams this replica holds, whichever replica made
//! them: a change NOTIFYs at commit, this task reads the changed sets of its own hosts in
//! one batch and hands them to the hub. A periodic re-read compares versions, so a
//! notification lost while the database or the listener was away strands no host; it also
//! re-checks the streams' certificates, so a revocation whose notice was lost still ends
//! them.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use sqlx::postgres::PgListener;
use teefleet_model::HostId;
use tokio::{
    sync::{Notify, mpsc},
    time::MissedTickBehavior,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    push::Hub,
    store::{Changed, DESIRED_CHANNEL, REVOKED_CHANNEL, Store},
};

/// How long to wait before listening again after the database refused.
const RELISTEN: Duration = Duration::from_secs(1);

#[derive(Debug)]
enum Notice {
    Desired(Changed),
    Revoked(HostId),
    /// Notifications may have been missed: compare every version now.
    Missed,
}

/// Runs until `shutdown`. `ec2_wake` is told about every session change, from any replica.
pub async fn run(store: Store, hub: Hub, ec2_wake: Arc<Notify>, resync: Duration, shutdown: CancellationToken) {
    let (tx, mut rx) = mpsc::channel(1024);
    let listener = tokio::spawn(listen(store.clone(), tx, shutdown.clone()));
    let mut tick = tokio::time::interval(resync);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => resync_all(&store, &hub).await,
            notice = rx.recv() => {
                let Some(first) = notice else { break };
                // Notices that piled up while the last batch was read go out as one batch.
                let mut hosts = BTreeSet::new();
                let mut all = false;
                let mut pending = Some(first);
                while let Some(notice) = pending.take().or_else(|| rx.try_recv().ok()) {
                    match notice {
                        Notice::Desired(changed) => {
                            ec2_wake.notify_one();
                            match changed {
                                Changed::Hosts(h) => hosts.extend(h),
                                Changed::Many => all = true,
                            }
                        }
                        Notice::Missed => all = true,
                        Notice::Revoked(host) => {
                            if hub.cut_off(&host) {
                                info!(host_id = %host, "host revoked on another replica; closed its stream");
                            }
                        }
                    }
                }
                if all {
                    resync_all(&store, &hub).await;
                } else if !hosts.is_empty() {
                    let hosts: Vec<HostId> = hosts.into_iter().collect();
                    deliver(&store, &hub, &hub.held(&hosts)).await;
                }
            }
        }
    }
    listener.abort();
}

async fn deliver(store: &Store, hub: &Hub, hosts: &[HostId]) {
    if hosts.is_empty() {
        return;
    }
    match store.desired_many(hosts).await {
        Ok(sets) => {
            let delivered = hub.deliver(sets);
            debug!(hosts = hosts.len(), delivered, "delivered desired sets");
        }
        // The next resync compares versions again.
        Err(e) => warn!(error = %e, hosts = hosts.len(), "could not read desired rule sets"),
    }
}

/// Compares every held stream's version with the store's, delivers what differs, and ends
/// streams whose certificate is no longer trusted. A database error changes nothing: a
/// brief outage must neither stall nor cut off any agent.
async fn resync_all(store: &Store, hub: &Hub) {
    let held = hub.hosts();
    if held.is_empty() {
        return;
    }
    match store.desired_versions(&held).await {
        Ok(versions) => deliver(store, hub, &hub.stale(&versions)).await,
        Err(e) => warn!(error = %e, "could not re-read desired versions"),
    }
    let certificates = hub.certificates();
    if certificates.is_empty() {
        return;
    }
    let prints: Vec<[u8; 32]> = certificates.iter().map(|(_, p)| *p).collect();
    match store.trusted_certs(&prints).await {
        Ok(trusted) => {
            for (host, _) in certificates.iter().filter(|(_, p)| !trusted.contains(p)) {
                if hub.cut_off(host) {
                    warn!(host_id = %host, "the agent's certificate is revoked or expired; closed its stream");
                }
            }
        }
        Err(e) => warn!(error = %e, "could not re-check agent certificates"),
    }
}

/// Forwards notifications; a lost connection becomes [`Notice::Missed`] once listening
/// works again.
async fn listen(store: Store, tx: mpsc::Sender<Notice>, shutdown: CancellationToken) {
    let mut listener: Option<PgListener> = None;
    let mut failing = false;
    loop {
        let active = match listener.as_mut() {
            Some(l) => l,
            None => match store.listener().await {
                Ok(l) => {
                    if failing {
                        info!("listening for changes from other replicas again");
                        failing = false;
                        if tx.send(Notice::Missed).await.is_err() {
                            return;
                        }
                    }
                    listener.insert(l)
                }
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "cannot listen for changes from other replicas; retrying");
                        failing = true;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(RELISTEN) => continue,
                    }
                }
            },
        };
        let received = tokio::select! {
            () = shutdown.cancelled() => return,
            r = active.try_recv() => r,
        };
        let notice = match received {
            Ok(Some(n)) if n.channel() == DESIRED_CHANNEL => Notice::Desired(Changed::parse(n.payload())),
            Ok(Some(n)) if n.channel() == REVOKED_CHANNEL => match n.payload().parse() {
                Ok(host) => Notice::Revoked(host),
                Err(_) => {
                    warn!(payload = n.payload(), "ignored a revocation notice without a valid host id");
                    continue;
                }
            },
            Ok(Some(_)) => continue,
            // Reconnected already; what was sent meanwhile is lost.
            Ok(None) => {
                warn!("the notification connection was lost and re-established; re-reading desired sets");
                Notice::Missed
            }
            Err(e) => {
                warn!(error = %e, "lost the notification connection; retrying");
                listener = None;
                failing = true;
                continue;
            }
        };
        if tx.send(notice).await.is_err() {
            return;
        }
    }
}
