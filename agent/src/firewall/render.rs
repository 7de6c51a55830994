//! Pure rendering of rule sets into `iptables-restore` input.
//!
//! Everything here is a function of its arguments so the exact text can be pinned by
//! golden tests. Rule text is built only from validated, typed values (addresses, ports,
//! protocol enums, session names whose alphabet needs no escaping, sample and cap values
//! whose ranges the model checks): a controller cannot inject iptables arguments.

use std::{fmt::Write as _, net::SocketAddr};

use teefleet_model::{Arrival, Delivery, MirrorRule, Protocol, RuleDirection, RuleSet, SessionName, Throttle};

use super::{
    layout::{Family, Hook, Owner, RULE_COMMENT_PREFIX},
    tunnel,
};

/// The rules of `set` that mirror `family`'s traffic.
pub fn rules_of(set: &RuleSet, family: Family) -> Vec<&MirrorRule> {
    set.rules().iter().filter(|r| Family::of_rule(r) == family).collect()
}

/// The hashlimit table name for a session's cap. All rules of a session on a host share
/// one table (one token bucket per family), so the cap holds for the session as a whole.
/// The rate is part of the name so a changed cap gets a fresh bucket instead of the old
/// table's settings. 15 characters: the limit of every hashlimit revision.
pub fn hashlimit_name(session: &SessionName, max_pps: u32) -> String {
    // FNV-1a: stable across releases and platforms, unlike the std hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in session.as_str().bytes().chain([b'/']).chain(max_pps.to_string().bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("tf{:013x}", hash >> 12)
}

/// The sample (statistic) and cap (hashlimit) matches. The sample comes first so the cap
/// counts the clones actually sent.
fn render_throttle(line: &mut String, session: &SessionName, throttle: Throttle) {
    if let Some(sample) = throttle.sample.filter(|s| !s.is_all()) {
        let ppm = sample.ppm();
        let _ = write!(line, " -m statistic --mode random --probability 0.{ppm:06}");
    }
    if let Some(cap) = throttle.max_pps {
        let pps = cap.get();
        let _ = write!(
            line,
            " -m hashlimit --hashlimit-upto {pps}/sec --hashlimit-burst {pps} --hashlimit-name {}",
            hashlimit_name(session, pps)
        );
    }
}

/// The `-p` value for a protocol in `family`, or `None` for "all protocols" (no `-p` at
/// all).
fn protocol_name(family: Family, protocol: Protocol) -> Option<&'static str> {
    match (protocol, family) {
        (Protocol::All, _) => None,
        (Protocol::Tcp, _) => Some("tcp"),
        (Protocol::Udp, _) => Some("udp"),
        (Protocol::Icmp, Family::V4) => Some("icmp"),
        (Protocol::Icmp, Family::V6) => Some("ipv6-icmp"),
    }
}

/// One rule as an `iptables-restore` line. The collector's address is excluded in both
/// directions so the collector's own traffic (and a tunnel's outer packets) is never
/// mirrored back to it. A raw clone goes to the collector's address; a tunnelled one to
/// the tunnel device's next hop (see [`tunnel`]).
pub fn render_rule(rule: &MirrorRule, family: Family) -> String {
    let hook = Hook::of(rule.direction());
    // The host's service port is the destination port inbound and the source port outbound.
    let (peer_flag, port_flag) = match rule.direction() {
        RuleDirection::Ingress => ("-s", "--dport"),
        RuleDirection::Egress => ("-d", "--sport"),
    };
    let mut line = format!("-A {}", hook.chain());
    // A /0 peer matches everything; iptables-save omits it, so we do too.
    if let Some(peer) = rule.peer().filter(|p| p.prefix() != 0) {
        let _ = write!(line, " {peer_flag} {peer}");
    }
    // A clone passes POSTROUTING again on its way into the tunnel; TEE does not clone it
    // twice, but it would match (and count, and spend the cap) twice.
    if rule.direction() == RuleDirection::Egress && rule.tunnel().is_some() {
        let _ = write!(line, " ! -o {}+", tunnel::PREFIX);
    }
    let protocol = protocol_name(family, rule.protocol());
    if let Some(p) = protocol {
        let _ = write!(line, " -p {p}");
    }
    // The model only admits ports with tcp or udp, so `protocol` is set here.
    if let (Some(ports), Some(p)) = (rule.ports(), protocol) {
        let _ = write!(line, " -m {p} {port_flag} {}", ports.first());
        if ports.last() != ports.first() {
            let _ = write!(line, ":{}", ports.last());
        }
    }
    // A clone of a multicast or broadcast packet is looped back to this host by the output
    // path and would enter PREROUTING again, be cloned again, and so on forever (IPv6
    // neighbour solicitations do this at once). Inbound, only unicast frames are mirrored.
    if rule.direction() == RuleDirection::Ingress {
        line.push_str(" -m pkttype --pkt-type unicast");
    }
    if let Some(ex) = rule.excluded() {
        let _ = write!(line, " -m iprange ! --src-range {ex}-{ex} ! --dst-range {ex}-{ex}");
    }
    render_throttle(&mut line, rule.session(), rule.throttle());
    let _ = write!(line, " -m comment --comment \"{RULE_COMMENT_PREFIX}{}\" -j TEE", rule.session());
    match rule.delivery() {
        Delivery::Raw { gateway } => {
            let _ = write!(line, " --gateway {gateway}");
        }
        Delivery::Vxlan(t) => {
            let hop = tunnel::next_hop(family);
            let _ = write!(line, " --gateway {hop} --oif {}", tunnel::device(t.vni()));
        }
    }
    line
}

