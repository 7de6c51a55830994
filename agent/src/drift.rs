//! The drift loop: every interval, compare the kernel with the applied set, restore it if
//! something else changed it, and read the counters. It runs whether or not the
//! controller is reachable, so a host keeps mirroring exactly its set through an outage.
//! With the nft backend a check whose nf_tables generation shows no change reuses the
//! counters it last read, as long as [`counter_max_age`] allows.

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

/// The longest a check may reuse counters instead of reading them
/// ([`crate::IptablesDataplane::with_counter_max_age`]), such that reused counters are never
/// older than `refresh`: with the health interval there, each Health report carries
/// counters read since the report before.
///
/// A check reads when reusing would leave the counters older than `refresh` at the next
/// check, `interval` later. Checks run an interval apart, so the ages of counters a check
/// read are near whole intervals when the next checks look at them; the bound lies a
/// quarter interval (at most 1 s) past the last whole interval that may still be reused, so
/// timer jitter cannot flip the decision. Counters an apply read between checks may reach
/// `refresh` plus that quarter interval. With the defaults (10 s, 5 s) every other check
/// reads: one `iptables-save` per 10 s.
pub fn counter_max_age(refresh: Duration, interval: Duration) -> Duration {
    let reusable = refresh.saturating_sub(interval).as_nanos() / interval.as_nanos().max(1);
    let reusable = interval.saturating_mul(u32::try_from(reusable).unwrap_or(u32::MAX));
    reusable + (interval / 4).min(Duration::from_secs(1))
}

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
                    warn!(family = repair.scope.label(), drift = %repair.drift, "repaired drifted rules");
                    events.send(EventKind::DriftRepaired, format!("{}: {}", repair.scope.label(), repair.drift));
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

#[cfg(test)]
mod tests {
    use super::*;

    const CASES: [(u64, u64, u64); 10] = [
        // (health interval, drift interval, seconds between reads), in seconds
        (10, 5, 10),
        (10, 1, 10),
        (10, 3, 9),
        (10, 4, 8),
        (10, 6, 6),
        (10, 10, 10),
        (10, 30, 30),
        (29, 10, 20),
        (1, 1, 1),
        (3600, 5, 3600),
    ];

    fn max_age(refresh: u64, interval: u64) -> Duration {
        counter_max_age(Duration::from_secs(refresh), Duration::from_secs(interval))
    }

    #[test]
    fn counters_are_read_at_the_last_check_that_keeps_them_within_the_refresh_period() {
        for (refresh, interval, every) in CASES {
            let max_age = max_age(refresh, interval);
            // A check reads at the first whole interval that is not below the bound.
            let read = (1..).map(|k| k * interval).find(|age| Duration::from_secs(*age) >= max_age);
            assert_eq!(read, Some(every), "health {refresh} s, drift {interval} s");
            assert!(every <= refresh.max(interval), "health {refresh} s, drift {interval} s");
        }
    }

    #[test]
    fn timer_jitter_does_not_change_the_decision() {
        let jitter = Duration::from_millis(200);
        for (refresh, interval, _) in CASES {
            let max_age = max_age(refresh, interval);
            for k in 1..=(2 * refresh / interval + 1) {
                let age = Duration::from_secs(k * interval);
                let reused = age < max_age;
                assert_eq!(age + jitter < max_age, reused, "health {refresh} s, drift {interval} s, age {age:?}");
                assert_eq!(age - jitter < max_age, reused, "health {refresh} s, drift {interval} s, age {age:?}");
            }
        }
    }
}
