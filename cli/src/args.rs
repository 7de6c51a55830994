//! The top of fleetctl's command line: the global options (`-o`, and the connection
//! flags that `config.rs` layers over the environment and the config file, so clap reads
//! no environment variable itself), and the checks clap cannot express. Each command's
//! own arguments live with it in `cmd/`.

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::cmd::{Command, config::ConfigCommand, token::TokenCommand};
use crate::config::{CONNECTION, ConnectionFlags};
use crate::render::Format;

/// Where each command's help points for the connection options it does not list.
const CONNECTION_ELSEWHERE: &str = "Connection options (--controller, --token, --ca-cert, --insecure, --config) \
                                    go before or after the command; `fleetctl --help` describes them.";

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
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table, global = true, display_order = 990)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

/// The command line as fleetctl parses it and documents it: the connection options are
/// global (accepted before or after any subcommand), but only `fleetctl --help` lists
/// them, so that each command's help is about that command.
pub fn command() -> clap::Command {
    let root = Cli::command();
    // A subcommand that has a global argument already keeps its own copy: clap propagates
    // the root's only where the id is missing. The hidden copies stay global, so the
    // subcommands' own subcommands get them hidden too.
    let hidden: Vec<clap::Arg> = root
        .get_arguments()
        .filter(|arg| arg.get_help_heading() == Some(CONNECTION))
        .map(|arg| arg.clone().hide(true))
        .collect();
    root.mut_subcommands(|sub| point_to_connection(sub.args(hidden.clone())))
}

/// Adds the pointer to the connection options to a command's help and its subcommands'.
fn point_to_connection(command: clap::Command) -> clap::Command {
    command.after_help(CONNECTION_ELSEWHERE).mut_subcommands(point_to_connection)
}

impl Cli {
    /// Parses the process's arguments with `command()`, exiting as clap does on a usage
    /// error, `--help` or `--version`.
    pub fn parse_args() -> Self {
        let mut command = command();
        let mut matches = command.get_matches_mut();
        Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut command).exit())
    }

    /// Refuses what `check` refuses as clap does a usage error: the message and the
    /// subcommand's usage on stderr, exit code 2.
    pub fn check_or_exit(&self) {
        let Err((kind, message)) = self.check() else { return };
        let mut command = command();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::audit::AuditCommand;
    use crate::cmd::collector::CollectorCommand;
    use crate::cmd::host::HostCommand;
    use crate::cmd::session::{CreateArgs, SessionCommand, parse_max_pps, parse_port, parse_sample, parse_source_tag};
    use crate::cmd::token::{HOST_NEEDS_AGENT, TokenCreateArgs, USES_NEEDS_AGENT};
    use clap::error::ErrorKind;
    use teefleet_model::{MaxPps, Sample};
    use teefleet_proto::v1;

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
        assert!(c.wait.enabled);
        assert_eq!(c.wait.timeout, std::time::Duration::from_secs(5));
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
        assert!(!c.wait.enabled);
        assert_eq!(c.wait.timeout, std::time::Duration::from_secs(60));
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
        match parse(&["session", "get", "web", "--wait", "--timeout", "5m"]).expect("parses").command {
            Command::Session(SessionCommand::Get { name, wait }) => {
                assert_eq!((name.as_str(), wait.enabled, wait.timeout.as_secs()), ("web", true, 300));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(kind(&["session", "get", "web", "--timeout", "5m"]), Err(ErrorKind::MissingRequiredArgument));
        // --timeout only makes sense with --wait.
        assert_eq!(
            kind(&["session", "create", "s", "--source", "i", "--collector", "c", "--timeout", "3"]),
            Err(ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(kind(&["bogus"]), Err(ErrorKind::InvalidSubcommand));
        assert!(parse(&["completion", "zsh"]).is_ok());
        assert_eq!(kind(&["completion", "powershell"]), Err(ErrorKind::InvalidValue));
        assert_eq!(kind(&["completion"]), Err(ErrorKind::MissingRequiredArgument));
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
        assert_eq!(parse(&["-o", "yaml", "host", "list"]).expect("parses").output, Format::Yaml);
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
        command().debug_assert();
    }

    /// What fleetctl prints for `args`, parsed as `main` parses them.
    fn help(args: &[&str]) -> String {
        let shown = command().try_get_matches_from(std::iter::once("fleetctl").chain(args.iter().copied()));
        let shown = shown.expect_err("help is shown, not run");
        assert_eq!(shown.kind(), ErrorKind::DisplayHelp);
        shown.to_string()
    }

    #[test]
    fn only_the_top_help_lists_the_connection_options() {
        let top = help(&["--help"]);
        assert!(top.contains("Connection:\n      --controller <URL>"), "{top}");
        assert!(top.contains("[default: https://127.0.0.1:7300, or http://127.0.0.1:7300 with --insecure]"), "{top}");
        for args in [&["session", "create", "--help"][..], &["session", "--help"], &["token", "create", "-h"]] {
            let text = help(args);
            let own = text.trim_end().strip_suffix(CONNECTION_ELSEWHERE);
            let own = own.unwrap_or_else(|| panic!("{args:?} ends pointing to the top help: {text}"));
            for flag in ["--controller", "--token", "--ca-cert", "--insecure", "--config", "Connection:"] {
                assert!(!own.contains(flag), "{args:?} lists {flag}: {text}");
            }
        }
        // Hidden from help, still accepted anywhere.
        let parsed = command()
            .try_get_matches_from(["fleetctl", "session", "get", "web", "--controller", "http://c:1", "--insecure"])
            .and_then(|m| Cli::from_arg_matches(&m))
            .expect("parses");
        assert_eq!(
            (parsed.connection.controller.as_deref(), parsed.connection.insecure),
            (Some("http://c:1"), Some(true))
        );
    }

    #[test]
    fn help_shows_the_defaults() {
        let create = help(&["session", "create", "--help"]);
        for default in [
            "[default: both]",
            "[default: all]",
            "[default: any]",
            "[default: any peer]",
            "[default: every packet]",
            "[default: no cap]",
            "[default: the lowest free one]",
            "[default: 60s]",
            "[default: table]",
        ] {
            assert!(create.contains(default), "{default}: {create}");
        }
        assert!(help(&["collector", "add", "--help"]).contains("[default: vxlan]"));
        assert!(
            help(&["token", "create", "--help"]).contains("[default: unlimited until it expires, or 1 with --host]")
        );
        assert!(help(&["audit", "list", "--help"]).contains("[default: the controller's, 100]"));
    }
}
