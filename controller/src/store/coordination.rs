//! How replicas coordinate through Postgres: a NOTIFY when hosts' desired sets change or a
//! host is revoked (sent inside the changing transaction, so it is delivered exactly when
//! the change commits), batched reads for the streams a replica holds, and a session-level
//! advisory lock for the work only one replica may do.

use std::{collections::HashSet, time::Duration};

use sqlx::{
    Connection, PgConnection, Postgres, Row, Transaction,
    postgres::{PgListener, PgRow},
};
use teefleet_model::{HostId, RuleSet};

use super::{Result, Store, arrivals::desired_arrivals, corrupt, rule_set, version};

/// Channel of desired-set changes; the payload is [`Changed`] in text.
pub const DESIRED_CHANNEL: &str = "teefleet_desired";
/// Channel of revoked hosts; the payload is the host id.
pub const REVOKED_CHANNEL: &str = "teefleet_revoked";

/// Key of the session-level advisory lock held by the leading replica.
const LEADER_LOCK: i64 = 0x7465_6566_6c65; // "teefle"
/// Postgres ends the leader's session, and so frees the lock, when the leader has been
/// silent this long: a replica that hangs or loses its network cannot keep the lead.
/// Well above [`LEADER_PING`].
const LEADER_IDLE_TIMEOUT: &str = "SET idle_session_timeout = '10s'";

/// NOTIFY payloads must stay under 8000 bytes; a longer list goes out in several.
const MAX_PAYLOAD: usize = 7900;
/// Hosts per batched read, so one statement's array and result stay moderate.
const BATCH: usize = 1000;

/// Which hosts' desired sets changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// These hosts.
    Hosts(Vec<HostId>),
    /// Unknown: every replica compares all of its hosts' versions.
    Many,
}

impl Changed {
    /// The payloads naming `hosts`, each under the NOTIFY limit; one empty payload for none.
    /// Named hosts cost a replica one read of their sets; a bare "compare everything"
    /// would re-read every version it holds for each change.
    fn payloads(hosts: &[HostId]) -> Vec<String> {
        let mut out = vec![String::new()];
        for host in hosts {
            let last = out.last_mut().filter(|p| p.len() + host.as_str().len() < MAX_PAYLOAD);
            match last {
                Some(p) if p.is_empty() => p.push_str(host.as_str()),
                Some(p) => {
                    p.push(',');
                    p.push_str(host.as_str());
                }
                None => out.push(host.as_str().to_owned()),
            }
        }
        out
    }

    /// Parses a payload; a host id that does not parse turns the notice into `Many`, so a
    /// surprise costs one comparison of versions, never a missed host.
    pub fn parse(payload: &str) -> Self {
        if payload.is_empty() {
            return Changed::Hosts(Vec::new());
        }
        payload.split(',').map(str::parse).collect::<Result<Vec<HostId>, _>>().map_or(Changed::Many, Changed::Hosts)
    }
}

/// Tells every replica, when `tx` commits, that these hosts' desired sets changed. Sent
/// even for no host: it also means "sessions changed", which wakes the EC2 reconciler.
pub(super) async fn notify_desired(tx: &mut Transaction<'_, Postgres>, hosts: &[HostId]) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(DESIRED_CHANNEL)
        .bind(Changed::payloads(hosts))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(super) async fn notify_revoked(tx: &mut Transaction<'_, Postgres>, host: &HostId) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(REVOKED_CHANNEL).bind(host.as_str()).execute(&mut **tx).await?;
    Ok(())
}

/// The session-level advisory lock of the leading replica, held on a connection of its
/// own; dropping it (or the process dying) closes the connection and frees the lock.
pub struct Leadership {
    conn: PgConnection,
}

impl Leadership {
    /// True while the lock's connection still answers; a false means the lock is gone.
    pub async fn still_held(&mut self) -> bool {
        sqlx::query("SELECT 1").execute(&mut self.conn).await.is_ok()
    }

    /// Gives the lead up at once, so another replica need not wait for a timeout.
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LEADER_LOCK).execute(&mut self.conn).await;
        let _ = self.conn.close().await;
    }
}

