//! UpdateSession: a live session's throttle, filter, sources, tags and expiry changed in
//! one step, checked as a create is before anything is written.

use teefleet_model::{Encap, HostId, SessionUpdate, TtlChange};
use teefleet_proto::v1 as pb;
use tracing::info;

use super::{Api, ApiError};
use crate::store::{AuditEntry, SessionChange};

impl Api {
    pub(super) async fn update_session(
        &self,
        req: &pb::UpdateSessionRequest,
        audit: &AuditEntry,
    ) -> Result<pb::UpdateSessionResponse, ApiError> {
        let update = SessionUpdate::try_from(req)?;
        let record = self.store.session(&update.name).await?;
        let before = &record.spec;
        let after = update.apply(before)?;
        let same_expiry = match update.ttl {
            TtlChange::Keep => true,
            TtlChange::Clear => record.expires_at.is_none(),
            TtlChange::Set(_) => false,
        };
        if after == *before && same_expiry {
            info!(session = %update.name, by = %audit.actor(), "session update changes nothing");
            let session = self.session_reply(&update.name).await?;
            return Ok(pb::UpdateSessionResponse { session: Some(session), changed: false, hosts_changed: 0 });
        }

        let collector = self.store.collector(after.collector()).await?;
        Self::check_against_collector(&after, &collector)?;
        let added: Vec<HostId> =
            after.sources().iter().filter(|h| before.sources().binary_search(h).is_err()).cloned().collect();
        let found_in_ec2 = self.resolve_sources(&added).await?;
        if collector.encap == Encap::None && !after.allow_routed() {
            self.check_on_link(&added, &collector).await?;
        }
        // A source no longer named stays if the tags match it, which only EC2 can say.
        let unnamed = before.sources().iter().any(|h| after.sources().binary_search(h).is_err());
        let resolve = update.changes_tags() || (unnamed && !after.selectors().is_empty());
        let matched = if resolve { Some(self.resolve_tags(&after, &collector).await?) } else { None };

        let change = SessionChange {
            before,
            after: &after,
            found_in_ec2: &found_in_ec2,
            matched: matched.as_ref().map(|(hosts, problem)| (hosts.as_slice(), problem.as_deref())),
            ttl: update.ttl,
        };
        let changed = self.store.update_session(&change, audit).await?;
        info!(
            session = %after.name(), hosts_changed = changed.len(), added = added.len(),
            retagged = resolve, ttl = ?update.ttl, by = %audit.actor(), "session updated"
        );
        Ok(pb::UpdateSessionResponse {
            session: Some(self.session_reply(after.name()).await?),
            changed: true,
            hosts_changed: u32::try_from(changed.len()).unwrap_or(u32::MAX),
        })
    }
}
