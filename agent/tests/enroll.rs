//! Enrollment and mutual TLS against an in-process tonic server with a test CA: the CA is
//! found by its pin (and a wrong pin is refused), enrollment stores a private key and
//! certificate, the stream presents that certificate, a restart reuses it without a token,
//! renewal at two thirds swaps it and reconnects, and a revoked certificate is retried only
//! slowly while the agent reports itself not ready. With several controller URLs, each
//! step goes on to the next replica when one is down or misnamed.

mod common;

use std::{
    collections::HashSet,
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::FakeDataplane;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use teefleet_agent::{
    Agent, StateStore, StreamOptions, Transport,
    backoff::Backoff,
    config::{ControllerUrls, JoinToken},
    credentials::{CA_FILE, CERT_FILE, CredentialStore, KEY_FILE},
    discovery::{DiscoveryError, discover_ca},
    enroll::{Controller, EnrollError, Enrollment, Join, KeyRequest, Renewal, SetupError, renew},
    events,
    pki::{CaPin, Credentials},
};
use teefleet_model::HostId;
use teefleet_proto::v1::{
    self as pb,
    agent_service_server::{AgentService, AgentServiceServer},
};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream, wrappers::TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Response, Status, Streaming,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "join-me";
const HOST: &str = "web-1";

/// What the fake controller saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Enroll,
    /// The SHA-256 of the client certificate each call presented, if any.
    Renew(Option<CaPin>),
    Sync(Option<CaPin>),
}

struct TestCa {
    cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "test fleet CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("ca");
        Self { cert, issuer: Issuer::new(params, key) }
    }

    fn pin(&self) -> CaPin {
        CaPin::of(self.cert.der())
    }

    /// A server certificate for `localhost` only, as (leaf + CA PEM, key PEM).
    fn server_identity(&self) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        (format!("{}{}", cert.pem(), self.cert.pem()), key.serialize_pem())
    }

    /// Signs the CSR's key for `host` from now (to the second) for `lifetime`.
    fn sign(&self, csr: &str, host: &str, lifetime: Duration) -> Result<String, Status> {
        let csr =
            CertificateSigningRequestParams::from_pem(csr).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).expect("whole second");
        params.not_before = now;
        params.not_after = now + lifetime;
        let cert = params.signed_by(&csr.public_key, &self.issuer).map_err(|e| Status::internal(e.to_string()))?;
        Ok(cert.pem())
    }
}

/// What a test changes in the fake controller while it runs.
#[derive(Clone, Default)]
struct Knobs {
    /// Certificates whose Sync and Renew are refused.
    revoked: Arc<Mutex<HashSet<CaPin>>>,
    /// How many of the next enrollments are answered UNAVAILABLE.
    unavailable: Arc<AtomicUsize>,
}

/// A controller that signs what it is asked to, records what it sees, and obeys `knobs`.
struct FakeController {
    ca: Arc<TestCa>,
    lifetime: Duration,
    knobs: Knobs,
    seen: mpsc::UnboundedSender<Seen>,
}

fn presented<T>(req: &Request<T>) -> Option<CaPin> {
    req.peer_certs().and_then(|certs| certs.first().map(|der| CaPin::of(der)))
}

impl FakeController {
    fn issue(&self, req: pb::EnrollRequest) -> Result<Response<pb::EnrollResponse>, Status> {
        let certificate = self.ca.sign(&req.csr, &req.host_id, self.lifetime)?;
        Ok(Response::new(pb::EnrollResponse {
            certificate,
            ca_certificate: self.ca.cert.pem(),
            not_after: String::new(),
        }))
    }

