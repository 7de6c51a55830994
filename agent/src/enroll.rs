//! The agent's client certificate: enrolling for one with a join token or the EC2 instance
//! identity, renewing it at two thirds of its lifetime, leaving the fleet, and the TLS
//! settings every connection to the controller uses.
//!
//! The key is generated here and never leaves the host: the controller gets a signing
//! request and returns a certificate for this host id. The controller is verified against
//! its CA only (`ca.pem`, found once with `--ca-pin`), never against system roots.
//!
//! Every call goes to the controller's replicas in turn until one answers, so enrollment
//! and renewal work while any replica does.

use std::{
    future::Future,
    time::{Duration, SystemTime},
};

use teefleet_model::{HostId, JoinProof};
use teefleet_proto::v1::agent_service_client::AgentServiceClient;
use tokio::sync::watch;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};
use tracing::{error, info, warn};

use crate::{
    backoff::Backoff,
    config::{ControllerUrl, ControllerUrls, JoinMethod, JoinToken},
    credentials::{CA_FILE, CERT_FILE, CredentialError, CredentialStore, KEY_FILE, Stored},
    discovery::{DiscoveryError, discover_ca},
    error_chain,
    events::{EventKind, EventSender},
    imds::{self, ImdsError},
    pki::{CaCert, CaPin, Credentials, PkiError, new_key_and_csr},
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Enroll and Renew are one database write and one signature on the controller.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The renewal deadline is re-read from the wall clock at least this often, so a suspended
/// machine or a stepped clock cannot push a renewal past the certificate's expiry.
const CLOCK_CHECK: Duration = Duration::from_secs(60);
/// Retries of a failed renewal: 2 s doubling up to 5 minutes, which leaves dozens of tries
/// in the last third of even a short lifetime without loading the controller.
pub const RENEWAL_BACKOFF: Backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(300));

/// An https controller: the URLs of its replicas, and the CA they all prove themselves with
/// (the replicas share one CA, each with a certificate for the names it is reached by).
#[derive(Debug, Clone)]
pub struct Controller {
    urls: ControllerUrls,
    ca: CaCert,
}

impl Controller {
    pub fn new(urls: ControllerUrls, ca: CaCert) -> Self {
        Self { urls, ca }
    }

    pub fn urls(&self) -> &ControllerUrls {
        &self.urls
    }

    pub fn ca(&self) -> &CaCert {
        &self.ca
    }

    /// An endpoint for one replica's `url` that trusts only the CA, for that URL's host
    /// name, presenting `identity` when given.
    pub fn endpoint(
        &self,
        url: &ControllerUrl,
        identity: Option<&Credentials>,
    ) -> Result<Endpoint, tonic::transport::Error> {
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.ca.pem())).domain_name(url.server_name());
        if let Some(creds) = identity {
            tls = tls.identity(creds.identity());
        }
        Endpoint::from_shared(url.to_string())?.connect_timeout(CONNECT_TIMEOUT).tls_config(tls)
    }

    pub(crate) async fn client(
        &self,
        url: &ControllerUrl,
        identity: Option<&Credentials>,
    ) -> Result<AgentServiceClient<Channel>, EnrollError> {
        let endpoint = self.endpoint(url, identity).map_err(EnrollError::Endpoint)?.timeout(CALL_TIMEOUT);
        let channel = endpoint.connect().await.map_err(|source| {
            if rejects_certificate(&source) {
                EnrollError::Untrusted { server_name: url.server_name().to_owned(), source }
            } else {
                EnrollError::Connect(source)
            }
        })?;
        Ok(AgentServiceClient::new(channel))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("invalid controller URL")]
    Endpoint(#[source] tonic::transport::Error),
    #[error("cannot connect to the controller")]
    Connect(#[source] tonic::transport::Error),
    #[error(
        "the controller's certificate does not verify against {CA_FILE} for the name {server_name:?}; \
         --controller must name the controller as its certificate does (fleet-controller --tls-san)"
    )]
    Untrusted {
        server_name: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the controller refused ({:?}): {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    #[error("the call failed ({:?}): {}", .0.code(), .0.message())]
    Failed(tonic::Status),
    #[error("cannot make a key")]
    Key(#[source] PkiError),
    #[error("the controller returned an unusable certificate")]
    Issued(#[source] PkiError),
    #[error("cannot read the signed instance identity from instance metadata at {endpoint}")]
    Imds {
        endpoint: String,
        #[source]
        source: ImdsError,
    },
}

impl EnrollError {
    pub(crate) fn from_status(status: tonic::Status) -> Self {
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => Self::Refused(status),
            _ => Self::Failed(status),
        }
    }

    /// Whether trying again later may succeed: the controller or the network is down or
    /// overloaded. A refused token, a bad request or an untrusted controller will not change.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect(_) => true,
            // Early in boot instance metadata may not answer yet.
            Self::Imds { source, .. } => source.is_retryable(),
            Self::Failed(status) => matches!(
                status.code(),
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::Internal
                    | Code::Unknown
                    | Code::Cancelled
            ),
            _ => false,
        }
    }
}

