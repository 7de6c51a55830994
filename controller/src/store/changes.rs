//! Changes to live sessions: an update (filter, sources, tags and expiry in one
//! transaction, so each host it affects gets one new version) and expiry (the session
//! deleted as `delete_session` deletes it, audited as `session.expire`).

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Row;
use teefleet_model::{HostId, SessionName, SessionSpec, TtlChange};

use super::{
    AuditEntry, FilterColumns, Result, SessionRecord, Store, StoreError, access, check_named_sources, corrupt, lock,
    recompile, record_required, selectors, session_select,
};

/// An update as the controller checked it.
#[derive(Debug, Clone)]
pub struct SessionChange<'a> {
    /// The session the checks saw: if it is no longer what is stored, the update is
    /// refused rather than made over a change it was not checked against.
    pub before: &'a SessionSpec,
    pub after: &'a SessionSpec,
    /// Sources being added that only EC2 knows; registered as hosts.
    pub found_in_ec2: &'a [HostId],
    /// The sources the session's tags match after the update, and which matches were
    /// skipped, when they were re-resolved; `None` keeps the tag sources as they are.
    pub matched: Option<(&'a [HostId], Option<&'a str>)>,
    pub ttl: TtlChange,
}

const NAMED: &str = "named";
const TAG: &str = "tag";

impl Store {
    /// Makes `change` in one transaction under the compile lock: the filter and expiry
    /// stored, tags replaced, sources added, removed or moved between named and tag, the
    /// affected hosts recompiled once, the version the session needs on each of them
    /// recorded, the change audited. Returns the hosts whose rule set changed.
    pub async fn update_session(&self, change: &SessionChange<'_>, audit: &AuditEntry) -> Result<Vec<HostId>> {
        let name = change.after.name();
        let mut tx = self.pool.begin().await?;
        lock(&mut tx).await?;
        let row = sqlx::query(concat!(session_select!(), " WHERE s.name = $1"))
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: "session", id: name.to_string() })?;
        let session_id: i64 = row.try_get("id")?;
        if SessionRecord::from_rows(&row, &[])?.spec != *change.before {
            return Err(StoreError::Stale(format!(
                "session {name} was changed by someone else while this update was checked; nothing was changed, \
                 retry the update"
            )));
        }
        let new_hosts: Vec<&str> =
            change.found_in_ec2.iter().chain(change.matched.map_or(&[][..], |(m, _)| m)).map(HostId::as_str).collect();
        sqlx::query("INSERT INTO hosts (host_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING")
            .bind(&new_hosts)
            .execute(&mut *tx)
            .await?;
        let added: Vec<&str> = change
            .after
            .sources()
            .iter()
            .filter(|h| change.before.sources().binary_search(h).is_err())
            .map(HostId::as_str)
            .collect();
        check_named_sources(&mut tx, &added).await?;

        let filter = FilterColumns::of(change.after.filter());
        let (keep_expiry, ttl_secs) = match change.ttl {
            TtlChange::Keep => (true, None),
            TtlChange::Clear => (false, None),
            TtlChange::Set(ttl) => (false, Some(i64::try_from(ttl.secs()).unwrap_or(i64::MAX))),
        };
        let query = sqlx::query_scalar::<_, i64>(
            "UPDATE sessions SET direction = $2, protocol = $3, port_first = $4, port_last = $5, cidrs = $6,
                    sample_ppm = $7, max_pps = $8,
                    expires_at = CASE WHEN $9 THEN expires_at ELSE now() + $10::bigint * interval '1 second' END,
                    max_loss = $11
             WHERE id = $1 RETURNING id",
        )
        .bind(session_id);
        let query = filter.bind(query).bind(keep_expiry).bind(ttl_secs);
        query.bind(change.after.max_loss().get()).fetch_one(&mut *tx).await?;
        if change.before.selectors() != change.after.selectors() {
            sqlx::query("DELETE FROM session_selectors WHERE session_id = $1")
                .bind(session_id)
                .execute(&mut *tx)
                .await?;
            selectors::insert(&mut tx, session_id, change.after.selectors()).await?;
        }

        let current = sources_by_origin(&mut tx, session_id).await?;
        let tagged: BTreeSet<HostId> = match change.matched {
            Some((matched, _)) => matched.iter().cloned().collect(),
            None => current.iter().filter(|(_, o)| **o == TAG).map(|(h, _)| h.clone()).collect(),
        };
        let mut desired: BTreeMap<HostId, &str> = tagged.into_iter().map(|h| (h, TAG)).collect();
        desired.extend(change.after.sources().iter().map(|h| (h.clone(), NAMED)));
        let gone: Vec<&str> = current.keys().filter(|h| !desired.contains_key(*h)).map(HostId::as_str).collect();
        sqlx::query("DELETE FROM session_sources WHERE session_id = $1 AND host_id = ANY($2)")
            .bind(session_id)
            .bind(&gone)
            .execute(&mut *tx)
            .await?;
        let (upsert, origins): (Vec<&str>, Vec<&str>) =
            desired.iter().filter(|(h, o)| current.get(*h) != Some(*o)).map(|(h, o)| (h.as_str(), *o)).unzip();
        sqlx::query(
            "INSERT INTO session_sources (session_id, host_id, required_version, origin)
             SELECT $1, h, 0, o FROM unnest($2::text[], $3::text[]) AS v(h, o)
             ON CONFLICT (session_id, host_id) DO UPDATE SET origin = EXCLUDED.origin",
        )
        .bind(session_id)
        .bind(&upsert)
        .bind(&origins)
        .execute(&mut *tx)
        .await?;

        let touched: Vec<HostId> =
            current.keys().chain(desired.keys()).cloned().collect::<BTreeSet<_>>().into_iter().collect();
        let (versions, changed) = recompile(&mut tx, &touched).await?;
        // Where the session's rules changed, it is applied once the new version is; the
        // other hosts keep the version they needed.
        let needed: BTreeMap<HostId, i64> =
            versions.into_iter().filter(|(h, _)| desired.contains_key(h) && changed.contains(h)).collect();
        record_required(&mut tx, session_id, &needed).await?;
        if let Some((_, problem)) = change.matched {
            selectors::set_problem(&mut tx, session_id, problem).await?;
        }
        access::audit_ok(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// The sessions whose expiry has passed, by name.
    pub async fn expired_sessions(&self) -> Result<Vec<SessionName>> {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sessions WHERE expires_at <= now() ORDER BY expires_at, name")
                .fetch_all(&self.pool)
                .await?;
        names.iter().map(|n| n.parse().map_err(corrupt)).collect()
    }

    /// Deletes a session whose expiry has passed, as `delete_session` does; `None` if it is
    /// gone, or no longer expired (an update gave it more time meanwhile).
    pub async fn expire_session(&self, name: &SessionName, audit: &AuditEntry) -> Result<Option<Vec<HostId>>> {
        match self.remove_session(name, true, audit).await {
            Err(StoreError::NotFound { .. }) => Ok(None),
            other => other.map(Some),
        }
    }
}

/// The session's sources and how each came: `named` or `tag`.
async fn sources_by_origin(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    session_id: i64,
) -> Result<BTreeMap<HostId, &'static str>> {
    let rows = sqlx::query("SELECT host_id, origin = 'tag' AS by_tag FROM session_sources WHERE session_id = $1")
        .bind(session_id)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|r| {
            let host: HostId = r.try_get::<String, _>("host_id")?.parse().map_err(corrupt)?;
            Ok((host, if r.try_get("by_tag")? { TAG } else { NAMED }))
        })
        .collect()
}
