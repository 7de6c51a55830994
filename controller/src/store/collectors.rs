//! Collectors: registered, listed, removed, and what the EC2 reconciler records of them.

use sqlx::{Postgres, Transaction};
use teefleet_model::{CollectorId, HostId, InstanceId};

use super::{
    AuditEntry, CollectorRecord, NewCollector, Result, SdcState, Store, StoreError, access, corrupt, lock, recompile,
    unique_violation,
};

impl Store {
    pub async fn add_collector(&self, c: &NewCollector, audit: &AuditEntry) -> Result<CollectorRecord> {
        let mut tx = self.pool.begin().await?;
        lock(&mut tx).await?;
        // A collector that is also a source mirrors the clones it receives: a storm.
        let sessions: Vec<String> = sqlx::query_scalar(
            "SELECT s.name FROM session_sources ss JOIN sessions s ON s.id = ss.session_id
             WHERE ss.host_id = $1 ORDER BY s.name",
        )
        .bind(c.instance_id.as_str())
        .fetch_all(&mut *tx)
        .await?;
        if !sessions.is_empty() {
            return Err(StoreError::InUse(format!(
                "{} is a source of session(s) {}: a collector is never a source, since it would mirror the clones it \
                 receives; delete those sessions or untag it first",
                c.instance_id,
                sessions.join(", ")
            )));
        }
        let res = sqlx::query(
            "INSERT INTO collectors (instance_id, ip, subnet_id, original_source_dest_check, source_dest_check, ipv6,
                                     encap)
             VALUES ($1, $2, $3, $4, $5, $6::inet, $7)",
        )
        .bind(c.instance_id.as_str())
        .bind(c.ip.to_string())
        .bind(&c.subnet_id)
        .bind(c.source_dest_check)
        .bind(SdcState::from(c.source_dest_check).as_str())
        .bind(c.ipv6.map(|ip| ip.to_string()))
        .bind(c.encap.as_str())
        .execute(&mut *tx)
        .await;
        match res {
            Err(e) if unique_violation(&e) => {
                return Err(StoreError::AlreadyExists { what: "collector", id: c.instance_id.to_string() });
            }
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        let host = collector_host(&mut tx, &c.instance_id).await?;
        recompile(&mut tx, &[host]).await?;
        access::audit_ok(&mut tx, audit).await?;
        tx.commit().await?;
        self.collector(&c.instance_id).await
    }

    pub async fn collector(&self, id: &CollectorId) -> Result<CollectorRecord> {
        let row = sqlx::query(concat!(collector_select!(), " WHERE c.instance_id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: "collector", id: id.to_string() })?;
        CollectorRecord::from_row(&row)
    }

    pub async fn list_collectors(&self) -> Result<Vec<CollectorRecord>> {
        let rows = sqlx::query(concat!(collector_select!(), " ORDER BY c.instance_id")).fetch_all(&self.pool).await?;
        rows.iter().map(CollectorRecord::from_row).collect()
    }

    /// Deletes a collector no session uses.
    pub async fn delete_collector(&self, id: &CollectorId, audit: &AuditEntry) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        lock(&mut tx).await?;
        let users: Vec<String> = sqlx::query_scalar("SELECT name FROM sessions WHERE collector_id = $1 ORDER BY name")
            .bind(id.as_str())
            .fetch_all(&mut *tx)
            .await?;
        if !users.is_empty() {
            return Err(StoreError::InUse(format!(
                "collector {id} is used by session(s) {}; delete them first",
                users.join(", ")
            )));
        }
        let deleted = sqlx::query("DELETE FROM collectors WHERE instance_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound { what: "collector", id: id.to_string() });
        }
        let host = collector_host(&mut tx, id).await?;
        recompile(&mut tx, &[host]).await?;
        access::audit_ok(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the outcome of an EC2 call on a collector.
    pub async fn set_collector_ec2(&self, id: &InstanceId, state: Option<SdcState>, error: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE collectors SET source_dest_check = coalesce($2, source_dest_check), ec2_error = $3
             WHERE instance_id = $1",
        )
        .bind(id.as_str())
        .bind(state.map(SdcState::as_str))
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The collectors with the number of sessions using each, for the EC2 reconciler.
    pub async fn collectors_for_reconcile(&self) -> Result<Vec<CollectorRecord>> {
        self.list_collectors().await
    }
}

macro_rules! collector_select {
    () => {
        "SELECT c.instance_id, c.ip, host(c.ipv6) AS ipv6, c.subnet_id, c.original_source_dest_check, c.source_dest_check, c.ec2_error, c.encap,
                (SELECT count(*) FROM sessions s WHERE s.collector_id = c.instance_id) AS session_count
         FROM collectors c"
    };
}
use collector_select;

/// The host a collector's agent speaks for (its instance id), made known so that the
/// agent finds its desired set (the decapsulating device) whenever it connects.
async fn collector_host(tx: &mut Transaction<'_, Postgres>, id: &CollectorId) -> Result<HostId> {
    sqlx::query("INSERT INTO hosts (host_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(id.as_str())
        .execute(&mut **tx)
        .await?;
    id.as_str().parse().map_err(corrupt)
}