/// The arrivals of `set` counted in `family`'s table.
pub fn arrivals_of(set: &RuleSet, family: Family) -> Vec<&Arrival> {
    set.arrivals().iter().filter(|a| Family::of(a.from()) == family).collect()
}

/// A collector's counting rules for one arrival, in PREROUTING's chain, after every mirror
/// rule: the kernel counts, nothing reads packets. Each ends in RETURN, so a clone is
/// counted once and costs no rule after its own.
///
/// - VXLAN: UDP to port 4789 from the source's address, whose VXLAN header carries the
///   session's VNI. `u32` reads the VNI: in IPv4 past the header's own length (IHL), in
///   IPv6 at the fixed offset after the 40-byte header (8 of UDP, 4 into VXLAN). Written
///   as `iptables-save` prints it, so the text read back equals the text written.
/// - Raw: a packet from or to the source's address that is not addressed to this host:
///   only a clone carries another host's headers to the collector.
pub fn render_arrival(arrival: &Arrival, family: Family) -> Vec<String> {
    let chain = Hook::Pre.chain();
    let prefix = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    let from = arrival.from();
    let owner = Owner::Arrival(arrival.session().clone(), arrival.source().clone());
    let tail = format!("-m comment --comment \"{}\" -j RETURN", owner.comment().unwrap_or_default());
    match arrival.vni() {
        Some(vni) => {
            let offset = match family {
                Family::V4 => "0x0>>0x16&0x3c@0xc",
                Family::V6 => "0x34",
            };
            let vni = vni.get();
            vec![format!(
                "-A {chain} -s {from}/{prefix} -p udp -m udp --dport {} -m u32 --u32 \"{offset}>>0x8={vni:#x}\" {tail}",
                tunnel::PORT
            )]
        }
        None => RAW_ARRIVAL_FLAGS
            .iter()
            .map(|flag| format!("-A {chain} {flag} {from}/{prefix} -m addrtype ! --dst-type LOCAL {tail}"))
            .collect(),
    }
}

/// A raw arrival is counted from and to its address: one rule each.
const RAW_ARRIVAL_FLAGS: [&str; 2] = ["-s", "-d"];

/// How many lines [`render_arrival`] writes for `arrival`, for what a read-back must show.
pub fn arrival_lines(arrival: &Arrival) -> usize {
    if arrival.vni().is_some() { 1 } else { RAW_ARRIVAL_FLAGS.len() }
}

/// The comment on the rules that let a collector's own traffic skip the counting rules.
pub const GATE_COMMENT: &str = "teefleet-rx-gate";

/// In front of the counting rules, what cannot be a clone returns at once: a packet for
/// this host that is not UDP to port 4789 (a VXLAN clone is; a raw clone is addressed to
/// another host). The collector's own traffic (SSH, its IDS's uploads) then costs two
/// rules instead of every source's; each rule costs every packet it sees (BENCHMARKS.md,
/// "Collector arrival counting").
pub fn gate_lines() -> [String; 2] {
    let chain = Hook::Pre.chain();
    let tail = format!("-m addrtype --dst-type LOCAL -m comment --comment {GATE_COMMENT} -j RETURN");
    [format!("-A {chain} ! -p udp {tail}"), format!("-A {chain} -p udp -m udp ! --dport {} {tail}", tunnel::PORT)]
}

