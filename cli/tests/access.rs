//! The fleetctl binary against an in-process stand-in for the controller's access
//! services, over real TLS with a throwaway CA (and once over plaintext): what crosses the
//! wire (the bearer header, the requests), what is printed, and the exit codes. The real
//! controller's behaviour is the lab's to test; this proves fleetctl's side without
//! Postgres.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Output,
    sync::{Arc, Mutex},
};

use teefleet_proto::v1::{
    self as pb,
    audit_service_server::{AuditService, AuditServiceServer},
    host_service_server::{HostService, HostServiceServer},
    session_service_server::{SessionService, SessionServiceServer},
    token_service_server::{TokenService, TokenServiceServer},
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    Request, Response, Status,
    transport::{Identity, Server, ServerTlsConfig},
};

const ADMIN: &str = "tf1.0a1b2c3d4e5f.admin-secret";
const VIEWER: &str = "tf1.999999999999.viewer-secret";
const NEW_SECRET: &str = "tf1.abcdefabcdef.0123456789";

/// One call the stand-in saw: its name, its request (Debug) and its authorization header.
type Call = (String, String, Option<String>);

/// What the stand-in saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Call>>>);

impl Seen {
    /// Records a call and answers as the controller's `authorize` would.
    fn call<T: std::fmt::Debug>(&self, name: &str, req: &Request<T>) -> Result<(), Status> {
        let auth = req.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
        self.0.lock().expect("lock").push((name.to_owned(), format!("{:?}", req.get_ref()), auth.clone()));
        match auth.as_deref() {
            None => Err(Status::unauthenticated(
                "no bearer token: pass --token or set FLEET_TOKEN (fleetctl token create makes one)",
            )),
            Some(h) if h == format!("Bearer {ADMIN}") => Ok(()),
            Some(h) if h == format!("Bearer {VIEWER}") => Err(Status::permission_denied(format!(
                "token 999999999999 has role viewer; {name} needs admin or above"
            ))),
            Some(_) => Err(Status::unauthenticated("the token is not known to this controller")),
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.0.lock().expect("lock").clone()
    }
}

fn token(id: &str, role: &str) -> pb::Token {
    pb::Token {
        id: id.into(),
        role: role.into(),
        expires_at: "2099-01-01T00:00:00+00:00".into(),
        uses_left: (role == "agent").then_some(3),
        created_at: "2026-01-01T00:00:00+00:00".into(),
        created_by: "token:0a1b2c3d4e5f (admin)".into(),
        revoked_at: String::new(),
        host_id: String::new(),
    }
}

#[tonic::async_trait]
impl TokenService for Seen {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        self.call("token create", &req)?;
        let role = req.into_inner().role;
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(token("abcdefabcdef", &role)),
            secret: NEW_SECRET.into(),
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.call("token list", &req)?;
        Ok(Response::new(pb::ListTokensResponse { tokens: vec![token("0a1b2c3d4e5f", "admin")] }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        self.call("token revoke", &req)?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }
}

#[tonic::async_trait]
impl HostService for Seen {
    async fn list_hosts(&self, req: Request<pb::ListHostsRequest>) -> Result<Response<pb::ListHostsResponse>, Status> {
        self.call("host list", &req)?;
        Ok(Response::new(pb::ListHostsResponse { hosts: vec![] }))
    }

    async fn get_host(&self, req: Request<pb::GetHostRequest>) -> Result<Response<pb::Host>, Status> {
        self.call("host get", &req)?;
        Err(Status::not_found("no such host"))
    }