/// Whether a connection failed because the controller's certificate did not verify.
fn rejects_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        // tokio-rustls wraps rustls' error in an io::Error, whose source() skips it.
        let wrapped = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).map(|inner| inner as _);
        let tls = wrapped.unwrap_or(e).downcast_ref::<rustls::Error>();
        if matches!(tls, Some(rustls::Error::InvalidCertificate(_))) {
            return true;
        }
        next = e.source();
    }
    false
}

/// A new key and the signing request for it, made once for every attempt of one
/// enrollment or renewal: an agent that lost the controller's answer asks again with the
/// same key, which the controller recognises as the agent it already enrolled.
#[derive(Clone)]
pub struct KeyRequest {
    key: String,
    csr: String,
}

impl KeyRequest {
    pub fn new(host: &HostId) -> Result<Self, EnrollError> {
        let (key, csr) = new_key_and_csr(host).map_err(EnrollError::Key)?;
        Ok(Self { key, csr })
    }
}

/// How an agent without a valid certificate gets one (`--join-method`).
#[derive(Debug, Clone)]
pub enum Join {
    /// With a join token, if one was given.
    Token(Option<JoinToken>),
    /// With the signed instance identity from instance metadata at this endpoint.
    InstanceIdentity { imds_endpoint: String },
}

impl Join {
    pub fn new(method: JoinMethod, token: Option<JoinToken>, imds_endpoint: &str) -> Self {
        match method {
            JoinMethod::Token => Self::Token(token),
            JoinMethod::InstanceIdentity => Self::InstanceIdentity { imds_endpoint: imds_endpoint.to_owned() },
        }
    }

    /// The method as `--join-method` names it.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Token(_) => "token",
            Self::InstanceIdentity { .. } => "instance-identity",
        }
    }

    /// Whether the agent can enroll at all.
    fn can_enroll(&self) -> bool {
        !matches!(self, Self::Token(None))
    }

    /// The proof to enroll with now: the token, or the identity fetched afresh (IMDS may
    /// have been down at the last try).
    async fn proof(&self) -> Result<JoinProof, EnrollError> {
        match self {
            // `can_enroll` is checked before any enrollment, so this is never asked.
            Self::Token(None) => Err(EnrollError::Refused(tonic::Status::unauthenticated("no join token given"))),
            Self::Token(Some(token)) => Ok(JoinProof::Token(token.secret().to_owned())),
            Self::InstanceIdentity { imds_endpoint } => imds::identity(imds_endpoint, imds::TIMEOUT)
                .await
                .map(JoinProof::InstanceIdentity)
                .map_err(|source| EnrollError::Imds { endpoint: imds_endpoint.clone(), source }),
        }
    }

    /// Enrolls with this method's proof.
    async fn enroll(
        &self,
        controller: &Controller,
        host: &HostId,
        request: &KeyRequest,
    ) -> Result<Credentials, EnrollError> {
        let proof = self.proof().await?;
        enroll(controller, host, &proof, request).await
    }
}