/// The lines of one hook's chain: its mirror rules, then (in PREROUTING's) the gate and
/// the arrivals.
fn chain_lines<'a>(set: &'a RuleSet, family: Family, hook: Hook) -> impl Iterator<Item = String> + 'a {
    let rules = rules_of(set, family).into_iter().filter(move |r| Hook::of(r.direction()) == hook);
    let arrivals = arrivals_of(set, family);
    let gate = (hook == Hook::Pre && !arrivals.is_empty()).then(gate_lines).into_iter().flatten();
    let arrivals = arrivals.into_iter().filter(move |_| hook == Hook::Pre);
    rules.map(move |r| render_rule(r, family)).chain(gate).chain(arrivals.flat_map(move |a| render_arrival(a, family)))
}

/// Whether `family`'s chains hold anything of `set`.
pub fn has_lines(set: &RuleSet, family: Family) -> bool {
    !rules_of(set, family).is_empty() || !arrivals_of(set, family).is_empty()
}

/// The rule lines of one family, grouped by chain in the order `iptables-save` prints
/// them. Equal lines mean equal kernel state, which is how a no-change push is detected.
pub fn render_rules(set: &RuleSet, family: Family) -> Vec<String> {
    Hook::ALL.iter().flat_map(|hook| chain_lines(set, family, *hook)).collect()
}

/// The comment on the rules that keep the agent's own traffic with its controllers out.
pub const CONTROL_COMMENT: &str = "teefleet-control";

/// The controllers the agent talks to (addresses and ports). Its own traffic with them is
/// never mirrored: a session over "all traffic" would otherwise copy the agent's stream
/// to the collector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control(Vec<SocketAddr>);

impl Control {
    pub fn new(mut addrs: Vec<SocketAddr>) -> Control {
        addrs.sort();
        addrs.dedup();
        Control(addrs)
    }

    /// The exclusion rules of `family` for one chain, first in it: RETURN before any TEE.
    fn lines(&self, family: Family, hook: Hook) -> impl Iterator<Item = String> + '_ {
        self.0.iter().filter(move |a| Family::of(a.ip()) == family).map(move |a| {
            let prefix = if a.is_ipv4() { 32 } else { 128 };
            let (ip, port) = (a.ip(), a.port());
            let (addr, port_flag) = if hook == Hook::Pre { ("-s", "--sport") } else { ("-d", "--dport") };
            format!(
                "-A {} {addr} {ip}/{prefix} -p tcp -m tcp {port_flag} {port} -m comment --comment {CONTROL_COMMENT} -j RETURN",
                hook.chain()
            )
        })
    }

    /// How many exclusion rules of `family` each chain starts with.
    pub(super) fn count(&self, family: Family) -> usize {
        self.0.iter().filter(|a| Family::of(a.ip()) == family).count()
    }
}

/// [`render_rules`] with the controllers' exclusions first in each chain, when the family
/// has any rule (without rules there are no chains to put them in).
pub fn render_with_control(set: &RuleSet, family: Family, control: &Control) -> Vec<String> {
    if !has_lines(set, family) {
        return Vec::new();
    }
    Hook::ALL.iter().flat_map(|hook| control.lines(family, *hook).chain(chain_lines(set, family, *hook))).collect()
}

#[cfg(test)]
pub(super) mod tests {
    use teefleet_model::{Cidr, MaxPps, PortRange, Sample};

    use super::*;

    const GW: &str = "10.0.0.5";
    const EXCL: &str = "-m iprange ! --src-range 10.0.0.5-10.0.0.5 ! --dst-range 10.0.0.5-10.0.0.5";

    pub(in crate::firewall) fn rule(
        session: &str,
        dir: RuleDirection,
        proto: Protocol,
        ports: Option<(u32, u32)>,
        peer: Option<&str>,
    ) -> MirrorRule {
        MirrorRule::new(
            session.parse().expect("session"),
            dir,
            GW.parse().expect("ip"),
            proto,
            ports.map(|(a, b)| PortRange::new(a, b).expect("ports")),
            peer.map(|p| p.parse::<Cidr>().expect("cidr")),
        )
        .expect("rule")
    }

