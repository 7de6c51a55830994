//! Property tests (proptest) of fleetctl's arguments, which a person types or a script
//! pastes. Whatever argv holds (real words in odd orders, flags without values, garbage,
//! bytes that are not UTF-8), clap parses it or returns a usage error that renders and
//! exits 2; a parsed `session create` always builds its request, with exactly the
//! throttle given, a parsed `session update` with exactly the throttle and lifetime given
//! and the controller's verdict on it, and a parsed `token create` with exactly the
//! lifetime given; the
//! cross-flag check never panics; the value parsers agree with the model, so the CLI
//! refuses nothing the controller would accept and reads no value differently from it;
//! and the connection settings resolve with a flag over the environment over the file,
//! whatever each layer holds.

use std::{ffi::OsString, os::unix::ffi::OsStringExt};

use clap::Parser;
use proptest::{collection::vec, option, prelude::*, sample::select};
use teefleet_model::{
    MaxPps, PortRange, Sample, SessionUpdate, Throttle, TtlChange,
    strategy::{self, config, hostile},
};
use teefleet_proto::v1;

use crate::args::Cli;
use crate::cmd::Command;
use crate::cmd::session::{SessionCommand, parse_max_pps, parse_port, parse_sample};
use crate::cmd::session_update::OrDefault;
use crate::cmd::token::{TokenCommand, USES_NEEDS_AGENT};
use crate::config::{self, ConnectionFlags, FileConfig, LoadedFile, Source};

const WORDS: &[&str] = &[
    "session",
    "create",
    "list",
    "get",
    "delete",
    "collector",
    "add",
    "remove",
    "host",
    "help",
    "--source",
    "--collector",
    "--direction",
    "--protocol",
    "--port",
    "--cidr",
    "--sample",
    "--max-pps",
    "--wait",
    "update",
    "--add-source",
    "--remove-source",
    "--add-source-tag",
    "--remove-source-tag",
    "--dry-run",
    "any",
    "off",
    "--allow-routed",
    "--timeout",
    "--ip",
    "--ipv6",
    "-o",
    "--output",
    "--controller",
    "--help",
    "-h",
    "--version",
    "-V",
    "--",
    "-",
    "json",
    "table",
    "ingress",
    "egress",
    "both",
    "tcp",
    "udp",
    "icmp",
    "all",
    "--port=80",
    "--sample=1%",
    "-ojson",
    "--max-pps=0",
    "--timeout=-1",
    "80-90",
    "0.5",
    "1e3",
    "10.0.0.0/8",
    "i-0123456789abcdef0",
    "token",
    "revoke",
    "audit",
    "completion",
    "bash",
    "config",
    "set",
    "show",
    "--role",
    "--ttl",
    "--uses",
    "--since",
    "--limit",
    "--token",
    "--ca-cert",
    "--insecure",
    "--insecure=false",
    "--insecure=",
    "--config",
    "agent",
    "viewer",
    "operator",
    "admin",
    "30m",
    "1h",
    "0s",
    "7d",
    "3",
    "2026-11-25T10:00:00Z",
    "https://127.0.0.1:7300",
    "http://127.0.0.1:7300",
    "/etc/teefleet/ca.pem",
    "tf1.0a1b2c3d4e5f.00ff",
];

fn arg() -> impl Strategy<Value = OsString> {
    prop_oneof![
        6 => select(WORDS).prop_map(OsString::from),
        2 => hostile(select(WORDS).prop_map(String::from)).prop_map(OsString::from),
        // A shell passes whatever bytes it was given.
        1 => vec(any::<u8>(), 0..8).prop_map(OsString::from_vec),
    ]
}

/// Flags of `session create` with valid values, so parsing reaches the request often.
fn create_flags() -> impl Strategy<Value = Vec<String>> {
    let flag = |name: &'static str, value: BoxedStrategy<String>| value.prop_map(move |v| vec![name.to_owned(), v]);
    let flags = (
        option::of(flag("--direction", select(vec!["ingress", "egress", "both"]).prop_map(String::from).boxed())),
        option::of(flag("--protocol", select(vec!["tcp", "udp", "icmp", "all"]).prop_map(String::from).boxed())),
        option::of(flag("--port", strategy::port_range_text().boxed())),
        option::of(flag("--cidr", strategy::cidr_text().boxed())),
        option::of(flag("--sample", strategy::sample().prop_map(|s| s.to_string()).boxed())),
        option::of(flag("--max-pps", strategy::max_pps().prop_map(|m| m.to_string()).boxed())),
        option::of(prop_oneof![Just(vec!["--wait".to_owned()]), flag("--timeout", "[0-9]{1,3}".boxed())]),
    );
    flags.prop_map(|(a, b, c, d, e, f, g)| [a, b, c, d, e, f, g].into_iter().flatten().flatten().collect())
}

