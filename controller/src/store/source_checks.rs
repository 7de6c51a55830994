//! The SQL of sources' Source/Dest Checks: which hosts need theirs off (sources of a
//! session with `disable_source_check`), the value each had before teefleet changed it,
//! and what teefleet last set.

use sqlx::Row;
use teefleet_model::HostId;

use super::{Result, SdcState, Store, access, corrupt};
use crate::store::AuditEntry;

/// One host whose check teefleet needs off or has changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCheck {
    pub host_id: HostId,
    /// A session with `disable_source_check` covers the host.
    pub needed: bool,
    /// The value found before teefleet's first change; `None` until recorded.
    pub original: Option<bool>,
    pub state: SdcState,
}

impl Store {
    /// Every host that needs its check off, and every host whose original is recorded.
    pub async fn source_checks(&self) -> Result<Vec<SourceCheck>> {
        let rows = sqlx::query(
            "WITH needed AS (
                 SELECT DISTINCT ss.host_id FROM session_sources ss JOIN sessions s ON s.id = ss.session_id
                 WHERE s.disable_source_check)
             SELECT coalesce(n.host_id, c.host_id) AS host_id, n.host_id IS NOT NULL AS needed, c.original,
                    coalesce(c.state, 'unknown') AS state
             FROM needed n FULL JOIN source_checks c ON c.host_id = n.host_id
             ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SourceCheck {
                    host_id: r.try_get::<String, _>("host_id")?.parse().map_err(corrupt)?,
                    needed: r.try_get("needed")?,
                    original: r.try_get("original")?,
                    state: SdcState::parse(&r.try_get::<String, _>("state")?)?,
                })
            })
            .collect()
    }

    /// Records the value a host's check had before teefleet changes it; a value already
    /// recorded stays (it is the one to restore).
    pub async fn record_source_original(&self, host: &HostId, original: bool) -> Result<()> {
        sqlx::query("INSERT INTO source_checks (host_id, original, state) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(host.as_str())
            .bind(original)
            .bind(SdcState::from(original).as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records what teefleet set (and audits it), or why it could not.
    pub async fn set_source_check(&self, host: &HostId, state: Option<SdcState>, error: Option<&str>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE source_checks SET state = coalesce($2, state), ec2_error = $3 WHERE host_id = $1")
            .bind(host.as_str())
            .bind(state.map(SdcState::as_str))
            .bind(error)
            .execute(&mut *tx)
            .await?;
        if let Some(state) = state {
            let action =
                if state == SdcState::Disabled { "source_dest_check.disable" } else { "source_dest_check.restore" };
            access::audit_ok(&mut tx, &AuditEntry::new("controller", "local", action, host.as_str())).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets a host whose check is back at its original value and that no session needs.
    pub async fn forget_source_check(&self, host: &HostId) -> Result<()> {
        sqlx::query(
            "DELETE FROM source_checks c WHERE host_id = $1 AND NOT EXISTS (
                 SELECT 1 FROM session_sources ss JOIN sessions s ON s.id = ss.session_id
                 WHERE ss.host_id = c.host_id AND s.disable_source_check)",
        )
        .bind(host.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
