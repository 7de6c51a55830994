//! What collectors count, one row per collector, source, session and address: a change
//! rewrites the rows of the sources it touches (under their row locks), not a collector's
//! whole list, so changes to different sources of one collector do not queue on it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use sqlx::{Postgres, Row, Transaction, postgres::PgRow};
use teefleet_model::{Arrival, HostId, Vni};

use super::{Result, corrupt};

/// A collector's counts as the jsonb array `rule_set` reads: the column `desired_arrivals`
/// of a statement whose collector's host id is `$host`. Sorted when read, not here.
macro_rules! desired_arrivals {
    ($host:literal) => {
        concat!(
            "(SELECT coalesce(jsonb_agg(jsonb_build_object('session', a.session, 'source', a.source,
                                                           'from', host(a.addr), 'vni', a.vni)), '[]'::jsonb)
              FROM collector_arrivals a WHERE a.collector = ",
            $host,
            ") AS desired_arrivals"
        )
    };
}
pub(super) use desired_arrivals;

/// Per collector, what it counts.
pub(super) type Counts = BTreeMap<HostId, BTreeSet<Arrival>>;

/// What the collectors count of the given sources.
pub(super) async fn of_sources(tx: &mut Transaction<'_, Postgres>, sources: &[&str]) -> Result<Counts> {
    let rows = sqlx::query(
        "SELECT collector, session, source, host(addr) AS addr, vni FROM collector_arrivals WHERE source = ANY($1)",
    )
    .bind(sources)
    .fetch_all(&mut **tx)
    .await?;
    counts(&rows)
}

/// Everything the given collectors count.
pub(super) async fn of_collectors(tx: &mut Transaction<'_, Postgres>, collectors: &[&str]) -> Result<Counts> {
    let rows = sqlx::query(
        "SELECT collector, session, source, host(addr) AS addr, vni FROM collector_arrivals
         WHERE collector = ANY($1)",
    )
    .bind(collectors)
    .fetch_all(&mut **tx)
    .await?;
    counts(&rows)
}

fn counts(rows: &[PgRow]) -> Result<Counts> {
    let mut counts = Counts::new();
    for row in rows {
        let collector: HostId = row.try_get::<String, _>("collector")?.parse().map_err(corrupt)?;
        let vni = row
            .try_get::<Option<i32>, _>("vni")?
            .map(|v| u32::try_from(v).map_err(corrupt).and_then(|v| Vni::new(v).map_err(corrupt)))
            .transpose()?;
        let arrival = Arrival::new(
            row.try_get::<String, _>("session")?.parse().map_err(corrupt)?,
            row.try_get::<String, _>("source")?.parse().map_err(corrupt)?,
            row.try_get::<String, _>("addr")?.parse::<IpAddr>().map_err(corrupt)?,
            vni,
        );
        counts.entry(collector).or_default().insert(arrival);
    }
    Ok(counts)
}

/// Replaces the rows of `sources` with `fresh` (every collector's counts of them), and every
/// row of `collectors` with theirs in `fresh`.
pub(super) async fn replace(
    tx: &mut Transaction<'_, Postgres>,
    sources: &[&str],
    collectors: &[&str],
    fresh: &Counts,
) -> Result<()> {
    sqlx::query("DELETE FROM collector_arrivals WHERE source = ANY($1) OR collector = ANY($2)")
        .bind(sources)
        .bind(collectors)
        .execute(&mut **tx)
        .await?;
    let (mut collector, mut source, mut session, mut addr, mut vni) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (c, arrivals) in fresh {
        for a in arrivals {
            collector.push(c.as_str());
            source.push(a.source().as_str());
            session.push(a.session().as_str());
            addr.push(a.from().to_string());
            vni.push(a.vni().map(|v| i32::try_from(v.get()).map_err(corrupt)).transpose()?);
        }
    }
    if !collector.is_empty() {
        sqlx::query(
            "INSERT INTO collector_arrivals (collector, source, session, addr, vni)
             SELECT c, s, n, a::inet, v FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[])
                 AS r(c, s, n, a, v)
             ON CONFLICT DO NOTHING",
        )
        .bind(&collector)
        .bind(&source)
        .bind(&session)
        .bind(&addr)
        .bind(&vni)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