    fn trusted(&self, peer: Option<CaPin>) -> Result<(), Status> {
        match peer {
            None => Err(Status::unauthenticated("no client certificate")),
            Some(pin) if self.knobs.revoked.lock().expect("lock").contains(&pin) => Err(Status::unauthenticated(
                format!("host {HOST}'s certificate was revoked; enroll again with a new join token"),
            )),
            Some(_) => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl AgentService for FakeController {
    type SyncStream = ReceiverStream<Result<pb::ControllerMessage, Status>>;

    async fn sync(&self, request: Request<Streaming<pb::AgentMessage>>) -> Result<Response<Self::SyncStream>, Status> {
        let peer = presented(&request);
        let _ = self.seen.send(Seen::Sync(peer));
        self.trusted(peer)?;
        let mut inbound = request.into_inner();
        let (outbound, rx) = mpsc::channel(1);
        // Holds the stream open, and ends it when the agent goes away.
        tokio::spawn(async move {
            while let Some(Ok(_)) = inbound.next().await {}
            drop(outbound);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let _ = self.seen.send(Seen::Enroll);
        if self.knobs.unavailable.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
            return Err(Status::unavailable("the database is not reachable"));
        }
        let req = request.into_inner();
        if req.join_token != TOKEN {
            return Err(Status::unauthenticated("the join token is unknown"));
        }
        self.issue(req)
    }

    async fn renew(&self, request: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let peer = presented(&request);
        let _ = self.seen.send(Seen::Renew(peer));
        self.trusted(peer)?;
        self.issue(request.into_inner())
    }

    async fn leave(&self, _: Request<pb::LeaveRequest>) -> Result<Response<pb::LeaveResponse>, Status> {
        Err(Status::unimplemented("not part of these tests"))
    }
}

/// A TLS fake controller on 127.0.0.1:0, reached as `https://localhost:PORT`.
struct Fixture {
    ca: Arc<TestCa>,
    addr: SocketAddr,
    knobs: Knobs,
    seen: mpsc::UnboundedReceiver<Seen>,
    server: JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(lifetime: Duration) -> Fixture {
        let ca = Arc::new(TestCa::new());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (chain, key) = ca.server_identity();
        // In a workspace build rustls also has aws-lc-rs (through aws-sdk), and tonic's
        // server asks for the process default; pick ring as the controller does.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(chain, key))
            .client_ca_root(Certificate::from_pem(ca.cert.pem()))
            .client_auth_optional(true);
        let knobs = Knobs::default();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let fake = FakeController { ca: ca.clone(), lifetime, knobs: knobs.clone(), seen: seen_tx };
        let server = tokio::spawn(async move {
            let _ = Server::builder()
                .tls_config(tls)
                .expect("tls")
                .add_service(AgentServiceServer::new(fake))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Fixture { ca, addr, knobs, seen, server, dir: tempfile::tempdir().expect("tempdir") }
    }

    fn url(&self, host: &str) -> teefleet_agent::config::ControllerUrl {
        format!("https://{host}:{}", self.addr.port()).parse().expect("url")
    }

    fn store(&self) -> CredentialStore {
        CredentialStore::new(self.dir.path())
    }

    fn enrollment(&self, pin: Option<CaPin>, token: Option<&str>) -> Enrollment {
        Enrollment {
            urls: self.url("localhost").into(),
            host_id: host(),
            store: self.store(),
            ca_pin: pin,
            join: Join::Token(token.map(|t| t.parse::<JoinToken>().expect("token"))),
            backoff: fast_backoff(),
        }
    }

    /// Enrolls with the pin and the token, as a first start does.
    async fn enroll(&mut self) -> (Controller, Credentials) {
        let enrolled = establish(&self.enrollment(Some(self.ca.pin()), Some(TOKEN))).await.expect("enrolled");
        assert_eq!(self.next_seen().await, Seen::Enroll);
        enrolled
    }

    async fn next_seen(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.seen.recv()).await.expect("in time").expect("server running")
    }

    fn nothing_more_seen(&mut self) {
        assert_eq!(self.seen.try_recv().ok(), None);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn host() -> HostId {
    HOST.parse().expect("host")
}

fn fast_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(10), Duration::from_millis(100))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

async fn establish(enrollment: &Enrollment) -> Result<(Controller, Credentials), SetupError> {
    let shutdown = CancellationToken::new();
    Ok(tokio::time::timeout(WAIT, enrollment.establish(&shutdown)).await.expect("in time")?.expect("not shut down"))
}

/// An agent streaming over TLS with the certificate `identity` holds.
struct Running {
    status: Arc<teefleet_agent::status::Status>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

fn start_agent(
    fixture: &Fixture,
    controller: Controller,
    identity: tokio::sync::watch::Receiver<Credentials>,
    refused_retry: Duration,
) -> Running {
    let mut agent = Agent::new(FakeDataplane::default(), StateStore::new(fixture.dir.path()), Duration::from_secs(5));
    let options = StreamOptions {
        transport: Transport::Tls { controller, identity },
        host_id: host(),
        health_interval: Duration::from_secs(3600),
        addresses: Some(vec!["10.0.0.9".into()]),
        backoff: fast_backoff(),
        refused_retry,
    };
    let status = agent.status();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { agent.run(&options, &token).await });
    Running { status, shutdown, task }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("stops").expect("join");
    }
}

#[tokio::test]
async fn the_ca_is_found_by_its_pin_and_a_wrong_pin_is_refused() {
    let fixture = Fixture::start(Duration::from_secs(3600)).await;
    let ca = discover_ca(&fixture.url("localhost"), &fixture.ca.pin()).await.expect("found");
    assert_eq!(ca.pin(), fixture.ca.pin());
    assert!(ca.pem().contains("BEGIN CERTIFICATE"));

    // The name is not checked while discovering: the pin is what is trusted.
    let by_ip = discover_ca(&fixture.url("127.0.0.1"), &fixture.ca.pin()).await.expect("found by IP too");
    assert_eq!(by_ip, ca);

    let wrong = CaPin::of(b"some other CA");
    let err = discover_ca(&fixture.url("localhost"), &wrong).await.expect_err("wrong pin");
    let DiscoveryError::Pin(mismatch) = &err else { panic!("expected a pin mismatch, got {err:?}") };
    assert_eq!(mismatch.seen.len(), 2, "leaf and CA were presented");
    assert_eq!(mismatch.seen[1], fixture.ca.pin());
    let text = err.to_string();
    assert!(text.contains(&wrong.to_string()) && text.contains(&fixture.ca.pin().to_string()), "{text}");
    assert!(!err.is_retryable());

    // Through establish: a wrong pin fails at once and stores nothing.
    let err = establish(&fixture.enrollment(Some(wrong), Some(TOKEN))).await.expect_err("wrong pin");
    assert!(matches!(err, SetupError::Discovery(DiscoveryError::Pin(_))), "{err:?}");
    assert!(!fixture.dir.path().join(CA_FILE).exists());
}

#[tokio::test]
async fn enrolls_streams_with_its_certificate_and_restarts_without_a_token() {
    let mut fixture = Fixture::start(Duration::from_secs(3600)).await;
    let (controller, creds) = fixture.enroll().await;
    for file in [CA_FILE, KEY_FILE, CERT_FILE] {
        assert_eq!(mode(&fixture.dir.path().join(file)), 0o600, "{file}");
    }
    let stored_cert = std::fs::read_to_string(fixture.dir.path().join(CERT_FILE)).expect("agent.crt");
    assert_eq!(stored_cert, creds.cert_pem());
    assert_eq!(controller.ca().pin(), fixture.ca.pin());

    let (_renewal, identity) = tokio::sync::watch::channel(creds.clone());
    let agent = start_agent(&fixture, controller, identity, Duration::from_secs(60));
    assert_eq!(fixture.next_seen().await, Seen::Sync(Some(creds.fingerprint())), "the issued certificate");
    agent.stop().await;

    // A restart finds the CA and the certificate on disk: no pin, no token, no Enroll.
    let (_, again) = establish(&fixture.enrollment(None, None)).await.expect("reused");
    assert_eq!(again, creds);
    // A pin that contradicts the stored CA is a clear error, not a silent switch.
    let err = establish(&fixture.enrollment(Some(CaPin::of(b"x")), None)).await.expect_err("changed pin");
    assert!(err.to_string().contains("--ca-pin is"), "{err}");
    fixture.nothing_more_seen();
}

#[tokio::test]
async fn missing_flags_and_refused_tokens_fail_at_once() {
    let mut fixture = Fixture::start(Duration::from_secs(3600)).await;
    let err = establish(&fixture.enrollment(None, Some(TOKEN))).await.expect_err("no pin, no ca.pem");
    assert!(matches!(err, SetupError::NoPin { .. }) && err.to_string().contains("--ca-pin"), "{err}");
    let err = establish(&fixture.enrollment(Some(fixture.ca.pin()), None)).await.expect_err("no token");
    assert!(matches!(err, SetupError::NoToken { .. }) && err.to_string().contains("--join-token"), "{err}");
    fixture.nothing_more_seen();

    // A controller that cannot enroll for the moment is waited for...
    fixture.knobs.unavailable.store(2, Ordering::Relaxed);
    let err = establish(&fixture.enrollment(Some(fixture.ca.pin()), Some("wrong"))).await.expect_err("refused");
    assert_eq!(fixture.next_seen().await, Seen::Enroll);
    assert_eq!(fixture.next_seen().await, Seen::Enroll);
    // ...but a refused token is final: one more call, and no retry.
    let SetupError::Enroll(EnrollError::Refused(status)) = &err else { panic!("expected a refusal, got {err:?}") };
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(fixture.next_seen().await, Seen::Enroll);
    fixture.nothing_more_seen();
    assert!(!fixture.dir.path().join(KEY_FILE).exists(), "no key is stored without a certificate");

    // The controller's certificate names localhost, not 127.0.0.1: that never retries.
    let mut by_ip = fixture.enrollment(None, Some(TOKEN));
    by_ip.urls = fixture.url("127.0.0.1").into();
    let err = establish(&by_ip).await.expect_err("name mismatch");
    assert!(matches!(err, SetupError::Enroll(EnrollError::Untrusted { .. })), "{err:?}");
    assert!(err.to_string().contains("cannot enroll"), "{err}");
}

#[tokio::test]
async fn renews_at_two_thirds_and_reconnects_with_the_new_certificate() {
    // Three seconds: renewal is due two seconds after issue.
    let mut fixture = Fixture::start(Duration::from_secs(3)).await;
    let (controller, first) = fixture.enroll().await;
    let (publish, identity) = tokio::sync::watch::channel(first.clone());
    let agent = start_agent(&fixture, controller.clone(), identity, Duration::from_secs(60));
    assert_eq!(fixture.next_seen().await, Seen::Sync(Some(first.fingerprint())));

    let (events, _pending) = events::channel();
    let renewal = Renewal {
        controller,
        host_id: host(),
        join: Join::Token(None),
        store: fixture.store(),
        backoff: fast_backoff(),
    };
    let shutdown = agent.shutdown.clone();
    let renewing = tokio::spawn(renewal.run(publish, events, shutdown));

    assert_eq!(fixture.next_seen().await, Seen::Renew(Some(first.fingerprint())), "renewed over mTLS");
    let Seen::Sync(Some(second)) = fixture.next_seen().await else { panic!("expected a new stream") };
    assert_ne!(second, first.fingerprint(), "the stream presents the renewed certificate");
    let stored = std::fs::read_to_string(fixture.dir.path().join(CERT_FILE)).expect("agent.crt");
    let stored =
        Credentials::new(stored, std::fs::read_to_string(fixture.dir.path().join(KEY_FILE)).expect("key"), &host())
            .expect("a matching pair");
    assert_eq!(stored.fingerprint(), second, "stored before it is used");
    assert_eq!(mode(&fixture.dir.path().join(KEY_FILE)), 0o600);

    agent.stop().await;
    tokio::time::timeout(WAIT, renewing).await.expect("renewal stops").expect("join");
}

#[tokio::test]
async fn a_revoked_certificate_is_retried_slowly_and_the_agent_is_not_ready() {
    let mut fixture = Fixture::start(Duration::from_secs(3600)).await;
    let (controller, creds) = fixture.enroll().await;
    fixture.knobs.revoked.lock().expect("lock").insert(creds.fingerprint());

    let (_renewal, identity) = tokio::sync::watch::channel(creds.clone());
    let agent = start_agent(&fixture, controller, identity, Duration::from_secs(60));
    assert_eq!(fixture.next_seen().await, Seen::Sync(Some(creds.fingerprint())));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fixture.nothing_more_seen();
    let why = agent.status.readiness().expect_err("not ready");
    assert!(why.contains("revoked"), "{why}");
    agent.stop().await;
}

#[tokio::test]
async fn every_step_goes_on_to_the_next_replica_when_one_is_down_or_misnamed() {
    let mut fixture = Fixture::start(Duration::from_secs(3600)).await;
    let down = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    // Down; up but named as its certificate does not name it; the live one.
    let urls = ControllerUrls::new(vec![
        format!("https://localhost:{}", down.port()).parse().expect("url"),
        fixture.url("127.0.0.1"),
        fixture.url("localhost"),
    ])
    .expect("one controller's URLs");
    let mut enrollment = fixture.enrollment(Some(fixture.ca.pin()), Some(TOKEN));
    enrollment.urls = urls.clone();
    let (controller, creds) = establish(&enrollment).await.expect("enrolled with the live replica");
    assert_eq!(fixture.next_seen().await, Seen::Enroll, "the misnamed replica was never spoken to");
    assert_eq!(controller.ca().pin(), fixture.ca.pin());
    assert_eq!(controller.urls(), &urls);

    let (_renewal, identity) = tokio::sync::watch::channel(creds.clone());
    let agent = start_agent(&fixture, controller.clone(), identity, Duration::from_secs(60));
    assert_eq!(fixture.next_seen().await, Seen::Sync(Some(creds.fingerprint())));
    agent.stop().await;

    let request = KeyRequest::new(&host()).expect("key");
    let renewed = tokio::time::timeout(WAIT, renew(&controller, &host(), &creds, &request)).await.expect("in time");
    assert_ne!(renewed.expect("renewed").fingerprint(), creds.fingerprint());
    assert_eq!(fixture.next_seen().await, Seen::Renew(Some(creds.fingerprint())));
    fixture.nothing_more_seen();
}
