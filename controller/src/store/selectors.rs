//! Tag selectors in the store: saved with their session, and the change re-resolution makes
//! to a session's tag-matched sources. Named sources are never added or removed here.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{Postgres, Row, Transaction};
use teefleet_model::{CollectorId, HostId, SessionName, TagSelector};

use super::{AuditEntry, Result, Store, access, corrupt, lock, recompile, record_required};

/// A session with tags, as re-resolution needs it.
#[derive(Debug, Clone)]
pub struct TagSession {
    /// The row: a session deleted and created again under the same name meanwhile is
    /// another session, whose sources this one's resolution must not touch.
    id: i64,
    pub name: SessionName,
    pub selectors: Vec<TagSelector>,
    pub collector: CollectorId,
    /// Empty when unknown; then sources are not checked against it.
    pub collector_subnet: String,
    pub allow_routed: bool,
    /// How many sources it names: they count towards its limit of hosts.
    pub named: usize,
}

/// What a re-resolution changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagChange {
    pub added: Vec<HostId>,
    pub removed: Vec<HostId>,
    /// The hosts whose rule set changed.
    pub changed: Vec<HostId>,
}

impl TagChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

fn host_ids(hosts: &[HostId]) -> Vec<&str> {
    hosts.iter().map(HostId::as_str).collect()
}

