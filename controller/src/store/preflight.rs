//! What a preflight reads of the store: whether the name and the VNI are free, which VNI
//! the session would get, and which hosts have an agent. Nothing is written or locked.

use std::collections::BTreeMap;

use sqlx::Row;
use teefleet_model::{HostId, SessionName, Vni};

use super::{LIVENESS_SECS, Result, Store, StoreError, corrupt, free_vni};

/// The store's part of a preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightRead {
    pub name_taken: bool,
    /// The VNI the session would get: the one it asks for, or the lowest free one; `None`
    /// when the one it asks for is taken or none is free.
    pub vni: Option<Vni>,
    /// Every host an agent has said Hello for, and whether that agent is connected now.
    pub agents: BTreeMap<HostId, bool>,
}

impl Store {
    pub async fn preflight_read(
        &self,
        name: &SessionName,
        vni: Option<Vni>,
        hosts: &[HostId],
    ) -> Result<PreflightRead> {
        let mut tx = self.pool.begin().await?;
        let name_taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sessions WHERE name = $1)")
            .bind(name.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let vni = match vni {
            Some(vni) => {
                let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sessions WHERE vni = $1)")
                    .bind(i32::try_from(vni.get()).map_err(corrupt)?)
                    .fetch_one(&mut *tx)
                    .await?;
                (!taken).then_some(vni)
            }
            None => match free_vni(&mut tx).await {
                Ok(vni) => Some(vni),
                Err(StoreError::InUse(_)) => None,
                Err(e) => return Err(e),
            },
        };
        let ids: Vec<&str> = hosts.iter().map(HostId::as_str).collect();
        let rows = sqlx::query(
            "SELECT host_id, connected AND last_seen > now() - make_interval(secs => $2) AS live
             FROM hosts WHERE host_id = ANY($1) AND last_seen IS NOT NULL",
        )
        .bind(&ids)
        .bind(LIVENESS_SECS)
        .fetch_all(&mut *tx)
        .await?;
        let agents = rows
            .iter()
            .map(|r| {
                let host: HostId = r.try_get::<String, _>("host_id")?.parse().map_err(corrupt)?;
                Ok((host, r.try_get::<Option<bool>, _>("live")?.unwrap_or(false)))
            })
            .collect::<Result<_>>()?;
        tx.rollback().await?;
        Ok(PreflightRead { name_taken, vni, agents })
    }
}
