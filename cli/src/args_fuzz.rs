//! fleetctl's arguments are typed by a person or pasted by a script. Whatever argv holds
//! (real words in odd orders, flags without values, garbage, bytes that are not UTF-8),
//! clap parses it or returns a usage error that renders and exits 2; a parsed `session
//! create` always builds its request, with exactly the throttle given; and the value
//! parsers agree with the model, so the CLI refuses nothing the controller would accept
//! and reads no value differently from it.

use std::{ffi::OsString, os::unix::ffi::OsStringExt};

use clap::Parser;
use proptest::{collection::vec, option, prelude::*, sample::select};
use teefleet_model::{
    MaxPps, PortRange, Sample, Throttle,
    strategy::{self, config, hostile},
};
use teefleet_proto::v1;

use crate::args::{Cli, Command, SessionCommand, parse_max_pps, parse_port, parse_sample};

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

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_argv_parses_or_is_a_usage_error(args in prop_oneof![vec(arg(), 0..10), create_argv()]) {
        match Cli::try_parse_from(std::iter::once(OsString::from("fleetctl")).chain(args)) {
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
                prop_assert!(create.wait || create.timeout == 60, "--timeout requires --wait");
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
