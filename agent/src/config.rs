//! The agent's configuration: one typed struct, read once from flags and environment.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use clap::Parser;
use teefleet_model::{HostId, Listen};
use tonic::transport::Uri;

use crate::{firewall::Variant, pki::CaPin};

/// fleet-agent: keeps this host's TEE mirroring rules in line with the teefleet controller.
#[derive(Debug, Clone, Parser)]
#[command(name = "fleet-agent", version = teefleet_proto::VERSION, about)]
pub struct Config {
    /// The controller's agent endpoint: https://HOST[:PORT] (TLS, and the agent enrolls for
    /// a client certificate), or http://HOST[:PORT] together with --insecure. Give every
    /// replica (repeat the flag, or separate URLs with commas; FLEET_CONTROLLER takes a
    /// comma-separated list): the agent stays with one and moves to the next when it fails.
    #[arg(long, env = "FLEET_CONTROLLER", value_name = "URL", required = true, value_delimiter = ',',
          value_parser = ControllerUrl::from_str)]
    pub controller: Vec<ControllerUrl>,

    /// A join token (`fleetctl token create --role agent`). Needed only to enroll, that is
    /// when the state directory holds no valid client certificate for this host; a restart
    /// with a stored certificate does not use it.
    #[arg(long, env = "FLEET_JOIN_TOKEN", value_name = "TOKEN", hide_env_values = true,
          value_parser = JoinToken::from_str)]
    pub join_token: Option<JoinToken>,

    /// How to enroll when the state directory holds no valid client certificate (the first
    /// start, or a certificate that expired while the instance was stopped): `token` with
    /// --join-token, or `instance-identity` with the EC2 instance identity document AWS
    /// signed for this instance, read from instance metadata (--imds-endpoint); no secret
    /// is needed, but the controller must allow the account (fleet-controller
    /// --join-account) and the host id must be the instance id (leave --host-id unset).
    #[arg(long, env = "FLEET_JOIN_METHOD", value_name = "token|instance-identity", value_enum,
          default_value_t = JoinMethod::Token)]
    pub join_method: JoinMethod,

    /// The SHA-256 of the controller's CA certificate (`fleet-controller ca pin`), to trust
    /// the controller the first time. The CA found with it is saved as ca.pem in the state
    /// directory, which is trusted from then on.
    #[arg(long, env = "FLEET_CA_PIN", value_name = "sha256:HEX", value_parser = CaPin::from_str)]
    pub ca_pin: Option<CaPin>,

    /// Talk plaintext to an http:// controller that runs with --insecure: no TLS, no
    /// enrollment, and anyone on the path can change this host's mirroring. For labs only.
    /// From the environment: FLEET_INSECURE=true.
    #[arg(long, env = "FLEET_INSECURE")]
    pub insecure: bool,

    /// This host's id; defaults to the EC2 instance id from instance metadata.
    #[arg(long, env = "FLEET_HOST_ID", value_name = "ID", value_parser = parse_host_id)]
    pub host_id: Option<HostId>,

    /// Where the last applied rule set is kept across restarts; with TLS also the
    /// controller's CA (ca.pem) and this agent's key and certificate (agent.key, agent.crt),
    /// each mode 0600.
    #[arg(long, env = "FLEET_STATE_DIR", value_name = "DIR", value_parser = parse_dir)]
    pub state_dir: PathBuf,

    /// Time between health reports, 1s to 1h: 10s, 1m (a bare number is seconds). The
    /// per-session counters they carry come from the last drift check and were read at
    /// most about this long before (or one drift interval, if that is longer).
    #[arg(long, env = "FLEET_HEALTH_INTERVAL", value_name = "DURATION", default_value = "10s",
          value_parser = parse_interval)]
    pub health_interval: Duration,

    /// Time between drift checks, 1s to 1h: 5s, 1m (a bare number is seconds). Our chains
    /// are read back and restored if something else changed them, and the counters are
    /// read. With the nft backend a check skips reading while the nf_tables generation
    /// shows no commit since the last read (any change makes the next check read) and the
    /// counters are recent enough for the next health report; with the defaults every other
    /// check reads.
    #[arg(long, env = "FLEET_DRIFT_INTERVAL", value_name = "DURATION", default_value = "5s",
          value_parser = parse_interval)]
    pub drift_interval: Duration,

    /// Which iptables to use: `auto` runs `iptables` (the host's choice), `nft` and
    /// `legacy` run `iptables-nft` or `iptables-legacy` and their -save/-restore.
    #[arg(long, env = "FLEET_IPTABLES_BACKEND", value_name = "auto|nft|legacy", default_value = "auto",
          value_parser = parse_backend)]
    pub iptables_backend: Variant,

    /// Where to serve /healthz, /readyz and /metrics; `off` disables them.
    #[arg(long, env = "FLEET_METRICS_LISTEN", value_name = "ADDR:PORT|off", default_value = "127.0.0.1:9477")]
    pub metrics_listen: Listen,

    /// The EC2 instance metadata service (IMDSv2), asked for the instance id when --host-id
    /// is not given, and for the signed instance identity with --join-method
    /// instance-identity.
    #[arg(long, env = "FLEET_IMDS_ENDPOINT", value_name = "URL", default_value = "http://169.254.169.254",
          value_parser = parse_http_url)]
    pub imds_endpoint: String,
}

