//! Every parser and constructor here takes outside input (a gRPC request, a pushed rule
//! set, a state file, a database row, a flag), and its output ends up in iptables rule
//! text. These properties hold for any input, not just the examples in the unit tests:
//! nothing panics; a value is accepted exactly when it meets the invariant its type
//! documents; an accepted value prints as text that parses back to itself (and, for the
//! identifiers, is the input itself), and serde accepts exactly what `FromStr` or the
//! constructor accepts, so a file or a row cannot smuggle in what a request could not.

use std::{collections::BTreeSet, fmt::Debug, net::IpAddr, str::FromStr};

use proptest::{collection::vec, num::f64 as float, option, prelude::*, sample::select};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{
    Cidr, CollectorId, CompileInput, Direction, EventKind, Filter, HostId, InstanceId, MaxPps, MirrorRule, PortRange,
    Protocol, RuleDirection, RuleSet, Sample, SessionName, SessionSpec, TagSelector, Throttle, ValidationError,
    check_gateway, compile, limits,
    strategy::{self, config, hostile},
};

/// Errors quote the input with `{:?}`, which escapes control characters, so hostile input
/// cannot put a line break or a terminal escape into a log line or a Nack.
fn check_error(e: &ValidationError, field: &str) -> Result<(), TestCaseError> {
    prop_assert!(e.field == field, "field {:?}, expected {:?}: {}", e.field, field, e);
    prop_assert!(!e.reason.is_empty());
    prop_assert!(!e.to_string().chars().any(char::is_control), "control character in {:?}", e.to_string());
    Ok(())
}

/// Parses `text` both ways (`FromStr` and serde) and checks they agree with `valid`; an
/// accepted identifier is the input itself.
fn check_string_id<T>(text: &str, valid: bool, field: &str) -> Result<(), TestCaseError>
where
    T: FromStr<Err = ValidationError> + ToString + DeserializeOwned + PartialEq + Debug + Clone,
{
    let parsed = text.parse::<T>();
    let via_serde = serde_json::from_value::<T>(Value::String(text.to_owned())).ok();
    prop_assert_eq!(&via_serde, &parsed.clone().ok(), "serde and FromStr disagree on {:?}", text);
    match parsed {
        Ok(value) => {
            prop_assert!(valid, "{:?} accepted", text);
            prop_assert_eq!(value.to_string(), text);
        }
        Err(e) => {
            prop_assert!(!valid, "{:?} refused: {}", text, e);
            check_error(&e, field)?;
        }
    }
    Ok(())
}

/// The alphabet `SessionName` and `HostId` document: it needs no quoting in a rule.
fn is_token(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    (1..=max).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    })
}

fn is_event_kind(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// What `TagSelector` documents: a key of 1 to 128 characters before the first `=`, a
/// value of at most 256 after it, no control character anywhere.
fn is_tag(s: &str) -> bool {
    s.split_once('=').is_some_and(|(key, value)| {
        (1..=128).contains(&key.chars().count())
            && value.chars().count() <= 256
            && !s.chars().any(crate::text::acts_on_terminals)
    })
}

fn id_text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        strategy::session_name_text(),
        strategy::host_id_text(),
        strategy::instance_id_text(),
        strategy::event_kind_text(),
        // Just past the length limits.
        "[a-z0-9]{62,66}",
    ]
}

/// Numbers just inside and outside a `1..=max` range, and anywhere in `u32`.
fn around(max: u32) -> impl Strategy<Value = u32> {
    prop_oneof![select(vec![0, 1, 2, max - 1, max, max + 1, u32::MAX]), 0..=max + 1, any::<u32>()]
}

