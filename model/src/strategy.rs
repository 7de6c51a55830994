//! Proptest strategies for valid model values and for near misses of them, so the property
//! tests of every crate build rules, filters and names from one definition of what valid
//! means. Typed values are built through the public constructors only: a strategy that
//! drifted from the model fails loudly instead of testing values the model forbids.
//!
//! Compiled for this crate's tests and, with the `proptest` feature, for other crates'.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::{
    collection::vec,
    option,
    prelude::*,
    sample::{Index, select},
    test_runner::Config,
};

use crate::{
    Cidr, Direction, Filter, HostId, InstanceId, IpFamily, MaxPps, MirrorRule, PortRange, Protocol, RuleDirection,
    RuleSet, Sample, SessionName, TagSelector, Throttle, Tunnel, Vni, check_gateway,
};

/// `cases` unless `PROPTEST_CASES` asks for another number (a soak or a quick run). No
/// failure file is written: a failure prints its shrunk input, which becomes a named unit
/// test next to the code it breaks.
pub fn config(cases: u32) -> Config {
    let from_env = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok());
    Config { cases: from_env.unwrap_or(cases), failure_persistence: None, ..Config::default() }
}

pub fn session_name_text() -> impl Strategy<Value = String> + Clone {
    "[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
}

pub fn host_id_text() -> impl Strategy<Value = String> + Clone {
    "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
}

pub fn instance_id_text() -> impl Strategy<Value = String> + Clone {
    "i-([0-9a-f]{8}|[0-9a-f]{17})"
}

pub fn event_kind_text() -> impl Strategy<Value = String> + Clone {
    "[a-z][a-z0-9_]{0,31}"
}

/// `key=value` tags: the characters EC2 tags usually have, with keys and values around
/// EC2's length limits now and then.
pub fn tag_selector_text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        8 => "[A-Za-z0-9 _.:/+@-]{1,20}=[A-Za-z0-9 _.:/=+@-]{0,20}",
        1 => (127..=129usize, 0..=3usize).prop_map(|(k, v)| format!("{}={}", "k".repeat(k), "v".repeat(v))),
        1 => (1..=3usize, 255..=257usize).prop_map(|(k, v)| format!("{}={}", "k".repeat(k), "v".repeat(v))),
    ]
}

pub fn tag_selector() -> impl Strategy<Value = TagSelector> + Clone {
    "[A-Za-z0-9 _.:/+@-]{1,20}=[A-Za-z0-9 _.:/=+@-]{0,20}".prop_map(|s| s.parse().expect("a tag within EC2's limits"))
}

pub fn session_name() -> impl Strategy<Value = SessionName> + Clone {
    session_name_text().prop_map(|s| s.parse().expect("the model's session name alphabet"))
}

pub fn host_id() -> impl Strategy<Value = HostId> + Clone {
    host_id_text().prop_map(|s| s.parse().expect("the model's host id alphabet"))
}

pub fn instance_id() -> impl Strategy<Value = InstanceId> + Clone {
    instance_id_text().prop_map(|s| s.parse().expect("an EC2 instance id"))
}

/// Addresses that some check treats specially, mixed into the uniform ones, which would
/// almost never hit them.
const SPECIAL_V4: [Ipv4Addr; 8] = [
    Ipv4Addr::UNSPECIFIED,
    Ipv4Addr::BROADCAST,
    Ipv4Addr::LOCALHOST,
    Ipv4Addr::new(127, 255, 0, 1),
    Ipv4Addr::new(224, 0, 0, 1),
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(10, 0, 0, 5),
    Ipv4Addr::new(192, 168, 0, 0),
];

const SPECIAL_V6: [Ipv6Addr; 8] = [
    Ipv6Addr::UNSPECIFIED,
    Ipv6Addr::LOCALHOST,
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
    // IPv4-mapped and IPv4-compatible: printed with dots, which the renderer must accept.
    Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0005),
    Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0x0a00, 0x0005),
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9),
];

pub fn ipv4() -> impl Strategy<Value = Ipv4Addr> + Clone {
    prop_oneof![3 => any::<u32>().prop_map(Ipv4Addr::from), 1 => select(&SPECIAL_V4[..])]
}