impl Config {
    /// Flag combinations clap cannot check; the message names the flags. On success, the
    /// controller's URLs as a valid list.
    pub fn check(&self) -> Result<ControllerUrls, String> {
        let urls = ControllerUrls::new(self.controller.clone()).map_err(|e| e.to_string())?;
        match (urls.is_tls(), self.insecure) {
            (false, false) => Err(format!(
                "--controller {urls} is plaintext: use an https:// URL, or add --insecure (FLEET_INSECURE=true) \
                 against a controller that runs with --insecure"
            )),
            (true, true) => {
                Err(format!("--insecure is for an http:// controller, but --controller is {urls}; drop --insecure"))
            }
            (false, true)
                if self.join_token.is_some()
                    || self.ca_pin.is_some()
                    || self.join_method == JoinMethod::InstanceIdentity =>
            {
                Err("--join-token, --join-method instance-identity and --ca-pin need an https:// --controller; \
                     with --insecure the agent does not enroll"
                    .to_owned())
            }
            _ => Ok(urls),
        }
    }
}

/// How an agent without a valid certificate enrolls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JoinMethod {
    /// With a join token (--join-token).
    Token,
    /// With the EC2 instance identity document and its RSA-2048 signature from IMDSv2.
    InstanceIdentity,
}

/// `fleet-agent leave`: the host revokes its own certificates at the controller.
#[derive(Debug, Clone, Parser)]
#[command(
    name = Invocation::LEAVE,
    display_name = "fleet-agent leave",
    version = teefleet_proto::VERSION,
    about = "Asks the controller to revoke this host's certificates, authenticated by the agent's own \
certificate from the state directory, so the host cannot come back without enrolling again. Run it when \
uninstalling the agent (bootstrap.sh uninstall does). Exits 0 when revoked, 69 when no controller replica \
can be reached, 1 otherwise. Stop the agent first."
)]
pub struct LeaveConfig {
    /// The controller's replicas, as for the agent (https://HOST[:PORT], repeat or separate
    /// with commas).
    #[arg(long, env = "FLEET_CONTROLLER", value_name = "URL", required = true, value_delimiter = ',',
          value_parser = ControllerUrl::from_str)]
    pub controller: Vec<ControllerUrl>,

    /// The agent's state directory, holding ca.pem, agent.crt and agent.key.
    #[arg(long, env = "FLEET_STATE_DIR", value_name = "DIR", default_value = "/var/lib/teefleet",
          value_parser = parse_dir)]
    pub state_dir: PathBuf,

    /// Checked against the stored CA when given, as for the agent.
    #[arg(long, env = "FLEET_CA_PIN", value_name = "sha256:HEX", value_parser = CaPin::from_str)]
    pub ca_pin: Option<CaPin>,
}

/// `fleet-agent cleanup`: removes every chain and jump of ours, in both families.
#[derive(Debug, Clone, Parser)]
#[command(
    name = Invocation::CLEANUP,
    display_name = "fleet-agent cleanup",
    version = teefleet_proto::VERSION,
    about = "Removes every chain and jump teefleet installed on this host \
(both address families) and, with --state-dir, the saved rule set, so a restarted agent does not bring them back. \
Idempotent; stop the agent first."
)]
pub struct CleanupConfig {
    /// The agent's state directory; its saved rule set is deleted.
    #[arg(long, env = "FLEET_STATE_DIR", value_name = "DIR", value_parser = parse_dir)]
    pub state_dir: Option<PathBuf>,

