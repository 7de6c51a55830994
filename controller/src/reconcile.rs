//! The EC2 reconciler: a raw collector's Source/Dest Check must be off while any session
//! uses it (EC2 drops frames not addressed to the instance otherwise) and back to its
//! original value when none does; so must a source's while a session with
//! `disable_source_check` covers it (EC2 drops what an instance sends from another
//! address, and a raw clone of an inbound packet carries the peer's). `plan` and
//! `plan_sources` are pure; `run` acts on them and retries failures with capped, jittered
//! backoff. Originals live in Postgres, so whichever replica leads restores them.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use teefleet_model::{Encap, InstanceId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    cloud::{Cloud, CloudError},
    store::{CollectorRecord, SdcState, SourceCheck, Store},
};

/// Re-check at least this often, so a change made behind teefleet's back or a lost wake-up
/// is corrected.
const PERIOD: Duration = Duration::from_secs(10);
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub collector: InstanceId,
    pub source_dest_check: bool,
}

/// What to change: every collector whose recorded state differs from what its use demands.
/// Only raw clones (`--encap none`) need a collector's check off: a VXLAN clone is
/// addressed to the collector itself.
pub fn plan(collectors: &[CollectorRecord]) -> Vec<Action> {
    collectors
        .iter()
        .filter_map(|c| {
            // A collector that is not an instance has no check (and takes VXLAN only).
            let id = c.instance_id.instance()?;
            let raw_in_use = c.session_count > 0 && c.encap == Encap::None;
            let want = if raw_in_use { false } else { c.original_source_dest_check };
            (c.source_dest_check != SdcState::from(want)).then_some(Action { collector: id, source_dest_check: want })
        })
        .collect()
}

/// What to do about one source's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceAction {
    /// Needed off, original unknown: read and record it, then turn the check off.
    RecordAndDisable(InstanceId),
    Disable(InstanceId),
    /// No longer needed: put the original back.
    Restore(InstanceId, bool),
    /// Back at its original and not needed: nothing left to remember.
    Forget(InstanceId),
}

/// What to change about sources' checks. Hosts that are not EC2 instances have no check.
pub fn plan_sources(checks: &[SourceCheck]) -> Vec<SourceAction> {
    checks
        .iter()
        .filter_map(|c| {
            let id: InstanceId = c.host_id.as_str().parse().ok()?;
            match (c.needed, c.original) {
                (true, None) => Some(SourceAction::RecordAndDisable(id)),
                (true, Some(_)) => (c.state != SdcState::Disabled).then_some(SourceAction::Disable(id)),
                (false, Some(original)) if c.state != SdcState::from(original) => {
                    Some(SourceAction::Restore(id, original))
                }
                (false, Some(_)) => Some(SourceAction::Forget(id)),
                (false, None) => None,
            }
        })
        .collect()
}

fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(2u32.saturating_pow(failures.min(16)));
    let capped = exp.min(BACKOFF_CAP);
    // Full jitter over the upper half keeps replicas and collectors from retrying in step.
    capped / 2 + capped.mul_f64(fastrand::f64() / 2.0)
}

