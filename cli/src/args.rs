//! The command line: clap derive types and the light parsing the CLI does itself (enum
//! names, the `N` / `N-M` port syntax, the throttle and token lifetimes, parsed with the
//! model's own functions so an error reads the same as the controller's). Everything else
//! — CIDRs, port ranges, names — goes to the controller as typed, which validates it and
//! answers with a message naming the field.
//!
//! The connection flags (`--controller`, `--token`, `--ca-cert`, `--insecure`, `--config`)
//! hold only what was typed: `config.rs` layers them over the environment and the config
//! file, so clap reads no environment variable itself.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use teefleet_model::{Direction, MaxPps, Protocol, Sample, TagSelector, Vni};
use teefleet_proto::v1;

/// The controller's port when no URL is configured: the controller's own default.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:7300";

/// fleetctl: manage teefleet's mirroring sessions, collectors, hosts and access.
#[derive(Debug, Parser)]
#[command(
    name = "fleetctl",
    version = teefleet_proto::VERSION,
    about,
    after_help = "Each connection setting is taken from its flag, else its environment variable, else the \
                  config file (see `fleetctl config show`), else the default.\n\n\
                  Exit codes: 0 success, 1 the controller refused or could not be reached, 2 bad \
                  arguments, 64 bad connection settings or config file."
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionFlags,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table, global = true)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

const CONNECTION: &str = "Connection";

/// How to reach the controller and who to be there, as typed on the command line. An empty
/// value unsets the setting, hiding the environment's and the config file's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct ConnectionFlags {
    /// The controller's URL [env: FLEET_CONTROLLER]. An https:// URL uses TLS and needs
    /// --ca-cert; an http:// URL is plaintext and needs --insecure. Default:
    /// https://127.0.0.1:7300, or http://127.0.0.1:7300 with --insecure.
    #[arg(long, value_name = "URL", global = true, help_heading = CONNECTION)]
    pub controller: Option<String>,
    /// The bearer token sent with every call [env: FLEET_TOKEN]. Prefer the environment or
    /// `fleetctl config set --token`: other users can see command lines.
    #[arg(long, value_name = "TOKEN", global = true, help_heading = CONNECTION)]
    pub token: Option<String>,
    /// The CA certificate (PEM) to trust for an https:// controller, as printed by
    /// `fleet-controller ca print` [env: FLEET_CA_CERT].
    #[arg(long, value_name = "FILE", global = true, help_heading = CONNECTION)]
    pub ca_cert: Option<PathBuf>,
    /// Talk plaintext to a controller started with --insecure (labs only): needs an http://
    /// URL, and sends no token [env: FLEET_INSECURE]. --insecure=false turns off a
    /// config file's `insecure = true`.
    #[arg(
        long,
        value_name = "BOOL",
        global = true,
        help_heading = CONNECTION,
        hide_possible_values = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub insecure: Option<bool>,
    /// The config file [env: FLEET_CONFIG]. Default: $XDG_CONFIG_HOME/fleetctl/config.toml,
    /// else ~/.config/fleetctl/config.toml.
    #[arg(long, value_name = "FILE", global = true, help_heading = CONNECTION)]
    pub config: Option<PathBuf>,
}

impl Cli {
    /// Refuses what `check` refuses as clap does a usage error: the message and the
    /// subcommand's usage on stderr, exit code 2.
    pub fn check_or_exit(&self) {
        use clap::CommandFactory;
        let Err((kind, message)) = self.check() else { return };
        let mut command = Cli::command();
        command.build();
        let path: &[&str] = match self.command {
            Command::Token(_) => &["token", "create"],
            _ => &["config", "set"],
        };
        for name in path {
            if let Some(found) = command.find_subcommand(name) {
                command = found.clone();
            }
        }
        command.error(kind, message).exit()
    }

