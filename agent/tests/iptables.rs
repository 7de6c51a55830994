//! The iptables dataplane against the real kernel, inside throwaway network namespaces:
//! the exact rendered syntax is accepted, foreign rules are never touched, each built-in
//! chain gets exactly one jump, and a failed apply changes nothing.

mod common;

use common::{Netns, root_or_skip};
use teefleet_agent::{
    ApplyError, Dataplane, Iptables, IptablesDataplane,
    firewall::{Family, Observed, render},
};
use teefleet_model::{MirrorRule, PortRange, Protocol, RuleDirection, RuleSet};

fn rule(
    session: &str,
    dir: RuleDirection,
    gw: &str,
    proto: Protocol,
    ports: Option<(u32, u32)>,
    peer: Option<&str>,
) -> MirrorRule {
    MirrorRule::new(
        session.parse().expect("session"),
        dir,
        gw.parse().expect("gateway"),
        proto,
        ports.map(|(a, b)| PortRange::new(a, b).expect("ports")),
        peer.map(|p| p.parse().expect("cidr")),
    )
    .expect("rule")
}

/// Every filter combination, in both directions.
fn set_a() -> RuleSet {
    use Protocol::*;
    use RuleDirection::*;
    let mut rules = Vec::new();
    for dir in [Ingress, Egress] {
        rules.push(rule("all", dir, "10.0.0.5", All, None, None));
        rules.push(rule("tcp", dir, "10.0.0.5", Tcp, None, Some("10.1.0.0/16")));
        rules.push(rule("web", dir, "10.0.0.5", Tcp, Some((443, 443)), None));
        rules.push(rule("range", dir, "10.0.0.6", Udp, Some((5000, 5100)), Some("192.168.7.0/24")));
        rules.push(rule("ping", dir, "10.0.0.6", Icmp, None, Some("10.2.3.4/32")));
    }
    RuleSet::new(1, rules).expect("set")
}

fn set_b() -> RuleSet {
    RuleSet::new(2, vec![rule("dns", RuleDirection::Egress, "10.0.0.7", Protocol::Udp, Some((53, 53)), None)])
        .expect("set")
}

/// Foreign rules in every built-in mangle chain and a foreign user chain.
fn add_foreign_rules(ns: &Netns) {
    for args in [
        "-A PREROUTING -p tcp --dport 22 -m comment --comment foreign-pre -j MARK --set-mark 1",
        "-A INPUT -s 10.9.0.0/16 -j MARK --set-mark 2",
        "-A FORWARD -p udp -j MARK --set-mark 3",
        "-A OUTPUT -d 10.8.0.0/16 -j MARK --set-mark 4",
        "-A POSTROUTING -o lo -j MARK --set-mark 5",
        "-N FOREIGN",
        "-A FOREIGN -j MARK --set-mark 6",
        "-A FORWARD -j FOREIGN",
        "-A POSTROUTING -p icmp -j TEE --gateway 10.0.0.99",
    ] {
        ns.iptables(args);
    }
}

/// Our chains hold exactly the rendered rules (so the kernel took the syntax verbatim)
/// and each built-in chain has exactly one jump.
fn assert_applied(ns: &Netns, set: &RuleSet) {
    for (hook, dir) in render::HOOKS.iter().zip([RuleDirection::Ingress, RuleDirection::Egress]) {
        let want: Vec<String> =
            set.rules().iter().filter(|r| r.direction() == dir).map(|r| render::render_rule(r, Family::V4)).collect();
        assert_eq!(ns.chain(hook.chain), want, "{}", hook.chain);
        let jumps: Vec<String> = ns.chain(hook.builtin).into_iter().filter(|l| l.contains(hook.chain)).collect();
        assert_eq!(jumps, [format!("-A {} {}", hook.builtin, hook.jump_spec())], "{}", hook.builtin);
    }
}

