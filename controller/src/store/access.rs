//! Access control in the store: the CA row, tokens, agent certificates and the audit log.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Row, Transaction, postgres::PgRow};
use teefleet_model::{HostId, text::printable};

use super::{Result, Store, StoreError, corrupt, unique_violation};
use crate::auth::Role;
use crate::pki::{Issued, StoredCa};

/// Who did what to what, from where: one audit record without its result. The actor,
/// peer and target may come from a caller (a refused name, say), so they are made
/// printable and bounded here, where they enter.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    actor: String,
    peer: String,
    action: &'static str,
    target: String,
}

/// The longest actor, peer and target kept, in bytes; the result's is `MAX_AUDIT_RESULT`.
const MAX_AUDIT_FIELD: usize = 256;
const MAX_AUDIT_RESULT: usize = 1024;

impl AuditEntry {
    pub fn new(actor: &str, peer: &str, action: &'static str, target: &str) -> Self {
        Self {
            actor: printable(actor, MAX_AUDIT_FIELD),
            peer: printable(peer, MAX_AUDIT_FIELD),
            action,
            target: printable(target, MAX_AUDIT_FIELD),
        }
    }

    /// The same record by another actor.
    pub fn by(&self, actor: &str) -> Self {
        Self { actor: printable(actor, MAX_AUDIT_FIELD), ..self.clone() }
    }

    pub fn actor(&self) -> &str {
        &self.actor
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn action(&self) -> &'static str {
        self.action
    }

    pub fn target(&self) -> &str {
        &self.target
    }
}

#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub peer: String,
    pub action: String,
    pub target: String,
    pub result: String,
}

#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: String,
    pub secret_sha256: [u8; 32],
    pub role: Role,
    pub expires_at: Option<DateTime<Utc>>,
    pub uses: Option<u32>,
    pub created_by: String,
    /// Only for a join token: the one host it enrolls.
    pub host: Option<HostId>,
}

#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub uses_left: Option<u32>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The one host a join token enrolls, if it was made for one.
    pub host: Option<String>,
}

/// The word for metrics of what `TokenRecord::unusable` says.
pub fn unusable_reason(why: &str) -> &'static str {
    match why {
        "revoked" => "revoked_token",
        "expired" => "expired_token",
        _ => "used_up_token",
    }
}

impl TokenRecord {
    /// Why the token cannot be used now, if it cannot.
    pub fn unusable(&self, now: DateTime<Utc>) -> Option<&'static str> {
        if self.revoked_at.is_some() {
            Some("revoked")
        } else if self.expires_at.is_some_and(|t| t <= now) {
            Some("expired")
        } else if self.uses_left == Some(0) {
            Some("used up")
        } else {
            None
        }
    }
}

/// What the store knows about a presented client certificate.
#[derive(Debug, Clone)]
pub struct AgentCert {
    pub host_id: String,
    pub not_after: DateTime<Utc>,
    /// Why it is no longer accepted, if it is not: `revoked` by an operator, `renewed`
    /// (a newer certificate of the host was used), or `reenrolled`.
    pub revoked: Option<String>,
}

macro_rules! token_columns {
    () => {
        "id, role, created_at, created_by, expires_at, uses_left, revoked_at, host_id"
    };
}

fn token_record(row: &PgRow) -> Result<TokenRecord> {
    let role: String = row.try_get("role")?;
    let uses_left: Option<i32> = row.try_get("uses_left")?;
    Ok(TokenRecord {
        id: row.try_get("id")?,
        role: role.parse().map_err(|_| corrupt(format!("token role {role:?}")))?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        expires_at: row.try_get("expires_at")?,
        uses_left: uses_left.map(|n| u32::try_from(n).unwrap_or(0)),
        revoked_at: row.try_get("revoked_at")?,
        host: row.try_get("host_id")?,
    })
}