pub fn ipv6() -> impl Strategy<Value = Ipv6Addr> + Clone {
    prop_oneof![3 => any::<u128>().prop_map(Ipv6Addr::from), 1 => select(&SPECIAL_V6[..])]
}

pub fn ip() -> impl Strategy<Value = IpAddr> + Clone {
    prop_oneof![ipv4().prop_map(IpAddr::V4), ipv6().prop_map(IpAddr::V6)]
}

/// Any address a TEE gateway may have.
pub fn gateway() -> impl Strategy<Value = IpAddr> + Clone {
    ip().prop_filter("a usable TEE gateway", |ip| check_gateway(*ip).is_ok())
}

/// The network of `addr` with `prefix` bits (taken modulo the family's width plus one):
/// the host bits cleared, so the pair is always a valid CIDR.
pub fn network(addr: IpAddr, prefix: u8) -> (IpAddr, u8) {
    match addr {
        IpAddr::V4(a) => {
            let prefix = prefix % 33;
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            (IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)), prefix)
        }
        IpAddr::V6(a) => {
            let prefix = prefix % 129;
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            (IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)), prefix)
        }
    }
}

/// Prefix lengths, with the all-addresses and single-address ends made common.
fn prefix() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![1 => Just(0), 1 => Just(128), 4 => any::<u8>()]
}

pub fn cidr_text() -> impl Strategy<Value = String> + Clone {
    (ip(), prefix()).prop_map(|(ip, prefix)| {
        let (net, prefix) = network(ip, prefix);
        format!("{net}/{prefix}")
    })
}

pub fn cidr() -> impl Strategy<Value = Cidr> + Clone {
    cidr_text().prop_map(|s| s.parse().expect("a network with its host bits cleared"))
}

/// A network of the same family as `like`, from arbitrary bits.
fn cidr_like(like: IpAddr, bits: u128, prefix: u8) -> Cidr {
    let addr = match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(bits as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    };
    let (net, prefix) = network(addr, prefix);
    format!("{net}/{prefix}").parse().expect("a network with its host bits cleared")
}

/// Port numbers with the ends of the range made common.
fn port() -> impl Strategy<Value = u32> + Clone {
    prop_oneof![1 => Just(1u32), 1 => Just(65535u32), 4 => 1..=65535u32]
}

pub fn port_range_text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        port().prop_map(|p| p.to_string()),
        (port(), port()).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
    ]
}

pub fn port_range() -> impl Strategy<Value = PortRange> + Clone {
    prop_oneof![port().prop_map(|p| (p, p)), (port(), port()).prop_map(|(a, b)| (a.min(b), a.max(b)))]
        .prop_map(|(first, last)| PortRange::new(first, last).expect("an ordered range of ports"))
}

pub fn protocol() -> impl Strategy<Value = Protocol> + Clone {
    select(&[Protocol::All, Protocol::Tcp, Protocol::Udp, Protocol::Icmp][..])
}

pub fn direction() -> impl Strategy<Value = Direction> + Clone {
    select(&[Direction::Ingress, Direction::Egress, Direction::Both][..])
}

pub fn rule_direction() -> impl Strategy<Value = RuleDirection> + Clone {
    select(&[RuleDirection::Ingress, RuleDirection::Egress][..])
}

fn ppm() -> impl Strategy<Value = u32> + Clone {
    prop_oneof![1 => select(&[1u32, 10, 999_999, Sample::PER_MILLION][..]), 4 => 1..=Sample::PER_MILLION]
}

pub fn sample() -> impl Strategy<Value = Sample> + Clone {
    ppm().prop_map(|ppm| Sample::from_ppm(ppm).expect("1 to 1000000 parts per million"))
}

pub fn max_pps() -> impl Strategy<Value = MaxPps> + Clone {
    prop_oneof![1 => select(&[1u32, MaxPps::MAX][..]), 4 => 1..=MaxPps::MAX]
        .prop_map(|pps| MaxPps::new(pps).expect("1 to 1000000 per second"))
}

pub fn throttle() -> impl Strategy<Value = Throttle> + Clone {
    (option::of(sample()), option::of(max_pps())).prop_map(|(sample, max_pps)| Throttle::new(sample, max_pps))
}

