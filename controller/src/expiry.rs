//! Sessions that end: every period the leader deletes each session whose expiry has
//! passed, as `session delete` would (one transaction, its sources recompiled), audited
//! as `session.expire` by the actor `ttl`. One replica is enough; two would not conflict,
//! since each deletion checks the expiry again under the compile lock.

use std::time::Duration;

use teefleet_model::SessionName;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::store::{AuditEntry, Store, StoreError};

/// The shortest period `run` accepts: the check is one indexed query, but a tighter loop
/// buys nothing a one-minute lifetime needs.
const MIN_PERIOD: Duration = Duration::from_millis(100);

/// Deletes every expired session; returns those it deleted. A session an update gave
/// more time meanwhile is left alone.
pub async fn expire_once(store: &Store) -> Result<Vec<SessionName>, StoreError> {
    let mut expired = Vec::new();
    for name in store.expired_sessions().await? {
        let audit = AuditEntry::new("ttl", "local", "session.expire", name.as_str());
        match store.expire_session(&name, &audit).await? {
            Some(changed) => {
                info!(session = %name, hosts_changed = changed.len(), "session expired and was deleted");
                expired.push(name);
            }
            None => debug!(session = %name, "session no longer expired, or already deleted"),
        }
    }
    Ok(expired)
}

/// Expires sessions every `period` until `shutdown`.
pub async fn run(store: Store, period: Duration, shutdown: CancellationToken) {
    crate::leader::every(period.max(MIN_PERIOD), &shutdown, || async {
        if let Err(e) = expire_once(&store).await {
            warn!(error = %e, "cannot expire sessions; retrying next period");
        }
    })
    .await;
}