    /// As for the agent: auto, nft or legacy.
    #[arg(long, env = "FLEET_IPTABLES_BACKEND", value_name = "auto|nft|legacy", default_value = "auto",
          value_parser = parse_backend)]
    pub iptables_backend: Variant,
}

/// What `fleet-agent` was asked to do: without a subcommand, run the agent with
/// [`Config`]; `fleet-agent cleanup` removes what the agent installed; `fleet-agent leave`
/// revokes the host at the controller.
///
/// Written out rather than derived: a derived parser with the agent's flags beside an
/// optional subcommand would have to build the agent's [`Config`] even for `cleanup`,
/// which has none of its required flags.
#[derive(Debug, Clone)]
pub enum Invocation {
    Run(Box<Config>),
    Cleanup(CleanupConfig),
    Leave(LeaveConfig),
}

impl Invocation {
    const CLEANUP: &'static str = "cleanup";
    const LEAVE: &'static str = "leave";
}

impl clap::CommandFactory for Invocation {
    fn command() -> clap::Command {
        // The agent's own flags stay at the top, as they always were; they cannot be
        // mixed with a subcommand, and it lifts their requirements.
        Config::command()
            .subcommand(CleanupConfig::command())
            .subcommand(LeaveConfig::command())
            .args_conflicts_with_subcommands(true)
            .subcommand_negates_reqs(true)
            .disable_help_subcommand(true)
    }

    fn command_for_update() -> clap::Command {
        Self::command()
    }
}

impl clap::FromArgMatches for Invocation {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        match matches.remove_subcommand() {
            None => Config::from_arg_matches_mut(matches).map(|config| Self::Run(Box::new(config))),
            Some((name, mut sub)) if name == Self::CLEANUP => {
                CleanupConfig::from_arg_matches_mut(&mut sub).map(Self::Cleanup)
            }
            Some((name, mut sub)) if name == Self::LEAVE => {
                LeaveConfig::from_arg_matches_mut(&mut sub).map(Self::Leave)
            }
            // The command above knows no other subcommand, so clap refused it already.
            Some((name, _)) => {
                Err(clap::Error::raw(clap::error::ErrorKind::InvalidSubcommand, format!("unknown subcommand {name:?}")))
            }
        }
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Parser for Invocation {}

/// The bounds of the agent's intervals: a check or report more often than every second
/// only costs the host, and one rarer than hourly leaves drift and counters unseen.
pub const INTERVALS: std::ops::RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(3600);

/// A duration as every flag takes it (a bare number of seconds too, as these flags took
/// before), within [`INTERVALS`].
fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = teefleet_model::parse_duration_or_seconds(text)?;
    if INTERVALS.contains(&interval) { Ok(interval) } else { Err(format!("{text:?} is not between 1s and 1h")) }
}

fn parse_backend(s: &str) -> Result<Variant, String> {
    match s {
        "auto" => Ok(Variant::System),
        "nft" => Ok(Variant::Nft),
        "legacy" => Ok(Variant::Legacy),
        _ => Err(format!("{s:?} is not auto, nft or legacy")),
    }
}

/// A URL that is not a plain `SCHEME://HOST[:PORT]`.
#[derive(Debug, thiserror::Error)]
#[error("{url:?} is not an {expected}://HOST[:PORT] URL")]
pub struct UrlError {
    url: String,
    expected: &'static str,
}

