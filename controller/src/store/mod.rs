//! The Postgres store: every SQL statement of the controller lives here.
//!
//! Mutations that change which sessions cover a host run in one transaction that also
//! recompiles those hosts' rule sets, under a transaction-scoped advisory lock (shared by
//! creates and deletes, which the host rows they lock order; see `SourcesWritten`) so two
//! concurrent changes cannot both read the old state and hand out the same version.

mod access;
mod arrivals;
mod changes;
mod collectors;
mod coordination;
mod hosts;
mod preflight;
mod records;
mod selectors;
mod source_checks;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use sqlx::{
    PgPool, Postgres, Row, Transaction,
    postgres::{PgPoolOptions, PgRow},
    types::Json,
};
use teefleet_model::{
    Arrival, Cidr, CompileInput, Direction, Encap, Filter, HostId, MaxPps, MirrorRule, PortRange, Protocol, RuleSet,
    Sample, SessionName, SessionSpec, Throttle, Ttl, Vni, compile, compile_arrivals, limits,
};

pub use access::{AgentCert, AuditEntry, AuditRecord, EnrollRefusal, Enrolled, NewToken, TokenRecord, unusable_reason};
pub use changes::SessionChange;
pub use coordination::{Changed, DESIRED_CHANNEL, LEADER_PING, Leadership, REVOKED_CHANNEL};
pub use hosts::{AckOutcome, AckRecord, HelloOutcome, HelloRecord};
pub use preflight::PreflightRead;
pub use records::{CollectorRecord, HostRecord, NewCollector, SdcState, SessionRecord, SourceStatus};
pub use selectors::{TagChange, TagSession};
pub use source_checks::SourceCheck;

/// Key of the advisory lock that serialises rule-set recompilation.
const COMPILE_LOCK: i64 = 0x7465_6566_6c74; // "teeflt"

/// The class of the advisory locks that creates hold on the VNIs they take (the second
/// key is the VNI).
const VNI_LOCKS: i32 = 0x7665_6e69; // "veni"

/// An agent whose stream has sent nothing for this long counts as disconnected, even if
/// the replica that held its stream died without saying so.
pub(crate) const LIVENESS_SECS: f64 = 30.0;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{what} {id} already exists")]
    AlreadyExists { what: &'static str, id: String },
    #[error("{0}")]
    InUse(String),
    /// What a change was checked against changed before it could be made; nothing was.
    #[error("{0}")]
    Stale(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database error")]
    Database(#[source] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Every database error becomes a `StoreError` here (those the store expects, such as a
/// duplicate name, are recognised before), which makes this the place to count them.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let e = StoreError::Database(e);
        crate::metrics::database_error(&e);
        e
    }
}

impl StoreError {
    /// True when the database could not be reached, as opposed to refusing a statement.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed))
    }

    /// Postgres rolled the transaction back to settle a conflict with another one (a
    /// deadlock or a serialization failure, SQLSTATE class 40): nothing was written, and
    /// the same request may well succeed now.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(db)) if db.code().is_some_and(|c| c.starts_with("40")))
    }
}

pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn version(v: i64) -> u64 {
    // Versions are stored as bigint with a CHECK >= 0.
    u64::try_from(v).unwrap_or(0)
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Whether `e` is a violation of the named constraint or unique index.
fn violates(e: &sqlx::Error, constraint: &str) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.constraint() == Some(constraint))
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(Self { pool })
    }

    // ---- sessions -----------------------------------------------------------------------

    /// Stores a session and recompiles its sources; returns the hosts whose rule set
    /// changed. The collector must be known, and every source must be a known host or in
    /// `found_in_ec2`, which are registered in the same transaction so a refused session
    /// leaves nothing behind.
    pub async fn create_session(
        &self,
        spec: &SessionSpec,
        found_in_ec2: &[HostId],
        audit: &AuditEntry,
    ) -> Result<Vec<HostId>> {
        self.create_session_matched(spec, found_in_ec2, &[], None, None, audit).await
    }

    /// `create_session` for a session with tag selectors: `matched` are the instances its
    /// tags matched, registered as hosts and stored as its tag-origin sources (a host it
    /// also names stays a named source); `problem` says which matched instances it skipped.
    /// A session with a `ttl` expires that long after it is stored.
    pub async fn create_session_matched(
        &self,
        spec: &SessionSpec,
        found_in_ec2: &[HostId],
        matched: &[HostId],
        problem: Option<&str>,
        ttl: Option<Ttl>,
        audit: &AuditEntry,
    ) -> Result<Vec<HostId>> {
        let mut tx = self.pool.begin().await?;
        lock_shared(&mut tx).await?;
        let new_hosts: Vec<&str> = found_in_ec2.iter().chain(matched).map(HostId::as_str).collect();
        sqlx::query("INSERT INTO hosts (host_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING")
            .bind(&new_hosts)
            .execute(&mut *tx)
            .await?;
        let collector_known: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM collectors WHERE instance_id = $1)")
                .bind(spec.collector().as_str())
                .fetch_one(&mut *tx)
                .await?;
        if !collector_known {
            return Err(StoreError::NotFound { what: "collector", id: spec.collector().to_string() });
        }
        let sources: Vec<&str> = spec.sources().iter().map(HostId::as_str).collect();
        check_named_sources(&mut tx, &sources).await?;
        let filter = FilterColumns::of(spec.filter());
        let vni = match spec.vni() {
            Some(vni) => {
                hold_vni(&mut tx, vni).await?;
                vni
            }
            None => free_vni(&mut tx).await?,
        };
        let inserted = sqlx::query_scalar::<_, i64>(
            "INSERT INTO sessions (name, collector_id, direction, protocol, port_first, port_last, cidrs, sample_ppm,
                                   max_pps, allow_routed, vni, resolve_problem, disable_source_check, expires_at,
                                   max_loss)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                     now() + $14::bigint * interval '1 second', $15) RETURNING id",
        )
        .bind(spec.name().as_str())
        .bind(spec.collector().as_str());
        let inserted = filter
            .bind(inserted)
            .bind(spec.allow_routed())
            .bind(i32::try_from(vni.get()).map_err(corrupt)?)
            .bind(problem)
            .bind(spec.disable_source_check())
            .bind(ttl.map(|t| i64::try_from(t.secs()).unwrap_or(i64::MAX)))
            .bind(spec.max_loss().get())
            .fetch_one(&mut *tx)
            .await;
        let session_id = match inserted {
            Err(e) if violates(&e, "sessions_vni") => {
                return Err(StoreError::AlreadyExists { what: "session with VNI", id: vni.to_string() });
            }
            Err(e) if unique_violation(&e) => {
                return Err(StoreError::AlreadyExists { what: "session", id: spec.name().to_string() });
            }
            other => other?,
        };
        sqlx::query(
            "INSERT INTO session_sources (session_id, host_id, required_version) SELECT $1, unnest($2::text[]), 0",
        )
        .bind(session_id)
        .bind(&sources)
        .execute(&mut *tx)
        .await?;
        selectors::insert(&mut tx, session_id, spec.selectors()).await?;
        // The spec's sources are sorted.
        let by_tag: Vec<HostId> =
            matched.iter().filter(|h| spec.sources().binary_search(h).is_err()).cloned().collect();
        selectors::add_tag_sources(&mut tx, session_id, &by_tag).await?;
        let all: Vec<HostId> = spec.sources().iter().chain(&by_tag).cloned().collect();
        let written = recompile_sources(&mut tx, &all).await?;
        // Before the collectors are locked, so that other creates wait for less.
        record_required(&mut tx, session_id, &written.versions).await?;
        let (_, changed) = written.count(&mut tx).await?;
        access::audit_ok(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// Recompiles `hosts` and what collectors count of them: after sources' addresses
    /// changed (their own rules do not depend on them, so they keep their version), or a
    /// collector's agent said Hello (compiled from scratch).
    pub async fn recompile_collectors(&self, hosts: &[HostId]) -> Result<Vec<HostId>> {
        let mut tx = self.pool.begin().await?;
        lock(&mut tx).await?;
        let (_, changed) = recompile(&mut tx, hosts).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// Deletes a session and recompiles its sources; returns the hosts whose rule set
    /// changed.
    pub async fn delete_session(&self, name: &SessionName, audit: &AuditEntry) -> Result<Vec<HostId>> {
        self.remove_session(name, false, audit).await
    }

    /// Deletes a session (only if it has expired, when `expired` is set: an update may
    /// have pushed its expiry back meanwhile) and recompiles its sources.
    async fn remove_session(&self, name: &SessionName, expired: bool, audit: &AuditEntry) -> Result<Vec<HostId>> {
        let mut tx = self.pool.begin().await?;
        lock_shared(&mut tx).await?;
        let sources: Vec<String> = sqlx::query_scalar(
            "SELECT ss.host_id FROM session_sources ss JOIN sessions s ON s.id = ss.session_id WHERE s.name = $1",
        )
        .bind(name.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM sessions WHERE name = $1 AND (NOT $2 OR expires_at <= now())")
            .bind(name.as_str())
            .bind(expired)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound { what: "session", id: name.to_string() });
        }
        let hosts = sources.into_iter().map(|h| h.parse().map_err(corrupt)).collect::<Result<Vec<HostId>>>()?;
        let (_, changed) = recompile(&mut tx, &hosts).await?;
        access::audit_ok(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(changed)
    }

    pub async fn session(&self, name: &SessionName) -> Result<SessionRecord> {
        let row = sqlx::query(concat!(session_select!(), " WHERE s.name = $1"))
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: "session", id: name.to_string() })?;
        self.session_record(&row).await
    }

    pub async fn list_sessions(&self) -> Result<Vec<SessionRecord>> {
        let rows = sqlx::query(concat!(session_select!(), " ORDER BY s.name")).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.session_record(row).await?);
        }
        Ok(out)
    }

    async fn session_record(&self, row: &PgRow) -> Result<SessionRecord> {
        let id: i64 = row.try_get("id")?;
        let sources = sqlx::query(
            "SELECT ss.host_id, ss.required_version, ss.origin = 'tag' AS from_tags,
                    h.connected AND h.last_seen > now() - make_interval(secs => $2) AS live,
                    h.desired_version, h.applied_version, h.nacked_version, h.last_error,
                    (SELECT c FROM jsonb_array_elements(h.counters) c WHERE c->>'session' = $3 LIMIT 1) AS counters,
                    (SELECT state FROM source_checks sc WHERE sc.host_id = ss.host_id) AS source_check
             FROM session_sources ss JOIN hosts h ON h.host_id = ss.host_id
             WHERE ss.session_id = $1 ORDER BY ss.host_id",
        )
        .bind(id)
        .bind(LIVENESS_SECS)
        .bind(row.try_get::<String, _>("name")?)
        .fetch_all(&self.pool)
        .await?;
        SessionRecord::from_rows(row, &sources)
    }
}