/// Enrolls with `proof` over server TLS: a certificate for the key of `request`.
pub async fn enroll(
    controller: &Controller,
    host: &HostId,
    proof: &JoinProof,
    request: &KeyRequest,
) -> Result<Credentials, EnrollError> {
    let KeyRequest { key, csr } = request.clone();
    let request = teefleet_proto::enroll_request(host, csr, Some(proof));
    let response = each_replica(controller.urls(), |url| {
        let request = request.clone();
        async move {
            let mut client = controller.client(url, None).await?;
            client.enroll(request).await.map_err(EnrollError::from_status)
        }
    })
    .await?;
    Credentials::new(response.into_inner().certificate, key, host).map_err(EnrollError::Issued)
}

/// Renews over mTLS with the `current` certificate: a certificate for the key of
/// `request`.
pub async fn renew(
    controller: &Controller,
    host: &HostId,
    current: &Credentials,
    request: &KeyRequest,
) -> Result<Credentials, EnrollError> {
    let KeyRequest { key, csr } = request.clone();
    let request = teefleet_proto::enroll_request(host, csr, None);
    let response = each_replica(controller.urls(), |url| {
        let request = request.clone();
        async move {
            let mut client = controller.client(url, Some(current)).await?;
            client.renew(request).await.map_err(EnrollError::from_status)
        }
    })
    .await?;
    Credentials::new(response.into_inner().certificate, key, host).map_err(EnrollError::Issued)
}

