//! The agent's other readers of outside input: instance metadata answers (whatever
//! answers on a link-local address), `ip addr` output, `iptables-restore`'s error text,
//! and the operator's flags. For any input they must not panic (the agent runs as root
//! and a panic at start leaves the host unmirrored), and what they return must be what
//! their callers rely on: a well-formed answer reads back exactly, an address is a
//! canonical address, a failing line is a line of the input, an endpoint cannot break
//! the HTTP request it is written into.

use std::{ffi::OsString, net::IpAddr, os::unix::ffi::OsStringExt};

use clap::Parser;
use proptest::{collection::vec, prelude::*, sample::select};
use teefleet_model::strategy::{self, config, edited, hostile};

use crate::{
    CleanupConfig, Config, Invocation,
    config::{ControllerUrl, INTERVALS, http_authority},
    firewall::tools::failing_line,
    host::parse_addresses,
    imds::parse_response,
};

/// How an HTTP/1.1 answer delimits its body.
#[derive(Debug, Clone, Copy)]
enum Framing {
    Length,
    Chunked,
    Close,
}

/// A well-formed answer carrying `body`; `chunks` are the chunk sizes to cut it into.
fn http_answer(status: u16, body: &str, framing: Framing, chunks: &[usize]) -> String {
    let head = format!("HTTP/1.1 {status} Whatever\r\nServer: EC2ws\r\n");
    match framing {
        // Bytes past Content-Length are not part of the body.
        Framing::Length => format!("{head}content-length: {}\r\n\r\n{body}trailing", body.len()),
        Framing::Close => format!("{head}Connection: close\r\n\r\n{body}"),
        Framing::Chunked => {
            let mut text = format!("{head}Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = body;
            for &size in chunks.iter().chain(std::iter::repeat(&usize::MAX)) {
                if rest.is_empty() {
                    break;
                }
                let (chunk, after) = rest.split_at(size.clamp(1, rest.len()));
                text.push_str(&format!("{:x};ext=1\r\n{chunk}\r\n", chunk.len()));
                rest = after;
            }
            text.push_str("0\r\n\r\n");
            text
        }
    }
}

fn framing() -> impl Strategy<Value = Framing> + Clone {
    select(vec![Framing::Length, Framing::Chunked, Framing::Close])
}

/// Bytes HTTP framing gives meaning to, and some it does not allow.
const HTTP_BYTES: &[u8] = b"\r\n :;0123456789abcdefxHTP/.-\x00\xff";

fn damaged_answer() -> impl Strategy<Value = Vec<u8>> {
    let answer = (100..600u16, "[ -~]{0,24}", framing(), vec(1..6usize, 0..4))
        .prop_map(|(status, body, framing, chunks)| http_answer(status, &body, framing, &chunks).into_bytes());
    edited(answer, HTTP_BYTES, 4)
}

/// Words that `ip -o addr` prints, and near misses of addresses.
fn ip_addr_output() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        4 => select(vec![
            "2:", "eth0", "inet", "inet6", "brd", "scope", "global", "dynamic", "10.0.0.5/24", "2001:db8::5/64",
            "fe80::1/64", "::ffff:10.0.0.5/128", "10.0.0.5", "010.0.0.5/8", "/", "inet/", "\\",
        ])
        .prop_map(String::from),
        1 => hostile(strategy::ip().prop_map(|ip| ip.to_string())),
    ];
    vec(vec(word, 0..8).prop_map(|words| words.join(" ")), 0..6).prop_map(|lines| lines.join("\n"))
}

fn restore_stderr() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        select(vec![
            "Error occurred at line: ",
            "line ",
            "line: ",
            " failed",
            "\n",
            "0",
            "1",
            "2",
            "18446744073709551616"
        ])
        .prop_map(String::from),
        "[0-9]{1,3}",
        any::<String>(),
    ];
    vec(part, 0..6).prop_map(|parts| parts.concat())
}

/// Hosts an endpoint may name, bracketed IPv6 literals among them.
fn endpoint() -> impl Strategy<Value = String> + Clone {
    let host = prop_oneof!["[a-z0-9.-]{1,12}", strategy::ipv4().prop_map(|ip| ip.to_string()), "\\[[0-9a-f:]{2,12}\\]"];
    (host, proptest::option::of(0..70000u32), select(vec!["", "/"])).prop_map(|(host, port, slash)| match port {
        Some(port) => format!("http://{host}:{port}{slash}"),
        None => format!("http://{host}{slash}"),
    })
}