impl Store {
    /// A listener subscribed to both channels; it reconnects by itself after a lost
    /// connection (notifications sent meanwhile are lost, which the periodic re-read covers).
    pub async fn listener(&self) -> Result<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen_all([DESIRED_CHANNEL, REVOKED_CHANNEL]).await?;
        Ok(listener)
    }

    /// The desired sets of those of `hosts` that exist.
    pub async fn desired_many(&self, hosts: &[HostId]) -> Result<Vec<(HostId, RuleSet)>> {
        self.per_host(
            hosts,
            concat!(
                "SELECT host_id, desired_version, desired_rules, desired_collector, ",
                desired_arrivals!("hosts.host_id"),
                " FROM hosts WHERE host_id = ANY($1)"
            ),
            rule_set,
        )
        .await
    }

    /// The desired version of each of `hosts` that exists: the cheap half of a re-read.
    pub async fn desired_versions(&self, hosts: &[HostId]) -> Result<Vec<(HostId, u64)>> {
        self.per_host(hosts, "SELECT host_id, desired_version FROM hosts WHERE host_id = ANY($1)", |row| {
            Ok(version(row.try_get("desired_version")?))
        })
        .await
    }

    /// Runs `query` (its `$1` the host ids, its rows led by `host_id`) over `hosts` in
    /// batches, and reads each row's host and `read` of it.
    async fn per_host<T>(
        &self,
        hosts: &[HostId],
        query: &'static str,
        read: impl Fn(&PgRow) -> Result<T>,
    ) -> Result<Vec<(HostId, T)>> {
        let mut out = Vec::with_capacity(hosts.len());
        for chunk in hosts.chunks(BATCH) {
            let ids: Vec<&str> = chunk.iter().map(HostId::as_str).collect();
            let rows = sqlx::query(query).bind(&ids).fetch_all(&self.pool).await?;
            for row in &rows {
                let host: HostId = row.try_get::<String, _>("host_id")?.parse().map_err(corrupt)?;
                out.push((host, read(row)?));
            }
        }
        Ok(out)
    }

    /// Those of `fingerprints` that belong to a certificate neither revoked nor expired.
    pub async fn trusted_certs(&self, fingerprints: &[[u8; 32]]) -> Result<HashSet<[u8; 32]>> {
        let mut out = HashSet::with_capacity(fingerprints.len());
        for chunk in fingerprints.chunks(BATCH) {
            let prints: Vec<&[u8]> = chunk.iter().map(|p| &p[..]).collect();
            let rows: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT fingerprint FROM agent_certs
                 WHERE fingerprint = ANY($1) AND revoked_at IS NULL AND not_after > now()",
            )
            .bind(&prints)
            .fetch_all(&self.pool)
            .await?;
            out.extend(rows.iter().filter_map(|p| <[u8; 32]>::try_from(p.as_slice()).ok()));
        }
        Ok(out)
    }

    /// Takes the leader lock if no other replica holds it.
    pub async fn try_lead(&self) -> Result<Option<Leadership>> {
        let mut conn = self.pool.acquire().await?.detach();
        sqlx::query(LEADER_IDLE_TIMEOUT).execute(&mut conn).await?;
        let won: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEADER_LOCK).fetch_one(&mut conn).await?;
        if won {
            return Ok(Some(Leadership { conn }));
        }
        let _ = conn.close().await;
        Ok(None)
    }
}

/// How often the leader must touch its lock's connection to keep it.
pub const LEADER_PING: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<HostId> {
        (0..n).map(|i| format!("i-{i:017x}").parse().expect("host")).collect()
    }

    #[test]
    fn payloads_round_trip_in_pieces_under_the_limit() {
        for n in [0, 1, 3, 300, 1000, 10_000] {
            let h = hosts(n);
            let payloads = Changed::payloads(&h);
            assert!(payloads.iter().all(|p| p.len() < MAX_PAYLOAD), "{n} hosts");
            let back: Vec<HostId> = payloads
                .iter()
                .flat_map(|p| match Changed::parse(p) {
                    Changed::Hosts(h) => h,
                    Changed::Many => panic!("{p:?} did not parse"),
                })
                .collect();
            assert_eq!(back, h, "{n} hosts");
        }
        assert_eq!(Changed::payloads(&hosts(0)), [""]);
        assert_eq!(Changed::parse("*"), Changed::Many);
        assert_eq!(Changed::parse("ok,not a host!"), Changed::Many);
    }
}