/// A `session create` that parses, then maybe random arguments after it.
fn create_argv() -> impl Strategy<Value = Vec<OsString>> {
    let ids = (vec(strategy::instance_id_text(), 1..3), strategy::instance_id_text());
    (strategy::session_name_text(), ids, create_flags(), vec(arg(), 0..3)).prop_map(
        |(name, (sources, collector), flags, extra)| {
            let mut argv: Vec<OsString> = vec!["session".into(), "create".into(), name.into()];
            for source in sources {
                argv.extend(["--source".into(), source.into()]);
            }
            argv.extend(["--collector".into(), collector.into()]);
            argv.extend(flags.into_iter().map(OsString::from));
            argv.extend(extra);
            argv
        },
    )
}

/// A `session update` with valid values or the words that reset them, then maybe random
/// arguments after it.
fn update_argv() -> impl Strategy<Value = Vec<OsString>> {
    let flag = |name: &'static str, value: BoxedStrategy<String>| value.prop_map(move |v| vec![name.to_owned(), v]);
    let flags = (
        option::of(flag("--port", prop_oneof![strategy::port_range_text(), Just("any".to_owned())].boxed())),
        option::of(flag(
            "--sample",
            prop_oneof![strategy::sample().prop_map(|s| s.to_string()), Just("all".into())].boxed(),
        )),
        option::of(flag(
            "--max-pps",
            prop_oneof![strategy::max_pps().prop_map(|m| m.to_string()), Just("off".into())].boxed(),
        )),
        option::of(flag("--ttl", prop_oneof!["[0-9]{1,3}[smhd]", Just("off".to_owned())].boxed())),
        option::of(flag("--add-source", strategy::host_id_text().boxed())),
        option::of(flag("--remove-source-tag", strategy::tag_selector_text().boxed())),
    );
    let flags =
        flags.prop_map(|(a, b, c, d, e, f)| [a, b, c, d, e, f].into_iter().flatten().flatten().collect::<Vec<_>>());
    (strategy::session_name_text(), flags, vec(arg(), 0..3)).prop_map(|(name, flags, extra)| {
        let mut argv: Vec<OsString> = vec!["session".into(), "update".into(), name.into()];
        argv.extend(flags.into_iter().map(OsString::from));
        argv.extend(extra);
        argv
    })
}

/// A `token create` that parses (bar `--uses` with a role other than agent, which the
/// check refuses), then maybe random arguments after it.
fn token_create_argv() -> impl Strategy<Value = Vec<OsString>> {
    let role = select(vec!["agent", "viewer", "operator", "admin"]);
    let ttl = ("[0-9]{1,6}", select(vec!["s", "m", "h", "d"])).prop_map(|(n, unit)| format!("{n}{unit}"));
    (role, ttl, option::of(any::<u32>()), vec(arg(), 0..3)).prop_map(|(role, ttl, uses, extra)| {
        let mut argv: Vec<OsString> =
            ["token", "create", "--role", role, "--ttl", &ttl].into_iter().map(OsString::from).collect();
        if let Some(n) = uses {
            argv.extend(["--uses".into(), n.to_string().into()]);
        }
        argv.extend(extra);
        argv
    })
}