/// `(scheme, host, port)` of a plain `SCHEME://HOST[:PORT][/]` URL, the port `None` when
/// none is given; the host as written (an IPv6 literal keeps its brackets). A path would be
/// silently ignored by gRPC, and user info, a query or a fragment have no meaning here, so
/// all are refused instead of surprising the operator.
fn plain_url(url: &str) -> Option<(String, String, Option<u16>)> {
    // `Uri` drops a fragment without a word; it is refused here like a query.
    if url.contains('#') {
        return None;
    }
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    let host = authority.host();
    // What follows the host is nothing or `:PORT`: this refuses user info (the host is not
    // first), an empty port and one out of range, which `Uri` passes on.
    let port = match authority.as_str().strip_prefix(host)? {
        "" => None,
        rest => Some(rest.strip_prefix(':')?.parse::<u16>().ok()?),
    };
    // `Uri` takes anything in brackets; an IPv6 literal is what brackets are for.
    let literal_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty(),
    };
    // `Uri` reads the scheme in any case; the operator's text must name it in lower case.
    let plain = url.starts_with(&format!("{scheme}://"))
        && literal_ok
        && uri.query().is_none()
        && uri.path().chars().all(|c| c == '/');
    plain.then(|| (scheme.to_owned(), host.to_owned(), port))
}

/// `HOST:PORT` of an `http://HOST[:PORT][/]` URL, with the default port made explicit.
pub fn http_authority(url: &str) -> Result<String, UrlError> {
    match plain_url(url) {
        Some((scheme, host, port)) if scheme == "http" => Ok(format!("{host}:{}", port.unwrap_or(80))),
        _ => Err(UrlError { url: url.to_owned(), expected: "http" }),
    }
}

fn parse_http_url(s: &str) -> Result<String, UrlError> {
    http_authority(s).map(|_| s.trim_end_matches('/').to_owned())
}

/// The controller's `http://` or `https://HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerUrl {
    tls: bool,
    /// As written in the URL: an IPv6 literal keeps its brackets.
    host: String,
    port: u16,
}

impl ControllerUrl {
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// `HOST:PORT`, for connecting.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The name the controller's certificate must carry: the host, an IPv6 literal
    /// without its brackets.
    pub fn server_name(&self) -> &str {
        self.host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&self.host)
    }
}

impl FromStr for ControllerUrl {
    type Err = UrlError;

    /// Surrounding whitespace (a space after a comma in a list) is dropped.
    fn from_str(url: &str) -> Result<Self, UrlError> {
        let url = url.trim();
        let refused = || UrlError { url: url.to_owned(), expected: "http(s)" };
        let (scheme, host, port) = plain_url(url).ok_or_else(refused)?;
        let tls = match scheme.as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(refused()),
        };
        Ok(Self { tls, host, port: port.unwrap_or(if tls { 443 } else { 80 }) })
    }
}

impl fmt::Display for ControllerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// The URLs of the controller's replicas, in the operator's order: at least one, all
/// of one scheme (the replicas share one CA, or all run with --insecure), none twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerUrls(Vec<ControllerUrl>);

/// Why a list of controller URLs is not one controller's replicas.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControllerUrlsError {
    #[error("--controller needs at least one URL")]
    Empty,
    #[error(
        "--controller mixes https:// and http:// URLs ({0}): every replica is reached the same way, \
         all with TLS or all with --insecure"
    )]
    MixedSchemes(String),
    #[error("--controller lists {0} twice")]
    Duplicate(ControllerUrl),
}

impl ControllerUrls {
    pub fn new(urls: Vec<ControllerUrl>) -> Result<Self, ControllerUrlsError> {
        let first = urls.first().ok_or(ControllerUrlsError::Empty)?;
        if urls.iter().any(|u| u.tls != first.tls) {
            return Err(ControllerUrlsError::MixedSchemes(join(&urls)));
        }
        for (i, url) in urls.iter().enumerate() {
            if urls[..i].contains(url) {
                return Err(ControllerUrlsError::Duplicate(url.clone()));
            }
        }
        Ok(Self(urls))
    }

    pub fn is_tls(&self) -> bool {
        self.0.first().is_some_and(ControllerUrl::is_tls)
    }

    /// Never empty.
    pub fn as_slice(&self) -> &[ControllerUrl] {
        &self.0
    }

    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// The `i`-th URL, counting on from the first after the last.
    pub fn get(&self, i: usize) -> &ControllerUrl {
        // Never empty, so the remainder is an index.
        &self.0[i % self.0.len()]
    }
}

impl From<ControllerUrl> for ControllerUrls {
    fn from(url: ControllerUrl) -> Self {
        Self(vec![url])
    }
}

/// Comma-separated, as FLEET_CONTROLLER takes them.
impl fmt::Display for ControllerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&join(&self.0))
    }
}