    pub(in crate::firewall) fn set(rules: Vec<MirrorRule>) -> RuleSet {
        RuleSet::new(7, rules).expect("set")
    }

    pub(in crate::firewall) fn tail(session: &str) -> String {
        format!("{EXCL} -m comment --comment \"teefleet:{session}\" -j TEE --gateway {GW}")
    }

    /// Ingress rules match unicast frames only.
    pub(in crate::firewall) fn tail_in(session: &str) -> String {
        format!("-m pkttype --pkt-type unicast {}", tail(session))
    }

    /// An IPv4 rule and an IPv6 one.
    pub(in crate::firewall) fn both_families() -> RuleSet {
        let v6 = MirrorRule::new(
            "six".parse().expect("session"),
            RuleDirection::Ingress,
            "fd00::5".parse().expect("ip"),
            Protocol::Icmp,
            None,
            Some("fd00:1::/64".parse().expect("cidr")),
        )
        .expect("rule");
        set(vec![rule("a", RuleDirection::Ingress, Protocol::All, None, None), v6])
    }

    /// Session `web` both ways, and controllers of both families, one given twice.
    pub(in crate::firewall) fn web_with_controllers() -> (RuleSet, Control) {
        let s = set(vec![
            rule("web", RuleDirection::Ingress, Protocol::All, None, None),
            rule("web", RuleDirection::Egress, Protocol::All, None, None),
        ]);
        let control = Control::new(vec![
            "10.0.0.1:7300".parse().expect("addr"),
            "[fd00::1]:7300".parse().expect("addr"),
            "10.0.0.1:7300".parse().expect("addr"),
        ]);
        (s, control)
    }

    /// Every filter combination renders to the exact line iptables accepts (the same
    /// syntax was checked against the kernel in `tests/iptables.rs`).
    #[test]
    fn golden_rules() {
        use Protocol::*;
        use RuleDirection::*;
        let cases: Vec<(MirrorRule, String)> = vec![
            (rule("s", Ingress, All, None, None), format!("-A TEEFLEET-PRE {}", tail_in("s"))),
            (rule("s", Egress, All, None, None), format!("-A TEEFLEET-POST {}", tail("s"))),
            (rule("s", Ingress, Tcp, None, None), format!("-A TEEFLEET-PRE -p tcp {}", tail_in("s"))),
            (rule("s", Ingress, Udp, None, None), format!("-A TEEFLEET-PRE -p udp {}", tail_in("s"))),
            (rule("s", Egress, Icmp, None, None), format!("-A TEEFLEET-POST -p icmp {}", tail("s"))),
            (
                rule("s", Ingress, Tcp, Some((443, 443)), None),
                format!("-A TEEFLEET-PRE -p tcp -m tcp --dport 443 {}", tail_in("s")),
            ),
            (
                rule("s", Egress, Tcp, Some((443, 443)), None),
                format!("-A TEEFLEET-POST -p tcp -m tcp --sport 443 {}", tail("s")),
            ),
            (
                rule("s", Ingress, Udp, Some((5000, 5100)), None),
                format!("-A TEEFLEET-PRE -p udp -m udp --dport 5000:5100 {}", tail_in("s")),
            ),
            (
                rule("s", Egress, Udp, Some((5000, 5100)), None),
                format!("-A TEEFLEET-POST -p udp -m udp --sport 5000:5100 {}", tail("s")),
            ),
            (
                rule("s", Ingress, All, None, Some("192.168.0.0/16")),
                format!("-A TEEFLEET-PRE -s 192.168.0.0/16 {}", tail_in("s")),
            ),
            (
                rule("s", Egress, All, None, Some("192.168.0.0/16")),
                format!("-A TEEFLEET-POST -d 192.168.0.0/16 {}", tail("s")),
            ),
            (
                rule("web", Ingress, Tcp, Some((80, 90)), Some("10.1.0.0/16")),
                format!("-A TEEFLEET-PRE -s 10.1.0.0/16 -p tcp -m tcp --dport 80:90 {}", tail_in("web")),
            ),
            (
                rule("web", Egress, Tcp, Some((80, 90)), Some("10.1.2.3/32")),
                format!("-A TEEFLEET-POST -d 10.1.2.3/32 -p tcp -m tcp --sport 80:90 {}", tail("web")),
            ),
            (rule("s", Egress, Icmp, None, Some("0.0.0.0/0")), format!("-A TEEFLEET-POST -p icmp {}", tail("s"))),
        ];
        for (rule, want) in cases {
            assert_eq!(render_rule(&rule, Family::V4), want, "{rule:?}");
        }
    }