fn sample_text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        strategy::sample().prop_map(|s| s.to_string()),
        "0\\.[0-9]{1,9}",
        "[0-9]{1,3}(\\.[0-9]{1,5})?%",
        "[0-9]\\.?[0-9]*[eE][+-]?[0-9]{1,3}%?",
        select(vec!["1", "0", "-0", "NaN", "inf", "-inf", "1e-7", "100%", "0.0000005", "0.00000049"])
            .prop_map(String::from),
    ]
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn identifiers_accept_exactly_their_alphabet(text in hostile(id_text())) {
        check_string_id::<SessionName>(&text, is_token(&text, 63), "")?;
        check_string_id::<HostId>(&text, is_token(&text, 64), "")?;
        check_string_id::<InstanceId>(&text, is_instance_id(&text), "")?;
        check_string_id::<EventKind>(&text, is_event_kind(&text), "kind")?;
        if let Ok(id) = text.parse::<InstanceId>() {
            prop_assert_eq!(HostId::from(id).to_string(), text, "an instance id is a valid host id");
        }
    }

    #[test]
    fn tag_selectors_accept_exactly_ec2_tags(text in hostile(strategy::tag_selector_text())) {
        check_string_id::<TagSelector>(&text, is_tag(&text), "tag")?;
        if let Ok(tag) = text.parse::<TagSelector>() {
            prop_assert!(!tag.key().contains('='));
            prop_assert!(tag.is_carried_by([(tag.key(), tag.value())]));
        }
    }

    #[test]
    fn enums_accept_exactly_their_names(
        text in hostile(select(vec!["all", "tcp", "udp", "icmp", "ingress", "egress", "both"]).prop_map(String::from)),
    ) {
        match text.parse::<Protocol>() {
            Ok(p) => prop_assert_eq!(p.as_str(), text.as_str()),
            Err(e) => {
                prop_assert!(!["all", "tcp", "udp", "icmp"].contains(&text.as_str()));
                check_error(&e, "protocol")?;
            }
        }
        match text.parse::<Direction>() {
            Ok(d) => prop_assert_eq!(d.as_str(), text.as_str()),
            Err(e) => {
                prop_assert!(!["ingress", "egress", "both"].contains(&text.as_str()));
                check_error(&e, "direction")?;
            }
        }
    }

    #[test]
    fn cidrs_are_networks_that_print_back(text in hostile(strategy::cidr_text())) {
        let parsed = text.parse::<Cidr>();
        let via_serde = serde_json::from_value::<Cidr>(Value::String(text.clone())).ok();
        prop_assert_eq!(via_serde, parsed.clone().ok());
        match parsed {
            Ok(c) => {
                prop_assert_eq!(c.to_string().parse::<Cidr>(), Ok(c));
                prop_assert_eq!(strategy::network(c.addr(), c.prefix()), (c.addr(), c.prefix()), "host bits clear");
                let max = if c.is_ipv4() { 32 } else { 128 };
                prop_assert!(c.prefix() <= max);
                prop_assert!(c.contains(c.addr()));
            }
            Err(e) => check_error(&e, "cidr")?,
        }
    }

    #[test]
    fn a_cidr_is_accepted_exactly_when_its_host_bits_are_clear(addr in strategy::ip(), prefix in any::<u8>()) {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let text = format!("{addr}/{prefix}");
        let clear = strategy::network(addr, prefix) == (addr, prefix);
        prop_assert_eq!(text.parse::<Cidr>().is_ok(), prefix <= max && clear, "{}", text);
        let (net, prefix) = strategy::network(addr, prefix);
        let c: Cidr = format!("{net}/{prefix}").parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(c.to_string(), format!("{net}/{prefix}"));
        prop_assert!(c.contains(addr), "{} contains the address it was made from", c);
    }

    #[test]
    fn port_ranges_are_ordered_and_print_back(text in hostile(strategy::port_range_text())) {
        match text.parse::<PortRange>() {
            Ok(r) => {
                prop_assert!(1 <= r.first() && r.first() <= r.last());
                prop_assert_eq!(r.to_string().parse::<PortRange>(), Ok(r));
            }
            Err(e) => check_error(&e, "port")?,
        }
    }

    #[test]
    fn port_numbers_are_checked(first in around(65535), last in around(65535)) {
        let valid = (1..=65535).contains(&first) && (1..=65535).contains(&last) && first <= last;
        let built = PortRange::new(first, last);
        prop_assert_eq!(built.is_ok(), valid);
        let via_serde = serde_json::from_value::<PortRange>(json!([first, last])).ok();
        prop_assert_eq!(via_serde, built.clone().ok());
        match built {
            Ok(r) => prop_assert_eq!((u32::from(r.first()), u32::from(r.last())), (first, last)),
            Err(e) => check_error(&e, "port")?,
        }
    }

    #[test]
    fn samples_parse_to_whole_millionths(text in hostile(sample_text())) {
        match text.parse::<Sample>() {
            Ok(s) => {
                prop_assert!((1..=Sample::PER_MILLION).contains(&s.ppm()));
                let shown = s.to_string();
                prop_assert_eq!(shown.parse::<Sample>(), Ok(s));
                // `1` or `0.` and at most six digits without a trailing zero.
                let digits = shown.strip_prefix("0.").unwrap_or("");
                prop_assert!(
                    shown == "1"
                        || ((1..=6).contains(&digits.len())
                            && digits.bytes().all(|c| c.is_ascii_digit())
                            && !digits.ends_with('0')),
                    "{:?} shows as {:?}", text, shown
                );
            }
            Err(e) => check_error(&e, "sample")?,
        }
    }

    #[test]
    fn sample_fractions_round_to_the_nearest_millionth(fraction in float::ANY) {
        match Sample::from_fraction(fraction) {
            Ok(s) => {
                prop_assert!(fraction > 0.0 && fraction <= 1.0);
                prop_assert!((s.fraction() - fraction).abs() <= 0.5e-6 + f64::EPSILON, "{} became {}", fraction, s);
            }
            Err(e) => {
                prop_assert!(!(0.5e-6 + f64::EPSILON..=1.0).contains(&fraction), "{} refused", fraction);
                check_error(&e, "sample")?;
            }
        }
    }

    #[test]
    fn samples_and_caps_are_checked(ppm in around(Sample::PER_MILLION), pps in around(MaxPps::MAX)) {
        let sample = Sample::from_ppm(ppm);
        prop_assert_eq!(sample.is_ok(), (1..=Sample::PER_MILLION).contains(&ppm));
        prop_assert_eq!(serde_json::from_value::<Sample>(json!(ppm)).ok(), sample.clone().ok());
        match sample {
            // The wire carries the fraction: it must come back as the same sample.
            Ok(s) => prop_assert_eq!(Sample::from_fraction(s.fraction()), Ok(s)),
            Err(e) => check_error(&e, "sample")?,
        }
        let cap = MaxPps::new(pps);
        prop_assert_eq!(cap.is_ok(), (1..=MaxPps::MAX).contains(&pps));
        prop_assert_eq!(serde_json::from_value::<MaxPps>(json!(pps)).ok(), cap.clone().ok());
        match cap {
            Ok(c) => prop_assert_eq!(c.to_string().parse::<u32>().ok().map(MaxPps::new), Some(Ok(c))),
            Err(e) => check_error(&e, "max_pps")?,
        }
    }

    #[test]
    fn zero_means_unset_on_the_wire(sample in float::ANY, pps in around(MaxPps::MAX)) {
        let valid = (sample == 0.0 || Sample::from_fraction(sample).is_ok()) && (pps == 0 || MaxPps::new(pps).is_ok());
        match Throttle::from_zeroable(sample, pps) {
            Ok(t) => {
                prop_assert!(valid);
                let wanted = if sample == 0.0 { None } else { Sample::from_fraction(sample).ok() };
                prop_assert_eq!(t.sample, wanted.filter(|s| !s.is_all()), "a full sample is stored as none");
                prop_assert_eq!(t.max_pps.map(MaxPps::get), (pps != 0).then_some(pps));
            }
            Err(e) => {
                prop_assert!(!valid);
                prop_assert!(e.field == "sample" || e.field == "max_pps");
            }
        }
    }
    /// A throttle comes back from a state file or a database row inside a rule; read
    /// back, it must be the one `Throttle::new` builds, or equal rules compare unequal.
    #[test]
    fn throttles_read_back_as_built(
        ppm in option::of(around(Sample::PER_MILLION)),
        pps in option::of(around(MaxPps::MAX)),
    ) {
        let read = serde_json::from_value::<Throttle>(json!({ "sample": ppm, "max_pps": pps }));
        let sample = ppm.map(Sample::from_ppm).transpose();
        let max_pps = pps.map(MaxPps::new).transpose();
        let built = sample.and_then(|s| Ok(Throttle::new(s, max_pps?)));
        prop_assert_eq!(read.ok(), built.ok());
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn rules_need_a_usable_gateway_and_a_peer_of_its_family(
        session in strategy::session_name(),
        direction in strategy::rule_direction(),
        gateway in strategy::ip(),
        protocol in strategy::protocol(),
        ports in option::of(strategy::port_range()),
        peer in option::of(strategy::cidr()),
        throttle in strategy::throttle(),
    ) {
        let valid = check_gateway(gateway).is_ok()
            && (ports.is_none() || protocol.has_ports())
            && peer.is_none_or(|p| p.is_ipv4() == gateway.is_ipv4());
        match MirrorRule::new(session.clone(), direction, gateway, protocol, ports, peer) {
            Ok(rule) => {
                prop_assert!(valid);
                let rule = rule.with_throttle(throttle);
                prop_assert_eq!((rule.session(), rule.direction(), rule.gateway()), (&session, direction, Some(gateway)));
                prop_assert_eq!((rule.protocol(), rule.ports(), rule.throttle()), (protocol, ports, throttle));
                prop_assert_eq!(rule.peer(), peer.filter(|p| p.prefix() != 0), "/0 is stored as no peer");
                let json = serde_json::to_value(&rule).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(serde_json::from_value::<MirrorRule>(json).ok(), Some(rule));
            }
            Err(e) => {
                prop_assert!(!valid);
                prop_assert!(["gateway", "ports", "peer_cidr"].contains(&e.field.as_str()), "{}", e);
            }
        }
    }

    #[test]
    fn rule_sets_are_sorted_unique_and_bounded(
        version in prop_oneof![0..=RuleSet::MAX_VERSION, any::<u64>()],
        rules in prop_oneof![
            8 => vec(strategy::mirror_rule(), 0..8),
            1 => (limits::MAX_RULES..=limits::MAX_RULES + 1, strategy::mirror_rule()).prop_map(|(n, r)| vec![r; n]),
        ],
    ) {
        match RuleSet::new(version, rules.clone()) {
            Ok(set) => {
                prop_assert!(rules.len() <= limits::MAX_RULES && version <= RuleSet::MAX_VERSION);
                prop_assert!(set.rules().windows(2).all(|w| w[0] < w[1]), "sorted and unique");
                prop_assert_eq!(set.rules().iter().collect::<BTreeSet<_>>(), rules.iter().collect::<BTreeSet<_>>());
                let json = serde_json::to_vec(&set).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(serde_json::from_slice::<RuleSet>(&json).ok(), Some(set));
            }
            Err(e) if version > RuleSet::MAX_VERSION => check_error(&e, "version")?,
            Err(e) => {
                prop_assert!(rules.len() > limits::MAX_RULES);
                check_error(&e, "rules")?;
            }
        }
    }

    #[test]
    fn filters_check_ports_and_bound_cidrs(
        direction in strategy::direction(),
        protocol in strategy::protocol(),
        ports in option::of(strategy::port_range()),
        cidrs in prop_oneof![vec(strategy::cidr(), 0..6), vec(strategy::cidr(), limits::MAX_CIDRS..=limits::MAX_CIDRS + 1)],
    ) {
        let valid = (ports.is_none() || protocol.has_ports()) && cidrs.len() <= limits::MAX_CIDRS;
        match Filter::new(direction, protocol, ports, cidrs.clone()) {
            Ok(f) => {
                prop_assert!(valid);
                prop_assert!(f.cidrs().windows(2).all(|w| w[0] < w[1]), "sorted and unique");
                // Kept: given networks, none inside another, together covering every given one.
                let covers = |o: &Cidr, c: &Cidr| o.prefix() <= c.prefix() && o.contains(c.addr());
                prop_assert!(f.cidrs().iter().all(|k| cidrs.contains(k)));
                prop_assert!(f.cidrs().iter().all(|k| !f.cidrs().iter().any(|o| o != k && covers(o, k))));
                prop_assert!(cidrs.iter().all(|c| f.cidrs().iter().any(|k| covers(k, c))));
                prop_assert_eq!((f.direction(), f.protocol(), f.ports()), (direction, protocol, ports));
            }
            Err(e) => {
                prop_assert!(!valid);
                prop_assert!(e.field == "port" || e.field == "cidr");
            }
        }
    }

    #[test]
    fn sessions_need_sources_or_tags_and_not_their_collector(
        name in strategy::session_name(),
        collector in strategy::instance_id(),
        mut sources in prop_oneof![
            vec(strategy::host_id(), 0..6),
            // Around the limit, counted before duplicates are dropped.
            (limits::MAX_SOURCES..=limits::MAX_SOURCES + 1, strategy::host_id()).prop_map(|(n, h)| vec![h; n]),
        ],
        selectors in prop_oneof![
            4 => vec(strategy::tag_selector(), 0..4),
            1 => vec(strategy::tag_selector(), limits::MAX_SELECTORS..=limits::MAX_SELECTORS + 1),
        ],
        with_collector in any::<bool>(),
        allow_routed in any::<bool>(),
        filter in strategy::filter(3),
    ) {
        if with_collector {
            sources.push(collector.clone().into());
        }
        let distinct: BTreeSet<&TagSelector> = selectors.iter().collect();
        let keys: BTreeSet<&str> = distinct.iter().map(|t| t.key()).collect();
        let valid = (!sources.is_empty() || !selectors.is_empty())
            && sources.len() <= limits::MAX_SOURCES
            && selectors.len() <= limits::MAX_SELECTORS
            && keys.len() == distinct.len()
            && !with_collector;
        let built = SessionSpec::selecting(
            name.clone(), sources.clone(), selectors.clone(), CollectorId::from(collector.clone()), filter.clone(),
        );
        match built.map(|s| s.with_allow_routed(allow_routed)) {
            Ok(s) => {
                prop_assert!(valid);
                prop_assert!(s.sources().windows(2).all(|w| w[0] < w[1]), "sorted and unique");
                prop_assert!(s.selectors().windows(2).all(|w| w[0].key() < w[1].key()), "one value per key");
                prop_assert_eq!(s.sources().iter().collect::<BTreeSet<_>>(), sources.iter().collect::<BTreeSet<_>>());
                prop_assert_eq!(s.selectors().iter().collect::<BTreeSet<_>>(), distinct);
                prop_assert_eq!((s.name(), s.collector(), s.filter()), (&name, &CollectorId::from(collector.clone()), &filter));
                prop_assert_eq!(s.allow_routed(), allow_routed);
            }
            Err(e) => {
                prop_assert!(!valid);
                prop_assert!(e.field == "sources" || e.field == "source_tags", "{}", e);
                check_error(&e, &e.field)?;
            }
        }
    }
}

