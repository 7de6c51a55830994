//! Pure rendering of rule sets into `iptables-restore` input.
//!
//! Everything here is a function of its arguments so the exact text can be pinned by
//! golden tests. Rule text is built only from validated, typed values (addresses, ports,
//! protocol enums, session names whose alphabet needs no escaping, sample and cap values
//! whose ranges the model checks): a controller cannot inject iptables arguments.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use teefleet_model::{Delivery, IpFamily, MirrorRule, Protocol, RuleDirection, RuleSet, SessionName, Throttle};

use super::observe::{Jump, Observed};
use super::tunnel;

/// The table all agent chains live in: TEE is a mangle-table target.
pub const TABLE: &str = "mangle";
/// The comment on the jump rules, so a person reading `iptables -S` sees who owns them.
pub const JUMP_COMMENT: &str = "teefleet";
/// Rules carry the comment `teefleet:<session>`, so counters map back to sessions.
pub const RULE_COMMENT_PREFIX: &str = "teefleet:";

/// A built-in chain and the agent-owned chain it jumps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    pub builtin: &'static str,
    pub chain: &'static str,
}

/// Ingress rules hang off PREROUTING (before routing, so forwarded and local traffic
/// alike), egress rules off POSTROUTING (after routing, the last point before the wire).
pub const HOOKS: [Hook; 2] =
    [Hook { builtin: "PREROUTING", chain: "TEEFLEET-PRE" }, Hook { builtin: "POSTROUTING", chain: "TEEFLEET-POST" }];

impl Hook {
    fn of(direction: RuleDirection) -> Hook {
        match direction {
            RuleDirection::Ingress => HOOKS[0],
            RuleDirection::Egress => HOOKS[1],
        }
    }

    /// The jump rule's specification, as `iptables-save` prints it after `-A BUILTIN`.
    pub fn jump_spec(self) -> String {
        format!("-m comment --comment {JUMP_COMMENT} -j {}", self.chain)
    }
}

/// An address family. Each has its own tools (`iptables*` or `ip6tables*`) and its own
/// restore transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// The family of the traffic a rule mirrors.
    pub fn of_rule(rule: &MirrorRule) -> Family {
        match rule.family() {
            IpFamily::Ipv4 => Family::V4,
            IpFamily::Ipv6 => Family::V6,
        }
    }

    /// `ipv4` or `ipv6`, for logs and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The `-p` value for a protocol, or `None` for "all protocols" (no `-p` at all).
    fn protocol_name(self, protocol: Protocol) -> Option<&'static str> {
        match (protocol, self) {
            (Protocol::All, _) => None,
            (Protocol::Tcp, _) => Some("tcp"),
            (Protocol::Udp, _) => Some("udp"),
            (Protocol::Icmp, Family::V4) => Some("icmp"),
            (Protocol::Icmp, Family::V6) => Some("ipv6-icmp"),
        }
    }
}

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
    let mut line = format!("-A {}", hook.chain);
    // A /0 peer matches everything; iptables-save omits it, so we do too.
    if let Some(peer) = rule.peer().filter(|p| p.prefix() != 0) {
        let _ = write!(line, " {peer_flag} {peer}");
    }
    // A clone passes POSTROUTING again on its way into the tunnel; TEE does not clone it
    // twice, but it would match (and count, and spend the cap) twice.
    if rule.direction() == RuleDirection::Egress && rule.tunnel().is_some() {
        let _ = write!(line, " ! -o {}+", tunnel::PREFIX);
    }
    let protocol = family.protocol_name(rule.protocol());
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
            let hop = match family {
                Family::V4 => IpAddr::V4(tunnel::NEXT_HOP_V4),
                Family::V6 => IpAddr::V6(tunnel::NEXT_HOP_V6),
            };
            let _ = write!(line, " --gateway {hop} --oif {}", tunnel::device(t.vni()));
        }
    }
    line
}

/// The rule lines of one family, grouped by chain in the order `iptables-save` prints
/// them. Equal lines mean equal kernel state, which is how a no-change push is detected.
pub fn render_rules(set: &RuleSet, family: Family) -> Vec<String> {
    let rules = rules_of(set, family);
    HOOKS
        .iter()
        .flat_map(|hook| rules.iter().filter(move |r| Hook::of(r.direction()) == *hook).map(|r| render_rule(r, family)))
        .collect()
}