/// A value for one layer of one setting: absent, empty (which unsets) or a word.
fn layer() -> impl Strategy<Value = Option<String>> {
    option::of(prop_oneof![Just(String::new()), "[a-z0-9:/.]{1,12}"])
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_argv_parses_or_is_a_usage_error(args in prop_oneof![vec(arg(), 0..10), create_argv(), update_argv(), token_create_argv()]) {
        let parsed = Cli::try_parse_from(std::iter::once(OsString::from("fleetctl")).chain(args));
        if let Ok(cli) = &parsed {
            // The checks clap cannot express refuse with a message, never a panic.
            if let Err((_, message)) = cli.check() {
                prop_assert!(!message.is_empty());
            }
        }
        match parsed {
            Ok(Cli { command: Command::Token(TokenCommand::Create(create)), .. }) => {
                let ttl = create.ttl;
                match create.to_request() {
                    Ok(request) => {
                        prop_assert_eq!(request.ttl_seconds, ttl.as_secs());
                        prop_assert!(request.ttl_seconds > 0);
                        prop_assert_eq!(request.uses, create.uses);
                        prop_assert!(request.uses.is_none() || request.role == "agent");
                    }
                    Err(e) => prop_assert_eq!(e, USES_NEEDS_AGENT),
                }
            }
            Ok(Cli { command: Command::Session(SessionCommand::Create(create)), .. }) => {
                let request = create.to_request();
                prop_assert_eq!((&request.name, &request.sources, &request.collector), (&create.name, &create.sources, &create.collector));
                let filter = request.filter.expect("create always sends a filter");
                prop_assert_eq!(filter.ports, create.port);
                // The controller reads zero as unset: the request carries exactly this throttle.
                prop_assert_eq!(
                    Throttle::from_zeroable(filter.sample, filter.max_pps),
                    Ok(Throttle::new(create.sample, create.max_pps))
                );
                prop_assert!(create.wait.enabled || create.wait.timeout == std::time::Duration::from_secs(60), "--timeout requires --wait");
            }
            Ok(Cli { command: Command::Session(SessionCommand::Update(update)), .. }) => {
                let request = update.to_request();
                prop_assert_eq!(&request.name, &update.name);
                let decoded = SessionUpdate::try_from(&request);
                // fleetctl refuses locally what the controller refuses, and only `--cidr any`
                // beside a network besides.
                let any_and_more = update.cidrs.len() > 1 && update.cidrs.iter().any(|c| c == "any");
                prop_assert_eq!(update.problems().is_empty(), decoded.is_ok() && !any_and_more);
                if let Ok(decoded) = decoded {
                    prop_assert_eq!(decoded.filter.max_pps, update.max_pps.map(|OrDefault(m)| m));
                    let sample = update.sample.map(|OrDefault(s)| Throttle::new(s, None).sample);
                    prop_assert_eq!(decoded.filter.sample, sample);
                    let ttl = match update.ttl {
                        None => TtlChange::Keep,
                        Some(OrDefault(None)) => TtlChange::Clear,
                        Some(OrDefault(Some(ttl))) => TtlChange::Set(ttl),
                    };
                    prop_assert_eq!(decoded.ttl, ttl);
                }
            }
            Ok(_) => {}
            Err(e) => {
                let _ = e.render().to_string();
                // Help and version go to stdout and exit 0; everything else is a usage error.
                prop_assert_eq!(e.exit_code(), if e.use_stderr() { 2 } else { 0 }, "{:?}", e.kind());
            }
        }
    }

    #[test]
    fn settings_take_the_first_layer_that_sets_them(
        flag in layer(),
        env in layer(),
        file in layer(),
        insecure in (option::of(any::<bool>()), option::of(select(vec!["", "1", "0", "true", "off", "maybe"])), option::of(any::<bool>())),
    ) {
        let flags = ConnectionFlags { token: flag.clone(), insecure: insecure.0, ..Default::default() };
        let vars = [("FLEET_TOKEN", env.clone()), ("FLEET_INSECURE", insecure.1.map(str::to_owned))];
        let lookup = |name: &str| vars.iter().find(|(n, _)| *n == name).and_then(|(_, v)| v.clone());
        let loaded = LoadedFile {
            path: Some("/c.toml".into()),
            config: FileConfig { token: file.clone(), insecure: insecure.2, ..Default::default() },
        };
        let resolved = config::resolve(&flags, &lookup, &loaded);
        // Only a bad FLEET_INSECURE fails, and only when no flag hides it.
        let Ok(settings) = resolved else {
            prop_assert!(insecure.1 == Some("maybe") && insecure.0.is_none());
            return Ok(());
        };
        // An empty environment variable counts as unset; an empty flag or key unsets.
        let expected = [
            (flag, Source::Flag("--token")),
            (env.filter(|v| !v.is_empty()), Source::Env("FLEET_TOKEN")),
            (file, Source::File("/c.toml".into())),
        ]
        .into_iter()
        .find_map(|(v, s)| v.map(|v| (v, s)))
        .filter(|(v, _)| !v.trim().is_empty());
        prop_assert_eq!(settings.token.map(|t| (t.value, t.source)), expected);
        prop_assert!(insecure.1 != Some("maybe") || insecure.0.is_some());
        let insecure_env = insecure.1.filter(|v| !v.is_empty()).map(|v| matches!(v, "1" | "true"));
        let want = insecure.0.or(insecure_env).or(insecure.2).unwrap_or(false);
        prop_assert_eq!(settings.insecure.value, want);
        prop_assert_eq!(settings.controller.value.starts_with("http://"), want);
    }

    #[test]
    fn ports_the_model_accepts_the_cli_reads_alike(text in hostile(strategy::port_range_text())) {
        let parsed = parse_port(&text);
        if let Ok(range) = text.parse::<PortRange>() {
            prop_assert_eq!(&parsed, &Ok(v1::PortRange { first: range.first().into(), last: range.last().into() }));
        }
        // clap prints the message; escaping keeps the terminal safe from what was typed.
        if let Err(e) = parsed {
            prop_assert!(!e.chars().any(char::is_control), "{:?}", e);
        }
    }

    #[test]
    fn throttle_flags_are_the_models_throttle(
        sample in hostile(strategy::sample().prop_map(|s| s.to_string())),
        pps in hostile(prop_oneof![strategy::max_pps().prop_map(|m| m.to_string()), "[0-9]{1,10}"]),
    ) {
        let parsed = parse_sample(&sample);
        prop_assert_eq!(parsed.clone().ok(), sample.parse::<Sample>().ok());
        let parsed_pps = parse_max_pps(&pps);
        prop_assert_eq!(parsed_pps.clone().ok(), pps.parse::<u32>().ok().and_then(|n| MaxPps::new(n).ok()));
        for e in [parsed.err(), parsed_pps.err()].into_iter().flatten() {
            prop_assert!(!e.is_empty() && !e.chars().any(char::is_control), "{:?}", e);
        }
    }
}