    async fn revoke_host(
        &self,
        req: Request<pb::RevokeHostRequest>,
    ) -> Result<Response<pb::RevokeHostResponse>, Status> {
        self.call("host revoke", &req)?;
        Ok(Response::new(pb::RevokeHostResponse { revoked_certificates: 2, disconnected: true }))
    }
}

#[tonic::async_trait]
impl AuditService for Seen {
    async fn list_audit(&self, req: Request<pb::ListAuditRequest>) -> Result<Response<pb::ListAuditResponse>, Status> {
        self.call("audit list", &req)?;
        Ok(Response::new(pb::ListAuditResponse {
            records: vec![pb::AuditRecord {
                id: 7,
                at: "2026-11-25T10:00:01+00:00".into(),
                actor: "token:0a1b2c3d4e5f (admin)".into(),
                peer: "127.0.0.1:5555".into(),
                action: "token.create".into(),
                target: "abcdefabcdef (agent)".into(),
                result: "ok".into(),
            }],
        }))
    }
}

/// A session whose one source never applies it: what `--wait` gives up on.
fn stuck_session(name: &str) -> pb::Session {
    pb::Session {
        name: name.into(),
        sources: vec!["i-1".into()],
        collector: "i-9".into(),
        state: pb::SessionState::Pending as i32,
        hosts: vec![pb::SessionHostStatus {
            host_id: "i-1".into(),
            desired_version: 2,
            applied_version: 1,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tonic::async_trait]
impl SessionService for Seen {
    async fn create_session(&self, req: Request<pb::CreateSessionRequest>) -> Result<Response<pb::Session>, Status> {
        self.call("session create", &req)?;
        Ok(Response::new(stuck_session(&req.into_inner().name)))
    }

    async fn get_session(&self, req: Request<pb::GetSessionRequest>) -> Result<Response<pb::Session>, Status> {
        self.call("session get", &req)?;
        Ok(Response::new(stuck_session(&req.into_inner().name)))
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        self.call("session list", &req)?;
        Ok(Response::new(pb::ListSessionsResponse::default()))
    }

    async fn delete_session(
        &self,
        req: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        self.call("session delete", &req)?;
        Ok(Response::new(pb::DeleteSessionResponse {}))
    }

    async fn update_session(
        &self,
        req: Request<pb::UpdateSessionRequest>,
    ) -> Result<Response<pb::UpdateSessionResponse>, Status> {
        self.call("session update", &req)?;
        let session = Some(stuck_session(&req.into_inner().name));
        Ok(Response::new(pb::UpdateSessionResponse { session, changed: true, hosts_changed: 1 }))
    }

    async fn preflight_session(
        &self,
        req: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::SessionPreflight>, Status> {
        self.call("session preflight", &req)?;
        let name = req.into_inner().name;
        // A session named "refused" is one the controller would refuse.
        let would_create = name != "refused";
        let problems = if would_create {
            Vec::new()
        } else {
            vec![pb::PreflightProblem {
                host_id: "i-9".into(),
                message: "collector i-9 is not registered".into(),
                refuses: true,
            }]
        };
        Ok(Response::new(pb::SessionPreflight { name, problems, would_create, ..Default::default() }))
    }
}

/// A throwaway CA and a server certificate for the names given, as PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki(names: &[&str]) -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test fleet CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let params = rcgen::CertificateParams::new(names).expect("params");
    let cert = params.signed_by(&key, &ca).expect("server certificate");
    Pki { ca: ca.pem(), cert: cert.pem(), key: key.serialize_pem() }
}

/// Serves the stand-in on a loopback port, with TLS when given an identity.
async fn serve(tls: Option<&Pki>) -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Seen::default();
    let mut builder = Server::builder();
    if let Some(pki) = tls {
        // In a workspace build rustls has aws-lc-rs (from aws-sdk) and ring compiled in, and
        // tonic's server asks for the process default; the controller picks ring the same way.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let identity = Identity::from_pem(&pki.cert, &pki.key);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity)).expect("tls");
    }
    let router = builder
        .add_service(TokenServiceServer::new(seen.clone()))
        .add_service(HostServiceServer::new(seen.clone()))
        .add_service(SessionServiceServer::new(seen.clone()))
        .add_service(AuditServiceServer::new(seen.clone()));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    (addr, seen)
}

/// A TLS stand-in, a home directory and the CA written in it.
struct Fixture {
    url: String,
    seen: Seen,
    home: tempfile::TempDir,
    ca: PathBuf,
}

/// A stand-in whose certificate names localhost and 127.0.0.1.
async fn fixture() -> Fixture {
    fixture_naming(&["localhost", "127.0.0.1"]).await
}

async fn fixture_naming(names: &[&str]) -> Fixture {
    let pki = pki(names);
    let (addr, seen) = serve(Some(&pki)).await;
    let home = tempfile::tempdir().expect("home");
    let ca = home.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca).expect("write CA");
    Fixture { url: format!("https://127.0.0.1:{}", addr.port()), seen, home, ca }
}

/// Runs fleetctl with a clean environment: only HOME and the variables given.
async fn fleetctl(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .env_clear()
        .env("HOME", home)
        .envs(env.iter().copied())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("runs fleetctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Fixture {
    fn home(&self) -> &Path {
        self.home.path()
    }

    fn ca(&self) -> &str {
        self.ca.to_str().expect("utf-8 path")
    }

    /// fleetctl with the URL and CA as flags and the token in FLEET_TOKEN.
    async fn as_token(&self, token: &str, args: &[&str]) -> Output {
        let mut full = vec!["--controller", self.url.as_str(), "--ca-cert", self.ca()];
        full.extend_from_slice(args);
        fleetctl(self.home(), &[("FLEET_TOKEN", token)], &full).await
    }
}

#[tokio::test]
async fn token_create_prints_the_secret_as_json_over_tls_with_the_bearer() {
    let f = fixture().await;
    let out =
        f.as_token(ADMIN, &["token", "create", "--role", "agent", "--ttl", "30m", "--uses", "3", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        v,
        serde_json::json!({
            "id": "abcdefabcdef",
            "token": NEW_SECRET,
            "role": "agent",
            "expires_at": "2099-01-01T00:00:00+00:00",
            "uses_left": 3,
            "host_id": null,
        })
    );
    let calls = f.seen.calls();
    assert_eq!(calls.len(), 1);
    let (name, request, auth) = &calls[0];
    assert_eq!(name, "token create");
    assert_eq!(request, "CreateTokenRequest { role: \"agent\", ttl_seconds: 1800, uses: Some(3), host_id: \"\" }");
    assert_eq!(auth.as_deref(), Some(format!("Bearer {ADMIN}").as_str()));

    let out = f.as_token(ADMIN, &["token", "create", "--role", "viewer", "--ttl", "1h"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "ID:      abcdefabcdef\nRole:    viewer\nExpires: 2099-01-01T00:00:00Z\nToken:   {NEW_SECRET}\n\n\
             Save the token now: it cannot be shown again (the controller keeps only its hash).\n"
        )
    );
}

#[tokio::test]
async fn refusals_say_where_the_token_came_from() {
    let f = fixture().await;
    let out = fleetctl(f.home(), &[], &["--controller", &f.url, "--ca-cert", f.ca(), "token", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: no bearer token: pass --token or set FLEET_TOKEN (fleetctl token create makes one)\n\
         hint: no token is configured; ask an admin for one (`fleetctl token create`) and pass it with --token, \
         set FLEET_TOKEN, or save it with `fleetctl config set --token TOKEN`\n"
    );
    let out = f.as_token("tf1.000000000000.stale", &["token", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: the token is not known to this controller\n\
         hint: the token sent (tf1.000000000000.<redacted>) came from env FLEET_TOKEN; ask an admin for a valid \
         one (`fleetctl token create`) and pass it with --token, set FLEET_TOKEN, or save it with \
         `fleetctl config set --token TOKEN`\n"
    );
    let out = f.as_token(VIEWER, &["host", "revoke", "i-1"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: token 999999999999 has role viewer; host revoke needs admin or above\n\
         hint: the token sent (tf1.999999999999.<redacted>) came from env FLEET_TOKEN; ask an admin for a token \
         with a larger role\n"
    );
    // Other refusals stay verbatim.
    let out = f.as_token(ADMIN, &["host", "get", "i-404"]).await;
    assert_eq!((out.status.code(), text(&out.stderr)), (Some(1), "error: no such host\n".to_owned()));
}

#[tokio::test]
async fn host_revoke_audit_and_token_list_and_revoke() {
    let f = fixture().await;
    let out = f.as_token(ADMIN, &["host", "revoke", "i-0123"]).await;
    assert_eq!(text(&out.stdout), "host i-0123 revoked: 2 certificates revoked, its stream was closed\n");
    let out = f.as_token(ADMIN, &["host", "revoke", "i-0123", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v, serde_json::json!({"host_id": "i-0123", "revoked_certificates": 2, "disconnected": true}));
    let out = f.as_token(ADMIN, &["host", "revoke", "i-0123", "-o", "yaml"]).await;
    assert_eq!(text(&out.stdout), "host_id: i-0123\nrevoked_certificates: 2\ndisconnected: true\n");

    let out =
        f.as_token(ADMIN, &["audit", "list", "--since", "2026-11-25T10:00:00Z", "--limit", "5", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v[0]["action"], "token.create");
    assert_eq!(v[0]["id"], 7);
    let out = f.as_token(ADMIN, &["audit", "list"]).await;
    assert!(text(&out.stdout).starts_with("AT                    ACTOR"), "{}", text(&out.stdout));

    let out = f.as_token(ADMIN, &["token", "list", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (&v[0]["id"], &v[0]["state"], &v[0]["uses_left"]),
        (&"0a1b2c3d4e5f".into(), &"active".into(), &serde_json::Value::Null)
    );
    let out = f.as_token(ADMIN, &["token", "revoke", "abcdefabcdef"]).await;
    assert_eq!(text(&out.stdout), "token abcdefabcdef revoked\n");

    let requests: Vec<String> = f.seen.calls().into_iter().map(|(_, request, _)| request).collect();
    assert!(requests.contains(&"RevokeHostRequest { host_id: \"i-0123\" }".to_owned()), "{requests:?}");
    assert!(
        requests.contains(&"ListAuditRequest { since: \"2026-11-25T10:00:00Z\", limit: 5 }".to_owned()),
        "{requests:?}"
    );
    assert!(requests.contains(&"ListAuditRequest { since: \"\", limit: 0 }".to_owned()), "{requests:?}");
    assert!(requests.contains(&"RevokeTokenRequest { id: \"abcdefabcdef\" }".to_owned()), "{requests:?}");
}

#[tokio::test]
async fn a_wait_that_gives_up_says_the_session_stays_and_what_to_do() {
    let f = fixture().await;
    let create = ["session", "create", "web", "--source", "i-1", "--collector", "i-9", "--wait", "--timeout", "1s"];
    let out = f.as_token(ADMIN, &create).await;
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(1), String::new()));
    assert_eq!(
        text(&out.stderr),
        "error: session web was created but is not active after 1s (state pending); not applied on: i-1 \
         (disconnected, applied version 1 of 2)\n\
         hint: the session stays and its sources keep applying it: wait longer with `fleetctl session get web \
         --wait --timeout 5m`, or delete it with `fleetctl session delete web`\n"
    );
    let out = f.as_token(ADMIN, &["session", "get", "web", "--wait", "--timeout", "1s"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("error: session web is not active after 1s (state pending)"));
    let out = f.as_token(ADMIN, &["session", "get", "web"]).await;
    assert_eq!(out.status.code(), Some(0), "without --wait the state is shown: {}", text(&out.stderr));
    let calls: Vec<String> = f.seen.calls().into_iter().map(|(name, _, _)| name).collect();
    assert_eq!(calls.first().map(String::as_str), Some("session create"));
    assert!(calls.iter().skip(1).all(|c| c == "session get"), "{calls:?}");
}

/// `--dry-run` prints the plan either way; its exit code says whether the session would be
/// created, and nothing but the preflight is called.
#[tokio::test]
async fn a_dry_run_exits_non_zero_when_the_session_would_be_refused() {
    let f = fixture().await;
    let dry = |name: &'static str| ["session", "create", name, "--source", "i-1", "--collector", "i-9", "--dry-run"];
    let out = f.as_token(ADMIN, &dry("web")).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("web"), "the plan is printed: {}", text(&out.stdout));
    let out = f.as_token(ADMIN, &dry("refused")).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("collector i-9 is not registered"), "{}", text(&out.stdout));
    assert_eq!(
        text(&out.stderr),
        "error: session refused would not be created: see the problems above; nothing was changed\n"
    );
    let calls: Vec<String> = f.seen.calls().into_iter().map(|(name, _, _)| name).collect();
    assert_eq!(calls, ["session preflight", "session preflight"]);
}

#[tokio::test]
async fn config_set_then_commands_use_the_file() {
    let f = fixture().await;
    let xdg = f.home().join("xdg");
    let xdg = xdg.to_str().expect("utf-8");
    let env = [("XDG_CONFIG_HOME", xdg)];
    let out =
        fleetctl(f.home(), &env, &["config", "set", "--controller", &f.url, "--ca-cert", f.ca(), "--token", ADMIN])
            .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let file = f.home().join("xdg/fleetctl/config.toml");
    assert_eq!(text(&out.stdout), format!("saved {}\n", file.display()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).expect("stat").permissions().mode() & 0o777, 0o600);

    let out = fleetctl(f.home(), &env, &["host", "list", "-o", "json"]).await;
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), "[]\n".to_owned()), "{}", text(&out.stderr));
    assert_eq!(f.seen.calls()[0].2.as_deref(), Some(format!("Bearer {ADMIN}").as_str()));

    let out = fleetctl(f.home(), &[("XDG_CONFIG_HOME", xdg), ("FLEET_TOKEN", VIEWER)], &["config", "show"]).await;
    let redacted = "tf1.999999999999.<redacted>";
    let width = [f.url.len(), redacted.len(), f.ca().len()].into_iter().max().unwrap_or(0);
    let row = |key: &str, value: &str, source: &str| format!("{key:<10}  {value:<width$}  {source}\n");
    assert_eq!(
        text(&out.stdout),
        format!(
            "Config file: {}\n\n{}{}{}{}{}",
            file.display(),
            row("SETTING", "VALUE", "SOURCE"),
            row("controller", &f.url, "config file"),
            row("token", redacted, "env FLEET_TOKEN"),
            row("ca_cert", f.ca(), "config file"),
            row("insecure", "false", "default"),
        )
    );
    assert!(!text(&out.stdout).contains("viewer-secret"));

    // A file others can read is refused, with the fix.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = fleetctl(f.home(), &env, &["host", "list"]).await;
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {} holds a token and is readable by others (mode 0644); run `chmod 600 {}` (and consider \
             revoking the token)\n",
            file.display(),
            file.display()
        )
    );
    // `config set` rewrites it private again.
    let out = fleetctl(f.home(), &env, &["config", "set", "--token", ""]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::metadata(&file).expect("stat").permissions().mode() & 0o777, 0o600);
    assert!(!std::fs::read_to_string(&file).expect("read").contains("token"));
}

#[tokio::test]
async fn a_ca_that_did_not_sign_the_server_is_refused() {
    let f = fixture().await;
    let other = f.home().join("other-ca.pem");
    std::fs::write(&other, pki(&["127.0.0.1"]).ca).expect("write");
    let other = other.to_str().expect("utf-8");
    let out =
        fleetctl(f.home(), &[("FLEET_TOKEN", ADMIN)], &["--controller", &f.url, "--ca-cert", other, "token", "list"])
            .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with(&format!("error: cannot reach the controller at {}: ", f.url)), "{err}");
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(
        err.ends_with(&format!(
            "\nhint: the controller's certificate is not signed by the CA in {other} (from --ca-cert); give the \
             one `fleet-controller ca print` prints\n"
        )),
        "{err}"
    );
    assert!(f.seen.calls().is_empty(), "nothing reached the service");
}

#[tokio::test]
async fn a_host_the_certificate_does_not_name_is_refused() {
    let f = fixture_naming(&["localhost"]).await;
    let out =
        fleetctl(f.home(), &[("FLEET_TOKEN", ADMIN)], &["--controller", &f.url, "--ca-cert", f.ca(), "token", "list"])
            .await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.ends_with(
            "\nhint: the controller's certificate does not name 127.0.0.1: connect by a name it has, or start the \
             controller with --tls-san 127.0.0.1\n"
        ),
        "{err}"
    );
    let url = f.url.replace("127.0.0.1", "localhost");
    let out =
        fleetctl(f.home(), &[("FLEET_TOKEN", ADMIN)], &["--controller", &url, "--ca-cert", f.ca(), "token", "list"])
            .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[tokio::test]
async fn the_wrong_scheme_for_the_server_gets_a_hint() {
    let f = fixture().await;
    let plain = f.url.replace("https://", "http://");
    let out = fleetctl(f.home(), &[("FLEET_INSECURE", "true")], &["--controller", &plain, "token", "list"]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with(&format!("error: cannot reach the controller at {plain}: ")), "{err}");
    assert!(
        err.ends_with(
            "\nhint: if the controller serves TLS (it does unless started with --insecure), use its https:// URL \
             with --ca-cert instead of --insecure\n"
        ),
        "{err}"
    );

    let (addr, _) = serve(None).await;
    let tls = format!("https://127.0.0.1:{}", addr.port());
    let out = fleetctl(f.home(), &[], &["--controller", &tls, "--ca-cert", f.ca(), "token", "list"]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with(&format!("error: cannot reach the controller at {tls}: ")), "{err}");
    assert!(
        err.ends_with(
            "\nhint: the controller answers in plaintext: if it was started with --insecure, use http:// and \
             --insecure\n"
        ),
        "{err}"
    );
}