pub(super) async fn insert(tx: &mut Transaction<'_, Postgres>, session_id: i64, tags: &[TagSelector]) -> Result<()> {
    if tags.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = tags.iter().map(TagSelector::key).collect();
    let values: Vec<&str> = tags.iter().map(TagSelector::value).collect();
    sqlx::query(
        "INSERT INTO session_selectors (session_id, key, value)
         SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t(k, v)",
    )
    .bind(session_id)
    .bind(&keys)
    .bind(&values)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds tag-origin sources; hosts must exist. A host already a source (named) stays as it is.
pub(super) async fn add_tag_sources(
    tx: &mut Transaction<'_, Postgres>,
    session_id: i64,
    hosts: &[HostId],
) -> Result<()> {
    if hosts.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO session_sources (session_id, host_id, required_version, origin)
         SELECT $1, unnest($2::text[]), 0, 'tag' ON CONFLICT DO NOTHING",
    )
    .bind(session_id)
    .bind(host_ids(hosts))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The tag-matched sources to add and remove so that they become `matched`, less the
/// sources the session names.
async fn diff(
    tx: &mut Transaction<'_, Postgres>,
    session_id: i64,
    matched: &[HostId],
) -> Result<(Vec<HostId>, Vec<HostId>)> {
    let rows = sqlx::query("SELECT host_id, origin = 'tag' AS by_tag FROM session_sources WHERE session_id = $1")
        .bind(session_id)
        .fetch_all(&mut **tx)
        .await?;
    let (mut named, mut tagged) = (BTreeSet::new(), BTreeSet::new());
    for row in &rows {
        let host: HostId = row.try_get::<String, _>("host_id")?.parse().map_err(corrupt)?;
        if row.try_get("by_tag")? {
            tagged.insert(host);
        } else {
            named.insert(host);
        }
    }
    let want: BTreeSet<HostId> = matched.iter().filter(|h| !named.contains(*h)).cloned().collect();
    Ok((want.difference(&tagged).cloned().collect(), tagged.difference(&want).cloned().collect()))
}

pub(super) async fn set_problem(
    tx: &mut Transaction<'_, Postgres>,
    session_id: i64,
    problem: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE sessions SET resolve_problem = $2 WHERE id = $1 AND resolve_problem IS DISTINCT FROM $2")
        .bind(session_id)
        .bind(problem)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// Every session with tags, by name.
    pub async fn tag_sessions(&self) -> Result<Vec<TagSession>> {
        let rows = sqlx::query(
            "SELECT s.id, s.name, s.collector_id, c.subnet_id, s.allow_routed OR c.encap = 'vxlan' AS allow_routed,
                    array(SELECT key FROM session_selectors t WHERE t.session_id = s.id ORDER BY key) AS keys,
                    array(SELECT value FROM session_selectors t WHERE t.session_id = s.id ORDER BY key) AS values,
                    (SELECT count(*) FROM session_sources ss WHERE ss.session_id = s.id AND ss.origin = 'named')
                        AS named
             FROM sessions s JOIN collectors c ON c.instance_id = s.collector_id
             WHERE EXISTS (SELECT 1 FROM session_selectors t WHERE t.session_id = s.id)
             ORDER BY s.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let keys: Vec<String> = row.try_get("keys")?;
                let values: Vec<String> = row.try_get("values")?;
                Ok(TagSession {
                    id: row.try_get("id")?,
                    name: row.try_get::<String, _>("name")?.parse().map_err(corrupt)?,
                    selectors: keys
                        .into_iter()
                        .zip(values)
                        .map(|(k, v)| TagSelector::new(k, v).map_err(corrupt))
                        .collect::<Result<_>>()?,
                    collector: row.try_get::<String, _>("collector_id")?.parse().map_err(corrupt)?,
                    collector_subnet: row.try_get("subnet_id")?,
                    allow_routed: row.try_get("allow_routed")?,
                    named: usize::try_from(row.try_get::<i64, _>("named")?).unwrap_or(usize::MAX),
                })
            })
            .collect()
    }

    /// Makes the session's tag-matched sources `matched` (less those it names) and records
    /// `problem` as what the resolution could not do. A change runs in one transaction under
    /// the compile lock: new hosts registered, sources added and removed, the hosts
    /// recompiled, the version the session needs on each added host recorded, the change
    /// audited. Returns None if the session no longer exists.
    pub async fn set_tag_sources(
        &self,
        session: &TagSession,
        matched: &[HostId],
        problem: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<Option<TagChange>> {
        let mut tx = self.pool.begin().await?;
        // Most passes change nothing: look first, so they do not queue for the lock every
        // change of the fleet waits on. Only resolution itself adds or removes tag rows,
        // so "nothing to do" cannot turn stale before the commit.
        let (added, removed) = diff(&mut tx, session.id, matched).await?;
        if added.is_empty() && removed.is_empty() {
            set_problem(&mut tx, session.id, problem).await?;
            tx.commit().await?;
            return Ok(Some(TagChange::default()));
        }
        lock(&mut tx).await?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sessions WHERE id = $1)")
            .bind(session.id)
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            return Ok(None);
        }
        // Read again under the lock: the first read was not serialised with other changes.
        let (added, removed) = diff(&mut tx, session.id, matched).await?;
        sqlx::query("INSERT INTO hosts (host_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING")
            .bind(host_ids(&added))
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM session_sources WHERE session_id = $1 AND origin = 'tag' AND host_id = ANY($2)")
            .bind(session.id)
            .bind(host_ids(&removed))
            .execute(&mut *tx)
            .await?;
        add_tag_sources(&mut tx, session.id, &added).await?;
        let touched: Vec<HostId> = added.iter().chain(&removed).cloned().collect();
        let (versions, changed) = recompile(&mut tx, &touched).await?;
        // The hosts that stay keep the version they needed; removed ones need none.
        let needed: BTreeMap<HostId, i64> = versions.into_iter().filter(|(h, _)| added.contains(h)).collect();
        record_required(&mut tx, session.id, &needed).await?;
        set_problem(&mut tx, session.id, problem).await?;
        access::audit_ok(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Some(TagChange { added, removed, changed }))
    }

    /// Records why the session's tags could not be resolved; its sources stay as they are.
    pub async fn set_resolve_problem(&self, session: &TagSession, problem: Option<&str>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        set_problem(&mut tx, session.id, problem).await?;
        tx.commit().await?;
        Ok(())
    }
}