/// What a read-back of each owned chain must show, rule by rule: the session a rule
/// belongs to, or `None` for a rule of no session (the controllers' exclusions).
pub type Expected<'a> = [Vec<Option<&'a SessionName>>; 2];

/// The sessions of each owned chain's rules in order: what a read-back must show.
pub fn expected_sessions(set: &RuleSet, family: Family) -> Expected<'_> {
    expected_with_control(set, family, &Control::default())
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
            let (addr, port_flag) = if hook == HOOKS[0] { ("-s", "--sport") } else { ("-d", "--dport") };
            format!(
                "-A {} {addr} {ip}/{prefix} -p tcp -m tcp {port_flag} {port} -m comment --comment {CONTROL_COMMENT} -j RETURN",
                hook.chain
            )
        })
    }

    fn count(&self, family: Family) -> usize {
        self.0.iter().filter(|a| Family::of(a.ip()) == family).count()
    }
}

/// [`render_rules`] with the controllers' exclusions first in each chain, when the family
/// has any rule (without rules there are no chains to put them in).
pub fn render_with_control(set: &RuleSet, family: Family, control: &Control) -> Vec<String> {
    let rules = rules_of(set, family);
    if rules.is_empty() {
        return Vec::new();
    }
    HOOKS
        .iter()
        .flat_map(|hook| {
            control.lines(family, *hook).chain(
                rules.iter().filter(move |r| Hook::of(r.direction()) == *hook).map(move |r| render_rule(r, family)),
            )
        })
        .collect()
}

/// [`expected_sessions`] with the controllers' exclusions.
pub fn expected_with_control<'a>(set: &'a RuleSet, family: Family, control: &Control) -> Expected<'a> {
    let rules = rules_of(set, family);
    let control = if rules.is_empty() { 0 } else { control.count(family) };
    HOOKS.map(|hook| {
        std::iter::repeat_n(None, control)
            .chain(rules.iter().filter(|r| Hook::of(r.direction()) == hook).map(|r| Some(r.session())))
            .collect()
    })
}

/// The `iptables-restore --noflush` input that turns the observed state into `rules` (the
/// output of [`render_rules`] for one family), or `None` when there is nothing to do (no
/// rules and nothing of ours installed).
///
/// Non-empty rules always get both chains and both jumps, so "applied" has one shape.
/// Declaring a chain (`:CHAIN - [0:0]`) creates it or flushes it inside the transaction,
/// so the kernel switches from the old rules to the new ones at once.
pub fn plan(rules: &[String], observed: &Observed) -> Option<String> {
    let mut lines = Vec::new();
    if rules.is_empty() {
        lines.extend(removal_lines(observed));
        if lines.is_empty() {
            return None;
        }
    } else {
        lines.extend(HOOKS.iter().map(|h| format!(":{} - [0:0]", h.chain)));
        lines.extend(rules.iter().cloned());
        for (hook, jumps) in HOOKS.iter().zip(&observed.jumps) {
            lines.extend(jump_repair_lines(*hook, jumps));
        }
    }
    let mut text = format!("*{TABLE}\n");
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    Some(text)
}

/// Leaves exactly one canonical jump, first in its built-in chain. When that is not what
/// is there (missing, moved below a foreign rule, duplicated, hand-made with other
/// matches), every jump to our chain is deleted by its specification and the canonical one
/// is inserted at the top. Deleting by specification, never by position, means a rule
/// another program inserts meanwhile cannot be hit. A jump below a foreign rule could
/// miss packets that rule accepts, hence the top.
fn jump_repair_lines(hook: Hook, jumps: &[Jump]) -> Vec<String> {
    let canonical = hook.jump_spec();
    if let [only] = jumps
        && only.position == 1
        && only.spec == canonical
    {
        return Vec::new();
    }
    let mut lines: Vec<String> = jumps.iter().map(|j| format!("-D {} {}", hook.builtin, j.spec)).collect();
    lines.push(format!("-I {} 1 {canonical}", hook.builtin));
    lines
}

