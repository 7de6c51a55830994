//! Pure rendering of rule sets into `iptables-restore` input, and parsing of what
//! `iptables-save` shows about the objects the agent owns.
//!
//! Everything here is a function of its arguments so the exact text can be pinned by
//! golden tests. Rule text is built only from validated, typed values (addresses, ports,
//! protocol enums, session names whose alphabet needs no quoting): a controller cannot
//! inject iptables arguments through a rule.

use std::{collections::BTreeSet, fmt::Write as _, net::IpAddr};

use teefleet_model::{MirrorRule, Protocol, RuleDirection, RuleSet};

use super::ApplyError;

/// The table all agent chains live in: TEE is a mangle-table target.
pub const TABLE: &str = "mangle";
/// The comment on the jump rules, so a person reading `iptables -S` sees who owns them.
pub const JUMP_COMMENT: &str = "teefleet";

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

/// An address family. Each family has its own tool (`iptables` or `ip6tables`) and its
/// own restore transaction; only IPv4 is implemented so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
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

/// Fails on the first rule of a family this agent cannot apply yet.
pub fn check_supported(set: &RuleSet) -> Result<(), ApplyError> {
    match set.rules().iter().find(|r| Family::of(r.gateway()) != Family::V4) {
        Some(r) => Err(ApplyError::Ipv6Unsupported { session: r.session().clone(), gateway: r.gateway() }),
        None => Ok(()),
    }
}

/// What `iptables-save -t mangle` shows of the agent's objects: which owned chains exist
/// and, per hook, every rule in the built-in chain that jumps to the owned chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub chains: BTreeSet<String>,
    /// Indexed like [`HOOKS`]; each entry is the rule text after `-A BUILTIN `.
    pub jumps: [Vec<String>; 2],
}

impl Observed {
    /// Parses `iptables-save -t mangle` output. Only our chains and the jumps to them
    /// are kept; everything else on the host is someone else's and is never touched.
    pub fn parse(save: &str) -> Result<Observed, ApplyError> {
        let mut observed = Observed::default();
        for line in save.lines() {
            // iptables-nft prints this comment and exits 0 when nft rules it cannot
            // represent live in the table.
            if line.starts_with('#') && line.contains("incompatible") {
                return Err(ApplyError::Incompatible(line.trim_start_matches(['#', ' ']).to_owned()));
            }
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                if HOOKS.iter().any(|h| h.chain == name) {
                    observed.chains.insert(name.to_owned());
                }
                continue;
            }
            for (i, hook) in HOOKS.iter().enumerate() {
                let Some(spec) = line
                    .strip_prefix("-A ")
                    .and_then(|l| l.strip_prefix(hook.builtin))
                    .and_then(|l| l.strip_prefix(' '))
                else {
                    continue;
                };
                let tokens: Vec<&str> = spec.split_whitespace().collect();
                if tokens.windows(2).any(|w| matches!(w[0], "-j" | "-g") && w[1] == hook.chain) {
                    observed.jumps[i].push(spec.to_owned());
                }
            }
        }
        Ok(observed)
    }
}

