//! Postgres' own count of committed and rolled-back transactions in one database, so the
//! report can say how much database work an idle fleet causes.

use std::collections::HashMap;

use sqlx::{Connection, PgConnection};

/// `xact_commit + xact_rollback` of the database `url` names. Backends flush these
/// counters about once a second, so over a window of many seconds the error is small.
pub async fn transactions(url: &str) -> Result<u64, sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    let (count,): (i64,) = sqlx::query_as(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await?;
    let _ = conn.close().await;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Hosts and sessions stored (the tables of `migrations/0001_init.sql`), to label the
/// restart measurement with what the controller started on.
pub async fn counts(url: &str) -> Result<(usize, usize), sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    let (hosts, sessions): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM hosts), (SELECT count(*) FROM sessions)")
            .fetch_one(&mut conn)
            .await?;
    let _ = conn.close().await;
    Ok((usize::try_from(hosts).unwrap_or(0), usize::try_from(sessions).unwrap_or(0)))
}

/// Every host's desired version: what an agent must hold before the controller has
/// nothing left to push it.
pub async fn desired_versions(url: &str) -> Result<HashMap<String, u64>, sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT host_id, desired_version FROM hosts").fetch_all(&mut conn).await?;
    let _ = conn.close().await;
    Ok(rows.into_iter().map(|(host, v)| (host, u64::try_from(v).unwrap_or(0))).collect())
}