fn join(urls: &[ControllerUrl]) -> String {
    urls.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// A join token; its `Debug` does not show the secret, so the config can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(String);

/// The longest token the controller accepts.
const MAX_TOKEN_LEN: usize = 256;

impl JoinToken {
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl FromStr for JoinToken {
    type Err = String;

    /// Surrounding whitespace (a stray space in an environment file) is dropped.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.len() > MAX_TOKEN_LEN || !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!("a join token is 1 to {MAX_TOKEN_LEN} printable characters without spaces"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinToken(<redacted>)")
    }
}

fn parse_host_id(s: &str) -> Result<HostId, String> {
    s.parse().map_err(|e: teefleet_model::ValidationError| e.reason)
}

fn parse_dir(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    let path = PathBuf::from(s);
    if path.exists() && !path.is_dir() {
        return Err(format!("{s} exists and is not a directory"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("fleet-agent").chain(args.iter().copied()))
    }

    #[test]
    fn the_version_names_the_commit() {
        let shown = parse(&["--version"]).expect_err("shown, not run");
        assert!(shown.to_string().starts_with("fleet-agent ") && shown.to_string().contains(" (commit "), "{shown}");
    }

    #[test]
    fn flags() {
        let c =
            parse(&["--controller", "http://c:7000/", "--host-id", "h1", "--state-dir", "/var/lib/x", "--insecure"])
                .expect("valid");
        assert_eq!(
            (c.check().expect("valid").to_string().as_str(), c.health_interval, c.imds_endpoint.as_str()),
            ("http://c:7000", Duration::from_secs(10), "http://169.254.169.254")
        );
        assert_eq!(
            (c.drift_interval, c.metrics_listen),
            (Duration::from_secs(5), Listen::On(([127, 0, 0, 1], 9477).into()))
        );
        assert_eq!(c.host_id.map(String::from).as_deref(), Some("h1"));
        let c =
            parse(&["--controller", "http://c", "--host-id", "h", "--state-dir", "/tmp", "--metrics-listen", "off"])
                .expect("valid");
        assert_eq!(c.metrics_listen, Listen::Off);
        let c =
            parse(&["--controller", "https://c", "--state-dir", "/tmp", "--join-token", " s3cret ", "--ca-pin", PIN])
                .expect("valid");
        assert_eq!((c.controller[0].authority().as_str(), c.controller[0].is_tls()), ("c:443", true));
        assert_eq!(c.join_token.as_ref().map(JoinToken::secret), Some("s3cret"));
        assert_eq!(c.ca_pin.map(|p| p.to_string()).as_deref(), Some(PIN));
        assert!(!format!("{c:?}").contains("s3cret"), "Debug hides the token");
        assert_eq!(c.check(), Ok(ControllerUrls::from(c.controller[0].clone())));
    }

    #[test]
    fn cleanup_is_a_subcommand_and_the_agent_the_default() {
        let invoke =
            |args: &[&str]| Invocation::try_parse_from(std::iter::once("fleet-agent").chain(args.iter().copied()));
        match invoke(&["--controller", "http://c", "--state-dir", "/tmp", "--insecure"]).expect("valid") {
            Invocation::Run(c) => assert_eq!(c.check().expect("valid").to_string(), "http://c:80"),
            other => panic!("{other:?}"),
        }
        // The agent's required flags are not required of cleanup.
        match invoke(&["cleanup"]).expect("valid") {
            Invocation::Cleanup(c) => assert_eq!((c.state_dir, c.iptables_backend), (None, Variant::System)),
            other => panic!("{other:?}"),
        }
        match invoke(&["cleanup", "--state-dir", "/tmp", "--iptables-backend", "legacy"]).expect("valid") {
            Invocation::Cleanup(c) => {
                assert_eq!((c.state_dir, c.iptables_backend), (Some(PathBuf::from("/tmp")), Variant::Legacy));
            }
            other => panic!("{other:?}"),
        }
        let err = invoke(&["--state-dir", "/tmp"]).map(|_| ()).expect_err("the agent needs a controller");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{err}");
        for (args, needle) in [
            (&["cleanup", "--iptables-backend", "xtables"][..], "--iptables-backend"),
            (&["cleanup", "--controller", "http://c"], "--controller"),
            (&["--insecure", "cleanup"], "cleanup"),
            (&["help"], "help"),
        ] {
            let err = invoke(args).map(|_| ()).expect_err("invalid");
            assert!(err.use_stderr() && err.to_string().contains(needle), "{args:?}: {err}");
        }
        let help = invoke(&["cleanup", "--help"]).map(|_| ()).expect_err("help");
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(help.to_string().contains("Usage: fleet-agent cleanup [OPTIONS]"), "{help}");
    }

    #[test]
    fn join_method_and_leave() {
        let c = parse(&["--controller", "https://c", "--state-dir", "/tmp"]).expect("valid");
        assert_eq!(c.join_method, JoinMethod::Token, "the default");
        let c = parse(&["--controller", "https://c", "--state-dir", "/tmp", "--join-method", "instance-identity"])
            .expect("valid");
        assert_eq!(c.join_method, JoinMethod::InstanceIdentity);
        assert!(parse(&["--controller", "https://c", "--state-dir", "/tmp", "--join-method", "iid"]).is_err());
        let insecure = ["--controller", "http://c", "--state-dir", "/tmp", "--insecure"];
        let err = parse(&[&insecure[..], &["--join-method", "instance-identity"]].concat())
            .expect("parses")
            .check()
            .expect_err("nothing to enroll with");
        assert!(err.contains("--join-method instance-identity"), "{err}");
        let invoke =
            |args: &[&str]| Invocation::try_parse_from(std::iter::once("fleet-agent").chain(args.iter().copied()));
        match invoke(&["leave", "--controller", "https://a,https://b"]).expect("valid") {
            Invocation::Leave(c) => {
                assert_eq!((c.controller.len(), c.state_dir, c.ca_pin), (2, PathBuf::from("/var/lib/teefleet"), None));
            }
            other => panic!("{other:?}"),
        }
        let err = invoke(&["leave"]).map(|_| ()).expect_err("needs the controller");
        assert!(err.to_string().contains("--controller"), "{err}");
    }

    #[test]
    fn intervals_are_durations_and_bare_seconds_within_a_second_and_an_hour() {
        let intervals = |value: &str| {
            let args = ["--controller", "http://c", "--state-dir", "/tmp", "--health-interval", value];
            parse(&[&args[..], &["--drift-interval", value]].concat()).map(|c| (c.health_interval, c.drift_interval))
        };
        for (value, secs) in [("5s", 5), ("1m", 60), ("1h", 3600), ("90s", 90), ("1", 1), ("3600", 3600)] {
            let want = Duration::from_secs(secs);
            assert_eq!(intervals(value).expect(value), (want, want), "{value}");
        }
        for bad in ["0", "0s", "3601", "61m", "2h", "1d", "1.5s", "5 s", "x", ""] {
            let err = intervals(bad).expect_err(bad).to_string();
            assert!(err.contains("--health-interval"), "{bad}: {err}");
        }
        let err = intervals("2h").expect_err("too long").to_string();
        assert!(err.contains("\"2h\" is not between 1s and 1h"), "{err}");
        // The defaults show in the same dialect.
        let cmd = <Config as clap::CommandFactory>::command();
        for (id, default) in [("health_interval", "10s"), ("drift_interval", "5s")] {
            let arg = cmd.get_arguments().find(|a| a.get_id() == id).expect("flag");
            assert_eq!(arg.get_default_values(), [default], "{id}");
        }
    }

    #[test]
    fn invalid_values_name_the_flag() {
        let base = ["--host-id", "h1", "--state-dir", "/tmp"];
        for (extra, flag) in [
            (vec!["--controller", "ftp://c"], "--controller"),
            (vec!["--controller", "https://c/path"], "--controller"),
            (vec!["--controller", "http://c", "--health-interval", "0"], "--health-interval"),
            (vec!["--controller", "http://c", "--imds-endpoint", "https://x"], "--imds-endpoint"),
            (vec!["--controller", "http://c", "--drift-interval", "0"], "--drift-interval"),
            (vec!["--controller", "http://c", "--metrics-listen", "localhost"], "--metrics-listen"),
            (vec!["--controller", "http://c", "--iptables-backend", "xtables"], "--iptables-backend"),
            (vec!["--controller", "https://c", "--ca-pin", "0123abcd"], "--ca-pin"),
            (vec!["--controller", "https://c", "--ca-pin", &PIN[..70]], "--ca-pin"),
            (vec!["--controller", "https://c", "--join-token", "a b"], "--join-token"),
            (vec!["--controller", "https://c", "--join-token", " "], "--join-token"),
        ] {
            let args: Vec<&str> = base.iter().copied().chain(extra).collect();
            let err = parse(&args).expect_err("invalid").to_string();
            assert!(err.contains(flag), "{err}");
        }
        let err = parse(&["--controller", "http://c", "--host-id", "a b", "--state-dir", "/tmp"]).expect_err("invalid");
        assert!(err.to_string().contains("--host-id"), "{err}");
        let err = parse(&["--controller", "http://c", "--host-id", "h", "--state-dir", "/etc/hostname"])
            .expect_err("invalid");
        assert!(err.to_string().contains("--state-dir"), "{err}");
    }

    #[test]
    fn plaintext_only_with_insecure_and_insecure_only_with_http() {
        let check = |args: &[&str]| {
            let base = ["--host-id", "h1", "--state-dir", "/tmp"];
            parse(&[&base[..], args].concat()).expect("parses").check().map(|urls| urls.to_string())
        };
        let err = check(&["--controller", "http://c:7000"]).expect_err("plaintext needs --insecure");
        assert!(err.contains("--controller http://c:7000") && err.contains("--insecure"), "{err}");
        assert_eq!(check(&["--controller", "http://c:7000", "--insecure"]), Ok("http://c:7000".to_owned()));
        let err = check(&["--controller", "https://c:7000", "--insecure"]).expect_err("TLS refuses --insecure");
        assert!(err.contains("drop --insecure"), "{err}");
        for extra in [["--join-token", "t"], ["--ca-pin", PIN]] {
            let args = [&["--controller", "http://c", "--insecure"][..], &extra[..]].concat();
            let err = check(&args).expect_err("nothing to enroll with");
            assert!(err.contains("--ca-pin need an https://"), "{err}");
        }
        // No pin and no token is fine here: whether they are needed depends on the state
        // directory, which the agent checks at start.
        assert_eq!(check(&["--controller", "https://c"]), Ok("https://c:443".to_owned()));
    }

    #[test]
    fn authorities() {
        assert_eq!(http_authority("http://169.254.169.254").expect("ok"), "169.254.169.254:80");
        assert_eq!(http_authority("http://127.0.0.1:8080/").expect("ok"), "127.0.0.1:8080");
        assert_eq!(http_authority("http://[fd00:ec2::254]").expect("ok"), "[fd00:ec2::254]:80");
        assert_eq!(http_authority("http://[fd00:ec2::254]:81").expect("ok"), "[fd00:ec2::254]:81");
        for bad in [
            "https://x",
            "x",
            "http://",
            "http://a/b",
            "http://a b",
            "http://a:x",
            "http://a:99999",
            "http://fd00::1",
            "HTTP://a",
            "http://u@a",
            "http://a?b",
            "http://a#b",
            "http://a:",
        ] {
            assert!(http_authority(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn controller_urls() {
        let url: ControllerUrl = "https://[fd00::7]:7000/".parse().expect("ok");
        assert_eq!((url.authority().as_str(), url.server_name(), url.is_tls()), ("[fd00::7]:7000", "fd00::7", true));
        assert_eq!(url.to_string(), "https://[fd00::7]:7000");
        let url: ControllerUrl = "http://controller".parse().expect("ok");
        assert_eq!((url.to_string().as_str(), url.server_name()), ("http://controller:80", "controller"));
        let url: ControllerUrl = " https://c:7000// ".parse().expect("ok");
        assert_eq!(url.to_string(), "https://c:7000");
        for bad in [
            "HTTPS://c",
            "Https://c",
            "https://",
            "https://c/x",
            "grpc://c",
            "https//c",
            "https://u@c",
            "https://u:p@c:7000",
            "c:7000",
            "https://c:",
            "https://c:x",
            "https://c:99999",
            "https://:7000",
            "https://c?x=1",
            "https://c/?x",
            "https://c#x",
            "https://fd00::7",
            "https://[fd00::7",
            "https://c d",
            "",
        ] {
            let err = bad.parse::<ControllerUrl>().expect_err(bad).to_string();
            assert!(err.contains("http(s)://HOST[:PORT]"), "{err}");
        }
    }

    #[test]
    fn several_controllers_repeated_or_comma_separated_in_order() {
        let urls = |args: &[&str]| {
            let base = ["--host-id", "h1", "--state-dir", "/tmp"];
            parse(&[&base[..], args].concat()).expect("parses").check().map(|urls| urls.to_string())
        };
        let want = Ok("https://a:443,https://b:7000,https://[fd00::7]:443".to_owned());
        assert_eq!(
            urls(&["--controller", "https://a", "--controller", "https://b:7000", "--controller", "https://[fd00::7]"]),
            want
        );
        assert_eq!(urls(&["--controller", "https://a,https://b:7000,https://[fd00::7]/"]), want);
        assert_eq!(urls(&["--controller", "https://a, https://b:7000", "--controller", " https://[fd00::7] "]), want);
        assert_eq!(
            urls(&["--controller", "http://b:7000,http://a:7000", "--insecure"]),
            Ok("http://b:7000,http://a:7000".to_owned()),
            "the operator's order is the order they are tried in"
        );
    }

    #[test]
    fn controller_lists_must_be_one_scheme_without_duplicates() {
        let check = |args: &[&str]| {
            let base = ["--host-id", "h1", "--state-dir", "/tmp"];
            parse(&[&base[..], args].concat()).expect("parses").check()
        };
        for args in [
            &["--controller", "https://a,http://b"][..],
            &["--controller", "http://a", "--controller", "https://b", "--insecure"],
        ] {
            let err = check(args).expect_err("mixed schemes");
            assert!(err.contains("--controller mixes https:// and http://"), "{err}");
        }
        for (args, twice) in [
            (&["--controller", "https://a,https://b,https://a"][..], "https://a:443"),
            (&["--controller", "https://a:443", "--controller", "https://a/"], "https://a:443"),
            (&["--controller", "http://[fd00::1]:80,http://[fd00::1]", "--insecure"], "http://[fd00::1]:80"),
        ] {
            assert_eq!(check(args), Err(format!("--controller lists {twice} twice")), "{args:?}");
        }
        // Several plaintext URLs still need --insecure, and the message lists them all.
        let err = check(&["--controller", "http://a,http://b"]).expect_err("plaintext");
        assert!(err.contains("--controller http://a:80,http://b:80 is plaintext"), "{err}");
        assert_eq!(ControllerUrls::new(vec![]), Err(ControllerUrlsError::Empty));
    }

    #[test]
    fn a_controller_is_required_and_empty_entries_are_refused() {
        let base = ["--host-id", "h1", "--state-dir", "/tmp"];
        let err = parse(&base).expect_err("no controller");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{err}");
        assert!(err.to_string().contains("--controller"), "{err}");
        for bad in ["", "https://a,,https://b", "https://a,", "https://a https://b"] {
            let args: Vec<&str> = base.iter().copied().chain(["--controller", bad]).collect();
            let err = parse(&args).expect_err(bad).to_string();
            assert!(err.contains("--controller") && err.contains("http(s)://HOST[:PORT]"), "{err}");
        }
    }

    #[test]
    fn insecure_comes_from_the_environment_too() {
        // A flag with `env` reads true/false (and 1/0, yes/no...) from the variable.
        let cmd = <Config as clap::CommandFactory>::command();
        let insecure = cmd.get_arguments().find(|a| a.get_id() == "insecure").expect("flag");
        assert_eq!(insecure.get_env().and_then(|e| e.to_str()), Some("FLEET_INSECURE"));
        let token = cmd.get_arguments().find(|a| a.get_id() == "join_token").expect("flag");
        assert!(token.is_hide_env_values_set(), "--help must not print the token from the environment");
        // The same delimiter splits FLEET_CONTROLLER (tests/cli.rs runs the binary with it).
        let controller = cmd.get_arguments().find(|a| a.get_id() == "controller").expect("flag");
        assert_eq!(controller.get_env().and_then(|e| e.to_str()), Some("FLEET_CONTROLLER"));
        assert_eq!(controller.get_value_delimiter(), Some(','));
    }
}
