//! Hosts: what their agents said on the stream (Hello, Ack, Nack, Health, events) and
//! what the admin API shows of them.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::{Row, types::Json};
use teefleet_model::{HostId, RuleSet};

use super::{LIVENESS_SECS, Result, Store, StoreError, arrivals::desired_arrivals, records::event_from_row, rule_set};
use crate::{
    delivery::{Sample, Samples},
    report::{ArrivalCounters, CounterSample, Dataplane, Health, HostEvent, MAX_EVENTS_PER_HOST, SessionCounters},
    store::HostRecord,
};

/// What the store made of a Hello.
#[derive(Debug, Clone)]
pub struct HelloOutcome {
    /// The set the host should hold.
    pub desired: RuleSet,
    /// The agent claimed a version this host was never pushed: what it holds is unknown,
    /// so the set must be pushed whatever version it claimed.
    pub stale: bool,
    /// What collectors count must be compiled again for this host (see `recount`): it is a
    /// source that said Hello from other addresses than before, or a collector, whose
    /// agent may be saying Hello for the first time.
    pub recount: bool,
}

/// The Hello of one agent stream.
#[derive(Debug, Clone, Copy)]
pub struct HelloRecord<'a> {
    pub agent_version: &'a str,
    pub addresses: &'a [String],
    pub applied_version: u64,
    pub connection_id: i64,
    /// None keeps what the host last reported.
    pub dataplane: Option<&'a Dataplane>,
}

/// An agent's Ack: the version it applied and how many rules that set has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckRecord {
    pub version: u64,
    pub rule_count: u32,
}

/// What a batch of Acks found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckOutcome {
    /// Hosts whose row a change held: not written, to be tried again.
    pub busy: BTreeSet<HostId>,
    /// Hosts that acknowledged a version above their desired one: refused.
    pub above_desired: BTreeSet<HostId>,
}

/// A version an agent reported, as a bigint: anything above the bound, which no host was
/// ever pushed, as one above it, so the comparisons in SQL still see it as too high.
fn reported(version: u64) -> i64 {
    // RuleSet::MAX_VERSION + 1 is 2^53, far inside a bigint.
    i64::try_from(version.min(RuleSet::MAX_VERSION + 1)).unwrap_or(i64::MAX)
}

