//! How fleetctl reaches the controller: TLS trusting the fleet's CA for an `https://` URL,
//! plaintext only when asked with `--insecure`, and the bearer token on every call. The
//! decision is a pure `plan` over the settings, so every refusal is tested without a
//! network; `connect` then does the I/O.

use std::{error::Error, io, path::PathBuf, time::Duration};

use rustls::{CertificateError, InvalidMessage};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri},
};

use crate::config::{ConfigError, Settings, Source};
use crate::error::CliError;

/// The longest bearer value the controller reads.
const MAX_TOKEN_LEN: usize = 256;

/// What every admin client talks through: the channel, with the token added to each call.
pub type Transport = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    /// The header value for `token`, marked sensitive so HTTP/2 never puts it in its
    /// compression table.
    fn new(token: &str) -> Result<Self, String> {
        let mut value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "it holds characters a header cannot carry")?;
        value.set_sensitive(true);
        Ok(Bearer(Some(value)))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// How to connect, decided from the settings before any I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub url: String,
    /// `None` for plaintext (`--insecure`).
    pub tls: Option<TlsPlan>,
    /// The token to send: none over plaintext, where a controller checks none and anyone
    /// on the path could read it.
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPlan {
    pub ca_cert: PathBuf,
    /// Where the CA setting came from, for hints: `from --ca-cert`.
    pub ca_from: String,
    /// The name the server certificate must carry: the URL's host.
    pub domain: String,
}

/// Where a setting came from, as messages say it: `from --controller`, `the default`.
fn origin(source: &Source) -> String {
    match source {
        Source::Default => "the default".to_owned(),
        other => format!("from {other}"),
    }
}

/// Checks the settings agree with each other and says how to connect.
pub fn plan(settings: &Settings) -> Result<Plan, ConfigError> {
    let url = settings.controller.value.trim().to_owned();
    let from = origin(&settings.controller.source);
    let uri: Uri = url.parse().map_err(|e| {
        ConfigError(format!("controller URL {url:?} ({from}) is not a URL ({e}); e.g. https://controller:7300"))
    })?;
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| {
        ConfigError(format!("controller URL {url:?} ({from}) has no host; e.g. https://controller:7300"))
    })?;
    // An IPv6 host comes bracketed in a URL, bare in a certificate.
    let domain = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let insecure = settings.insecure.value;
    let insecure_from = match &settings.insecure.source {
        Source::Env(name) => format!("{name}=true"),
        Source::File(path) => format!("`insecure = true` in {}", path.display()),
        Source::Flag(_) | Source::Default => "--insecure".to_owned(),
    };
    match (uri.scheme_str(), insecure) {
        (Some("https"), false) => {
            let Some(ca) = &settings.ca_cert else {
                return Err(ConfigError(format!(
                    "{url} ({from}) uses TLS and needs the controller's CA certificate: pass --ca-cert FILE, \
                     set FLEET_CA_CERT or run `fleetctl config set --ca-cert FILE` (`fleet-controller ca print` \
                     writes it); for a controller started with --insecure, use --insecure"
                )));
            };
            let token = match &settings.token {
                Some(t) => Some(check_token(&t.value, &t.source)?),
                None => None,
            };
            let tls = TlsPlan { ca_cert: ca.value.clone(), ca_from: origin(&ca.source), domain };
            Ok(Plan { url, tls: Some(tls), token })
        }
        (Some("http"), true) => Ok(Plan { url, tls: None, token: None }),
        (Some("http"), false) => Err(ConfigError(format!(
            "{url} ({from}) is plaintext: anyone on the path could read the token and change the answers. \
             Use the controller's https:// URL with --ca-cert, or pass --insecure for a controller started \
             with --insecure (a lab)"
        ))),
        (Some("https"), true) => Err(ConfigError(format!(
            "{insecure_from} asks for plaintext but {url} ({from}) uses TLS: drop one of them \
             (--insecure=false overrides the environment and the config file)"
        ))),
        (None, _) => Err(ConfigError(format!(
            "controller URL {url:?} ({from}) has no scheme: write https://{url} (or http://{url} with --insecure)"
        ))),
        (Some(scheme), _) => Err(ConfigError(format!(
            "controller URL {url:?} ({from}) must start with https:// (or http:// with --insecure), not {scheme}://"
        ))),
    }
}

