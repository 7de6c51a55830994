//! Authentication and authorisation at the gRPC edge, and the services that manage access:
//! tokens, the audit log, host revocation, and agent enrollment.

use std::{net::SocketAddr, time::Duration};

use chrono::{DateTime, Utc};
use teefleet_model::{HostId, IdentityEvidence, InstanceId, JoinProof, carries_all};
use teefleet_proto::{
    field, join_proof,
    v1::{self as pb, audit_service_server::AuditService, token_service_server::TokenService},
};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::{Api, ApiError};
use crate::{
    auth::{self, Principal, Role},
    iid::JoinPolicy,
    pki::{Ca, Csr, Issued, fingerprint},
    refusals::{Kind, Refusal},
    store::{AuditEntry, EnrollRefusal, NewToken, unusable_reason},
};

/// The shortest and longest lifetime of a token.
const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
const MAX_TOKEN_USES: u32 = 100_000;
const AUDIT_DEFAULT_LIMIT: u32 = 100;
const AUDIT_MAX_LIMIT: u32 = 1_000;

/// How the controller authenticates: nobody (`--insecure`) or tokens and certificates.
pub struct Access {
    /// `None` with --insecure: plaintext, no authentication.
    pub ca: Option<Ca>,
    pub agent_cert_lifetime: Duration,
    /// Enrollment by instance identity; `None` when no `--join-account` allows it.
    pub join: Option<JoinPolicy>,
}

/// An authenticated caller and where it called from.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub principal: Principal,
    pub peer: String,
}

impl Caller {
    pub fn audit(&self, action: &'static str, target: &str) -> AuditEntry {
        AuditEntry::new(&self.principal.actor(), &self.peer, action, target)
    }
}

pub(crate) fn peer<T>(req: &Request<T>) -> String {
    req.remote_addr().map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}

impl Api {
    /// A refusal of a call from `peer`: counted, logged and audited within budgets (see
    /// `refusals`); returns the status to answer with.
    pub(crate) fn refuse(
        &self,
        peer: Option<SocketAddr>,
        kind: Kind,
        reason: &'static str,
        audit: AuditEntry,
        status: Status,
    ) -> Status {
        self.refusals.refuse(Refusal { kind, reason, peer, audit, status })
    }

    /// Authenticates the caller of an admin call and checks it may do `action` (as the
    /// audit log names it, e.g. `session.create`), which needs `need`. Unknown, expired
    /// and revoked tokens are UNAUTHENTICATED (the caller must get another token); a valid
    /// token with too small a role is PERMISSION_DENIED.
    pub(crate) async fn authorize<T>(
        &self,
        req: &Request<T>,
        need: Role,
        action: &'static str,
    ) -> Result<Caller, Status> {
        let peer = peer(req);
        if self.access.ca.is_none() {
            return Ok(Caller { principal: Principal::Insecure, peer });
        }
        let refused = |actor: &str, reason, status| {
            self.refuse(req.remote_addr(), Kind::Admin, reason, AuditEntry::new(actor, &peer, action, ""), status)
        };
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let Some(secret) = header.and_then(auth::bearer) else {
            return Err(refused(
                "unauthenticated",
                "no_token",
                Status::unauthenticated(
                    "no bearer token: pass --token or set FLEET_TOKEN (fleetctl token create makes one)",
                ),
            ));
        };
        let token = self.store.token_by_secret(&auth::hash_secret(secret)).await.map_err(ApiError::from)?;
        let Some(token) = token else {
            let status = Status::unauthenticated("the token is not known to this controller");
            return Err(refused("unauthenticated", "unknown_token", status));
        };
        let actor = Principal::Token { id: token.id.clone(), role: token.role }.actor();
        if let Some(why) = token.unusable(Utc::now()) {
            let status = Status::unauthenticated(format!("token {} is {why}; ask an admin for a new one", token.id));
            return Err(refused(&actor, unusable_reason(why), status));
        }
        if !token.role.allows(need) {
            let status = Status::permission_denied(format!(
                "token {} has role {}; {} needs {need} or above",
                token.id,
                token.role,
                action.replace('.', " ")
            ));
            return Err(refused(&actor, "role", status));
        }
        Ok(Caller { principal: Principal::Token { id: token.id, role: token.role }, peer })
    }