const AGENT_WORDS: &[&str] = &[
    "--controller",
    "http://c:7000",
    "http://[fd00::1]:81/",
    "https://c",
    "https://[fd00::1]:7000",
    "https://c,https://d:7000",
    "http://c:7000, https://d",
    "--insecure",
    "--join-token",
    "--ca-pin",
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "--host-id",
    "h1",
    "i-0123456789abcdef0",
    "--state-dir",
    "/nonexistent/teefleet",
    "--health-interval",
    "--drift-interval",
    "0",
    "1",
    "3600",
    "3601",
    "5s",
    "1h",
    "61m",
    "--iptables-backend",
    "auto",
    "nft",
    "legacy",
    "--metrics-listen",
    "off",
    "127.0.0.1:9477",
    "[::1]:0",
    "--imds-endpoint",
    "--help",
    "--version",
    "-h",
    "--",
    "-",
];

fn agent_argv() -> impl Strategy<Value = Vec<OsString>> {
    let arg = prop_oneof![
        6 => select(AGENT_WORDS).prop_map(OsString::from),
        2 => hostile(select(AGENT_WORDS).prop_map(String::from)).prop_map(OsString::from),
        1 => vec(any::<u8>(), 0..8).prop_map(OsString::from_vec),
    ];
    vec(arg, 0..12).prop_map(|args| std::iter::once(OsString::from("fleet-agent")).chain(args).collect())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_metadata_answer_is_read_or_refused(
        raw in prop_oneof![damaged_answer(), any::<Vec<u8>>()],
    ) {
        if let Ok((_, body)) = parse_response(&raw) {
            prop_assert!(body.len() <= raw.len());
        }
    }

    #[test]
    fn well_formed_metadata_answers_read_back(
        status in 100..600u16,
        body in "[ -~\\r\\n]{0,40}",
        framing in framing(),
        chunks in vec(1..8usize, 0..8),
    ) {
        let raw = http_answer(status, &body, framing, &chunks);
        let read = parse_response(raw.as_bytes()).ok();
        if status < 200 || status == 204 || status == 304 {
            // HTTP gives these answers no body, and a 1xx is only an interim one before the
            // real answer: none is read as more than its status, and none is a 200.
            prop_assert!(read.as_ref().is_none_or(|(s, b)| *s == status && b.is_empty()), "{:?} for {}", read, raw);
        } else {
            prop_assert_eq!(read, Some((status, body)), "{}", raw);
        }
    }

    #[test]
    fn ip_addr_output_gives_only_canonical_addresses(output in ip_addr_output()) {
        for addr in parse_addresses(&output) {
            let ip: Result<IpAddr, _> = addr.parse();
            prop_assert_eq!(ip.map(|ip| ip.to_string()), Ok(addr));
        }
    }

    #[test]
    fn the_failing_line_is_a_line_of_the_input(stderr in restore_stderr(), input in "([ -~]{0,6}\n){0,5}") {
        if let Some((number, line)) = failing_line(&stderr, &input) {
            prop_assert!(number >= 1);
            prop_assert_eq!(input.lines().nth(number - 1), Some(line.as_str()));
        }
    }

    #[test]
    fn an_endpoint_cannot_break_the_request_it_is_written_into(url in hostile(endpoint())) {
        match http_authority(&url) {
            Ok(authority) => {
                // It follows `Host: ` in an HTTP request and goes to connect().
                prop_assert!(!authority.contains(char::is_whitespace), "{:?}", authority);
                let (host, port) = authority.rsplit_once(':').ok_or_else(|| TestCaseError::fail("no port"))?;
                prop_assert!(!host.is_empty() && port.parse::<u16>().is_ok(), "{:?}", authority);
            }
            Err(e) => prop_assert!(!e.to_string().chars().any(char::is_control), "{:?}", e.to_string()),
        }
    }

    #[test]
    fn any_agent_argv_parses_or_is_a_usage_error(argv in agent_argv()) {
        match Config::try_parse_from(argv.clone()) {
            Ok(c) => {
                for url in &c.controller {
                    prop_assert_eq!(url.to_string().parse::<ControllerUrl>().ok(), Some(url.clone()));
                }
                if let Ok(urls) = c.check() {
                    prop_assert_eq!(urls.as_slice(), &c.controller[..]);
                }
                prop_assert!(http_authority(&c.imds_endpoint).is_ok());
                prop_assert!(INTERVALS.contains(&c.health_interval) && INTERVALS.contains(&c.drift_interval));
            }
            Err(e) => {
                let _ = e.render().to_string();
                prop_assert_eq!(e.exit_code(), if e.use_stderr() { 2 } else { 0 });
            }
        }
        if let Err(e) = CleanupConfig::try_parse_from(argv.clone()) {
            let _ = e.render().to_string();
        }
        // What the binary parses: the agent's flags, or a subcommand.
        if let Err(e) = Invocation::try_parse_from(argv) {
            let _ = e.render().to_string();
            prop_assert_eq!(e.exit_code(), if e.use_stderr() { 2 } else { 0 });
        }
    }
}