/// A token fit for a header, trimmed of the newline a file or `echo` may leave.
fn check_token(token: &str, source: &Source) -> Result<String, ConfigError> {
    let token = token.trim();
    let bad = |why: &str| ConfigError(format!("the token ({}) {why}", origin(source)));
    if token.len() > MAX_TOKEN_LEN {
        return Err(bad(&format!("is {} characters long; the controller reads at most {MAX_TOKEN_LEN}", token.len())));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad("holds spaces or characters other than printable ASCII"));
    }
    Ok(token.to_owned())
}

/// Reads the CA file and checks it holds at least one PEM certificate.
pub fn read_ca(path: &std::path::Path) -> Result<Certificate, ConfigError> {
    let pem =
        std::fs::read(path).map_err(|e| ConfigError(format!("reading the CA certificate {}: {e}", path.display())))?;
    let certs: Result<Vec<CertificateDer<'_>>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(Certificate::from_pem(pem)),
        _ => Err(ConfigError(format!(
            "{} holds no PEM certificate; give the output of `fleet-controller ca print`",
            path.display()
        ))),
    }
}

/// Connects eagerly: a bad URL, an untrusted certificate or an unreachable controller fails
/// here with a message naming the URL, not later with an opaque transport error.
pub async fn connect(plan: &Plan) -> Result<Transport, CliError> {
    let connect_error = |detail: String| CliError::Connect { url: plan.url.clone(), detail, hint: None };
    let mut endpoint = Endpoint::from_shared(plan.url.clone())
        .map_err(|e| connect_error(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if let Some(tls) = &plan.tls {
        let config = ClientTlsConfig::new().ca_certificate(read_ca(&tls.ca_cert)?).domain_name(tls.domain.clone());
        endpoint = endpoint.tls_config(config).map_err(|e| connect_error(e.to_string()))?;
    }
    let bearer = match &plan.token {
        // The plan checked the token is printable ASCII.
        Some(token) => Bearer::new(token).map_err(|why| CliError::Config(ConfigError(format!("the token: {why}"))))?,
        None => Bearer::default(),
    };
    let channel = endpoint.connect().await.map_err(|e| unreachable(plan, &e))?;
    Ok(InterceptedService::new(channel, bearer))
}

/// A transport failure, at connect or during a call, as "cannot reach" with a hint.
pub fn unreachable(plan: &Plan, error: &(dyn Error + 'static)) -> CliError {
    // The transport error's Display is terse ("transport error"); its sources say why.
    let mut detail = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        // Layers often repeat their inner error's words ("tcp connect error").
        let text = s.to_string();
        if !detail.ends_with(&text) {
            detail = format!("{detail}: {text}");
        }
        source = s.source();
    }
    CliError::Connect { url: plan.url.clone(), hint: connect_hint(plan, failure(error)), detail }
}

/// What went wrong with a connection, as far as the settings can explain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The server's certificate does not name the host connected to.
    NotNamed,
    /// The server's certificate is not signed by the CA given (or is otherwise refused).
    Untrusted,
    /// The server answered the TLS handshake with something that is not TLS.
    NotTls,
    /// No connection was made: refused, no route, no such name, timed out.
    NotConnected,
    /// The connection was made and then failed.
    Other,
}

/// Each error in the chain from `error` down, including the one an `io::Error` wraps:
/// `io::Error::source` skips it and returns its source instead, and TLS failures travel
/// through tokio-rustls as exactly such a wrapped `rustls::Error`.
fn causes<'a>(error: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    let mut next = Some(error);
    std::iter::from_fn(move || {
        let current = next?;
        next = match current.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(wrapped) => Some(wrapped as &(dyn Error + 'static)),
            None => current.source(),
        };
        Some(current)
    })
}

/// Reads the failure from the types in the error's chain: the TLS error if there is one,
/// else whether tonic failed while connecting (its `ConnectError` wraps DNS, TCP and TLS
/// handshake failures) or after.
fn failure(error: &(dyn Error + 'static)) -> Failure {
    let mut connecting = false;
    for cause in causes(error) {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                ) => Failure::NotNamed,
                rustls::Error::InvalidCertificate(_) => Failure::Untrusted,
                rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType) => Failure::NotTls,
                _ => Failure::Other,
            };
        }
        connecting |= cause.is::<tonic::ConnectError>();
    }
    if connecting { Failure::NotConnected } else { Failure::Other }
}