    /// Runs a mutation and, when it fails, records the failure with the message the caller
    /// gets (a success is recorded by the store inside the mutation's transaction).
    pub(crate) async fn audited<T>(
        &self,
        entry: &AuditEntry,
        change: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, Status> {
        let status = match change.await {
            Ok(value) => return Ok(value),
            Err(e) => Status::from(e),
        };
        let result = format!("{:?}: {}", status.code(), status.message());
        if let Err(e) = self.store.audit_failure(entry, &result).await {
            warn!(action = entry.action(), error = %e, "could not record a failed change in the audit log");
        }
        Err(status)
    }

    fn ca(&self) -> Result<&Ca, Status> {
        self.access.ca.as_ref().ok_or_else(|| {
            Status::failed_precondition("the controller runs with --insecure: it has no CA and enrolls no agents")
        })
    }

    /// The client certificate presented on this connection, for `action` (`agent.sync` or
    /// `host.renew`): its fingerprint and the host it was issued to. UNAUTHENTICATED when
    /// missing, unknown, expired, revoked or replaced by a newer one.
    pub(crate) async fn agent_identity<T>(
        &self,
        req: &Request<T>,
        action: &'static str,
    ) -> Result<([u8; 32], HostId), Status> {
        let peer = peer(req);
        let refused = |actor: &str, host: &str, reason, message: String| {
            let audit = AuditEntry::new(actor, &peer, action, host);
            self.refuse(req.remote_addr(), Kind::Agent, reason, audit, Status::unauthenticated(message))
        };
        let certs = req.peer_certs();
        let Some(der) = certs.as_ref().and_then(|c| c.first()) else {
            return Err(refused(
                "unauthenticated",
                "",
                "no_certificate",
                "no client certificate: enroll the agent first (fleet-agent --join-token T --ca-pin sha256:...)".into(),
            ));
        };
        let print = fingerprint(der);
        let actor = format!("certificate:{}", hex::encode(&print[..6]));
        let cert = self.store.agent_cert(&print).await.map_err(ApiError::from)?;
        let Some(cert) = cert else {
            let message = "this client certificate was not issued to an agent".to_owned();
            return Err(refused(&actor, "", "unknown_certificate", message));
        };
        let host = &cert.host_id;
        match cert.revoked.as_deref() {
            Some("renewed") => {
                return Err(refused(
                    &actor,
                    host,
                    "replaced_certificate",
                    format!(
                        "this certificate of host {host} was replaced by a newer one the host's agent has used; \
                         an agent holding it is not the host's current one (restart it to load its newest \
                         certificate, or enroll again)"
                    ),
                ));
            }
            Some("reenrolled") => {
                return Err(refused(
                    &actor,
                    host,
                    "replaced_certificate",
                    format!(
                        "host {host} enrolled again with a token made for it, which replaced this certificate; \
                         enroll again to get a new one"
                    ),
                ));
            }
            Some(_) => {
                return Err(refused(
                    &actor,
                    host,
                    "revoked_certificate",
                    format!("host {host}'s certificate was revoked; enroll again with a new join token"),
                ));
            }
            None => {}
        }
        if cert.not_after <= Utc::now() {
            let message = "the client certificate has expired; enroll again".to_owned();
            return Err(refused(&actor, host, "expired_certificate", message));
        }
        let host = host.parse().map_err(|_| Status::internal("a stored certificate names an invalid host"))?;
        Ok((print, host))
    }

    /// The agent of `host` uses the certificate `print`: older ones of the host are
    /// retired. A failure is logged, not refused: the certificate is valid.
    pub(crate) async fn in_use(&self, host: &HostId, print: &[u8; 32]) {
        match self.store.retire_older(host, print).await {
            Ok(0) => {}
            Ok(retired) => info!(host_id = %host, retired, "retired the host's older certificates"),
            Err(e) => warn!(host_id = %host, error = %e, "could not retire the host's older certificates"),
        }
    }

    pub(crate) async fn enroll(&self, req: Request<pb::EnrollRequest>) -> Result<pb::EnrollResponse, Status> {
        let ca = self.ca()?;
        let peer = peer(&req);
        let remote = req.remote_addr();
        let body = req.get_ref();
        let proof = join_proof(body);
        let actor = match &proof {
            Ok(Some(JoinProof::InstanceIdentity(_))) => "instance identity",
            _ => "join token",
        };
        let refused = |target: &str, reason, status| {
            self.refuse(remote, Kind::Enroll, reason, AuditEntry::new(actor, &peer, "host.enroll", target), status)
        };
        let host = match field::<HostId>("host_id", &body.host_id) {
            Ok(host) => host,
            Err(e) => return Err(refused(&body.host_id, "invalid_request", Status::from(ApiError::from(e)))),
        };
        let proof = match proof {
            Ok(Some(proof)) => proof,
            Ok(None) => {
                let status = Status::unauthenticated(
                    "a join token (fleetctl token create --role agent) or an instance identity document                      (fleet-agent --join-method instance-identity) is needed to enroll",
                );
                return Err(refused(host.as_str(), "no_token", status));
            }
            Err(e) => return Err(refused(host.as_str(), "invalid_request", Status::from(ApiError::from(e)))),
        };
        let csr = match Csr::parse(&body.csr) {
            Ok(csr) => csr,
            Err(e) => return Err(refused(host.as_str(), "bad_csr", Status::invalid_argument(format!("csr: {e}")))),
        };
        let secret = match proof {
            JoinProof::Token(secret) => secret,
            JoinProof::InstanceIdentity(evidence) => {
                return self.enroll_by_identity(ca, &host, &csr, &evidence, &peer, remote).await;
            }
        };
        let entry = AuditEntry::new("join token", &peer, "host.enroll", host.as_str());
        let lifetime = self.access.agent_cert_lifetime;
        let secret = auth::hash_secret(&secret);
        let issue = || ca.sign_agent(&csr, &host, lifetime);
        let outcome =
            self.store.enroll(&secret, &host, &csr.key_sha256(), issue, &entry).await.map_err(ApiError::from)?;
        let enrolled = match outcome {
            Ok(enrolled) => enrolled,
            Err(refusal) => {
                let (reason, status) = enroll_refusal(&host, refusal);
                return Err(refused(host.as_str(), reason, status));
            }
        };
        if enrolled.retired > 0 {
            warn!(host_id = %host, retired = enrolled.retired, "the host enrolled again with a token made for it; its older certificates are retired");
        }
        info!(host_id = %host, not_after = %enrolled.issued.not_after, retry = enrolled.retry, "agent enrolled");
        Ok(enroll_response(ca, enrolled.issued))
    }

    /// Enrollment by instance identity: the signature verified against the trusted
    /// certificates, then the document checked against the host, the allowed accounts and
    /// EC2 (the instance exists, runs, is the account's and carries the tags), then the
    /// store refuses a document whose certificate is live (a replay).
    async fn enroll_by_identity(
        &self,
        ca: &Ca,
        host: &HostId,
        csr: &Csr,
        evidence: &IdentityEvidence,
        peer: &str,
        remote: Option<SocketAddr>,
    ) -> Result<pb::EnrollResponse, Status> {
        let refused = |actor: &str, reason, status| {
            let audit = AuditEntry::new(actor, peer, "host.enroll", host.as_str());
            self.refuse(remote, Kind::Enroll, reason, audit, status)
        };
        let Some(policy) = &self.access.join else {
            let status = Status::failed_precondition(
                "enrollment by instance identity is off on this controller: start it with --join-account ACCOUNT_ID \
                 (FLEET_JOIN_ACCOUNTS) for the accounts whose instances may join, or enroll with a join token",
            );
            return Err(refused("instance identity", "identity_off", status));
        };
        let document = match policy.signers.verify(evidence) {
            Ok(document) => document,
            Err(e) => {
                let status = Status::unauthenticated(format!("instance identity: {e}"));
                return Err(refused("instance identity", e.reason(), status));
            }
        };
        let actor = format!("instance identity (account {})", document.account_id);
        if document.instance_id.as_str() != host.as_str() {
            let status = Status::permission_denied(format!(
                "the instance identity document is instance {}'s, not host {host}'s; an agent enrolling by instance \
                 identity uses its instance id as host id (leave --host-id unset)",
                document.instance_id
            ));
            return Err(refused(&actor, "identity_other_host", status));
        }
        if !policy.accounts.contains(&document.account_id) {
            let status = Status::permission_denied(format!(
                "instance {host} belongs to account {}, which may not enroll by instance identity; add it with \
                 --join-account on the controller",
                document.account_id
            ));
            return Err(refused(&actor, "identity_account", status));
        }
        let instance_id: InstanceId = document.instance_id.clone();
        let standing = match self.cloud.standing(&instance_id).await {
            Ok(standing) => standing,
            Err(e) => {
                warn!(host_id = %host, error = %e, "cannot check an enrolling instance with EC2");
                return Err(Status::unavailable(format!("cannot check instance {host} with EC2 now: {e}")));
            }
        };
        let standing = match standing {
            Some(s) => s,
            None => {
                let status = Status::permission_denied(format!(
                    "EC2 does not know instance {host} (in region {} of account {}); the controller checks \
                     instances in its own region and account",
                    document.region, document.account_id
                ));
                return Err(refused(&actor, "identity_unknown_instance", status));
            }
        };
        if standing.owner_id.as_ref().is_some_and(|owner| *owner != document.account_id) {
            let status = Status::permission_denied(format!(
                "EC2 says instance {host} belongs to account {}, not {}",
                standing.owner_id.as_deref().unwrap_or_default(),
                document.account_id
            ));
            return Err(refused(&actor, "identity_account", status));
        }
        if !standing.is_running() {
            let status = Status::permission_denied(format!(
                "instance {host} is {}; only a running instance enrolls by instance identity",
                if standing.state.is_empty() { "in no state EC2 names" } else { standing.state.as_str() }
            ));
            return Err(refused(&actor, "identity_not_running", status));
        }
        let carried = standing.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        // `carries_all` is false for no selectors: no --join-tag asks for nothing.
        if !policy.tags.is_empty() && !carries_all(&policy.tags, carried) {
            let missing: Vec<String> = policy
                .tags
                .iter()
                .filter(|t| !standing.tags.iter().any(|(k, v)| k == t.key() && v == t.value()))
                .map(ToString::to_string)
                .collect();
            let status = Status::permission_denied(format!(
                "instance {host} does not carry the tag{} {} that --join-tag asks for",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", ")
            ));
            return Err(refused(&actor, "identity_tags", status));
        }
        let entry = AuditEntry::new(&actor, peer, "host.enroll", host.as_str());
        let lifetime = self.access.agent_cert_lifetime;
        let issue = || ca.sign_agent(csr, host, lifetime);
        let outcome = self
            .store
            .enroll_by_identity(host, &document.digest, &csr.key_sha256(), issue, &entry)
            .await
            .map_err(ApiError::from)?;
        let enrolled = match outcome {
            Ok(enrolled) => enrolled,
            Err(refusal) => {
                let (reason, status) = enroll_refusal(host, refusal);
                return Err(refused(&actor, reason, status));
            }
        };
        info!(
            host_id = %host, account = %document.account_id, region = %document.region,
            pending_time = %document.pending_time, not_after = %enrolled.issued.not_after, retry = enrolled.retry,
            "agent enrolled by instance identity"
        );
        Ok(enroll_response(ca, enrolled.issued))
    }