// Statements are static strings (sqlx refuses dynamic SQL), so shared clauses are macros.
macro_rules! session_select {
    () => {
        "SELECT s.id, s.name, s.collector_id, s.direction, s.protocol, s.port_first, s.port_last,
            s.cidrs, s.sample_ppm, s.max_pps, s.created_at, s.expires_at, c.ip AS collector_ip, c.ec2_error AS collector_ec2_error,
            c.source_dest_check AS collector_sdc, c.encap AS collector_encap, s.allow_routed, s.resolve_problem, s.vni, s.disable_source_check, s.max_loss,
            EXISTS (SELECT 1 FROM hosts h WHERE h.host_id = s.collector_id AND h.connection_id IS NOT NULL)
                AS collector_has_agent,
            array(SELECT host_id FROM session_sources ss WHERE ss.session_id = s.id AND ss.origin = 'named'
                  ORDER BY host_id) AS sources,
            array(SELECT key FROM session_selectors t WHERE t.session_id = s.id ORDER BY key) AS selector_keys,
            array(SELECT value FROM session_selectors t WHERE t.session_id = s.id ORDER BY key) AS selector_values
     FROM sessions s JOIN collectors c ON c.instance_id = s.collector_id"
    };
}
use session_select;

/// The lowest VNI that no live session has and no other transaction is taking. Creates run
/// side by side: each holds a lock on the VNI it takes until it commits, so the others skip
/// it instead of queueing on the unique index behind it.
async fn free_vni(tx: &mut Transaction<'_, Postgres>) -> Result<Vni> {
    let mut skipped: Vec<i32> = Vec::new();
    loop {
        let free: Option<i32> = sqlx::query_scalar(
            "WITH taken AS (SELECT vni FROM sessions UNION SELECT unnest($1::int[]))
             SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM taken WHERE vni = 1) THEN 1
                    ELSE (SELECT min(t.vni) + 1 FROM taken t
                          WHERE t.vni < 16777215 AND NOT EXISTS (SELECT 1 FROM taken u WHERE u.vni = t.vni + 1))
                    END",
        )
        .bind(&skipped)
        .fetch_one(&mut **tx)
        .await?;
        let free = free.ok_or_else(|| StoreError::InUse("every VXLAN VNI (1 to 16777215) is taken".to_owned()))?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
            .bind(VNI_LOCKS)
            .bind(free)
            .fetch_one(&mut **tx)
            .await?;
        // Another transaction may have committed a session with it after the search.
        if locked
            && !sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM sessions WHERE vni = $1)")
                .bind(free)
                .fetch_one(&mut **tx)
                .await?
        {
            return Vni::new(u32::try_from(free).map_err(corrupt)?).map_err(corrupt);
        }
        skipped.push(free);
    }
}