/// Runs until `shutdown`; `wake` is notified after every session change.
pub async fn run(store: Store, cloud: Arc<dyn Cloud>, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut failures: HashMap<InstanceId, (u32, Instant)> = HashMap::new();
    loop {
        match store.collectors_for_reconcile().await {
            Ok(collectors) => {
                for action in plan(&collectors) {
                    if failures.get(&action.collector).is_some_and(|(_, next)| Instant::now() < *next) {
                        continue;
                    }
                    apply(&store, cloud.as_ref(), &action, &mut failures).await;
                }
            }
            Err(e) => warn!(error = %e, "EC2 reconciler could not read collectors"),
        }
        match store.source_checks().await {
            Ok(checks) => {
                for action in plan_sources(&checks) {
                    let id = match &action {
                        SourceAction::RecordAndDisable(id)
                        | SourceAction::Disable(id)
                        | SourceAction::Restore(id, _)
                        | SourceAction::Forget(id) => id,
                    };
                    if failures.get(id).is_some_and(|(_, next)| Instant::now() < *next) {
                        continue;
                    }
                    apply_source(&store, cloud.as_ref(), &action, &mut failures).await;
                }
            }
            Err(e) => warn!(error = %e, "EC2 reconciler could not read sources' checks"),
        }
        let next_retry = failures.values().map(|(_, at)| *at).min();
        let sleep = next_retry.map_or(PERIOD, |at| at.saturating_duration_since(Instant::now()).min(PERIOD));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

async fn apply(store: &Store, cloud: &dyn Cloud, action: &Action, failures: &mut HashMap<InstanceId, (u32, Instant)>) {
    let id = &action.collector;
    let verb = if action.source_dest_check { "enable" } else { "disable" };
    let outcome = match cloud.set_source_dest_check(id, action.source_dest_check).await {
        Ok(()) => {
            info!(collector = %id, source_dest_check = action.source_dest_check, "set Source/Dest Check");
            failures.remove(id);
            store.set_collector_ec2(id, Some(SdcState::from(action.source_dest_check)), None).await
        }
        Err(e) => {
            let delay = fail(failures, id);
            let message = format!("could not {verb} Source/Dest Check: {e}");
            if matches!(e, CloudError::NotFound(_)) {
                warn!(collector = %id, error = %e, "collector instance no longer exists in EC2");
            } else {
                warn!(collector = %id, error = %e, retry_in = ?delay, "EC2 call failed");
            }
            store.set_collector_ec2(id, None, Some(&message)).await
        }
    };
    if let Err(e) = outcome {
        warn!(collector = %id, error = %e, "could not record EC2 outcome");
    }
}

async fn apply_source(
    store: &Store,
    cloud: &dyn Cloud,
    action: &SourceAction,
    failures: &mut HashMap<InstanceId, (u32, Instant)>,
) {
    let (id, want) = match action {
        SourceAction::Forget(id) => {
            if let Err(e) = store.forget_source_check(&id.clone().into()).await {
                warn!(source = %id, error = %e, "could not forget a restored Source/Dest Check");
            }
            return;
        }
        SourceAction::RecordAndDisable(id) => {
            let original = match cloud.describe_instance(id).await {
                Ok(info) => info.source_dest_check.unwrap_or(true),
                Err(e) => {
                    fail(failures, id);
                    warn!(source = %id, error = %e, "cannot read the source's Source/Dest Check");
                    return;
                }
            };
            if let Err(e) = store.record_source_original(&id.clone().into(), original).await {
                warn!(source = %id, error = %e, "could not record the source's Source/Dest Check");
                return;
            }
            (id, false)
        }
        SourceAction::Disable(id) => (id, false),
        SourceAction::Restore(id, original) => (id, *original),
    };
    let host = id.clone().into();
    let outcome = match cloud.set_source_dest_check(id, want).await {
        Ok(()) => {
            info!(source = %id, source_dest_check = want, "set a source's Source/Dest Check");
            failures.remove(id);
            store.set_source_check(&host, Some(SdcState::from(want)), None).await
        }
        Err(e) => {
            let delay = fail(failures, id);
            warn!(source = %id, error = %e, retry_in = ?delay, "EC2 call failed");
            let verb = if want { "restore" } else { "disable" };
            store.set_source_check(&host, None, Some(&format!("could not {verb} Source/Dest Check: {e}"))).await
        }
    };
    if let Err(e) = outcome {
        warn!(source = %id, error = %e, "could not record EC2 outcome");
    }
}

/// Counts a failure of `id` and returns when to retry.
fn fail(failures: &mut HashMap<InstanceId, (u32, Instant)>, id: &InstanceId) -> Duration {
    let n = failures.get(id).map_or(0, |(n, _)| *n) + 1;
    let delay = backoff(n);
    failures.insert(id.clone(), (n, Instant::now() + delay));
    delay
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(sessions: u32, original: bool, state: SdcState) -> CollectorRecord {
        CollectorRecord {
            instance_id: "i-0123456789abcdef0".parse().expect("id"),
            ip: "10.0.0.9".parse().expect("ip"),
            ipv6: None,
            subnet_id: "subnet-1".into(),
            original_source_dest_check: original,
            source_dest_check: state,
            ec2_error: None,
            session_count: sessions,
            encap: Encap::None,
        }
    }

    #[test]
    fn plans() {
        use SdcState::*;
        let cases = [
            ("in use, still enabled", collector(1, true, Enabled), Some(false)),
            ("in use, disabled", collector(2, true, Disabled), None),
            ("in use, unknown", collector(1, true, Unknown), Some(false)),
            ("unused, restore original true", collector(0, true, Disabled), Some(true)),
            ("unused, original was false: leave off", collector(0, false, Disabled), None),
            ("unused, original true, enabled", collector(0, true, Enabled), None),
        ];
        for (what, c, want) in cases {
            let got = plan(&[c]).first().map(|a| a.source_dest_check);
            assert_eq!(got, want, "{what}");
        }
        // A VXLAN collector's check stays as it was found, in use or not, and is put back
        // if it was changed for raw clones before.
        let vxlan = |c: CollectorRecord| CollectorRecord { encap: Encap::Vxlan, ..c };
        assert_eq!(plan(&[vxlan(collector(3, true, Enabled))]), []);
        let restored = plan(&[vxlan(collector(3, true, Disabled))]);
        assert_eq!(restored.first().map(|a| a.source_dest_check), Some(true));
    }

    #[test]
    fn plans_sources() {
        use SdcState::*;
        let check = |id: &str, needed, original, state| SourceCheck {
            host_id: id.parse().expect("host"),
            needed,
            original,
            state,
        };
        let id = |s: &str| -> InstanceId { s.parse().expect("id") };
        let (a, b, c, d, e) = (
            "i-0a000000000000001",
            "i-0a000000000000002",
            "i-0a000000000000003",
            "i-0a000000000000004",
            "i-0a000000000000005",
        );
        let checks = [
            check(a, true, None, Unknown),
            check(b, true, Some(true), Enabled),
            check(c, true, Some(true), Disabled),
            check(d, false, Some(true), Disabled),
            check(e, false, Some(false), Disabled),
            check("web-1", true, None, Unknown),
        ];
        assert_eq!(
            plan_sources(&checks),
            [
                SourceAction::RecordAndDisable(id(a)),
                SourceAction::Disable(id(b)),
                SourceAction::Restore(id(d), true),
                SourceAction::Forget(id(e)),
            ],
            "an agent off EC2 (web-1) has no check to change"
        );
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        for n in 0..40 {
            let d = backoff(n);
            assert!(d <= BACKOFF_CAP, "{n}: {d:?}");
            assert!(d >= BACKOFF_BASE.min(BACKOFF_CAP) / 2);
        }
        assert!(backoff(30) >= BACKOFF_CAP / 2);
    }
}