    /// `fleet-agent leave`: the host revokes its own certificates with the one it presents.
    pub(crate) async fn leave(&self, req: Request<pb::LeaveRequest>) -> Result<pb::LeaveResponse, Status> {
        self.ca()?;
        let (_, host) = self.agent_identity(&req, "host.leave").await?;
        let entry = AuditEntry::new(&format!("host:{host}"), &peer(&req), "host.leave", host.as_str());
        let revoked = self.audited(&entry, async { Ok(self.store.revoke_host(&host, &entry).await?) }).await?;
        let disconnected = self.hub.cut_off(&host);
        info!(host_id = %host, revoked, disconnected, "host left the fleet");
        Ok(pb::LeaveResponse { revoked_certificates: u32::try_from(revoked).unwrap_or(u32::MAX) })
    }

    pub(crate) async fn renew(&self, req: Request<pb::EnrollRequest>) -> Result<pb::EnrollResponse, Status> {
        let ca = self.ca()?;
        let (print, host) = self.agent_identity(&req, "host.renew").await?;
        let peer = peer(&req);
        let body = req.get_ref();
        if !body.host_id.is_empty() && body.host_id != host.as_str() {
            let other =
                field::<HostId>("host_id", &body.host_id).map_or_else(|_| "an invalid id".into(), |h| h.to_string());
            let audit = AuditEntry::new(&format!("host:{host}"), &peer, "host.renew", &body.host_id);
            let status = Status::permission_denied(format!("this certificate belongs to host {host}, not {other}"));
            return Err(self.refuse(req.remote_addr(), Kind::Agent, "wrong_host", audit, status));
        }
        self.in_use(&host, &print).await;
        let issued = Csr::parse(&body.csr)
            .and_then(|csr| ca.sign_agent(&csr, &host, self.access.agent_cert_lifetime))
            .map_err(|e| Status::invalid_argument(format!("csr: {e}")))?;
        let entry = AuditEntry::new(&format!("host:{host}"), &peer, "host.renew", host.as_str());
        self.store.record_renewal(&host, &issued, &print, &entry).await.map_err(ApiError::from)?;
        info!(host_id = %host, not_after = %issued.not_after, "agent certificate renewed");
        Ok(enroll_response(ca, issued))
    }