/// Holds a VNI an operator asked for, as `free_vni` holds the ones it takes.
async fn hold_vni(tx: &mut Transaction<'_, Postgres>, vni: Vni) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(VNI_LOCKS)
        .bind(i32::try_from(vni.get()).map_err(corrupt)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Refuses named sources that are not known hosts, or that are registered collectors (a
/// collector is never a source: it would mirror the clones it receives).
async fn check_named_sources(tx: &mut Transaction<'_, Postgres>, sources: &[&str]) -> Result<()> {
    let known: Vec<String> = sqlx::query_scalar("SELECT host_id FROM hosts WHERE host_id = ANY($1)")
        .bind(sources)
        .fetch_all(&mut **tx)
        .await?;
    if let Some(missing) = sources.iter().find(|s| !known.iter().any(|k| k == *s)) {
        return Err(StoreError::NotFound { what: "host", id: (*missing).to_owned() });
    }
    let collectors: Vec<String> =
        sqlx::query_scalar("SELECT instance_id FROM collectors WHERE instance_id = ANY($1) ORDER BY instance_id")
            .bind(sources)
            .fetch_all(&mut **tx)
            .await?;
    if !collectors.is_empty() {
        return Err(StoreError::InUse(format!(
            "{} is a registered collector: a collector is never a source, since it would mirror the clones it \
             receives",
            collectors.join(", ")
        )));
    }
    Ok(())
}

/// Takes the compile lock alone: for changes that read more than the rows they lock
/// (a collector registered or removed, tags, updates, addresses moved).
async fn lock(tx: &mut Transaction<'_, Postgres>) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(COMPILE_LOCK).execute(&mut **tx).await?;
    Ok(())
}

/// Takes the compile lock shared: for creates and deletes, which the rows they lock order
/// (see `SourcesWritten`), so that changes to different sources run side by side.
async fn lock_shared(tx: &mut Transaction<'_, Postgres>) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)").bind(COMPILE_LOCK).execute(&mut **tx).await?;
    Ok(())
}

/// A desired set from a row with `desired_version`, `desired_rules`, `desired_collector`
/// and `desired_arrivals` (see `arrivals::desired_arrivals!`).
fn rule_set(row: &PgRow) -> Result<RuleSet> {
    let Json(rules): Json<Vec<MirrorRule>> = row.try_get("desired_rules")?;
    let Json(mut arrivals): Json<Vec<Arrival>> = row.try_get("desired_arrivals")?;
    // Each change compiles at most the limit per collector, but several together may
    // add up to more: a collector counts the first ones rather than nothing.
    arrivals.sort();
    arrivals.truncate(limits::MAX_ARRIVALS);
    let set = RuleSet::new(version(row.try_get("desired_version")?), rules).map_err(corrupt)?;
    set.with_collector(row.try_get("desired_collector")?).with_arrivals(arrivals).map_err(corrupt)
}

/// A filter as the sessions table stores it.
struct FilterColumns {
    direction: &'static str,
    protocol: &'static str,
    port_first: Option<i32>,
    port_last: Option<i32>,
    cidrs: Vec<String>,
    sample_ppm: Option<i32>,
    max_pps: Option<i32>,
}

impl FilterColumns {
    /// Binds the seven columns, in the order of `direction, protocol, port_first,
    /// port_last, cidrs, sample_ppm, max_pps`.
    fn bind<'q, O>(
        &'q self,
        query: sqlx::query::QueryScalar<'q, Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryScalar<'q, Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(self.direction)
            .bind(self.protocol)
            .bind(self.port_first)
            .bind(self.port_last)
            .bind(&self.cidrs)
            .bind(self.sample_ppm)
            .bind(self.max_pps)
    }

    fn of(filter: &Filter) -> Self {
        // Samples are at most a million parts per million and caps at most a million.
        let column = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        Self {
            direction: filter.direction().as_str(),
            protocol: filter.protocol().as_str(),
            port_first: filter.ports().map(|p| i32::from(p.first())),
            port_last: filter.ports().map(|p| i32::from(p.last())),
            cidrs: filter.cidrs().iter().map(ToString::to_string).collect(),
            sample_ppm: filter.throttle().sample.map(|s| column(s.ppm())),
            max_pps: filter.throttle().max_pps.map(|m| column(m.get())),
        }
    }
}

pub(crate) fn filter_from_row(row: &PgRow) -> Result<Filter> {
    let direction: Direction = row.try_get::<String, _>("direction")?.parse().map_err(corrupt)?;
    let protocol: Protocol = row.try_get::<String, _>("protocol")?.parse().map_err(corrupt)?;
    let first: Option<i32> = row.try_get("port_first")?;
    let last: Option<i32> = row.try_get("port_last")?;
    let ports = match (first, last) {
        (Some(f), Some(l)) => Some(
            PortRange::new(u32::try_from(f).map_err(corrupt)?, u32::try_from(l).map_err(corrupt)?).map_err(corrupt)?,
        ),
        _ => None,
    };
    let cidrs = row
        .try_get::<Vec<String>, _>("cidrs")?
        .iter()
        .map(|c| c.parse::<Cidr>().map_err(corrupt))
        .collect::<Result<Vec<_>>>()?;
    let sample = row
        .try_get::<Option<i32>, _>("sample_ppm")?
        .map(|ppm| u32::try_from(ppm).map_err(corrupt).and_then(|ppm| Sample::from_ppm(ppm).map_err(corrupt)));
    let max_pps = row
        .try_get::<Option<i32>, _>("max_pps")?
        .map(|pps| u32::try_from(pps).map_err(corrupt).and_then(|pps| MaxPps::new(pps).map_err(corrupt)));
    let throttle = Throttle::new(sample.transpose()?, max_pps.transpose()?);
    Ok(Filter::new(direction, protocol, ports, cidrs).map_err(corrupt)?.with_throttle(throttle))
}

/// Records, for each host of a session, the first desired version that contains it.
async fn record_required(
    tx: &mut Transaction<'_, Postgres>,
    session_id: i64,
    versions: &BTreeMap<HostId, i64>,
) -> Result<()> {
    let hosts: Vec<&str> = versions.keys().map(HostId::as_str).collect();
    let required: Vec<i64> = versions.values().copied().collect();
    sqlx::query(
        "UPDATE session_sources ss SET required_version = v.version
         FROM unnest($2::text[], $3::bigint[]) AS v(host_id, version)
         WHERE ss.session_id = $1 AND ss.host_id = v.host_id",
    )
    .bind(session_id)
    .bind(&hosts)
    .bind(&required)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What the compiler reads of a session: add a WHERE.
macro_rules! compile_select {
    () => {
        "SELECT s.name, s.collector_id, s.direction, s.protocol, s.port_first, s.port_last, s.cidrs, s.sample_ppm,
                s.max_pps, s.vni, c.encap, c.ip, host(c.ipv6) AS ipv6,
                array(SELECT host_id FROM session_sources ss WHERE ss.session_id = s.id) AS sources
         FROM sessions s JOIN collectors c ON c.instance_id = s.collector_id"
    };
}

fn compile_input(row: &PgRow) -> Result<CompileInput> {
    let encap: Encap = row.try_get::<String, _>("encap")?.parse().map_err(corrupt)?;
    let vni = u32::try_from(row.try_get::<i32, _>("vni")?).map_err(corrupt)?;
    Ok(CompileInput {
        vni: (encap == Encap::Vxlan).then(|| Vni::new(vni).map_err(corrupt)).transpose()?,
        name: row.try_get::<String, _>("name")?.parse().map_err(corrupt)?,
        collector: row.try_get::<String, _>("collector_id")?.parse().map_err(corrupt)?,
        sources: row
            .try_get::<Vec<String>, _>("sources")?
            .iter()
            .map(|h| h.parse().map_err(corrupt))
            .collect::<Result<_>>()?,
        collector_ips: std::iter::once(row.try_get::<String, _>("ip")?)
            .chain(row.try_get::<Option<String>, _>("ipv6")?)
            .map(|ip| ip.parse::<IpAddr>().map_err(corrupt))
            .collect::<Result<_>>()?,
        filter: filter_from_row(row)?,
    })
}

/// What the given collectors count, compiled from scratch: each session delivering to
/// them, from each address its sources reported in their Hello.
async fn compile_collectors(tx: &mut Transaction<'_, Postgres>, collectors: &[&str]) -> Result<arrivals::Counts> {
    let rows = sqlx::query(concat!(compile_select!(), " WHERE s.collector_id = ANY($1)"))
        .bind(collectors)
        .fetch_all(&mut **tx)
        .await?;
    let inputs = rows.iter().map(compile_input).collect::<Result<Vec<_>>>()?;
    let rows = sqlx::query(
        "SELECT host_id, addresses FROM hosts WHERE host_id IN (
             SELECT ss.host_id FROM session_sources ss JOIN sessions s ON s.id = ss.session_id
             WHERE s.collector_id = ANY($1))",
    )
    .bind(collectors)
    .fetch_all(&mut **tx)
    .await?;
    let mut addresses = BTreeMap::new();
    for row in &rows {
        addresses.insert(row.try_get::<String, _>("host_id")?.parse().map_err(corrupt)?, addresses_of(row)?);
    }
    // Like `arrivals::Counts` read back: no entry for a collector that counts nothing.
    Ok(compile_arrivals(&inputs, &addresses)
        .into_iter()
        .filter(|(_, a)| !a.is_empty())
        .map(|(c, a)| (c, a.into_iter().collect()))
        .collect())
}

/// A host's addresses as its Hello reported them; one that no longer parses counts
/// nothing (they were checked when stored).
fn addresses_of(row: &PgRow) -> Result<Vec<IpAddr>> {
    Ok(row.try_get::<Vec<String>, _>("addresses")?.iter().filter_map(|a| a.parse().ok()).collect())
}

/// Recompiles the given hosts from every session that covers them, and what every
/// collector counts of them, storing a new version for each host whose set changed and
/// telling every replica so at commit. A collector among the hosts (registered or removed)
/// is compiled from scratch. Returns every given host's resulting desired version and the
/// list of hosts that changed.
async fn recompile(
    tx: &mut Transaction<'_, Postgres>,
    hosts: &[HostId],
) -> Result<(BTreeMap<HostId, i64>, Vec<HostId>)> {
    recompile_sources(tx, hosts).await?.count(tx).await
}

/// The first half of a recompile: the given hosts' sets and what collectors count of them
/// written, the collectors' versions not yet.
///
/// Under the shared compile lock, changes run side by side and are ordered by the rows they
/// lock instead: the given hosts first (sorted), then the collectors whose counts changed
/// (sorted), each held to the commit. The given hosts are locked before the sessions
/// covering them are read, so a change that waited for another compiles from what that one
/// committed; what collectors count of a source is only written under that source's lock.
/// Collectors, which every change of a session's sources touches, are locked last and only
/// to take a new version, so changes to different sources hardly queue on them. A change
/// whose given hosts include a collector holds the exclusive lock, so no change holds a
/// collector while it waits for a source.
struct SourcesWritten {
    versions: BTreeMap<HostId, i64>,
    changed: Vec<HostId>,
    /// The collectors among the given hosts, compiled from scratch.
    rebuilt: Vec<HostId>,
    /// The collectors whose counts of the given hosts changed.
    recounted: BTreeSet<HostId>,
}

async fn recompile_sources(tx: &mut Transaction<'_, Postgres>, hosts: &[HostId]) -> Result<SourcesWritten> {
    // Collectors are few; each one with a host (for its agent) counts what arrives.
    let collectors: BTreeSet<HostId> = sqlx::query_scalar::<_, String>(
        "SELECT c.instance_id FROM collectors c WHERE EXISTS (SELECT 1 FROM hosts h WHERE h.host_id = c.instance_id)",
    )
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|c| c.parse().map_err(corrupt))
    .collect::<Result<_>>()?;
    let (rebuilt, sources): (Vec<HostId>, Vec<HostId>) = hosts.iter().cloned().partition(|h| collectors.contains(h));
    let ids: Vec<&str> = sources.iter().map(HostId::as_str).collect();
    let current = lock_hosts(tx, &ids).await?;
    let rows = sqlx::query(concat!(
        compile_select!(),
        " WHERE s.id IN (SELECT session_id FROM session_sources WHERE host_id = ANY($1))"
    ))
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let inputs = rows.iter().map(compile_input).collect::<Result<Vec<_>>>()?;
    let mut compiled = compile(&inputs).map_err(corrupt)?;
    let mut addresses = BTreeMap::new();
    for row in &current {
        addresses.insert(row.try_get::<String, _>("host_id")?.parse().map_err(corrupt)?, addresses_of(row)?);
    }
    let fresh: arrivals::Counts = compile_arrivals(&inputs, &addresses)
        .into_iter()
        .filter(|(c, a)| collectors.contains(c) && !a.is_empty())
        .map(|(c, a)| (c, a.into_iter().collect()))
        .collect();
    let old = arrivals::of_sources(tx, &ids).await?;
    // A given host that counted but is no collector any more (it was removed) counts nothing.
    let uncounted = arrivals::of_collectors(tx, &ids).await?;
    let recounted: BTreeSet<HostId> =
        old.keys().chain(fresh.keys()).filter(|c| old.get(*c) != fresh.get(*c)).cloned().collect();
    if !recounted.is_empty() || !uncounted.is_empty() {
        arrivals::replace(tx, &ids, &ids, &fresh).await?;
    }

    let mut sets = NewSets::default();
    let mut versions = BTreeMap::new();
    for row in &current {
        let host: HostId = row.try_get::<String, _>("host_id")?.parse().map_err(corrupt)?;
        let rules = compiled.remove(&host).unwrap_or_default();
        let version = sets.push(row, &host, rules, uncounted.contains_key(&host))?;
        versions.insert(host, version);
    }
    let changed = sets.write(tx).await?;
    Ok(SourcesWritten { versions, changed, rebuilt, recounted })
}

impl SourcesWritten {
    /// The second half: a new version for every collector whose counts changed, and the
    /// collectors among the given hosts compiled from scratch; returns every given host's
    /// version and every host that changed.
    async fn count(mut self, tx: &mut Transaction<'_, Postgres>) -> Result<(BTreeMap<HostId, i64>, Vec<HostId>)> {
        let mut recounted = std::mem::take(&mut self.recounted);
        if !self.rebuilt.is_empty() {
            let ids: Vec<&str> = self.rebuilt.iter().map(HostId::as_str).collect();
            let scratch = compile_collectors(tx, &ids).await?;
            let old = arrivals::of_collectors(tx, &ids).await?;
            recounted.extend(self.rebuilt.iter().filter(|c| old.get(*c) != scratch.get(*c)).cloned());
            arrivals::replace(tx, &[], &ids, &scratch).await?;
        }
        let lock: BTreeSet<&HostId> = recounted.iter().chain(&self.rebuilt).collect();
        let ids: Vec<&str> = lock.iter().map(|h| h.as_str()).collect();
        let current = lock_hosts(tx, &ids).await?;
        let mut sets = NewSets::default();
        for row in &current {
            let host: HostId = row.try_get::<String, _>("host_id")?.parse().map_err(corrupt)?;
            // A collector is never a source, so it has no mirror rules of its own.
            let version = sets.push(row, &host, Vec::new(), recounted.contains(&host))?;
            if self.rebuilt.contains(&host) {
                self.versions.insert(host, version);
            }
        }
        self.changed.extend(sets.write(tx).await?);
        coordination::notify_desired(tx, &self.changed).await?;
        Ok((self.versions, self.changed))
    }
}

/// Locks the hosts' rows (in order, so two changes cannot each hold what the other
/// waits for) and reads what a recompile compares with.
///
/// FOR NO KEY UPDATE: the recompile changes no key, so rows that only reference a host
/// (the heartbeat's counter samples, whose foreign key takes KEY SHARE) need not wait for
/// it, nor hold up the next change while they wait.
async fn lock_hosts(tx: &mut Transaction<'_, Postgres>, ids: &[&str]) -> Result<Vec<PgRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query(
        "SELECT host_id, desired_version, desired_rules, desired_collector, addresses,
                EXISTS (SELECT 1 FROM collectors c WHERE c.instance_id = h.host_id AND c.encap = 'vxlan') AS collector
         FROM hosts h WHERE host_id = ANY($1) ORDER BY host_id FOR NO KEY UPDATE",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?)
}

/// The new sets of the hosts whose set changed, written in one UPDATE: a session over a
/// whole tier changes thousands.
#[derive(Default)]
struct NewSets {
    ids: Vec<String>,
    versions: Vec<i64>,
    rules: Vec<Json<Vec<MirrorRule>>>,
    collector: Vec<bool>,
    changed: Vec<HostId>,
}

impl NewSets {
    /// Adds the host's new set if it differs from the stored one (`row`, from
    /// `lock_hosts`) or what it counts changed; returns the host's resulting version.
    fn push(&mut self, row: &PgRow, host: &HostId, rules: Vec<MirrorRule>, recounted: bool) -> Result<i64> {
        let Json(old): Json<Vec<MirrorRule>> = row.try_get("desired_rules")?;
        let (was_collector, collector): (bool, bool) = (row.try_get("desired_collector")?, row.try_get("collector")?);
        let version: i64 = row.try_get("desired_version")?;
        if rules == old && collector == was_collector && !recounted {
            return Ok(version);
        }
        // The schema bounds stored versions at RuleSet::MAX_VERSION, 2^52 changes above
        // any host's; running out means the bound was bypassed.
        let version = u64::try_from(version)
            .ok()
            .and_then(RuleSet::next_version)
            .and_then(|v| i64::try_from(v).ok())
            .ok_or_else(|| corrupt(format!("host {host} has no rule-set version left after {version}")))?;
        self.ids.push(host.as_str().to_owned());
        self.versions.push(version);
        self.rules.push(Json(rules));
        self.collector.push(collector);
        self.changed.push(host.clone());
        Ok(version)
    }

    /// Writes the new sets; returns the hosts whose set changed.
    async fn write(self, tx: &mut Transaction<'_, Postgres>) -> Result<Vec<HostId>> {
        if !self.ids.is_empty() {
            sqlx::query(
                "UPDATE hosts h SET desired_version = v.version, desired_rules = v.rules, desired_collector = v.collector
                 FROM unnest($1::text[], $2::bigint[], $3::jsonb[], $4::boolean[]) AS v(host_id, version, rules, collector)
                 WHERE h.host_id = v.host_id",
            )
            .bind(&self.ids)
            .bind(&self.versions)
            .bind(&self.rules)
            .bind(&self.collector)
            .execute(&mut **tx)
            .await?;
        }
        Ok(self.changed)
    }
}