/// Deletes the jumps first (a referenced chain cannot be deleted), then flushes and
/// deletes each owned chain that exists.
fn removal_lines(observed: &Observed) -> Vec<String> {
    let mut lines = Vec::new();
    for (hook, jumps) in HOOKS.iter().zip(&observed.jumps) {
        lines.extend(jumps.iter().map(|j| format!("-D {} {}", hook.builtin, j.spec)));
    }
    for hook in HOOKS.iter().filter(|h| observed.chains.contains_key(h.chain)) {
        lines.push(format!("-F {}", hook.chain));
        lines.push(format!("-X {}", hook.chain));
    }
    lines
}

#[cfg(test)]
mod tests {
    use teefleet_model::{Cidr, MaxPps, PortRange, Sample};

    use super::*;

    fn plan_v4(set: &RuleSet, observed: &Observed) -> Option<String> {
        plan(&render_rules(set, Family::V4), observed)
    }

    const GW: &str = "10.0.0.5";
    const EXCL: &str = "-m iprange ! --src-range 10.0.0.5-10.0.0.5 ! --dst-range 10.0.0.5-10.0.0.5";

    fn rule(
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

    fn set(rules: Vec<MirrorRule>) -> RuleSet {
        RuleSet::new(7, rules).expect("set")
    }

    fn tail(session: &str) -> String {
        format!("{EXCL} -m comment --comment \"teefleet:{session}\" -j TEE --gateway {GW}")
    }

    /// Ingress rules match unicast frames only.
    fn tail_in(session: &str) -> String {
        format!("-m pkttype --pkt-type unicast {}", tail(session))
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
    fn full_transaction_with_no_jumps_yet() {
        let s = set(vec![
            rule("web", RuleDirection::Ingress, Protocol::Tcp, Some((443, 443)), None),
            rule("dns", RuleDirection::Egress, Protocol::Udp, Some((53, 53)), Some("10.2.0.0/16")),
            rule("all", RuleDirection::Ingress, Protocol::All, None, None),
        ]);
        let want = format!(
            "*mangle
:TEEFLEET-PRE - [0:0]
:TEEFLEET-POST - [0:0]
-A TEEFLEET-PRE {all}
-A TEEFLEET-PRE -p tcp -m tcp --dport 443 {web}
-A TEEFLEET-POST -d 10.2.0.0/16 -p udp -m udp --sport 53 {dns}
-I PREROUTING 1 -m comment --comment teefleet -j TEEFLEET-PRE
-I POSTROUTING 1 -m comment --comment teefleet -j TEEFLEET-POST
COMMIT
",
            all = tail_in("all"),
            web = tail_in("web"),
            dns = tail("dns"),
        );
        assert_eq!(plan_v4(&s, &Observed::default()).as_deref(), Some(want.as_str()));
    }

    const SAVED: &str = "# Generated by iptables-save v1.8.9 (nf_tables)
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:TEEFLEET-POST - [0:0]
:TEEFLEET-PRE - [0:0]
-A PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE
-A PREROUTING -p tcp -j MARK --set-xmark 0x1/0xffffffff
-A PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE
-A PREROUTING -i eth0 -j TEEFLEET-PRE
-A INPUT -j TEEFLEET-PRE
-A TEEFLEET-PRE -j TEE --gateway 10.0.0.5
COMMIT
";

    #[test]
    fn duplicate_foreign_and_missing_jumps_are_repaired() {
        let s = set(vec![rule("a", RuleDirection::Egress, Protocol::All, None, None)]);
        let o = Observed::parse(SAVED).expect("parse");
        let want = format!(
            "*mangle
:TEEFLEET-PRE - [0:0]
:TEEFLEET-POST - [0:0]
-A TEEFLEET-POST {a}
-D PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE
-D PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE
-D PREROUTING -i eth0 -j TEEFLEET-PRE
-I PREROUTING 1 -m comment --comment teefleet -j TEEFLEET-PRE
-I POSTROUTING 1 -m comment --comment teefleet -j TEEFLEET-POST
COMMIT
",
            a = tail("a")
        );
        assert_eq!(plan_v4(&s, &o).as_deref(), Some(want.as_str()));
    }

    #[test]
    fn jumps_already_in_place_are_left_alone() {
        let s = set(vec![rule("a", RuleDirection::Ingress, Protocol::Icmp, None, None)]);
        let o = Observed {
            chains: HOOKS.iter().map(|h| (h.chain.to_owned(), vec![])).collect(),
            jumps: HOOKS.map(|h| vec![Jump { position: 1, spec: h.jump_spec() }]),
        };
        let want = format!(
            "*mangle\n:TEEFLEET-PRE - [0:0]\n:TEEFLEET-POST - [0:0]\n-A TEEFLEET-PRE -p icmp {}\nCOMMIT\n",
            tail_in("a")
        );
        assert_eq!(plan_v4(&s, &o).as_deref(), Some(want.as_str()));

        // A canonical jump that a foreign rule pushed down is moved back to the top.
        let mut moved = o.clone();
        moved.jumps[1][0].position = 2;
        let plan = plan_v4(&s, &moved).expect("plan");
        assert!(
            plan.ends_with(
                "-D POSTROUTING -m comment --comment teefleet -j TEEFLEET-POST\n-I POSTROUTING 1 -m comment --comment teefleet -j TEEFLEET-POST\nCOMMIT\n"
            ),
            "{plan}"
        );
    }

    #[test]
    fn empty_set_removes_what_exists_and_is_idempotent() {
        let empty = set(vec![]);
        let o = Observed::parse(SAVED).expect("parse");
        let want = "*mangle
-D PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE
-D PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE
-D PREROUTING -i eth0 -j TEEFLEET-PRE
-F TEEFLEET-PRE
-X TEEFLEET-PRE
-F TEEFLEET-POST
-X TEEFLEET-POST
COMMIT
";
        assert_eq!(plan_v4(&empty, &o).as_deref(), Some(want));
        assert_eq!(plan_v4(&empty, &Observed::default()), None);
        let only_post = Observed { chains: [("TEEFLEET-POST".to_owned(), vec![])].into(), jumps: [vec![], vec![]] };
        assert_eq!(
            plan_v4(&empty, &only_post).as_deref(),
            Some("*mangle\n-F TEEFLEET-POST\n-X TEEFLEET-POST\nCOMMIT\n")
        );
    }

    #[test]
    fn families_render_their_own_rules() {
        let v6 = MirrorRule::new(
            "six".parse().expect("session"),
            RuleDirection::Ingress,
            "fd00::5".parse().expect("ip"),
            Protocol::Icmp,
            None,
            Some("fd00:1::/64".parse().expect("cidr")),
        )
        .expect("rule");
        let s = set(vec![rule("a", RuleDirection::Ingress, Protocol::All, None, None), v6]);
        assert_eq!(render_rules(&s, Family::V4), [format!("-A TEEFLEET-PRE {}", tail_in("a"))]);
        assert_eq!(
            render_rules(&s, Family::V6),
            [
                "-A TEEFLEET-PRE -s fd00:1::/64 -p ipv6-icmp -m pkttype --pkt-type unicast -m iprange ! --src-range fd00::5-fd00::5 ! --dst-range fd00::5-fd00::5 -m comment --comment \"teefleet:six\" -j TEE --gateway fd00::5"
            ]
        );
        let six: SessionName = "six".parse().expect("name");
        assert_eq!(expected_sessions(&s, Family::V6), [vec![Some(&six)], vec![]]);
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
        let s = set(vec![
            rule("web", RuleDirection::Ingress, Protocol::All, None, None),
            rule("web", RuleDirection::Egress, Protocol::All, None, None),
        ]);
        let control = Control::new(vec![
            "10.0.0.1:7300".parse().expect("addr"),
            "[fd00::1]:7300".parse().expect("addr"),
            "10.0.0.1:7300".parse().expect("addr"),
        ]);
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
        let web: SessionName = "web".parse().expect("name");
        assert_eq!(expected_with_control(&s, Family::V4, &control), [vec![None, Some(&web)], vec![None, Some(&web)]]);
        // No rules of a family, no chains: nothing to exclude either.
        assert!(render_with_control(&s, Family::V6, &control).is_empty());
        assert_eq!(expected_with_control(&s, Family::V6, &control), [vec![], vec![]]);
    }
}