/// A session for `compile`: distinct names, sources from a small pool so hosts share
/// sessions, and collector addresses that may be unusable or of one family only.
fn compile_input(index: usize) -> impl Strategy<Value = CompileInput> {
    let pool = vec!["h1", "h2", "h3", "i-0123456789abcdef0"];
    (
        vec(select(pool), 1..4),
        prop_oneof![
            4 => (option::of(strategy::ipv4()), option::of(strategy::ipv6()))
                .prop_map(|(a, b)| a.map(IpAddr::V4).into_iter().chain(b.map(IpAddr::V6)).collect()),
            1 => vec(strategy::ip(), 0..3),
        ],
        strategy::filter(3),
    )
        .prop_map(move |(sources, collector_ips, filter)| CompileInput {
            vni: None,
            collector: "collector".parse().expect("a host id"),
            name: format!("s{index}").parse().expect("a session name"),
            sources: sources.into_iter().map(|h| h.parse().expect("a host id")).collect(),
            collector_ips,
            filter,
        })
}

type RuleKey = (String, RuleDirection, IpAddr, Option<Cidr>);

/// The rules one session must give each of its hosts, by the compiler's documented rules:
/// each collector address mirrors its own family, one rule per direction and per CIDR of
/// that family (or one for any peer). `None` when the session must be refused.
fn expected_rules(s: &CompileInput) -> Option<BTreeSet<RuleKey>> {
    let directions: &[RuleDirection] = match s.filter.direction() {
        Direction::Ingress => &[RuleDirection::Ingress],
        Direction::Egress => &[RuleDirection::Egress],
        Direction::Both => &[RuleDirection::Ingress, RuleDirection::Egress],
    };
    let has_family = |v4: bool| s.collector_ips.iter().any(|ip| ip.is_ipv4() == v4);
    if s.collector_ips.is_empty() || s.filter.cidrs().iter().any(|c| !has_family(c.is_ipv4())) {
        return None;
    }
    let mut keys = BTreeSet::new();
    for &gateway in &s.collector_ips {
        let peers: Vec<Option<Cidr>> = if s.filter.cidrs().is_empty() {
            vec![None]
        } else {
            // A /0 network is every peer, stored as no peer.
            s.filter
                .cidrs()
                .iter()
                .filter(|c| c.is_ipv4() == gateway.is_ipv4())
                .map(|c| Some(*c).filter(|c| c.prefix() != 0))
                .collect()
        };
        // An unusable address is refused when a rule would use it.
        if !peers.is_empty() && check_gateway(gateway).is_err() {
            return None;
        }
        for &direction in directions {
            for &peer in &peers {
                keys.insert((s.name.to_string(), direction, gateway, peer));
            }
        }
    }
    Some(keys)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn compile_gives_each_source_exactly_its_sessions_rules(
        sessions in (0..4usize).prop_flat_map(|n| (0..n).map(compile_input).collect::<Vec<_>>()),
    ) {
        let expected: Option<Vec<BTreeSet<RuleKey>>> = sessions.iter().map(expected_rules).collect();
        match (compile(&sessions), expected) {
            (Ok(hosts), Some(expected)) => {
                let all_sources: BTreeSet<&HostId> = sessions.iter().flat_map(|s| &s.sources).collect();
                prop_assert_eq!(hosts.keys().collect::<BTreeSet<_>>(), all_sources);
                for (host, rules) in &hosts {
                    prop_assert!(rules.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
                    let want: BTreeSet<RuleKey> = sessions
                        .iter()
                        .zip(&expected)
                        .filter(|(s, _)| s.sources.contains(host))
                        .flat_map(|(_, keys)| keys.iter().cloned())
                        .collect();
                    let got: BTreeSet<RuleKey> = rules
                        .iter()
                        .filter_map(|r| Some((r.session().to_string(), r.direction(), r.gateway()?, r.peer())))
                        .collect();
                    prop_assert_eq!(got, want);
                    for rule in rules {
                        let s = sessions.iter().find(|s| &s.name == rule.session()).expect("the rule's session");
                        prop_assert_eq!(
                            (rule.protocol(), rule.ports(), rule.throttle()),
                            (s.filter.protocol(), s.filter.ports(), s.filter.throttle())
                        );
                    }
                }
            }
            (Err(e), None) => prop_assert!(e.field.starts_with("session s"), "{}", e),
            (got, expected) => prop_assert!(false, "compile gave {:?}, expected {:?}", got, expected),
        }
    }
}
