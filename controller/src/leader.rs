//! Work only one replica should do at a time (EC2 calls, session expiry): the replica
//! holding the leader lock (a Postgres advisory lock) runs it; the others retry the lock,
//! so when the leader dies its connection closes, the lock frees and another takes over
//! within `RETRY`.

use std::{future::Future, time::Duration};

use futures::future::BoxFuture;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::{LEADER_PING, Store};

/// How often a replica that does not lead tries the lock.
const RETRY: Duration = Duration::from_secs(5);

/// Runs `pass` every `period`, the first time at once, until `shutdown`, which also
/// interrupts a pass: the leader's periodic loops, whose passes each run in their own
/// transactions, so an interrupted one is rolled back and the next leader redoes it.
pub async fn every<F: Future<Output = ()>>(
    period: Duration,
    shutdown: &CancellationToken,
    mut pass: impl FnMut() -> F,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = pass() => {}
        }
    }
}

/// Runs `work` while this replica leads, until `shutdown`. `work` gets a token cancelled
/// when the lead is lost, and must return soon after.
pub async fn run<F>(store: Store, work: F, shutdown: CancellationToken)
where
    F: Fn(CancellationToken) -> BoxFuture<'static, ()>,
{
    let mut refused_logged = false;
    loop {
        match store.try_lead().await {
            Ok(Some(mut lead)) => {
                info!("leading: this replica runs the EC2 reconciler, the tag re-resolution and session expiry");
                refused_logged = false;
                let lost = shutdown.child_token();
                let task = tokio::spawn(work(lost.clone()));
                let mut ping = tokio::time::interval(LEADER_PING);
                let held = loop {
                    tokio::select! {
                        () = shutdown.cancelled() => break true,
                        _ = ping.tick() => if !lead.still_held().await { break false },
                    }
                };
                lost.cancel();
                if let Err(e) = task.await {
                    warn!(error = %e, "the leader's work ended abnormally");
                }
                if held {
                    lead.release().await;
                    info!("gave up the lead");
                    return;
                }
                warn!("lost the leader lock (database connection gone); stopped the EC2 work");
            }
            Ok(None) => {}
            Err(e) => {
                if !refused_logged {
                    warn!(error = %e, "cannot try the leader lock; retrying");
                    refused_logged = true;
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}