    /// Argument combinations clap cannot express, refused as usage errors before anything
    /// is read or sent.
    pub fn check(&self) -> Result<(), (clap::error::ErrorKind, String)> {
        use clap::error::ErrorKind;
        match &self.command {
            Command::Token(TokenCommand::Create(args)) => {
                args.to_request().map(|_| ()).map_err(|e| (ErrorKind::ArgumentConflict, e.to_owned()))
            }
            Command::Config(ConfigCommand::Set) => {
                let ConnectionFlags { controller, token, ca_cert, insecure, config: _ } = &self.connection;
                if controller.is_none() && token.is_none() && ca_cert.is_none() && insecure.is_none() {
                    return Err((
                        ErrorKind::MissingRequiredArgument,
                        "config set needs at least one of --controller, --token, --ca-cert, --insecure".to_owned(),
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns with a header row.
    Table,
    /// JSON: an array for `list`, an object otherwise.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Collector instances that receive the mirrored traffic.
    #[command(subcommand)]
    Collector(CollectorCommand),
    /// Source hosts running the agent.
    #[command(subcommand)]
    Host(HostCommand),
    /// Mirroring sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Bearer tokens for operators and join tokens for agents (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The controller's record of every change and who made it (admin).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// fleetctl's own config file; needs no controller.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum CollectorCommand {
    /// Register an EC2 instance as a collector, or (with --name and --ip) a collector that
    /// is not an instance, such as a load balancer.
    Add {
        /// The collector's EC2 instance id.
        #[arg(required_unless_present = "name")]
        instance_id: Option<String>,
        /// A collector that is not an EC2 instance: the name sessions will call it by
        /// (VXLAN only; needs --ip).
        #[arg(long, conflicts_with = "instance_id", requires = "ip")]
        name: Option<String>,
        /// The IPv4 address to send clones to; defaults to the instance's primary private IP.
        #[arg(long)]
        ip: Option<String>,
        /// The IPv6 address to send IPv6 clones to; defaults to the instance's first IPv6
        /// address, if it has one. Raw (`--encap none`) sessions to a collector without one
        /// mirror IPv4 only; VXLAN carries IPv6 inside IPv4.
        #[arg(long)]
        ipv6: Option<String>,
        /// How clones reach it: `vxlan` (UDP 4789, as AWS Traffic Mirroring sends them; any
        /// subnet the sources can route to; no Source/Dest Check changes) or `none` (raw
        /// TEE: same subnet only, and the collector's Source/Dest Check off).
        #[arg(long, value_parser = ["vxlan", "none"], default_value = "vxlan")]
        encap: String,
    },
    /// List the registered collectors.
    List,
    /// Unregister a collector that no session uses.
    Remove {
        /// The collector's EC2 instance id.
        instance_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List the hosts whose agents have connected.
    List,
    /// Show one host: its dataplane, drift repairs, per-session counters and recent events.
    Get {
        /// The host's id (its EC2 instance id, or the id its agent was given).
        host_id: String,
    },
    /// Revoke every certificate of a host and close its stream (admin). Its agent can
    /// come back only by enrolling again with a new join token.
    Revoke {
        /// The host's id.
        host_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret, once.
    Create(TokenCreateArgs),
    /// List the tokens (never their secrets).
    List,
    /// Revoke a token: calls with it fail from now on.
    Revoke {
        /// The token's id, as `token list` shows it.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// What the token may do: agent (enroll an agent only), viewer (read), operator (also
    /// manage sessions), admin (also collectors, tokens and hosts).
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// How long the token is valid: 90s, 30m, 1h, 7d (at least a minute).
    #[arg(long, value_name = "DURATION", value_parser = teefleet_model::parse_duration)]
    pub ttl: std::time::Duration,
    /// How many agents may enroll with it (role agent only); default: unlimited until it
    /// expires, or 1 with --host.
    #[arg(long, value_name = "N")]
    pub uses: Option<u32>,
    /// Make a join token for this host only (role agent only). It enrolls the host even
    /// while the host holds a live certificate, as a rebuilt host or one that lost its key
    /// needs, and retires that certificate; no other join token can.
    #[arg(long, value_name = "HOST_ID")]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Agent,
    Viewer,
    Operator,
    Admin,
}

impl RoleArg {
    /// The role's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RoleArg::Agent => "agent",
            RoleArg::Viewer => "viewer",
            RoleArg::Operator => "operator",
            RoleArg::Admin => "admin",
        }
    }
}

/// The controller's own words when `--uses` comes with another role than agent.
pub const USES_NEEDS_AGENT: &str =
    "uses: only join tokens (role agent) have a number of uses; operator tokens last until they expire";
/// The controller's own words when `--host` comes with another role than agent.
pub const HOST_NEEDS_AGENT: &str =
    "host_id: only join tokens (role agent) are made for a host; operator tokens are for people";

impl TokenCreateArgs {
    /// The request the controller receives, or the controller's refusal of `--uses` or
    /// `--host` for another role than agent, given early.
    pub fn to_request(&self) -> Result<v1::CreateTokenRequest, &'static str> {
        if self.role != RoleArg::Agent {
            if self.uses.is_some() {
                return Err(USES_NEEDS_AGENT);
            }
            if self.host.is_some() {
                return Err(HOST_NEEDS_AGENT);
            }
        }
        Ok(v1::CreateTokenRequest {
            role: self.role.as_str().to_owned(),
            ttl_seconds: self.ttl.as_secs(),
            uses: self.uses,
            host_id: self.host.clone().unwrap_or_default(),
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit records, oldest first.
    List {
        /// Only records at or after this time, RFC 3339: 2026-11-25T10:00:00Z.
        #[arg(long, value_name = "TIME", value_parser = parse_since)]
        since: Option<String>,
        /// At most this many records (1-1000); default: the controller's, 100.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
    },
}

/// Checks `--since` is RFC 3339 and passes it on as typed.
pub fn parse_since(text: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("{text:?} is not an RFC 3339 time ({e}); e.g. 2026-11-25T10:00:00Z"))
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Save --controller, --token, --ca-cert and --insecure to the config file (mode 0600),
    /// keeping the settings not given. An empty value removes the setting.
    Set,
    /// Show the settings in force and where each comes from; the token is redacted.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Create a mirroring session.
    Create(CreateArgs),
    /// List the sessions.
    List,
    /// Show one session with per-host status.
    Get {
        /// The session's name.
        name: String,
    },
    /// Delete a session; its rules are removed from the sources.
    Delete {
        /// The session's name.
        name: String,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source_choice").required(true).multiple(true).args(["sources", "source_tags"])))]
pub struct CreateArgs {
    /// The session's name.
    pub name: String,
    /// A source host's instance id (repeat for several sources).
    #[arg(long = "source", value_name = "INSTANCE_ID")]
    pub sources: Vec<String>,
    /// Every running instance with this EC2 tag is a source, and instances that get it
    /// later become sources too (repeat: an instance must carry all of them). Matched
    /// exactly: * and ? are not wildcards. With or instead of --source.
    #[arg(long = "source-tag", value_name = "KEY=VALUE", value_parser = parse_source_tag)]
    pub source_tags: Vec<String>,
    /// The collector's instance id.
    #[arg(long, value_name = "INSTANCE_ID")]
    pub collector: String,
    /// Which traffic of the sources to mirror.
    #[arg(long, value_enum)]
    pub direction: Option<Direction>,
    /// The protocol to mirror.
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    /// The host's service port, `N` or `N-M`.
    #[arg(long, value_parser = parse_port)]
    pub port: Option<v1::PortRange>,
    /// A peer network to mirror (repeatable); none means any peer.
    #[arg(long = "cidr", value_name = "CIDR")]
    pub cidrs: Vec<String>,
    /// Clone only this random fraction of the matching packets: 0.01 or 1%.
    #[arg(long, value_name = "F", value_parser = parse_sample)]
    pub sample: Option<Sample>,
    /// Clone at most this many packets per second per host and address family.
    #[arg(long, value_name = "N", value_parser = parse_max_pps)]
    pub max_pps: Option<MaxPps>,
    /// Accept sources in another EC2 subnet than a raw (`--encap none`) collector. Raw TEE
    /// needs the collector on-link; say this only if it is (clones to an off-link gateway
    /// are dropped). VXLAN collectors need no such thing.
    #[arg(long)]
    pub allow_routed: bool,
    /// For a raw (`--encap none`) collector: have teefleet turn the sources' Source/Dest
    /// Check off while the session lives (and restore each after), so that clones of
    /// inbound packets, which carry the peer's address, leave them. EC2 drops them
    /// otherwise; a raw session that mirrors inbound traffic needs it.
    #[arg(long)]
    pub disable_source_check: bool,
    /// The session's VXLAN network identifier (1-16777215), unique among live sessions;
    /// by default the lowest free one.
    #[arg(long, value_name = "N", value_parser = parse_vni)]
    pub vni: Option<Vni>,
    /// Wait until every source has applied the session.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits: 90s, 5m (a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "60s", requires = "wait",
          value_parser = teefleet_model::parse_duration_or_seconds)]
    pub timeout: std::time::Duration,
}

/// Parses `N` or `N-M` into a port range. Only the syntax is checked here: the controller
/// rejects port 0, ports above 65535 and reversed ranges with a message naming the field.
pub fn parse_port(text: &str) -> Result<v1::PortRange, String> {
    let number = |s: &str| s.trim().parse::<u32>().map_err(|_| format!("{text:?} is not a port: use N or N-M"));
    match text.split_once('-') {
        Some((first, last)) => Ok(v1::PortRange { first: number(first)?, last: number(last)? }),
        None => {
            let port = number(text)?;
            Ok(v1::PortRange { first: port, last: port })
        }
    }
}

/// Parses `--sample` as the model does: a fraction in (0, 1] or a percentage.
pub fn parse_sample(text: &str) -> Result<Sample, String> {
    text.parse::<Sample>().map_err(|e| e.reason)
}

/// Checks `--source-tag` as the controller will (KEY=VALUE within EC2's limits) and passes
/// it on as typed.
pub fn parse_source_tag(text: &str) -> Result<String, String> {
    text.parse::<TagSelector>().map(|_| text.to_owned()).map_err(|e| e.reason)
}

/// Parses `--vni`: 1 to 16777215.
pub fn parse_vni(text: &str) -> Result<Vni, String> {
    text.parse::<Vni>().map_err(|e| e.reason)
}

/// Parses `--max-pps`: a whole number in the range the kernel's limit match accepts.
pub fn parse_max_pps(text: &str) -> Result<MaxPps, String> {
    let pps = text.parse::<u32>().map_err(|_| format!("{text:?} is not a whole number of packets per second"))?;
    MaxPps::new(pps).map_err(|e| e.reason)
}

impl CreateArgs {
    /// The request the controller receives; unset direction and protocol stay unspecified,
    /// which the controller reads as "both" and "all".
    pub fn to_request(&self) -> v1::CreateSessionRequest {
        v1::CreateSessionRequest {
            name: self.name.clone(),
            sources: self.sources.clone(),
            collector: self.collector.clone(),
            filter: Some(v1::Filter {
                direction: self.direction.map_or(v1::Direction::Unspecified, Into::into).into(),
                protocol: self.protocol.map_or(v1::Protocol::Unspecified, Into::into).into(),
                ports: self.port,
                cidrs: self.cidrs.clone(),
                sample: self.sample.map_or(0.0, Sample::fraction),
                max_pps: self.max_pps.map_or(0, MaxPps::get),
            }),
            allow_routed: self.allow_routed,
            source_tags: self.source_tags.clone(),
            vni: self.vni.map_or(0, Vni::get),
            disable_source_check: self.disable_source_check,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("fleetctl").chain(args.iter().copied()))
    }

    fn create(args: &[&str]) -> CreateArgs {
        let mut full = vec!["session", "create"];
        full.extend_from_slice(args);
        match parse(&full).expect("parses").command {
            Command::Session(SessionCommand::Create(c)) => c,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ports_parse_as_single_or_range() {
        assert_eq!(parse_port("443"), Ok(v1::PortRange { first: 443, last: 443 }));
        assert_eq!(parse_port("8000-8080"), Ok(v1::PortRange { first: 8000, last: 8080 }));
        // Out-of-range and reversed values are the controller's to reject.
        assert_eq!(parse_port("70000"), Ok(v1::PortRange { first: 70000, last: 70000 }));
        assert_eq!(parse_port("90-80"), Ok(v1::PortRange { first: 90, last: 80 }));
        assert!(parse_port("http").is_err());
        assert!(parse_port("80-").is_err());
        assert!(parse_port("-1").is_err());
        assert!(parse_port("").is_err());
    }

    #[test]
    fn create_builds_the_full_request() {
        let c = create(&[
            "web",
            "--source",
            "i-1",
            "--source",
            "i-2",
            "--collector",
            "i-9",
            "--direction",
            "ingress",
            "--protocol",
            "tcp",
            "--port",
            "80-90",
            "--cidr",
            "10.0.0.0/8",
            "--cidr",
            "192.168.0.0/16",
            "--sample",
            "1%",
            "--max-pps",
            "500",
            "--wait",
            "--timeout",
            "5",
        ]);
        assert!(c.wait);
        assert_eq!(c.timeout, std::time::Duration::from_secs(5));
        let req = c.to_request();
        assert_eq!(req.name, "web");
        assert_eq!(req.sources, ["i-1", "i-2"]);
        assert_eq!(req.collector, "i-9");
        let f = req.filter.expect("filter");
        assert_eq!(f.direction, v1::Direction::Ingress as i32);
        assert_eq!(f.protocol, v1::Protocol::Tcp as i32);
        assert_eq!(f.ports, Some(v1::PortRange { first: 80, last: 90 }));
        assert_eq!(f.cidrs, ["10.0.0.0/8", "192.168.0.0/16"]);
        assert_eq!((f.sample, f.max_pps), (0.01, 500));
    }

    #[test]
    fn sources_by_tag() {
        let c = create(&["web", "--source-tag", "role=web", "--source-tag", "env=prod", "--collector", "i-9"]);
        let req = c.to_request();
        assert_eq!(req.source_tags, ["role=web", "env=prod"]);
        assert!(req.sources.is_empty());
        let both = create(&[
            "web",
            "--source",
            "i-1",
            "--source-tag",
            "aws:autoscaling:groupName=web-asg=1",
            "--collector",
            "i-9",
        ]);
        let req = both.to_request();
        assert_eq!(
            (req.sources.as_slice(), req.source_tags.as_slice()),
            (&["i-1".to_owned()][..], &["aws:autoscaling:groupName=web-asg=1".to_owned()][..])
        );
        assert_eq!(create(&["s", "--source-tag", "env=", "--collector", "c"]).source_tags, ["env="]);

        assert_eq!(parse_source_tag("role").unwrap_err(), "\"role\" is not KEY=VALUE, e.g. role=web");
        let kind = |args: &[&str]| parse(args).map(|_| ()).map_err(|e| e.kind());
        let base = ["session", "create", "s", "--collector", "c"];
        let with = |extra: &[&'static str]| [&base[..], extra].concat();
        assert_eq!(kind(&with(&["--source-tag", "role"])), Err(ErrorKind::ValueValidation));
        assert_eq!(kind(&with(&["--source-tag", "=web"])), Err(ErrorKind::ValueValidation));
        let long_key = format!("{}=x", "k".repeat(129));
        assert_eq!(kind(&[&base[..], &["--source-tag", long_key.as_str()]].concat()), Err(ErrorKind::ValueValidation));
        let err = parse(&with(&["--source-tag", "role"])).expect_err("refused").to_string();
        assert!(err.contains("\"role\" is not KEY=VALUE, e.g. role=web"), "{err}");
        // Neither a source nor a tag.
        assert_eq!(kind(&with(&[])), Err(ErrorKind::MissingRequiredArgument));
    }

    #[test]
    fn throttle_values_are_checked_with_the_model() {
        assert_eq!(parse_sample("0.1").map(Sample::ppm), Ok(100_000));
        assert_eq!(parse_sample("0.5%").map(Sample::ppm), Ok(5_000));
        for bad in ["0", "1.5", "200%", "-1", "x", "0.0000001"] {
            let err = parse_sample(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        assert_eq!(parse_sample("1.5").unwrap_err(), "1.5 is not a fraction in (0, 1], e.g. 0.01");
        assert_eq!(parse_max_pps("1000").map(MaxPps::get), Ok(1000));
        assert_eq!(parse_max_pps("0").unwrap_err(), "0 is outside 1-1000000 packets per second");
        assert!(parse_max_pps("2000000").is_err());
        assert!(parse_max_pps("-5").unwrap_err().contains("not a whole number"));
        let kind = |args: &[&str]| parse(args).map(|_| ()).map_err(|e| e.kind());
        let base = ["session", "create", "s", "--source", "i", "--collector", "c"];
        let with = |extra: &[&'static str]| [&base[..], extra].concat();
        assert_eq!(kind(&with(&["--sample", "2"])), Err(ErrorKind::ValueValidation));
        assert_eq!(kind(&with(&["--max-pps", "0"])), Err(ErrorKind::ValueValidation));
    }

    #[test]
    fn create_defaults_leave_the_filter_unspecified() {
        let c = create(&["s", "--source", "i-1", "--collector", "i-9"]);
        assert!(!c.wait);
        assert_eq!(c.timeout, std::time::Duration::from_secs(60));
        let f = c.to_request().filter.expect("filter");
        assert_eq!(f.direction, v1::Direction::Unspecified as i32);
        assert_eq!(f.protocol, v1::Protocol::Unspecified as i32);
        assert_eq!(f.ports, None);
        assert!(f.cidrs.is_empty());
        assert_eq!((f.sample, f.max_pps), (0.0, 0), "zero means every packet and no cap");
    }

    #[test]
    fn the_version_names_the_commit() {
        let shown = parse(&["--version"]).expect_err("version is shown, not run");
        assert_eq!(shown.kind(), ErrorKind::DisplayVersion);
        assert!(shown.to_string().starts_with(&format!("fleetctl {} (commit ", env!("CARGO_PKG_VERSION"))), "{shown}");
    }

    #[test]
    fn usage_errors_are_clap_errors() {
        let kind = |args: &[&str]| parse(args).map(|_| ()).map_err(|e| e.kind());
        assert_eq!(kind(&["session", "create", "s", "--collector", "i-9"]), Err(ErrorKind::MissingRequiredArgument));
        assert_eq!(
            kind(&["session", "create", "s", "--source", "i", "--collector", "c", "--direction", "sideways"]),
            Err(ErrorKind::InvalidValue)
        );
        assert_eq!(
            kind(&["session", "create", "s", "--source", "i", "--collector", "c", "--port", "x"]),
            Err(ErrorKind::ValueValidation)
        );
        // --timeout only makes sense with --wait.
        assert_eq!(
            kind(&["session", "create", "s", "--source", "i", "--collector", "c", "--timeout", "3"]),
            Err(ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(kind(&["bogus"]), Err(ErrorKind::InvalidSubcommand));
    }

    #[test]
    fn a_collector_is_an_instance_or_a_name_with_an_address() {
        match parse(&["collector", "add", "--name", "ids-lb", "--ip", "10.0.0.5"]).expect("parses").command {
            Command::Collector(CollectorCommand::Add { instance_id: None, name: Some(name), ip: Some(ip), .. }) => {
                assert_eq!((name.as_str(), ip.as_str()), ("ids-lb", "10.0.0.5"));
            }
            other => panic!("unexpected {other:?}"),
        }
        for args in [
            &["collector", "add"][..],
            &["collector", "add", "--name", "lb"],
            &["collector", "add", "i-1", "--name", "lb", "--ip", "10.0.0.5"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = parse(&["session", "list", "-o", "json", "--controller", "http://c:1"]).expect("parses");
        assert_eq!(cli.output, Format::Json);
        assert_eq!(cli.connection.controller.as_deref(), Some("http://c:1"));
        let cli = parse(&["collector", "add", "i-1", "--ip", "10.0.0.9", "--ipv6", "fd00::9"]).expect("parses");
        assert_eq!(cli.output, Format::Table);
        match cli.command {
            Command::Collector(CollectorCommand::Add { instance_id, ip, ipv6, encap, name }) => {
                assert_eq!((encap.as_str(), name), ("vxlan", None));
                assert_eq!(instance_id.as_deref(), Some("i-1"));
                assert_eq!(ip.as_deref(), Some("10.0.0.9"));
                assert_eq!(ipv6.as_deref(), Some("fd00::9"));
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse(&["host", "get", "i-1", "-o", "json"]).expect("parses") {
            Cli { output: Format::Json, command: Command::Host(HostCommand::Get { host_id }), .. } => {
                assert_eq!(host_id, "i-1");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn connection_flags_are_global_and_hold_only_what_was_typed() {
        let cli = parse(&[
            "session",
            "list",
            "--token",
            "tf1.a.b",
            "--ca-cert",
            "/etc/ca.pem",
            "--config",
            "/c.toml",
            "--insecure",
        ])
        .expect("parses");
        assert_eq!(
            cli.connection,
            ConnectionFlags {
                controller: None,
                token: Some("tf1.a.b".into()),
                ca_cert: Some("/etc/ca.pem".into()),
                insecure: Some(true),
                config: Some("/c.toml".into()),
            }
        );
        let insecure = |args: &[&str]| parse(args).map(|c| c.connection.insecure).map_err(|e| e.kind());
        assert_eq!(insecure(&["--insecure=false", "host", "list"]), Ok(Some(false)));
        assert_eq!(insecure(&["--insecure=yes", "host", "list"]), Ok(Some(true)));
        assert_eq!(insecure(&["host", "list"]), Ok(None));
        // --insecure takes no separate value: the next word stays a subcommand.
        assert_eq!(insecure(&["--insecure", "host", "list"]), Ok(Some(true)));
        assert_eq!(insecure(&["--insecure=maybe", "host", "list"]), Err(ErrorKind::ValueValidation));
    }

    fn token_create(args: &[&str]) -> Result<TokenCreateArgs, clap::Error> {
        match parse(&[&["token", "create"], args].concat())?.command {
            Command::Token(TokenCommand::Create(c)) => Ok(c),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn token_create_builds_the_request() {
        let c = token_create(&["--role", "agent", "--ttl", "30m", "--uses", "3"]).expect("parses");
        assert_eq!(
            c.to_request(),
            Ok(v1::CreateTokenRequest {
                role: "agent".into(),
                ttl_seconds: 1800,
                uses: Some(3),
                host_id: String::new()
            })
        );
        let c = token_create(&["--role", "viewer", "--ttl", "1h"]).expect("parses");
        assert_eq!(
            c.to_request(),
            Ok(v1::CreateTokenRequest { role: "viewer".into(), ttl_seconds: 3600, ..Default::default() })
        );
        let c = token_create(&["--role", "agent", "--ttl", "1h", "--host", "i-0123456789abcdef0"]).expect("parses");
        assert_eq!(c.to_request().map(|r| r.host_id), Ok("i-0123456789abcdef0".to_owned()));
        let c = token_create(&["--role", "viewer", "--ttl", "1h", "--host", "i-0123456789abcdef0"]).expect("parses");
        assert_eq!(c.to_request(), Err(HOST_NEEDS_AGENT));
        // The controller's own refusal, given before connecting.
        let c = token_create(&["--role", "operator", "--ttl", "1h", "--uses", "2"]).expect("parses");
        assert_eq!(c.to_request(), Err(USES_NEEDS_AGENT));
        let cli = parse(&["token", "create", "--role", "admin", "--ttl", "1d", "--uses", "1"]).expect("parses");
        assert_eq!(cli.check(), Err((ErrorKind::ArgumentConflict, USES_NEEDS_AGENT.to_owned())));

        let kind = |args: &[&str]| token_create(args).map(|_| ()).map_err(|e| e.kind());
        assert_eq!(kind(&["--role", "root", "--ttl", "1h"]), Err(ErrorKind::InvalidValue));
        assert_eq!(kind(&["--role", "agent", "--ttl", "1.5h"]), Err(ErrorKind::ValueValidation));
        assert_eq!(kind(&["--role", "agent", "--ttl", "0m"]), Err(ErrorKind::ValueValidation));
        assert_eq!(kind(&["--role", "agent"]), Err(ErrorKind::MissingRequiredArgument));
        assert_eq!(kind(&["--ttl", "1h"]), Err(ErrorKind::MissingRequiredArgument));
        assert_eq!(kind(&["--role", "agent", "--ttl", "1h", "--uses", "many"]), Err(ErrorKind::ValueValidation));
        let err = token_create(&["--role", "agent", "--ttl", "1w"]).expect_err("weeks").to_string();
        assert!(err.contains("\"1w\" is not a duration; write e.g. 90s, 30m, 1h or 7d"), "{err}");
    }

    #[test]
    fn token_host_and_audit_commands_parse() {
        match parse(&["token", "revoke", "0a1b2c3d4e5f"]).expect("parses").command {
            Command::Token(TokenCommand::Revoke { id }) => assert_eq!(id, "0a1b2c3d4e5f"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse(&["token", "list", "-o", "json"]).expect("parses").command,
            Command::Token(TokenCommand::List)
        ));
        match parse(&["host", "revoke", "i-1"]).expect("parses").command {
            Command::Host(HostCommand::Revoke { host_id }) => assert_eq!(host_id, "i-1"),
            other => panic!("unexpected {other:?}"),
        }
        match parse(&["audit", "list", "--since", "2026-11-25T10:00:00+01:00", "--limit", "5"]).expect("parses").command
        {
            Command::Audit(AuditCommand::List { since, limit }) => {
                assert_eq!((since.as_deref(), limit), (Some("2026-11-25T10:00:00+01:00"), Some(5)));
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse(&["audit", "list"]).expect("parses").command {
            Command::Audit(AuditCommand::List { since, limit }) => assert_eq!((since, limit), (None, None)),
            other => panic!("unexpected {other:?}"),
        }
        let kind = |args: &[&str]| parse(args).map(|_| ()).map_err(|e| e.kind());
        assert_eq!(kind(&["audit", "list", "--since", "yesterday"]), Err(ErrorKind::ValueValidation));
        assert_eq!(kind(&["audit", "list", "--since", "2026-11-25"]), Err(ErrorKind::ValueValidation));
        assert_eq!(kind(&["audit", "list", "--limit", "0"]), Err(ErrorKind::ValueValidation));
        assert_eq!(kind(&["audit", "list", "--limit", "1001"]), Err(ErrorKind::ValueValidation));
        assert_eq!(kind(&["host", "revoke"]), Err(ErrorKind::MissingRequiredArgument));
        assert_eq!(kind(&["token", "revoke"]), Err(ErrorKind::MissingRequiredArgument));
    }

    #[test]
    fn config_set_needs_a_setting() {
        let cli = parse(&["config", "set", "--controller", "https://c:7300", "--insecure=false"]).expect("parses");
        assert_eq!(cli.check(), Ok(()));
        assert_eq!(cli.connection.insecure, Some(false));
        let cli = parse(&["config", "set", "--config", "/c.toml"]).expect("parses");
        assert_eq!(cli.check().map_err(|(kind, _)| kind), Err(ErrorKind::MissingRequiredArgument));
        assert_eq!(parse(&["config", "show"]).expect("parses").check(), Ok(()));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
