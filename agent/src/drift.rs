//! The drift loop: every interval, compare the kernel with the applied set, restore it if
//! something else changed it, and read the counters. It runs whether or not the
//! controller is reachable, so a host keeps mirroring exactly its set through an outage.

use std::{sync::Arc, time::Duration};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::{
    error_chain,
    events::{EventKind, EventSender},
    firewall::Dataplane,
    status::Status,
};

/// Runs checks until `shutdown`; the first one at once.
pub async fn run<D: Dataplane>(
    dataplane: Arc<D>,
    status: Arc<Status>,
    events: EventSender,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // A failure that repeats every interval is logged and reported once until it changes.
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match dataplane.check().await {
            Ok(check) => {
                for repair in &check.repairs {
                    warn!(family = repair.family.label(), drift = %repair.drift, "repaired drifted rules");
                    events.send(EventKind::DriftRepaired, format!("{}: {}", repair.family.label(), repair.drift));
                }
                if last_error.take().is_some() {
                    warn!("drift checks succeed again");
                }
                debug!(repairs = check.repairs.len(), sessions = check.counters.len(), "drift check");
                status.record_check(Ok(&check));
            }
            Err(e) => {
                let message = error_chain(&e);
                if last_error.as_ref() != Some(&message) {
                    error!(error = %message, "drift check or repair failed; retrying every interval");
                    events.send(EventKind::RepairFailed, message.clone());
                    last_error = Some(message.clone());
                }
                status.record_check(Err(message));
            }
        }
    }
}
