//! The command line: clap derive types and the light parsing the CLI does itself (enum
//! names, the `N` / `N-M` port syntax, and the throttle, parsed with the model's own types
//! so a range error reads the same as the controller's). Everything else — CIDRs, port
//! ranges, names — goes to the controller as typed, which validates it and answers with a
//! message naming the field.

use clap::{Args, Parser, Subcommand, ValueEnum};
use teefleet_model::{MaxPps, Sample};
use teefleet_proto::v1;

/// The default admin endpoint: the controller on the same machine.
pub const DEFAULT_CONTROLLER: &str = "http://127.0.0.1:7300";

/// fleetctl: manage teefleet's mirroring sessions, collectors and hosts.
#[derive(Debug, Parser)]
#[command(name = "fleetctl", version, about)]
pub struct Cli {
    /// The controller's admin endpoint.
    #[arg(long, env = "FLEET_CONTROLLER", default_value = DEFAULT_CONTROLLER, global = true)]
    pub controller: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table, global = true)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
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
}

#[derive(Debug, Subcommand)]
pub enum CollectorCommand {
    /// Register an EC2 instance as a collector.
    Add {
        /// The collector's EC2 instance id.
        instance_id: String,
        /// The IPv4 address to send clones to; defaults to the instance's primary private IP.
        #[arg(long)]
        ip: Option<String>,
        /// The IPv6 address to send IPv6 clones to; defaults to the instance's first IPv6
        /// address, if it has one. Without one, sessions to this collector mirror IPv4 only.
        #[arg(long)]
        ipv6: Option<String>,
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
pub struct CreateArgs {
    /// The session's name.
    pub name: String,
    /// A source host's instance id (repeat for several sources).
    #[arg(long = "source", value_name = "INSTANCE_ID", required = true)]
    pub sources: Vec<String>,
    /// The collector's instance id.
    #[arg(long, value_name = "INSTANCE_ID")]
    pub collector: String,
    /// Which traffic of the sources to mirror.
    #[arg(long, value_enum)]
    pub direction: Option<DirectionArg>,
    /// The protocol to mirror.
    #[arg(long, value_enum)]
    pub protocol: Option<ProtocolArg>,
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
    /// Wait until every source has applied the session.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, requires = "wait")]
    pub timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    Ingress,
    Egress,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    Tcp,
    Udp,
    Icmp,
    All,
}

impl From<DirectionArg> for v1::Direction {
    fn from(d: DirectionArg) -> Self {
        match d {
            DirectionArg::Ingress => v1::Direction::Ingress,
            DirectionArg::Egress => v1::Direction::Egress,
            DirectionArg::Both => v1::Direction::Both,
        }
    }
}

impl From<ProtocolArg> for v1::Protocol {
    fn from(p: ProtocolArg) -> Self {
        match p {
            ProtocolArg::Tcp => v1::Protocol::Tcp,
            ProtocolArg::Udp => v1::Protocol::Udp,
            ProtocolArg::Icmp => v1::Protocol::Icmp,
            ProtocolArg::All => v1::Protocol::All,
        }
    }
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
        assert_eq!(c.timeout, 5);
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
        assert_eq!(c.timeout, 60);
        let f = c.to_request().filter.expect("filter");
        assert_eq!(f.direction, v1::Direction::Unspecified as i32);
        assert_eq!(f.protocol, v1::Protocol::Unspecified as i32);
        assert_eq!(f.ports, None);
        assert!(f.cidrs.is_empty());
        assert_eq!((f.sample, f.max_pps), (0.0, 0), "zero means every packet and no cap");
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
    fn global_options_go_anywhere() {
        let cli = parse(&["session", "list", "-o", "json", "--controller", "http://c:1"]).expect("parses");
        assert_eq!(cli.output, Format::Json);
        assert_eq!(cli.controller, "http://c:1");
        let cli = parse(&["collector", "add", "i-1", "--ip", "10.0.0.9", "--ipv6", "fd00::9"]).expect("parses");
        assert_eq!(cli.output, Format::Table);
        match cli.command {
            Command::Collector(CollectorCommand::Add { instance_id, ip, ipv6 }) => {
                assert_eq!(instance_id, "i-1");
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
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