    #[test]
    fn families_render_their_own_rules() {
        let s = both_families();
        assert_eq!(render_rules(&s, Family::V4), [format!("-A TEEFLEET-PRE {}", tail_in("a"))]);
        assert_eq!(
            render_rules(&s, Family::V6),
            [
                "-A TEEFLEET-PRE -s fd00:1::/64 -p ipv6-icmp -m pkttype --pkt-type unicast -m iprange ! --src-range fd00::5-fd00::5 ! --dst-range fd00::5-fd00::5 -m comment --comment \"teefleet:six\" -j TEE --gateway fd00::5"
            ]
        );
        assert_eq!(render_rules(&set(vec![]), Family::V6), Vec::<String>::new());
    }

    #[test]
    fn golden_throttles() {
        let base = rule("web", RuleDirection::Ingress, Protocol::Tcp, Some((443, 443)), None);
        let sample = |s: &str| Some(s.parse::<Sample>().expect("sample"));
        let cap = |n| Some(MaxPps::new(n).expect("cap"));
        let name = hashlimit_name(&"web".parse().expect("name"), 500);
        let cases = [
            (Throttle::new(sample("0.01"), None), " -m statistic --mode random --probability 0.010000".to_owned()),
            (Throttle::new(sample("0.000001"), None), " -m statistic --mode random --probability 0.000001".to_owned()),
            (Throttle::new(sample("1"), None), String::new()),
            (
                Throttle::new(None, cap(500)),
                format!(" -m hashlimit --hashlimit-upto 500/sec --hashlimit-burst 500 --hashlimit-name {name}"),
            ),
            (
                Throttle::new(sample("25%"), cap(500)),
                format!(
                    " -m statistic --mode random --probability 0.250000 -m hashlimit --hashlimit-upto 500/sec --hashlimit-burst 500 --hashlimit-name {name}"
                ),
            ),
        ];
        for (throttle, matches) in cases {
            let line = render_rule(&base.clone().with_throttle(throttle), Family::V4);
            assert_eq!(
                line,
                format!(
                    "-A TEEFLEET-PRE -p tcp -m tcp --dport 443 -m pkttype --pkt-type unicast {EXCL}{matches} -m comment --comment \"teefleet:web\" -j TEE --gateway {GW}"
                ),
                "{throttle:?}"
            );
        }
    }

    #[test]
    fn hashlimit_names_fit_and_differ() {
        let web: SessionName = "web".parse().expect("name");
        let long: SessionName = "a-very-long-session-name-that-goes-on.and_on".parse().expect("name");
        for name in [hashlimit_name(&web, 1), hashlimit_name(&long, 1_000_000)] {
            assert_eq!(name.len(), 15, "{name}");
            assert!(name.starts_with("tf") && name[2..].chars().all(|c| c.is_ascii_hexdigit()), "{name}");
        }
        assert_eq!(hashlimit_name(&web, 10), hashlimit_name(&web, 10), "stable");
        assert_ne!(hashlimit_name(&web, 10), hashlimit_name(&web, 11), "a new cap gets a new bucket");
        assert_ne!(hashlimit_name(&web, 10), hashlimit_name(&long, 10));
    }

    #[test]
    fn the_agents_own_traffic_with_its_controllers_returns_first() {
        let (s, control) = web_with_controllers();
        let lines = render_with_control(&s, Family::V4, &control);
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(
            lines[0],
            "-A TEEFLEET-PRE -s 10.0.0.1/32 -p tcp -m tcp --sport 7300 -m comment --comment teefleet-control -j RETURN"
        );
        assert_eq!(
            lines[2],
            "-A TEEFLEET-POST -d 10.0.0.1/32 -p tcp -m tcp --dport 7300 -m comment --comment teefleet-control -j RETURN"
        );
        // No rules of a family, no chains: nothing to exclude either.
        assert!(render_with_control(&s, Family::V6, &control).is_empty());
    }
}