/// One rule as an `iptables-restore` line. The collector's address is excluded in both
/// directions so the collector's own traffic is never mirrored back to it.
pub fn render_rule(rule: &MirrorRule, family: Family) -> String {
    let hook = Hook::of(rule.direction());
    // The host's service port is the destination port inbound and the source port outbound.
    let (peer_flag, port_flag) = match rule.direction() {
        RuleDirection::Ingress => ("-s", "--dport"),
        RuleDirection::Egress => ("-d", "--sport"),
    };
    let gateway = rule.gateway();
    let mut line = format!("-A {}", hook.chain);
    // A /0 peer matches everything; iptables-save omits it, so we do too.
    if let Some(peer) = rule.peer().filter(|p| p.prefix() != 0) {
        let _ = write!(line, " {peer_flag} {peer}");
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
    let _ = write!(
        line,
        " -m iprange ! --src-range {gateway}-{gateway} ! --dst-range {gateway}-{gateway} -m comment --comment \"teefleet:{}\" -j TEE --gateway {gateway}",
        rule.session()
    );
    line
}

/// The `iptables-restore --noflush` input that turns the observed state into `set` (the
/// rules of `family` in it), or `None` when there is nothing to do (an empty set and
/// nothing of ours installed).
///
/// A non-empty set always gets both chains and both jumps, so "applied" has one shape.
/// Declaring a chain (`:CHAIN - [0:0]`) creates it or flushes it inside the transaction,
/// so the kernel switches from the old rules to the new ones at once.
pub fn plan(set: &RuleSet, family: Family, observed: &Observed) -> Option<String> {
    let rules: Vec<&MirrorRule> = set.rules().iter().filter(|r| Family::of(r.gateway()) == family).collect();
    let mut lines = Vec::new();
    if rules.is_empty() {
        lines.extend(removal_lines(observed));
        if lines.is_empty() {
            return None;
        }
    } else {
        lines.extend(HOOKS.iter().map(|h| format!(":{} - [0:0]", h.chain)));
        // Grouped by chain, so the text reads like `iptables-save` prints it.
        for hook in HOOKS {
            lines.extend(rules.iter().filter(|r| Hook::of(r.direction()) == hook).map(|r| render_rule(r, family)));
        }
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

/// Leaves exactly one canonical jump: keeps the first canonical one, deletes every other
/// jump to our chain (duplicates, or hand-made ones with other matches), inserts the
/// canonical jump at the top when none exists.
fn jump_repair_lines(hook: Hook, jumps: &[String]) -> Vec<String> {
    let canonical = hook.jump_spec();
    let mut kept = false;
    let mut lines = Vec::new();
    for spec in jumps {
        if *spec == canonical && !kept {
            kept = true;
        } else {
            // `-D` with a full specification deletes the first rule that matches it, so
            // one line per observed duplicate removes them all.
            lines.push(format!("-D {} {spec}", hook.builtin));
        }
    }
    if !kept {
        lines.push(format!("-I {} 1 {canonical}", hook.builtin));
    }
    lines
}

/// Deletes the jumps first (a referenced chain cannot be deleted), then flushes and
/// deletes each owned chain that exists.
fn removal_lines(observed: &Observed) -> Vec<String> {
    let mut lines = Vec::new();
    for (hook, jumps) in HOOKS.iter().zip(&observed.jumps) {
        lines.extend(jumps.iter().map(|spec| format!("-D {} {spec}", hook.builtin)));
    }
    for hook in HOOKS.iter().filter(|h| observed.chains.contains(h.chain)) {
        lines.push(format!("-F {}", hook.chain));
        lines.push(format!("-X {}", hook.chain));
    }
    lines
}

#[cfg(test)]
mod tests {
    use teefleet_model::{Cidr, PortRange};

    use super::*;

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

    /// Every filter combination renders to the exact line iptables accepts (the same
    /// syntax was checked against the kernel in `tests/iptables.rs`).
    #[test]
    fn golden_rules() {
        use Protocol::*;
        use RuleDirection::*;
        let cases: Vec<(MirrorRule, String)> = vec![
            (rule("s", Ingress, All, None, None), format!("-A TEEFLEET-PRE {}", tail("s"))),
            (rule("s", Egress, All, None, None), format!("-A TEEFLEET-POST {}", tail("s"))),
            (rule("s", Ingress, Tcp, None, None), format!("-A TEEFLEET-PRE -p tcp {}", tail("s"))),
            (rule("s", Ingress, Udp, None, None), format!("-A TEEFLEET-PRE -p udp {}", tail("s"))),
            (rule("s", Egress, Icmp, None, None), format!("-A TEEFLEET-POST -p icmp {}", tail("s"))),
            (
                rule("s", Ingress, Tcp, Some((443, 443)), None),
                format!("-A TEEFLEET-PRE -p tcp -m tcp --dport 443 {}", tail("s")),
            ),
            (
                rule("s", Egress, Tcp, Some((443, 443)), None),
                format!("-A TEEFLEET-POST -p tcp -m tcp --sport 443 {}", tail("s")),
            ),
            (
                rule("s", Ingress, Udp, Some((5000, 5100)), None),
                format!("-A TEEFLEET-PRE -p udp -m udp --dport 5000:5100 {}", tail("s")),
            ),
            (
                rule("s", Egress, Udp, Some((5000, 5100)), None),
                format!("-A TEEFLEET-POST -p udp -m udp --sport 5000:5100 {}", tail("s")),
            ),
            (
                rule("s", Ingress, All, None, Some("192.168.0.0/16")),
                format!("-A TEEFLEET-PRE -s 192.168.0.0/16 {}", tail("s")),
            ),
            (
                rule("s", Egress, All, None, Some("192.168.0.0/16")),
                format!("-A TEEFLEET-POST -d 192.168.0.0/16 {}", tail("s")),
            ),
            (
                rule("web", Ingress, Tcp, Some((80, 90)), Some("10.1.0.0/16")),
                format!("-A TEEFLEET-PRE -s 10.1.0.0/16 -p tcp -m tcp --dport 80:90 {}", tail("web")),
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
            all = tail("all"),
            web = tail("web"),
            dns = tail("dns"),
        );
        assert_eq!(plan(&s, Family::V4, &Observed::default()).as_deref(), Some(want.as_str()));
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
    fn parses_owned_objects_only() {
        let o = Observed::parse(SAVED).expect("parse");
        assert_eq!(o.chains.iter().map(String::as_str).collect::<Vec<_>>(), ["TEEFLEET-POST", "TEEFLEET-PRE"]);
        assert_eq!(
            o.jumps,
            [
                vec![
                    "-m comment --comment teefleet -j TEEFLEET-PRE".to_owned(),
                    "-m comment --comment teefleet -j TEEFLEET-PRE".to_owned(),
                    "-i eth0 -j TEEFLEET-PRE".to_owned(),
                ],
                vec![],
            ]
        );
        let err = Observed::parse("# Table `mangle' is incompatible, use 'nft' tool.\n").unwrap_err();
        assert!(matches!(err, ApplyError::Incompatible(_)), "{err}");
    }

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
-D PREROUTING -i eth0 -j TEEFLEET-PRE
-I POSTROUTING 1 -m comment --comment teefleet -j TEEFLEET-POST
COMMIT
",
            a = tail("a")
        );
        assert_eq!(plan(&s, Family::V4, &o).as_deref(), Some(want.as_str()));
    }

    #[test]
    fn jumps_already_in_place_are_left_alone() {
        let s = set(vec![rule("a", RuleDirection::Ingress, Protocol::Icmp, None, None)]);
        let o = Observed {
            chains: HOOKS.iter().map(|h| h.chain.to_owned()).collect(),
            jumps: HOOKS.map(|h| vec![h.jump_spec()]),
        };
        let want = format!(
            "*mangle\n:TEEFLEET-PRE - [0:0]\n:TEEFLEET-POST - [0:0]\n-A TEEFLEET-PRE -p icmp {}\nCOMMIT\n",
            tail("a")
        );
        assert_eq!(plan(&s, Family::V4, &o).as_deref(), Some(want.as_str()));
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
        assert_eq!(plan(&empty, Family::V4, &o).as_deref(), Some(want));
        assert_eq!(plan(&empty, Family::V4, &Observed::default()), None);
        let only_post = Observed { chains: ["TEEFLEET-POST".to_owned()].into(), jumps: [vec![], vec![]] };
        assert_eq!(
            plan(&empty, Family::V4, &only_post).as_deref(),
            Some("*mangle\n-F TEEFLEET-POST\n-X TEEFLEET-POST\nCOMMIT\n")
        );
    }

    #[test]
    fn ipv6_collectors_are_refused() {
        let v6 = MirrorRule::new(
            "six".parse().expect("session"),
            RuleDirection::Ingress,
            "fd00::5".parse().expect("ip"),
            Protocol::Icmp,
            None,
            None,
        )
        .expect("rule");
        let s = set(vec![rule("a", RuleDirection::Ingress, Protocol::All, None, None), v6.clone()]);
        let err = check_supported(&s).unwrap_err();
        assert!(err.to_string().starts_with("IPv6 collectors are not supported yet"), "{err}");
        assert!(check_supported(&set(vec![rule("a", RuleDirection::Ingress, Protocol::All, None, None)])).is_ok());
        // The family parameter already renders the IPv6 dialect for when ip6tables lands.
        assert_eq!(
            render_rule(&v6, Family::V6),
            "-A TEEFLEET-PRE -p ipv6-icmp -m iprange ! --src-range fd00::5-fd00::5 ! --dst-range fd00::5-fd00::5 -m comment --comment \"teefleet:six\" -j TEE --gateway fd00::5"
        );
    }
}