/// A fresh namespace with foreign rules, their snapshot, and a dataplane acting on it;
/// `None` when root tests are skipped.
fn setup(test: &str) -> Option<(Netns, String, IptablesDataplane)> {
    if !root_or_skip(test) {
        return None;
    }
    let ns = Netns::new();
    add_foreign_rules(&ns);
    let foreign = ns.foreign();
    let dp = IptablesDataplane::new(Iptables::in_netns(&ns.name));
    Some((ns, foreign, dp))
}

#[tokio::test]
async fn apply_replace_remove_leave_foreign_rules_alone() {
    let Some((ns, foreign, dp)) = setup("apply_replace_remove_leave_foreign_rules_alone") else {
        return;
    };

    dp.apply(&set_a()).await.expect("apply A");
    assert_applied(&ns, &set_a());
    assert_eq!(ns.foreign(), foreign);

    for _ in 0..3 {
        dp.apply(&set_b()).await.expect("apply B");
        assert_applied(&ns, &set_b());
        assert_eq!(ns.foreign(), foreign);
    }
    // The jump is inserted first, before the foreign rules.
    assert_eq!(ns.chain("PREROUTING")[0], "-A PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE");

    for _ in 0..2 {
        dp.apply(&RuleSet::new(3, vec![]).expect("empty")).await.expect("remove");
        assert!(!ns.save().contains("TEEFLEET"), "{}", ns.save());
        assert_eq!(ns.foreign(), foreign);
    }
}

#[tokio::test]
async fn duplicate_and_hand_made_jumps_collapse_to_one() {
    let Some((ns, foreign, dp)) = setup("duplicate_and_hand_made_jumps_collapse_to_one") else {
        return;
    };
    ns.iptables("-N TEEFLEET-PRE");
    ns.iptables("-A TEEFLEET-PRE -j MARK --set-mark 9");
    ns.iptables("-A PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE");
    ns.iptables("-A PREROUTING -m comment --comment teefleet -j TEEFLEET-PRE");
    ns.iptables("-I PREROUTING 1 -i lo -j TEEFLEET-PRE");
    dp.apply(&set_a()).await.expect("apply");
    assert_applied(&ns, &set_a());
    assert_eq!(ns.foreign(), foreign);
}

#[tokio::test]
async fn a_failed_apply_changes_nothing() {
    let Some((ns, _, dp)) = setup("a_failed_apply_changes_nothing") else {
        return;
    };
    let ipt = Iptables::in_netns(&ns.name);
    dp.apply(&set_a()).await.expect("apply A");
    let before = ns.save();

    // A rule the agent cannot apply makes the whole set fail before anything runs.
    let mut rules = set_b().rules().to_vec();
    rules.push(rule("six", RuleDirection::Ingress, "fd00::5", Protocol::All, None, None));
    let err = dp.apply(&RuleSet::new(9, rules).expect("set")).await.expect_err("IPv6");
    assert!(err.to_string().starts_with("IPv6 collectors are not supported yet"), "{err}");
    assert_eq!(ns.save(), before);

    // A line the kernel rejects in the middle of the transaction: iptables-restore
    // commits nothing, and the error names the line.
    let observed = Observed::parse(&ipt.save_mangle().await.expect("save")).expect("parse");
    let good = render::plan(&set_b(), Family::V4, &observed).expect("plan");
    let bad_line = "-A TEEFLEET-POST -p udp -j TEE --gateway 10.0.0.7 --no-such-option";
    let input = good.replacen("COMMIT\n", &format!("{bad_line}\nCOMMIT\n"), 1);
    let err = ipt.restore(&input).await.expect_err("rejected");
    match &err {
        ApplyError::Failed { input_line: Some((n, line)), .. } => {
            assert_eq!(line, bad_line);
            assert_eq!(input.lines().nth(n - 1), Some(bad_line));
        }
        other => panic!("unexpected error: {other:?}"),
    }
    assert!(err.to_string().contains(bad_line), "{err}");
    assert_eq!(ns.save(), before);
    assert_applied(&ns, &set_a());
}