impl Store {
    /// Which of `ids` are known hosts, in one query however many are asked about.
    pub async fn known_hosts(&self, ids: &[HostId]) -> Result<BTreeSet<HostId>> {
        let ids: Vec<&str> = ids.iter().map(HostId::as_str).collect();
        let known: Vec<String> = sqlx::query_scalar("SELECT host_id FROM hosts WHERE host_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        known.iter().map(|h| h.parse().map_err(super::corrupt)).collect()
    }

    /// Records an agent's Hello and returns the rule set it should hold. The version the
    /// agent claims to have applied is recorded only if it is one this host could have
    /// been pushed (at most its desired version); a higher one is stale, from another
    /// database or a lie, and moves nothing: the host counts as having applied nothing
    /// until it acknowledges a push.
    pub async fn host_hello(&self, id: &HostId, hello: &HelloRecord<'_>) -> Result<HelloOutcome> {
        let claimed = reported(hello.applied_version);
        let row = sqlx::query(concat!(
            "WITH old AS (SELECT addresses FROM hosts WHERE host_id = $1)
             INSERT INTO hosts (host_id, agent_version, addresses, connection_id, connected, last_seen, dataplane)
             VALUES ($1, $2, $3, $4, true, now(), $6)
             ON CONFLICT (host_id) DO UPDATE SET agent_version = $2, addresses = $3, connection_id = $4,
                 connected = true, last_seen = now(),
                 applied_version = CASE WHEN $5 <= hosts.desired_version THEN $5 ELSE 0 END,
                 dataplane = coalesce($6, hosts.dataplane)
             RETURNING desired_version, desired_rules, desired_collector, ",
            desired_arrivals!("$1"),
            ", $5 > desired_version AS stale,
                 (SELECT addresses FROM old) IS DISTINCT FROM $3::text[] AS moved,
                 EXISTS (SELECT 1 FROM session_sources WHERE host_id = $1) AS source,
                 EXISTS (SELECT 1 FROM collectors WHERE instance_id = $1) AS collector",
        ))
        .bind(id.as_str())
        .bind(hello.agent_version)
        .bind(hello.addresses)
        .bind(hello.connection_id)
        .bind(claimed)
        .bind(hello.dataplane.map(Json))
        .fetch_one(&self.pool)
        .await?;
        // Collectors count a source's clones by its addresses, and a collector's agent its
        // first time what it counts.
        let recount = (row.try_get::<bool, _>("moved")? && row.try_get::<bool, _>("source")?)
            || row.try_get::<bool, _>("collector")?;
        Ok(HelloOutcome { desired: rule_set(&row)?, stale: row.try_get("stale")?, recount })
    }

    /// Marks the host disconnected, unless a newer stream has said Hello since.
    pub async fn host_disconnected(&self, id: &HostId, connection_id: i64) -> Result<()> {
        sqlx::query("UPDATE hosts SET connected = false WHERE host_id = $1 AND connection_id = $2")
            .bind(id.as_str())
            .bind(connection_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that the host applied `version`; false (nothing written) when the version is
    /// above the host's desired one, which no controller pushed.
    pub async fn host_ack(&self, id: &HostId, version: u64, rule_count: u32) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE hosts SET applied_version = $2, last_error = NULL, nacked_version = NULL, rule_count = $3,
                 last_seen = now()
             WHERE host_id = $1 AND $2 <= desired_version",
        )
        .bind(id.as_str())
        .bind(reported(version))
        .bind(i32::try_from(rule_count).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records many hosts' Acks in one statement, as `host_ack` does each. A host whose row
    /// another transaction holds (a change recompiling it) is skipped and named in
    /// `busy`, to be recorded with the next batch; one whose Ack is above its desired
    /// version is named in `above_desired`, and nothing is written for it.
    pub async fn hosts_ack(&self, acks: &[(HostId, AckRecord)]) -> Result<AckOutcome> {
        let ids: Vec<&str> = acks.iter().map(|(h, _)| h.as_str()).collect();
        let versions: Vec<i64> = acks.iter().map(|(_, a)| reported(a.version)).collect();
        let rules: Vec<i32> = acks.iter().map(|(_, a)| i32::try_from(a.rule_count).unwrap_or(i32::MAX)).collect();
        // Every part sees the table as it was before the UPDATE: `free` are the rows this
        // statement locked, `done` those it wrote.
        let rows = sqlx::query(
            "WITH free AS (SELECT host_id FROM hosts WHERE host_id = ANY($1) FOR NO KEY UPDATE SKIP LOCKED),
                  done AS (
                 UPDATE hosts h SET applied_version = v.version, last_error = NULL, nacked_version = NULL,
                     rule_count = v.rules, last_seen = now()
                 FROM unnest($1::text[], $2::bigint[], $3::int[]) AS v(host_id, version, rules)
                 WHERE h.host_id = v.host_id AND v.version <= h.desired_version
                     AND h.host_id IN (SELECT host_id FROM free)
                 RETURNING h.host_id)
             SELECT host_id, host_id IN (SELECT host_id FROM free) AS locked,
                    host_id IN (SELECT host_id FROM done) AS written
             FROM hosts WHERE host_id = ANY($1)",
        )
        .bind(&ids)
        .bind(&versions)
        .bind(&rules)
        .fetch_all(&self.pool)
        .await?;
        let mut outcome = AckOutcome::default();
        for row in &rows {
            let host: HostId = row.try_get::<String, _>("host_id")?.parse().map_err(super::corrupt)?;
            match (row.try_get::<bool, _>("locked")?, row.try_get::<bool, _>("written")?) {
                (false, _) => outcome.busy.insert(host),
                (true, false) => outcome.above_desired.insert(host),
                (true, true) => false,
            };
        }
        Ok(outcome)
    }

    /// Records that the host refused `version`; false as for `host_ack`.
    pub async fn host_nack(&self, id: &HostId, version: u64, error: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE hosts SET nacked_version = $2, last_error = $3, last_seen = now()
             WHERE host_id = $1 AND $2 <= desired_version",
        )
        .bind(id.as_str())
        .bind(reported(version))
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records one Health report (the streams batch theirs through `hosts_health`);
    /// false if the host's row was locked by another transaction and nothing was stored.
    pub async fn host_health(&self, id: &HostId, health: &Health) -> Result<bool> {
        Ok(self.hosts_health(&[(id.clone(), health.clone())]).await?.is_empty())
    }

    /// Records the latest Health of many hosts in one statement; a host's dataplane is only
    /// written when its report carries one. Rows another transaction holds are skipped, not
    /// waited for, and returned: a recompile locks the hosts it rewrites in host order,
    /// and a batch that waited for rows in its own order could deadlock with it (which
    /// Postgres would settle by failing one of them, perhaps an operator's call). The
    /// caller stores the skipped reports with its next batch.
    pub async fn hosts_health(&self, reports: &[(HostId, Health)]) -> Result<Vec<HostId>> {
        let ids: Vec<&str> = reports.iter().map(|(h, _)| h.as_str()).collect();
        let rule_counts: Vec<i32> =
            reports.iter().map(|(_, r)| i32::try_from(r.rule_count).unwrap_or(i32::MAX)).collect();
        // A count beyond i64 cannot happen in practice; saturate rather than refuse.
        let repairs: Vec<i64> =
            reports.iter().map(|(_, r)| i64::try_from(r.drift_repairs).unwrap_or(i64::MAX)).collect();
        let counters: Vec<Json<&[SessionCounters]>> =
            reports.iter().map(|(_, r)| Json(r.counters.as_slice())).collect();
        let dataplanes: Vec<Option<Json<&Dataplane>>> =
            reports.iter().map(|(_, r)| r.dataplane.as_ref().map(Json)).collect();

        // Every part sees the table as it was before the UPDATE, so the last SELECT finds
        // the hosts that exist but were not written: those that were locked.
        let busy: Vec<String> = sqlx::query_scalar(
            "WITH free AS (SELECT host_id FROM hosts WHERE host_id = ANY($1) FOR UPDATE SKIP LOCKED),
                  done AS (
                 UPDATE hosts h SET last_seen = now(), rule_count = v.rule_count, drift_repairs = v.repairs,
                     counters = v.counters, dataplane = coalesce(v.dataplane, h.dataplane)
                 FROM unnest($1::text[], $2::int[], $3::bigint[], $4::jsonb[], $5::jsonb[])
                     AS v(host_id, rule_count, repairs, counters, dataplane)
                 WHERE h.host_id = v.host_id AND h.host_id IN (SELECT host_id FROM free)
                 RETURNING h.host_id)
             SELECT host_id FROM hosts WHERE host_id = ANY($1) AND host_id NOT IN (SELECT host_id FROM done)",
        )
        .bind(&ids)
        .bind(&rule_counts)
        .bind(&repairs)
        .bind(&counters)
        .bind(&dataplanes)
        .fetch_all(&self.pool)
        .await?;
        let busy: std::collections::HashSet<String> = busy.into_iter().collect();
        Ok(reports.iter().filter(|(h, _)| busy.contains(h.as_str())).map(|(h, _)| h.clone()).collect())
    }

    /// Stores counter samples: each report's counters with the time they were read. Rows
    /// are only added, so nothing here waits for a recompile.
    pub async fn add_counter_samples(&self, samples: &[(HostId, CounterSample)]) -> Result<()> {
        let ids: Vec<&str> = samples.iter().map(|(h, _)| h.as_str()).collect();
        let read_at: Vec<DateTime<Utc>> = samples.iter().map(|(_, s)| s.read_at).collect();
        let sent: Vec<Json<&[SessionCounters]>> = samples.iter().map(|(_, s)| Json(s.sent.as_slice())).collect();
        let arrived: Vec<Json<&[ArrivalCounters]>> = samples.iter().map(|(_, s)| Json(s.arrived.as_slice())).collect();
        sqlx::query(
            "INSERT INTO counter_samples (host_id, read_at, sent, arrived)
             SELECT v.host_id, v.read_at, v.sent, v.arrived
             FROM unnest($1::text[], $2::timestamptz[], $3::jsonb[], $4::jsonb[]) AS v(host_id, read_at, sent, arrived)
             WHERE EXISTS (SELECT 1 FROM hosts h WHERE h.host_id = v.host_id)",
        )
        .bind(&ids)
        .bind(&read_at)
        .bind(&sent)
        .bind(&arrived)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes counter samples older than `kept`; returns how many.
    pub async fn prune_counter_samples(&self, kept: std::time::Duration) -> Result<u64> {
        let done = sqlx::query("DELETE FROM counter_samples WHERE read_at < now() - make_interval(secs => $1)")
            .bind(kept.as_secs_f64())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The counter samples of `hosts` read after `since`, oldest first per host.
    pub async fn counter_samples(&self, hosts: &[HostId], since: DateTime<Utc>) -> Result<Samples> {
        let ids: Vec<&str> = hosts.iter().map(HostId::as_str).collect();
        let rows = sqlx::query(
            "SELECT host_id, read_at, sent, arrived FROM counter_samples
             WHERE host_id = ANY($1) AND read_at > $2 ORDER BY host_id, read_at",
        )
        .bind(&ids)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut samples = Samples::new();
        for row in &rows {
            let host: HostId = row.try_get::<String, _>("host_id")?.parse().map_err(super::corrupt)?;
            let Json(sent): Json<Vec<SessionCounters>> = row.try_get("sent")?;
            let Json(arrived): Json<Vec<ArrivalCounters>> = row.try_get("arrived")?;
            let sample = Sample {
                sent: sent.into_iter().map(|c| (c.session, c.traffic.packets())).collect(),
                arrived: arrived.into_iter().map(|a| ((a.session, a.source), a.arrived.packets)).collect(),
            };
            samples.entry(host).or_default().push((row.try_get("read_at")?, sample));
        }
        Ok(samples)
    }

    /// Adds an event and drops the host's oldest beyond the most recent
    /// `MAX_EVENTS_PER_HOST`, in one statement.
    pub async fn add_host_event(&self, id: &HostId, event: &HostEvent) -> Result<()> {
        // The DELETE sees the table as it was before the INSERT, so it keeps one fewer
        // than the limit to make room for the new event.
        sqlx::query(
            "WITH trimmed AS (
                 DELETE FROM host_events WHERE id IN (
                     SELECT id FROM host_events WHERE host_id = $1 ORDER BY id DESC OFFSET $5 - 1))
             INSERT INTO host_events (host_id, kind, message, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.as_str())
        .bind(event.kind().as_str())
        .bind(event.message())
        // The model bounds the time to what a timestamp holds.
        .bind(
            DateTime::<Utc>::from_timestamp_millis(i64::try_from(event.at_unix_ms()).unwrap_or(0)).unwrap_or_default(),
        )
        .bind(MAX_EVENTS_PER_HOST)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The host's events, most recent first.
    pub async fn host_events(&self, id: &HostId) -> Result<Vec<HostEvent>> {
        let rows =
            sqlx::query("SELECT kind, message, at FROM host_events WHERE host_id = $1 ORDER BY id DESC LIMIT $2")
                .bind(id.as_str())
                .bind(MAX_EVENTS_PER_HOST)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(event_from_row).collect()
    }

    pub async fn desired(&self, id: &HostId) -> Result<RuleSet> {
        let row = sqlx::query(concat!(
            "SELECT desired_version, desired_rules, desired_collector, ",
            desired_arrivals!("$1"),
            " FROM hosts WHERE host_id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound { what: "host", id: id.to_string() })?;
        rule_set(&row)
    }

    pub async fn host(&self, id: &HostId) -> Result<HostRecord> {
        let row = sqlx::query(concat!(host_select!(), " WHERE host_id = $2"))
            .bind(LIVENESS_SECS)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: "host", id: id.to_string() })?;
        HostRecord::from_row(&row)
    }

    pub async fn list_hosts(&self) -> Result<Vec<HostRecord>> {
        let rows =
            sqlx::query(concat!(host_select!(), " ORDER BY host_id")).bind(LIVENESS_SECS).fetch_all(&self.pool).await?;
        rows.iter().map(HostRecord::from_row).collect()
    }
}

// Statements are static strings (sqlx refuses dynamic SQL), so shared clauses are macros.
macro_rules! host_select {
    () => {
        "SELECT host_id, agent_version, addresses,
                connected AND last_seen > now() - make_interval(secs => $1) AS live,
                desired_version, applied_version, last_error, last_seen, rule_count, dataplane, drift_repairs, counters
         FROM hosts"
    };
}
use host_select;