/// Records a change's success inside the change's own transaction.
pub(super) async fn audit_ok(tx: &mut Transaction<'_, Postgres>, entry: &AuditEntry) -> Result<()> {
    insert_audit(&mut **tx, entry, "ok").await
}

async fn insert_audit<'e>(exec: impl sqlx::PgExecutor<'e>, entry: &AuditEntry, result: &str) -> Result<()> {
    sqlx::query("INSERT INTO audit_log (actor, peer, action, target, result) VALUES ($1, $2, $3, $4, $5)")
        .bind(&entry.actor)
        .bind(&entry.peer)
        .bind(entry.action)
        .bind(&entry.target)
        .bind(printable(result, MAX_AUDIT_RESULT))
        .execute(exec)
        .await?;
    Ok(())
}

impl Store {
    // ---- CA -------------------------------------------------------------------------------

    pub async fn stored_ca(&self) -> Result<Option<StoredCa>> {
        let row = sqlx::query("SELECT ca_cert_pem, ca_key, key_sealed FROM pki").fetch_optional(&self.pool).await?;
        row.map(|r| Ok(StoredCa { cert_pem: r.try_get(0)?, key: r.try_get(1)?, sealed: r.try_get(2)? })).transpose()
    }

    /// Stores `ca` unless another replica stored one first; returns the one stored.
    pub async fn store_ca_once(&self, ca: &StoredCa) -> Result<StoredCa> {
        sqlx::query("INSERT INTO pki (ca_cert_pem, ca_key, key_sealed) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(&ca.cert_pem)
            .bind(&ca.key)
            .bind(ca.sealed)
            .execute(&self.pool)
            .await?;
        self.stored_ca().await?.ok_or_else(|| corrupt("the CA row vanished right after it was written"))
    }

    // ---- tokens ---------------------------------------------------------------------------

    pub async fn create_token(&self, token: &NewToken, audit: &AuditEntry) -> Result<TokenRecord> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "INSERT INTO tokens (id, secret_sha256, role, expires_at, uses_left, created_by, host_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
            token_columns!()
        ))
        .bind(&token.id)
        .bind(&token.secret_sha256[..])
        .bind(token.role.as_str())
        .bind(token.expires_at)
        .bind(token.uses.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
        .bind(&token.created_by)
        .bind(token.host.as_ref().map(HostId::as_str))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                StoreError::AlreadyExists { what: "token", id: token.id.clone() }
            } else {
                e.into()
            }
        })?;
        let record = token_record(&row)?;
        audit_ok(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// The bootstrap admin token: created, or its secret replaced, so that the secret in
    /// the controller's environment is always the one that works.
    pub async fn upsert_bootstrap_token(&self, secret_sha256: &[u8; 32], audit: &AuditEntry) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO tokens (id, secret_sha256, role, created_by) VALUES ('bootstrap', $1, 'admin', 'controller')
             ON CONFLICT (id) DO UPDATE SET secret_sha256 = EXCLUDED.secret_sha256, revoked_at = NULL",
        )
        .bind(&secret_sha256[..])
        .execute(&mut *tx)
        .await?;
        audit_ok(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether any admin token could still be used: if none, the controller makes one.
    pub async fn usable_admin_token_exists(&self) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE role = 'admin' AND revoked_at IS NULL
                 AND (expires_at IS NULL OR expires_at > now()))",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn token_by_secret(&self, secret_sha256: &[u8; 32]) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(concat!("SELECT ", token_columns!(), " FROM tokens WHERE secret_sha256 = $1"))
            .bind(&secret_sha256[..])
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_record).transpose()
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(concat!("SELECT ", token_columns!(), " FROM tokens ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_record).collect()
    }

    pub async fn revoke_token(&self, id: &str, audit: &AuditEntry) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "token", id: id.to_owned() });
        }
        audit_ok(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- agent certificates ---------------------------------------------------------------

    /// Enrollment, in one transaction: checks the join token (an agent token, usable now,
    /// and made for this host if it names one) and the host's live certificates, spends
    /// one use and records the certificate. A host that holds a live certificate is
    /// enrolled again only with a token made for it (which retires those certificates and
    /// ends the host's stream) or by the same key (an agent retrying an enrollment whose
    /// answer it lost, which spends no further use). `issue` runs only once all is known
    /// to be good, so a refusal costs no signature.
    pub async fn enroll(
        &self,
        secret_sha256: &[u8; 32],
        host: &HostId,
        key_sha256: &[u8; 32],
        issue: impl FnOnce() -> Result<Issued, crate::pki::PkiError>,
        audit: &AuditEntry,
    ) -> Result<Result<Enrolled, EnrollRefusal>> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!("SELECT ", token_columns!(), " FROM tokens WHERE secret_sha256 = $1 FOR UPDATE"))
            .bind(&secret_sha256[..])
            .fetch_optional(&mut *tx)
            .await?;
        let Some(token) = row.as_ref().map(token_record).transpose()? else {
            return Ok(Err(EnrollRefusal::Token { reason: "unknown_token", why: "unknown".into() }));
        };
        let for_host = token.host.clone();
        if token.role != Role::Agent {
            let why = format!("a {} token, not a join token", token.role);
            return Ok(Err(EnrollRefusal::Token { reason: "not_join_token", why }));
        }
        if let Some(other) = for_host.as_deref().filter(|h| *h != host.as_str()) {
            return Ok(Err(EnrollRefusal::OtherHost(other.to_owned())));
        }
        let live = lock_live_certs(&mut tx, host, LIVE_BY_TOKEN).await?;
        let same_key = !live.is_empty()
            && live
                .iter()
                .all(|r| r.try_get::<Option<Vec<u8>>, _>(0).ok().flatten().as_deref() == Some(&key_sha256[..]))
            && live.iter().any(|r| r.try_get::<Option<String>, _>(1).ok().flatten().as_deref() == Some(&token.id));
        // A retry spends no use, so it may find the token's last use spent by itself.
        if let Some(why) = token.unusable(Utc::now()).filter(|why| !(same_key && *why == "used up")) {
            return Ok(Err(EnrollRefusal::Token { reason: unusable_reason(why), why: why.into() }));
        }
        let replaces = !live.is_empty() && !same_key;
        if replaces && for_host.is_none() {
            let until: DateTime<Utc> = live.last().map(|r| r.try_get(2)).transpose()?.unwrap_or_else(Utc::now);
            return Ok(Err(EnrollRefusal::Enrolled { until }));
        }
        let issued = match issue() {
            Ok(i) => i,
            Err(e) => return Ok(Err(EnrollRefusal::Csr(e.to_string()))),
        };
        if !same_key {
            sqlx::query("UPDATE tokens SET uses_left = uses_left - 1 WHERE id = $1 AND uses_left IS NOT NULL")
                .bind(&token.id)
                .execute(&mut *tx)
                .await?;
        }
        let retired = if replaces { retire(&mut tx, host, "reenrolled", None).await? } else { 0 };
        if retired > 0 {
            super::coordination::notify_revoked(&mut tx, host).await?;
        }
        insert_cert(&mut tx, host, &issued, Some(&token.id), None).await?;
        audit_ok(&mut tx, &audit.by(&format!("token:{} (agent)", token.id))).await?;
        tx.commit().await?;
        Ok(Ok(Enrolled { issued, retired, retry: same_key }))
    }

    /// Enrollment by a verified instance identity document (digest `identity_sha256`), in
    /// one transaction. As with a join token, a host that holds a live certificate is not
    /// enrolled again: a document that got one of those certificates is a replay, unless
    /// the request carries that certificate's key (an agent retrying an enrollment whose
    /// answer it lost). Once the host's certificates expired or were revoked, the same
    /// document enrolls it again (an instance stopped past its certificate's life).
    /// `issue` runs only once all is known to be good.
    pub async fn enroll_by_identity(
        &self,
        host: &HostId,
        identity_sha256: &[u8; 32],
        key_sha256: &[u8; 32],
        issue: impl FnOnce() -> Result<Issued, crate::pki::PkiError>,
        audit: &AuditEntry,
    ) -> Result<Result<Enrolled, EnrollRefusal>> {
        let mut tx = self.pool.begin().await?;
        let live = lock_live_certs(&mut tx, host, LIVE_BY_IDENTITY).await?;
        let column = |r: &PgRow, i| r.try_get::<Option<Vec<u8>>, _>(i).ok().flatten();
        let same_key = live.iter().all(|r| column(r, 0).as_deref() == Some(&key_sha256[..]));
        let used = live.iter().any(|r| column(r, 1).as_deref() == Some(&identity_sha256[..]));
        let retry = !live.is_empty() && same_key && used;
        if !live.is_empty() && !retry {
            let until: DateTime<Utc> = live.last().map(|r| r.try_get(2)).transpose()?.unwrap_or_else(Utc::now);
            return Ok(Err(if used { EnrollRefusal::Replayed { until } } else { EnrollRefusal::Enrolled { until } }));
        }
        let issued = match issue() {
            Ok(i) => i,
            Err(e) => return Ok(Err(EnrollRefusal::Csr(e.to_string()))),
        };
        insert_cert(&mut tx, host, &issued, None, Some(identity_sha256)).await?;
        audit_ok(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Ok(Enrolled { issued, retired: 0, retry }))
    }

    /// A renewal: the new certificate, recorded with its audit entry. The one it replaces
    /// is retired once the new one is used (`retire_older`), not here: an agent that lost
    /// this answer renews again with the old one.
    /// The new certificate inherits the identity document of the one it renews (`from`), so
    /// a copy of that document stays a replay for as long as the host's chain of renewals
    /// lives.
    pub async fn record_renewal(
        &self,
        host: &HostId,
        issued: &Issued,
        from: &[u8; 32],
        audit: &AuditEntry,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let identity: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT identity_sha256 FROM agent_certs WHERE fingerprint = $1")
                .bind(&from[..])
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
        let identity: Option<[u8; 32]> = identity.and_then(|d| d.try_into().ok());
        insert_cert(&mut tx, host, issued, None, identity.as_ref()).await?;
        audit_ok(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The host's agent is using the certificate `fingerprint`: every older certificate of
    /// the host is retired, so a copy of one made before a renewal dies with it. Returns
    /// how many were retired.
    pub async fn retire_older(&self, host: &HostId, fingerprint: &[u8; 32]) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let retired = retire(&mut tx, host, "renewed", Some(fingerprint)).await?;
        tx.commit().await?;
        Ok(retired)
    }

    pub async fn agent_cert(&self, fingerprint: &[u8; 32]) -> Result<Option<AgentCert>> {
        let row = sqlx::query("SELECT host_id, not_after, revoked_why FROM agent_certs WHERE fingerprint = $1")
            .bind(&fingerprint[..])
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(AgentCert { host_id: r.try_get(0)?, not_after: r.try_get(1)?, revoked: r.try_get(2)? }))
            .transpose()
    }

    /// Revokes every certificate of `host` that is not revoked yet; returns how many.
    pub async fn revoke_host(&self, host: &HostId, audit: &AuditEntry) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let done = retire(&mut tx, host, "revoked", None).await?;
        super::coordination::notify_revoked(&mut tx, host).await?;
        audit_ok(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(done)
    }

    // ---- audit ----------------------------------------------------------------------------

    /// Records a mutation that failed: its own transaction rolled back, so this is separate.
    pub async fn audit_failure(&self, entry: &AuditEntry, error: &str) -> Result<()> {
        insert_audit(&self.pool, entry, error).await
    }

    /// Oldest first, at most `limit`: the first records at or after `since`, or without it
    /// the most recent ones.
    pub async fn list_audit(&self, since: Option<DateTime<Utc>>, limit: u32) -> Result<Vec<AuditRecord>> {
        let query = match since {
            Some(_) => {
                "SELECT id, at, actor, peer, action, target, result FROM audit_log WHERE at >= $1 ORDER BY id LIMIT $2"
            }
            None => {
                "SELECT * FROM (SELECT id, at, actor, peer, action, target, result FROM audit_log
                 WHERE $1::timestamptz IS NULL ORDER BY id DESC LIMIT $2) recent ORDER BY id"
            }
        };
        let rows = sqlx::query(query).bind(since).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    peer: r.try_get("peer")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    result: r.try_get("result")?,
                })
            })
            .collect()
    }
}