    pub(crate) async fn revoke_host(
        &self,
        req: Request<pb::RevokeHostRequest>,
    ) -> Result<pb::RevokeHostResponse, Status> {
        let caller = self.authorize(&req, Role::Admin, "host.revoke").await?;
        let host = field::<HostId>("host_id", &req.get_ref().host_id).map_err(ApiError::from)?;
        let entry = caller.audit("host.revoke", host.as_str());
        // Checked first: once the revocation commits, this replica's own fan-out may hear of
        // it and end the stream before the line below does.
        let had_stream = !self.hub.held(std::slice::from_ref(&host)).is_empty();
        let revoked = self.audited(&entry, async { Ok(self.store.revoke_host(&host, &entry).await?) }).await?;
        let disconnected = self.hub.cut_off(&host) || had_stream;
        info!(host_id = %host, revoked, disconnected, "host revoked");
        Ok(pb::RevokeHostResponse { revoked_certificates: u32::try_from(revoked).unwrap_or(u32::MAX), disconnected })
    }
}

/// The status an enrollment refusal gets, with its word for metrics.
fn enroll_refusal(host: &HostId, refusal: EnrollRefusal) -> (&'static str, Status) {
    match refusal {
        EnrollRefusal::Token { reason, why } => (reason, Status::unauthenticated(format!("the join token is {why}"))),
        EnrollRefusal::OtherHost(other) => (
            "token_for_another_host",
            Status::permission_denied(format!("this join token was made for host {other}; it cannot enroll {host}")),
        ),
        EnrollRefusal::Enrolled { until } => (
            "enrolled_host",
            Status::already_exists(format!(
                "host {host} is already enrolled: it holds a certificate valid until {}, and neither a join token nor an \
                 identity document takes over an enrolled host. If this is the host, rebuilt or without its key, revoke the old \
                 identity first (fleetctl host revoke {host}) or enroll with a token made for it \
                 (fleetctl token create --role agent --host {host})",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
        ),
        EnrollRefusal::Csr(why) => ("bad_csr", Status::invalid_argument(format!("csr: {why}"))),
        EnrollRefusal::Replayed { until } => (
            "identity_replay",
            Status::already_exists(format!(
                "this instance identity document already enrolled host {host}, whose certificate is valid until {}; \
                 a copy of it cannot enroll again. If this is the host, rebuilt or without its key, revoke the old \
                 identity first (fleetctl host revoke {host})",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
        ),
    }
}

fn enroll_response(ca: &Ca, issued: Issued) -> pb::EnrollResponse {
    pb::EnrollResponse {
        certificate: issued.pem,
        ca_certificate: ca.cert_pem().to_owned(),
        not_after: issued.not_after.to_rfc3339(),
    }
}

fn pb_token(t: &crate::store::TokenRecord) -> pb::Token {
    let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    pb::Token {
        id: t.id.clone(),
        role: t.role.to_string(),
        expires_at: time(t.expires_at),
        uses_left: t.uses_left,
        created_at: t.created_at.to_rfc3339(),
        created_by: t.created_by.clone(),
        revoked_at: time(t.revoked_at),
        host_id: t.host.clone().unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl TokenService for Api {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let caller = self.authorize(&req, Role::Admin, "token.create").await?;
        let req = req.into_inner();
        let role: Role =
            req.role.parse().map_err(|e: auth::UnknownRole| Status::invalid_argument(format!("role: {e}")))?;
        let ttl = Duration::from_secs(req.ttl_seconds);
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(Status::invalid_argument(format!(
                "ttl: {} s is out of range; give between {} s and {} days",
                req.ttl_seconds,
                MIN_TTL.as_secs(),
                MAX_TTL.as_secs() / 86_400
            )));
        }
        match req.uses {
            Some(_) if role != Role::Agent => {
                return Err(Status::invalid_argument(
                    "uses: only join tokens (role agent) have a number of uses; operator tokens last until they expire",
                ));
            }
            Some(n) if n == 0 || n > MAX_TOKEN_USES => {
                return Err(Status::invalid_argument(format!("uses: give between 1 and {MAX_TOKEN_USES}")));
            }
            _ => {}
        }
        let host = match req.host_id.as_str() {
            "" => None,
            _ if role != Role::Agent => {
                return Err(Status::invalid_argument(
                    "host_id: only join tokens (role agent) are made for a host; operator tokens are for people",
                ));
            }
            id => Some(field::<HostId>("host_id", id).map_err(ApiError::from)?),
        };
        // A token for one host enrolls it once unless asked otherwise: a rebuilt host
        // enrolls once.
        let uses = req.uses.or(host.as_ref().map(|_| 1));
        let (id, secret) = auth::new_token().map_err(|_| Status::internal("the system random generator failed"))?;
        let expires_at = Utc::now() + chrono::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let target = match &host {
            Some(host) => format!("{id} ({role}, for {host})"),
            None => format!("{id} ({role})"),
        };
        let entry = caller.audit("token.create", &target);
        let token = NewToken {
            id,
            secret_sha256: auth::hash_secret(&secret),
            role,
            expires_at: Some(expires_at),
            uses,
            created_by: caller.principal.actor(),
            host,
        };
        let record = self.audited(&entry, async { Ok(self.store.create_token(&token, &entry).await?) }).await?;
        info!(token = %record.id, role = %role, by = %entry.actor(), "token created");
        Ok(Response::new(pb::CreateTokenResponse { token: Some(pb_token(&record)), secret }))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.authorize(&req, Role::Admin, "token.list").await?;
        let tokens = self.store.list_tokens().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListTokensResponse { tokens: tokens.iter().map(pb_token).collect() }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let caller = self.authorize(&req, Role::Admin, "token.revoke").await?;
        let id = req.get_ref().id.clone();
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Status::invalid_argument("id: give the token id shown by `fleetctl token list`"));
        }
        let entry = caller.audit("token.revoke", &id);
        self.audited(&entry, async { Ok(self.store.revoke_token(&id, &entry).await?) }).await?;
        info!(token = %id, by = %entry.actor(), "token revoked");
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }
}

#[tonic::async_trait]
impl AuditService for Api {
    async fn list_audit(&self, req: Request<pb::ListAuditRequest>) -> Result<Response<pb::ListAuditResponse>, Status> {
        self.authorize(&req, Role::Admin, "audit.list").await?;
        let req = req.into_inner();
        let since = match req.since.as_str() {
            "" => None,
            s => Some(DateTime::parse_from_rfc3339(s).map_err(|e| {
                Status::invalid_argument(format!(
                    "since: {s:?} is not an RFC 3339 time ({e}); e.g. 2026-11-25T10:00:00Z"
                ))
            })?),
        };
        let limit = match req.limit {
            0 => AUDIT_DEFAULT_LIMIT,
            n => n.min(AUDIT_MAX_LIMIT),
        };
        let records =
            self.store.list_audit(since.map(|t| t.with_timezone(&Utc)), limit).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListAuditResponse {
            records: records
                .into_iter()
                .map(|r| pb::AuditRecord {
                    id: u64::try_from(r.id).unwrap_or(0),
                    at: r.at.to_rfc3339(),
                    actor: r.actor,
                    peer: r.peer,
                    action: r.action,
                    target: r.target,
                    result: r.result,
                })
                .collect(),
        }))
    }
}