/// What to do about a connection that failed for a reason the settings can explain: a
/// certificate from another CA or for another name, or TLS on one side only.
fn connect_hint(plan: &Plan, failure: Failure) -> Option<String> {
    match (&plan.tls, failure) {
        (Some(tls), Failure::NotNamed) => Some(format!(
            "the controller's certificate does not name {}: connect by a name it has, or start the controller \
             with --tls-san {}",
            tls.domain, tls.domain
        )),
        (Some(tls), Failure::Untrusted) => Some(format!(
            "the controller's certificate is not signed by the CA in {} ({}); give the one `fleet-controller ca \
             print` prints",
            tls.ca_cert.display(),
            tls.ca_from
        )),
        (Some(_), Failure::NotTls) => Some(
            "the controller answers in plaintext: if it was started with --insecure, use http:// and --insecure"
                .to_owned(),
        ),
        // Over plaintext a connection that was made and then failed is a controller that
        // does not speak plaintext HTTP/2: one serving TLS.
        (None, Failure::Other) => Some(
            "if the controller serves TLS (it does unless started with --insecure), use its https:// URL with \
             --ca-cert instead of --insecure"
                .to_owned(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Setting;

    fn settings(url: &str, insecure: bool, ca: Option<&str>, token: Option<&str>) -> Settings {
        Settings {
            controller: Setting { value: url.into(), source: Source::Flag("--controller") },
            token: token.map(|t| Setting { value: t.into(), source: Source::Env("FLEET_TOKEN") }),
            ca_cert: ca.map(|c| Setting { value: c.into(), source: Source::Flag("--ca-cert") }),
            insecure: Setting {
                value: insecure,
                source: if insecure { Source::File("/c.toml".into()) } else { Source::Default },
            },
            file: None,
        }
    }

    #[test]
    fn https_uses_tls_with_the_ca_and_the_hosts_name() {
        let p = plan(&settings("https://ctl.example:7300", false, Some("/ca.pem"), Some(" tf1.a.b\n"))).expect("plan");
        assert_eq!(
            p,
            Plan {
                url: "https://ctl.example:7300".into(),
                tls: Some(TlsPlan {
                    ca_cert: "/ca.pem".into(),
                    ca_from: "from --ca-cert".into(),
                    domain: "ctl.example".into()
                }),
                token: Some("tf1.a.b".into()),
            }
        );
        let p = plan(&settings("https://[::1]:7300", false, Some("/ca.pem"), None)).expect("plan");
        assert_eq!((p.tls.map(|t| t.domain), p.token), (Some("::1".into()), None));
    }

    #[test]
    fn http_needs_insecure_and_then_sends_no_token() {
        let err = plan(&settings("http://127.0.0.1:7300", false, None, Some("t"))).expect_err("refused");
        assert_eq!(
            err.0,
            "http://127.0.0.1:7300 (from --controller) is plaintext: anyone on the path could read the token \
             and change the answers. Use the controller's https:// URL with --ca-cert, or pass --insecure for a \
             controller started with --insecure (a lab)"
        );
        let p = plan(&settings("http://127.0.0.1:7300", true, Some("/ca.pem"), Some("t"))).expect("plan");
        assert_eq!(p, Plan { url: "http://127.0.0.1:7300".into(), tls: None, token: None });
    }

    #[test]
    fn contradictions_and_gaps_are_refused() {
        let err = plan(&settings("https://c:7300", true, Some("/ca.pem"), None)).expect_err("contradiction");
        assert_eq!(
            err.0,
            "`insecure = true` in /c.toml asks for plaintext but https://c:7300 (from --controller) uses TLS: \
             drop one of them (--insecure=false overrides the environment and the config file)"
        );
        let mut s = settings("https://127.0.0.1:7300", false, None, None);
        s.controller.source = Source::Default;
        let err = plan(&s).expect_err("no CA");
        assert!(
            err.0.starts_with("https://127.0.0.1:7300 (the default) uses TLS and needs the controller's CA"),
            "{err}"
        );
        assert!(err.0.contains("--ca-cert FILE") && err.0.contains("use --insecure"), "{err}");
        let err = plan(&settings("ctl:7300", false, None, None)).expect_err("no scheme");
        assert_eq!(
            err.0,
            "controller URL \"ctl:7300\" (from --controller) has no scheme: write https://ctl:7300 (or \
             http://ctl:7300 with --insecure)"
        );
        assert!(plan(&settings("ftp://c", false, None, None)).expect_err("ftp").0.ends_with("not ftp://"));
        assert!(plan(&settings("https://", false, Some("/ca"), None)).is_err());
        assert!(plan(&settings("not a url", false, None, None)).expect_err("junk").0.contains("is not a URL"));
    }

    #[test]
    fn tokens_must_fit_a_header() {
        let err = plan(&settings("https://c", false, Some("/ca"), Some("a b"))).expect_err("space");
        assert_eq!(err.0, "the token (from env FLEET_TOKEN) holds spaces or characters other than printable ASCII");
        assert!(plan(&settings("https://c", false, Some("/ca"), Some("tök"))).is_err());
        let long = "x".repeat(257);
        let err = plan(&settings("https://c", false, Some("/ca"), Some(&long))).expect_err("long");
        assert!(err.0.contains("257 characters long"), "{err}");
    }

    #[test]
    fn the_interceptor_adds_a_sensitive_bearer_header() {
        let mut bearer = Bearer::new("tf1.a.b").expect("ascii");
        let req = bearer.call(Request::new(())).expect("passes");
        let value = req.metadata().get("authorization").expect("set");
        assert_eq!(value.to_str().ok(), Some("Bearer tf1.a.b"));
        assert!(value.is_sensitive());
        let req = Bearer::default().call(Request::new(())).expect("passes");
        assert!(req.metadata().get("authorization").is_none());
    }

    #[test]
    fn the_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let err = read_ca(&missing).expect_err("missing");
        assert!(err.0.starts_with(&format!("reading the CA certificate {}: ", missing.display())), "{err}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        assert_eq!(
            read_ca(&junk).expect_err("junk").0,
            format!("{} holds no PEM certificate; give the output of `fleet-controller ca print`", junk.display())
        );
        let good = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert =
            rcgen::CertificateParams::new(vec!["ca".to_owned()]).expect("params").self_signed(&key).expect("cert");
        std::fs::write(&good, cert.pem()).expect("write");
        assert!(read_ca(&good).is_ok());
    }

    fn tls_plan() -> Plan {
        let tls = TlsPlan { ca_cert: "/ca.pem".into(), ca_from: "from --ca-cert".into(), domain: "ctl".into() };
        Plan { url: "https://ctl:7300".into(), tls: Some(tls), token: None }
    }

    /// A failure as tonic reports one while connecting: the cause boxed in a `ConnectError`
    /// inside its transport error's chain, here a `Status` made on this side.
    fn while_connecting(cause: io::Error) -> tonic::Status {
        tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(cause))))
    }

    fn tls_error(error: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    #[test]
    fn failures_are_read_from_the_types_in_the_chain() {
        let not_named = tls_error(rustls::Error::InvalidCertificate(CertificateError::NotValidForName));
        assert_eq!(failure(&while_connecting(not_named)), Failure::NotNamed);
        let unknown_ca = tls_error(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        assert_eq!(failure(&while_connecting(unknown_ca)), Failure::Untrusted);
        let plaintext = tls_error(rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType));
        assert_eq!(failure(&while_connecting(plaintext)), Failure::NotTls);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(failure(&while_connecting(refused)), Failure::NotConnected);
        // Words that used to be matched mean nothing on their own.
        let closed = io::Error::new(io::ErrorKind::BrokenPipe, "Connection refused, not valid for name");
        assert_eq!(failure(&closed), Failure::Other);
    }

    #[test]
    fn hints_say_what_the_settings_can_change() {
        let tls = tls_plan();
        assert_eq!(
            connect_hint(&tls, Failure::NotNamed).as_deref(),
            Some(
                "the controller's certificate does not name ctl: connect by a name it has, or start the \
                 controller with --tls-san ctl"
            )
        );
        assert!(connect_hint(&tls, Failure::Untrusted).is_some_and(|h| h.contains("CA in /ca.pem (from --ca-cert)")));
        assert!(
            connect_hint(&tls, Failure::NotTls).is_some_and(|h| h.starts_with("the controller answers in plaintext"))
        );
        assert_eq!(connect_hint(&tls, Failure::NotConnected), None);
        assert_eq!(connect_hint(&tls, Failure::Other), None);
        let plain = Plan { url: "http://ctl:7300".into(), tls: None, token: None };
        assert!(connect_hint(&plain, Failure::Other).is_some_and(|h| h.starts_with("if the controller serves TLS")));
        assert_eq!(connect_hint(&plain, Failure::NotConnected), None, "a network failure is not the scheme's");
    }

    #[tokio::test]
    async fn unreachable_controller_names_the_url() {
        // Port 1 on loopback refuses connections immediately.
        let p = Plan { url: "http://127.0.0.1:1".into(), tls: None, token: None };
        let err = connect(&p).await.expect_err("nothing listens on port 1");
        let text = err.to_string();
        assert!(text.starts_with("cannot reach the controller at http://127.0.0.1:1: "), "{text}");
        assert!(!text.contains("hint:"), "a refused connection is not the settings' fault: {text}");
    }
}