/// Why an enrollment was refused (as opposed to failing).
#[derive(Debug, Clone)]
pub enum EnrollRefusal {
    /// The token is unknown, not a join token, or not usable now; `reason` is a word for
    /// metrics, `why` a phrase for the caller.
    Token {
        reason: &'static str,
        why: String,
    },
    /// The token was made for another host.
    OtherHost(String),
    /// The host holds a live certificate, valid until `until`.
    Enrolled {
        until: DateTime<Utc>,
    },
    Csr(String),
    /// The identity document already got a certificate that is live until `until`.
    Replayed {
        until: DateTime<Utc>,
    },
}

/// A certificate issued by an enrollment.
#[derive(Debug)]
pub struct Enrolled {
    pub issued: Issued,
    /// Live certificates of the host it retired (a token made for the host).
    pub retired: u64,
    /// The agent retried with the key of its live certificate.
    pub retry: bool,
}

/// What an enrollment reads of the host's live certificates: the key digest, how each was
/// enrolled (a token or an identity document), and the expiry, oldest expiry first.
const LIVE_BY_TOKEN: &str = "SELECT public_key_sha256, token_id, not_after FROM agent_certs
    WHERE host_id = $1 AND revoked_at IS NULL AND not_after > now() ORDER BY not_after FOR UPDATE";