/// Filters with up to `max_cidrs` peer networks of either family.
pub fn filter(max_cidrs: usize) -> impl Strategy<Value = Filter> + Clone {
    (direction(), protocol(), option::of(port_range()), vec(cidr(), 0..=max_cidrs), throttle()).prop_map(
        |(direction, protocol, ports, cidrs, throttle)| {
            let ports = ports.filter(|_| protocol.has_ports());
            Filter::new(direction, protocol, ports, cidrs).expect("ports only with tcp or udp").with_throttle(throttle)
        },
    )
}

/// The tunnel of a VNI in generated rule sets: its remote is a function of the VNI, so
/// any two generated rules with one VNI agree on it, as a rule set requires.
pub fn tunnel_of(vni: Vni) -> Tunnel {
    let n = vni.get();
    let remote = if n.is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
    } else {
        IpAddr::V6(Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(n)))
    };
    Tunnel::new(vni, remote).expect("a unicast remote")
}

/// Any rule the model admits: raw to a usable gateway or into a VXLAN tunnel, a peer of
/// the rule's family, ports only with tcp or udp.
pub fn mirror_rule() -> impl Strategy<Value = MirrorRule> + Clone {
    (
        session_name(),
        rule_direction(),
        gateway(),
        protocol(),
        option::of(port_range()),
        option::of((any::<u128>(), prefix())),
        throttle(),
        option::of(Vni::MIN..=Vni::MAX),
    )
        .prop_map(|(session, direction, gateway, protocol, ports, peer, throttle, vni)| {
            let ports = ports.filter(|_| protocol.has_ports());
            let peer = peer.map(|(bits, prefix)| cidr_like(gateway, bits, prefix));
            let rule = match vni.map(Vni::new) {
                Some(Ok(vni)) => {
                    let family = IpFamily::of(gateway);
                    MirrorRule::tunnelled(session, direction, family, tunnel_of(vni), protocol, ports, peer)
                }
                _ => MirrorRule::new(session, direction, gateway, protocol, ports, peer),
            };
            rule.expect("a rule built from valid parts").with_throttle(throttle)
        })
}

pub fn rule_set(max_rules: usize) -> impl Strategy<Value = RuleSet> + Clone {
    (0..=RuleSet::MAX_VERSION, vec(mirror_rule(), 0..=max_rules))
        .prop_map(|(version, rules)| RuleSet::new(version, rules).expect("within the rule limit"))
}

/// Characters that mean something to a parser, iptables or a shell, and some that only
/// look like digits or letters.
const EDGE_CHARS: [char; 27] = [
    '-', '.', '/', ':', '%', '+', '_', ' ', '\t', '\n', '\r', '"', '\'', ';', '$', '`', '\\', '!', '0', '9', 'a', 'F',
    'e', '\u{0}', '\u{e9}', '\u{202e}', '\u{663}',
];

/// Near misses of a valid sequence: one to `max_edits` items inserted, removed or
/// replaced at random places, with items from `alphabet`. Uniformly random input almost
/// never gets past a parser's first check; these reach the later ones.
pub fn edited<T: Clone + std::fmt::Debug + 'static>(
    valid: impl Strategy<Value = Vec<T>> + Clone,
    alphabet: &'static [T],
    max_edits: usize,
) -> impl Strategy<Value = Vec<T>> + Clone {
    (valid, vec((any::<Index>(), 0..3u8, select(alphabet)), 1..=max_edits)).prop_map(|(mut items, edits)| {
        for (at, edit, item) in edits {
            let i = at.index(items.len() + 1);
            match edit {
                0 => items.insert(i, item),
                1 if i < items.len() => {
                    items.remove(i);
                }
                _ if i < items.len() => items[i] = item,
                _ => items.push(item),
            }
        }
        items
    })
}

/// Near misses of valid text, with characters that matter to parsers and shells.
pub fn mutated(valid: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = String> + Clone {
    edited(valid.prop_map(|text| text.chars().collect()), &EDGE_CHARS, 3).prop_map(String::from_iter)
}

/// Outside input aimed at one parser: its valid text, near misses of it, printable
/// ASCII and arbitrary Unicode.
pub fn hostile(valid: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        2 => valid.clone(),
        4 => mutated(valid),
        1 => "[ -~]{0,40}",
        1 => any::<String>(),
    ]
}