/// Why the agent cannot get a trusted connection to an https controller.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "{} does not exist yet: give --ca-pin sha256:... (FLEET_CA_PIN; `fleet-controller ca pin` prints it) \
         so the agent can find and trust the controller's CA",
        path.display()
    )]
    NoPin { path: std::path::PathBuf },
    #[error(
        "{} holds the CA {stored}, but --ca-pin is {pin}. If the controller's CA was replaced, delete {} \
         and the agent's {CERT_FILE} and {KEY_FILE} so the agent finds the new CA and enrolls again",
        path.display(),
        path.display()
    )]
    PinChanged { path: std::path::PathBuf, stored: CaPin, pin: CaPin },
    #[error(
        "{why}; give --join-token (FLEET_JOIN_TOKEN; `fleetctl token create --role agent` makes one), or on EC2 \
         --join-method instance-identity, to enroll"
    )]
    NoToken { why: String },
    #[error("cannot use the state directory")]
    Store(#[from] CredentialError),
    #[error("cannot find the controller's CA")]
    Discovery(#[from] DiscoveryError),
    #[error("cannot enroll")]
    Enroll(#[from] EnrollError),
}

/// What enrolling needs, from the flags.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub urls: ControllerUrls,
    pub host_id: HostId,
    pub store: CredentialStore,
    pub ca_pin: Option<CaPin>,
    pub join: Join,
    pub backoff: Backoff,
}

impl Enrollment {
    /// The controller with its CA and a valid client certificate: what the state
    /// directory holds, else found with the pin and enrolled for with the token. Fails
    /// before any network when the flags cannot get there; retries while the controller
    /// is unreachable. `None` when `shutdown` came first.
    pub async fn establish(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<(Controller, Credentials)>, SetupError> {
        // Whatever the state directory lacks, the flags must provide: checked before any
        // network, so a missing flag is reported at once.
        let ca = match (self.store.load_ca().await?, self.ca_pin) {
            (Some(ca), Some(pin)) if ca.pin() != pin => {
                return Err(SetupError::PinChanged { path: self.store.path(CA_FILE), stored: ca.pin(), pin });
            }
            (Some(ca), _) => Have::Stored(ca),
            (None, Some(pin)) => Have::Fetch(pin),
            (None, None) => return Err(SetupError::NoPin { path: self.store.path(CA_FILE) }),
        };
        let creds = match self.store.load(&self.host_id, SystemTime::now()).await? {
            Stored::Valid(creds) => Have::Stored(creds),
            Stored::Unusable(why) if self.join.can_enroll() => Have::Fetch(why),
            Stored::Unusable(why) => return Err(SetupError::NoToken { why }),
        };
        let ca = match ca {
            Have::Stored(ca) => ca,
            Have::Fetch(pin) => {
                let found = retry("find the controller's CA", self.backoff.clone(), shutdown, || {
                    each_replica(&self.urls, |url| discover_ca(url, &pin))
                });
                let Some(ca) = found.await? else { return Ok(None) };
                self.store.save_ca(&ca).await?;
                ca
            }
        };
        let controller = Controller::new(self.urls.clone(), ca);
        let creds = match creds {
            Have::Stored(creds) => {
                info!(not_after = %rfc3339(creds.validity().not_after), "using the stored client certificate");
                creds
            }
            Have::Fetch(why) => {
                info!(host_id = %self.host_id, %why, method = self.join.method(), "enrolling");
                let request = KeyRequest::new(&self.host_id)?;
                let enrolled = retry("enroll", self.backoff.clone(), shutdown, || {
                    self.join.enroll(&controller, &self.host_id, &request)
                });
                let Some(creds) = enrolled.await? else { return Ok(None) };
                self.store.save(&creds).await?;
                info!(host_id = %self.host_id, not_after = %rfc3339(creds.validity().not_after), "enrolled");
                creds
            }
        };
        Ok(Some((controller, creds)))
    }
}

/// What the state directory holds, or what to fetch it with.
enum Have<T, F> {
    Stored(T),
    Fetch(F),
}

pub(crate) trait Retryable: std::error::Error + 'static {
    /// Whether trying again later may succeed.
    fn is_retryable(&self) -> bool;

    /// Whether another replica may answer differently: this one is down, unreachable or
    /// set up wrong, rather than the request refused by the fleet (whose replicas share
    /// one database and one CA).
    fn is_replica_fault(&self) -> bool;
}

impl Retryable for EnrollError {
    fn is_retryable(&self) -> bool {
        EnrollError::is_retryable(self)
    }

    fn is_replica_fault(&self) -> bool {
        !matches!(self, Self::Imds { .. })
            && (self.is_retryable() || matches!(self, Self::Endpoint(_) | Self::Untrusted { .. }))
    }
}

impl Retryable for DiscoveryError {
    fn is_retryable(&self) -> bool {
        DiscoveryError::is_retryable(self)
    }

    /// A wrong name or another CA at one URL says nothing about the next URL.
    fn is_replica_fault(&self) -> bool {
        !matches!(self, Self::Tls(_))
    }
}

/// Runs `attempt` at each replica in turn, from the first, until one succeeds or fails in
/// a way the others would repeat. When every replica failed, an outage is reported before
/// a misconfigured replica, so the caller keeps retrying while one may come back.
pub(crate) async fn each_replica<'a, T, E: Retryable, F: Future<Output = Result<T, E>>>(
    urls: &'a ControllerUrls,
    mut attempt: impl FnMut(&'a ControllerUrl) -> F,
) -> Result<T, E> {
    let mut outage = None;
    let mut i = 0;
    loop {
        let url = urls.get(i);
        match attempt(url).await {
            Err(e) if e.is_replica_fault() && i + 1 < urls.count() => {
                warn!(controller = %url, next = %urls.get(i + 1), error = %error_chain(&e), "controller replica failed; trying the next");
                if e.is_retryable() {
                    outage = Some(e);
                }
                i += 1;
            }
            Err(e) if e.is_replica_fault() && !e.is_retryable() => return Err(outage.unwrap_or(e)),
            result => return result,
        }
    }
}

/// Runs `attempt` until it succeeds or fails for good; `None` when `shutdown` came first.
async fn retry<T, E: Retryable, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut backoff: Backoff,
    shutdown: &CancellationToken,
    mut attempt: impl FnMut() -> F,
) -> Result<Option<T>, E> {
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            result = attempt() => result,
        };
        match result {
            Ok(value) => return Ok(Some(value)),
            Err(e) if e.is_retryable() => {
                let delay = backoff.next_delay();
                warn!(error = %error_chain(&e), delay_ms = delay.as_millis() as u64, "cannot {what} yet; retrying");
                if !sleep(delay, shutdown).await {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// False when `shutdown` came first.
async fn sleep(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// Keeps the client certificate fresh: renews at two thirds of its lifetime and publishes
/// the new one, once stored, to the stream, which reconnects with it.
#[derive(Debug, Clone)]
pub struct Renewal {
    pub controller: Controller,
    pub host_id: HostId,
    /// Used only when the certificate expired before it could be renewed.
    pub join: Join,
    pub store: CredentialStore,
    pub backoff: Backoff,
}

impl Renewal {
    /// Runs until `shutdown`, or until renewal cannot succeed any more (the controller
    /// refused it, e.g. because the host was revoked): the stream then keeps the current
    /// certificate until the controller stops accepting it, and the rules stay applied.
    /// Other failures are retried with backoff, logged and reported as `renew_failed`
    /// events, while the current certificate serves until it expires.
    pub async fn run(self, identity: watch::Sender<Credentials>, events: EventSender, shutdown: CancellationToken) {
        // Right after a renewal, wait at least a tenth of the new lifetime even if the
        // controller's clock makes it look overdue, so clock skew cannot cause a tight loop.
        let mut floor = Duration::ZERO;
        loop {
            let current = identity.borrow().clone();
            let validity = current.validity();
            info!(renew_at = %rfc3339(validity.renew_at()), not_after = %rfc3339(validity.not_after), "next certificate renewal");
            if !wait_until(validity.renew_at(), floor, &shutdown).await {
                return;
            }
            let Some(renewed) = self.renew_until_done(&current, &events, &shutdown).await else { return };
            floor = renewed.validity().lifetime() / 10;
            identity.send_replace(renewed);
        }
    }

    /// One renewal, retried with backoff; `None` when it cannot succeed or on shutdown.
    async fn renew_until_done(
        &self,
        current: &Credentials,
        events: &EventSender,
        shutdown: &CancellationToken,
    ) -> Option<Credentials> {
        let mut backoff = self.backoff.clone();
        let request = match KeyRequest::new(&self.host_id) {
            Ok(request) => request,
            Err(e) => {
                error!(error = %error_chain(&e), "cannot make a key to renew the certificate");
                events.send(EventKind::RenewFailed, format!("cannot make a key: {}", error_chain(&e)));
                return None;
            }
        };
        loop {
            let expired = current.validity().expired(SystemTime::now());
            let attempt = async {
                match (expired, self.join.can_enroll()) {
                    (false, _) => Some(renew(&self.controller, &self.host_id, current, &request).await),
                    (true, true) => Some(self.join.enroll(&self.controller, &self.host_id, &request).await),
                    (true, false) => None,
                }
            };
            let result = tokio::select! {
                () = shutdown.cancelled() => return None,
                result = attempt => result,
            };
            let renewed = match result {
                Some(Ok(renewed)) => renewed,
                None => {
                    let message = "the client certificate expired before it could be renewed; restart the agent \
                                   with --join-token or --join-method instance-identity to enroll again";
                    error!(not_after = %rfc3339(current.validity().not_after), "{message}");
                    events.send(EventKind::RenewFailed, message);
                    return None;
                }
                // Only a refusal (the host was revoked, or the token for a re-enrollment is
                // spent) is final; anything else may be a passing fault of one replica.
                Some(Err(e @ EnrollError::Refused(_))) => {
                    let message = format!("certificate renewal refused, not retrying: {}", error_chain(&e));
                    error!(error = %error_chain(&e), "certificate renewal refused; the current certificate is used until it expires");
                    events.send(EventKind::RenewFailed, message);
                    return None;
                }
                Some(Err(e)) => {
                    let delay = backoff.next_delay();
                    warn!(error = %error_chain(&e), delay_ms = delay.as_millis() as u64, "certificate renewal failed; retrying");
                    events.send(EventKind::RenewFailed, format!("certificate renewal failed: {}", error_chain(&e)));
                    if !sleep(delay, shutdown).await {
                        return None;
                    }
                    continue;
                }
            };
            // Not stored, the new certificate still serves until a restart, which goes
            // back to the old one while it lasts.
            if let Err(e) = self.store.save(&renewed).await {
                error!(error = %error_chain(&e), "cannot store the renewed certificate; using it anyway");
                events.send(EventKind::RenewFailed, format!("renewed, but cannot store it: {}", error_chain(&e)));
            }
            info!(
                fingerprint = %renewed.fingerprint(),
                not_after = %rfc3339(renewed.validity().not_after),
                "client certificate renewed"
            );
            return Some(renewed);
        }
    }
}

/// Sleeps until the wall clock reaches `at`, and at least `floor`; false on shutdown.
async fn wait_until(at: SystemTime, floor: Duration, shutdown: &CancellationToken) -> bool {
    let started = tokio::time::Instant::now();
    loop {
        let left =
            at.duration_since(SystemTime::now()).unwrap_or_default().max(floor.saturating_sub(started.elapsed()));
        if left.is_zero() {
            return true;
        }
        if !sleep(left.min(CLOCK_CHECK), shutdown).await {
            return false;
        }
    }
}

/// A time for logs, e.g. `2026-11-25T10:00:00Z`.
fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_outages_are_retried() {
        let status = |code| EnrollError::from_status(tonic::Status::new(code, "x"));
        assert!(status(Code::Unavailable).is_retryable());
        assert!(status(Code::DeadlineExceeded).is_retryable());
        for code in [Code::Unauthenticated, Code::PermissionDenied, Code::InvalidArgument, Code::FailedPrecondition] {
            assert!(!status(code).is_retryable(), "{code:?}");
        }
        assert!(matches!(status(Code::Unauthenticated), EnrollError::Refused(_)));
        let refused = status(Code::Unauthenticated).to_string();
        assert_eq!(refused, "the controller refused (Unauthenticated): x");
    }

    #[test]
    fn only_a_replica_of_its_own_is_passed_over() {
        let status = |code| EnrollError::from_status(tonic::Status::new(code, "x"));
        assert!(status(Code::Unavailable).is_replica_fault());
        // Every replica shares the tokens, the revocations and the checks of a request.
        for code in [Code::Unauthenticated, Code::PermissionDenied, Code::InvalidArgument] {
            assert!(!status(code).is_replica_fault(), "{code:?}");
        }
        let pin_mismatch = DiscoveryError::Pin(crate::pki::PinMismatch { expected: CaPin::of(b"x"), seen: vec![] });
        assert!(pin_mismatch.is_replica_fault(), "another URL may be the controller");
    }

    // Real time, short waits: a sleep never ends early, so only lower bounds are asserted
    // (and tokio's test-util feature, which would rebuild every tokio user, is not needed).
    #[tokio::test]
    async fn waiting_honours_the_floor_and_shutdown() {
        let shutdown = CancellationToken::new();
        assert!(wait_until(SystemTime::now() - Duration::from_secs(5), Duration::ZERO, &shutdown).await);
        let started = tokio::time::Instant::now();
        assert!(wait_until(SystemTime::now(), Duration::from_millis(300), &shutdown).await);
        assert!(started.elapsed() >= Duration::from_millis(300), "the floor holds");
        shutdown.cancel();
        assert!(!wait_until(SystemTime::now() + Duration::from_secs(3600), Duration::ZERO, &shutdown).await);
    }
}