const LIVE_BY_IDENTITY: &str = "SELECT public_key_sha256, identity_sha256, not_after FROM agent_certs
    WHERE host_id = $1 AND revoked_at IS NULL AND not_after > now() ORDER BY not_after FOR UPDATE";

/// The host's live certificates as `query` reads them, locked. Two enrollments of one host
/// wait for each other here, so they cannot both find it free (a row lock cannot hold rows
/// that do not exist yet).
async fn lock_live_certs(tx: &mut Transaction<'_, Postgres>, host: &HostId, query: &'static str) -> Result<Vec<PgRow>> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('enroll:' || $1, 0))")
        .bind(host.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(sqlx::query(query).bind(host.as_str()).fetch_all(&mut **tx).await?)
}

/// Retires the host's live certificates, or with `older_than` only those issued before
/// that one; returns how many.
async fn retire(
    tx: &mut Transaction<'_, Postgres>,
    host: &HostId,
    why: &'static str,
    older_than: Option<&[u8; 32]>,
) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE agent_certs SET revoked_at = now(), revoked_why = $2
         WHERE host_id = $1 AND revoked_at IS NULL
           AND ($3::bytea IS NULL OR (fingerprint <> $3
                AND issued_at < (SELECT issued_at FROM agent_certs WHERE fingerprint = $3)))",
    )
    .bind(host.as_str())
    .bind(why)
    .bind(older_than.map(|f| &f[..]))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

async fn insert_cert(
    tx: &mut Transaction<'_, Postgres>,
    host: &HostId,
    issued: &Issued,
    token_id: Option<&str>,
    identity_sha256: Option<&[u8; 32]>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO agent_certs (fingerprint, host_id, not_after, token_id, public_key_sha256, identity_sha256)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&issued.fingerprint[..])
    .bind(host.as_str())
    .bind(issued.not_after)
    .bind(token_id)
    .bind(&issued.public_key_sha256[..])
    .bind(identity_sha256.map(|d| &d[..]))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
