//! The iptables dataplane against the real kernel, inside throwaway network namespaces:
//! the exact rendered syntax is accepted, foreign rules are never touched, each built-in
//! chain gets exactly one jump, and a failed apply changes nothing. With the nft backend a
//! drift check reads nothing while the nf_tables generation is unchanged, and still finds
//! every change at once.

mod common;

use std::time::Duration;

use common::{Netns, root_or_skip};
use teefleet_agent::{
    ApplyError, Dataplane, Iptables, IptablesDataplane,
    firewall::{
        Family, Observed, Scope, Variant,
        generation::{Generation, GenerationError},
        layout::Hook,
        plan, render,
    },
};
use teefleet_model::{Arrival, HostId, MirrorRule, PortRange, Protocol, RuleDirection, RuleSet, SessionName, Vni};

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
    for (hook, dir) in Hook::ALL.into_iter().zip([RuleDirection::Ingress, RuleDirection::Egress]) {
        let want: Vec<String> =
            set.rules().iter().filter(|r| r.direction() == dir).map(|r| render::render_rule(r, Family::V4)).collect();
        assert_eq!(ns.chain(hook.chain()), want, "{}", hook.chain());
        let jumps: Vec<String> = ns.chain(hook.builtin()).into_iter().filter(|l| l.contains(hook.chain())).collect();
        assert_eq!(jumps, [format!("-A {} {}", hook.builtin(), hook.jump_spec())], "{}", hook.builtin());
    }
}

/// A fresh namespace with foreign rules, their snapshot, and a dataplane acting on it;
/// `None` when root tests are skipped.
async fn setup(test: &str) -> Option<(Netns, String, IptablesDataplane)> {
    if !root_or_skip(test) {
        return None;
    }
    let ns = Netns::new();
    add_foreign_rules(&ns);
    let foreign = ns.foreign();
    let dp = IptablesDataplane::new(Iptables::in_netns(&ns.name)).await;
    Some((ns, foreign, dp))
}

#[tokio::test]
async fn apply_replace_remove_leave_foreign_rules_alone() {
    let Some((ns, foreign, dp)) = setup("apply_replace_remove_leave_foreign_rules_alone").await else {
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
    // Re-pushing IPv4-only rules reads the IPv4 table once and writes nothing; IPv6, known
    // to hold nothing of ours, is not even read.
    let (reads, writes) = (dp.reads(), dp.writes());
    dp.apply(&RuleSet::new(7, set_b().rules().to_vec()).expect("set")).await.expect("same rules");
    assert_eq!((dp.reads() - reads, dp.writes() - writes), (1, 0));
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
    let Some((ns, foreign, dp)) = setup("duplicate_and_hand_made_jumps_collapse_to_one").await else {
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
    let Some((ns, _, dp)) = setup("a_failed_apply_changes_nothing").await else {
        return;
    };
    let ipt = Iptables::in_netns(&ns.name);
    dp.apply(&set_a()).await.expect("apply A");
    let before = ns.save();

    // A line the kernel rejects in the middle of the transaction: iptables-restore
    // commits nothing, and the error names the line.
    let observed = Observed::parse(&ipt.save(Family::V4).await.expect("save")).expect("parse");
    let good = plan::plan(&render::render_rules(&set_b(), Family::V4), &observed).expect("plan");
    let bad_line = "-A TEEFLEET-POST -p udp -j TEE --gateway 10.0.0.7 --no-such-option";
    let input = good.replacen("COMMIT\n", &format!("{bad_line}\nCOMMIT\n"), 1);
    let err = ipt.restore(Family::V4, &input).await.expect_err("rejected");
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

/// Foreign IPv6 rules in every built-in mangle chain.
fn add_foreign_rules6(ns: &Netns) {
    for args in [
        "-A PREROUTING -p tcp --dport 22 -m comment --comment foreign-pre6 -j MARK --set-mark 11",
        "-A INPUT -s fd00:9::/32 -j MARK --set-mark 12",
        "-A FORWARD -p udp -j MARK --set-mark 13",
        "-A OUTPUT -d fd00:8::/32 -j MARK --set-mark 14",
        "-A POSTROUTING -o lo -j MARK --set-mark 15",
    ] {
        ns.ip6tables(args);
    }
}

/// A set over both families, with samples and caps.
fn set_dual(version: u64) -> RuleSet {
    use teefleet_model::{MaxPps, Sample, Throttle};
    let throttle = Throttle::new(Some("0.01".parse::<Sample>().expect("sample")), Some(MaxPps::new(200).expect("cap")));
    let rules = vec![
        rule("web", RuleDirection::Ingress, "10.0.0.5", Protocol::Tcp, Some((443, 443)), None),
        rule("web", RuleDirection::Egress, "10.0.0.5", Protocol::Tcp, Some((443, 443)), None),
        rule("web", RuleDirection::Ingress, "fd00::5", Protocol::Tcp, Some((443, 443)), None),
        rule("bulk", RuleDirection::Ingress, "10.0.0.6", Protocol::Udp, None, Some("10.7.0.0/16"))
            .with_throttle(throttle),
        rule("bulk", RuleDirection::Egress, "fd00::6", Protocol::Icmp, None, Some("fd00:7::/48"))
            .with_throttle(throttle),
    ];
    RuleSet::new(version, rules).expect("set")
}

/// Both families hold what `set` says, read back the way the agent verifies it.
async fn assert_applied_dual(ipt: &Iptables, set: &RuleSet) {
    for family in [Family::V4, Family::V6] {
        let observed = Observed::parse(&ipt.save(family).await.expect("save")).expect("parse");
        let expected = plan::expected_sessions(set, family);
        assert_eq!(observed.verify(&expected), Ok(()), "{family:?}");
    }
}

/// One drift check: what it repaired (family, drift), and how many reads and writes it made.
async fn check_counting(dp: &IptablesDataplane, what: &str) -> (Vec<(Scope, String)>, u64, u64) {
    let (reads, writes) = (dp.reads(), dp.writes());
    let check = dp.check().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let repairs = check.repairs.into_iter().map(|r| (r.scope, r.drift)).collect();
    (repairs, dp.reads() - reads, dp.writes() - writes)
}

/// Longer than any test: counters are never too old to reuse within one.
const REUSE_ALWAYS: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn drift_in_either_family_is_repaired_and_foreign_rules_never_change() {
    drift_scenario(
        "drift_in_either_family_is_repaired_and_foreign_rules_never_change",
        Variant::System,
        "nft",
        Duration::ZERO,
    )
    .await;
}

#[tokio::test]
async fn every_drift_is_found_by_the_next_check_through_the_nf_tables_generation() {
    drift_scenario(
        "every_drift_is_found_by_the_next_check_through_the_nf_tables_generation",
        Variant::Nft,
        "nft",
        REUSE_ALWAYS,
    )
    .await;
}

#[tokio::test]
async fn the_legacy_backend_gets_the_same_treatment() {
    // No generation covers legacy tables, so reusable counters change nothing there.
    drift_scenario("the_legacy_backend_gets_the_same_treatment", Variant::Legacy, "legacy", REUSE_ALWAYS).await;
}

/// Every kind of drift, in both families, with `counter_max_age` for the dataplane.
async fn drift_scenario(test: &str, variant: Variant, backend: &str, counter_max_age: Duration) {
    if !root_or_skip(test) {
        return;
    }
    let mut ns = Netns::new();
    ns.legacy = variant == Variant::Legacy;
    add_foreign_rules(&ns);
    add_foreign_rules6(&ns);
    let foreign = ns.foreign();
    let ipt = Iptables::in_netns(&ns.name).with_variant(variant);
    let dp = IptablesDataplane::new(ipt.clone()).await.with_counter_max_age(counter_max_age);
    let info = dp.info();
    assert!(info.ipv6 && info.problems.is_empty() && info.backend == backend, "{info:?}");

    dp.apply(&set_dual(1)).await.expect("apply");
    assert_applied_dual(&ipt, &set_dual(1)).await;
    assert_eq!(ns.foreign(), foreign);
    // The sampled, capped rules are in the kernel with the matches the renderer wrote.
    let bulk = ns.chain("TEEFLEET-PRE").into_iter().find(|l| l.contains("teefleet:bulk")).expect("bulk rule");
    assert!(
        bulk.contains("-m statistic --mode random --probability 0.0099") && bulk.contains("--hashlimit-upto 200/sec"),
        "{bulk}"
    );
    assert_eq!(ns.chain6("TEEFLEET-POST").len(), 1);

    // A push with the same rules and a new version writes nothing; so does a clean check,
    // which reads both families, or nothing when the nf_tables generation says nothing
    // changed since the push read them.
    let writes = dp.writes();
    dp.apply(&set_dual(2)).await.expect("same rules");
    let reads = dp.reads();
    let check = dp.check().await.expect("check");
    assert_eq!((dp.writes(), check.repairs.len()), (writes, 0), "no-change push and clean check do not write");
    let clean_reads = if backend == "nft" && !counter_max_age.is_zero() { 0 } else { 2 };
    assert_eq!(dp.reads() - reads, clean_reads, "reads of a clean check");

    let jump_pre = "-m comment --comment teefleet -j TEEFLEET-PRE";
    let drifts: [(&str, Vec<String>, &str); 7] = [
        ("flush", vec!["-F TEEFLEET-PRE".into()], "chain TEEFLEET-PRE was flushed"),
        (
            "delete chain",
            vec![format!("-D PREROUTING {jump_pre}"), "-F TEEFLEET-PRE".into(), "-X TEEFLEET-PRE".into()],
            "chain TEEFLEET-PRE was deleted; the jump from PREROUTING to TEEFLEET-PRE was removed",
        ),
        (
            "remove jump",
            vec!["-D POSTROUTING -m comment --comment teefleet -j TEEFLEET-POST".into()],
            "the jump from POSTROUTING to TEEFLEET-POST was removed",
        ),
        (
            "move jump",
            vec![format!("-D PREROUTING {jump_pre}"), format!("-A PREROUTING {jump_pre}")],
            "the jump from PREROUTING moved to position 2",
        ),
        ("duplicate jump", vec![format!("-A PREROUTING {jump_pre}")], "PREROUTING has 2 jumps to TEEFLEET-PRE"),
        (
            "foreign rule in our chain",
            vec!["-I TEEFLEET-POST 1 -j ACCEPT".into()],
            "chain TEEFLEET-POST has 2 rules instead of 1",
        ),
        ("changed rule", vec!["-R TEEFLEET-POST 1 -j ACCEPT".into()], "rules in chain TEEFLEET-POST were changed"),
    ];
    for (what, commands, description) in drifts {
        for command in &commands {
            ns.iptables(command);
        }
        let (repairs, reads, writes) = check_counting(&dp, what).await;
        assert_eq!(repairs, [(Scope::Rules(Family::V4), description.to_owned())], "{what}");
        // One read per family, one write and one read-back for the drifted family.
        assert_eq!((reads, writes), (3, 1), "{what}");
        assert_applied_dual(&ipt, &set_dual(2)).await;
        assert_eq!(ns.foreign(), foreign, "{what}");
    }

    // IPv6 drift is found and repaired the same way.
    ns.ip6tables("-F TEEFLEET-POST");
    let check = dp.check().await.expect("check");
    assert_eq!(check.repairs.iter().map(|r| r.scope).collect::<Vec<_>>(), [Scope::Rules(Family::V6)]);
    assert_applied_dual(&ipt, &set_dual(2)).await;
    assert_eq!(ns.foreign(), foreign);

    // Cleanup removes everything of ours in both families, and is idempotent.
    assert_eq!(dp.cleanup().await.expect("cleanup"), 2);
    assert!(!ns.save().contains("TEEFLEET") && !ns.save6().contains("TEEFLEET"), "{}{}", ns.save(), ns.save6());
    assert_eq!(ns.foreign(), foreign);
    let again = IptablesDataplane::new(ipt.clone()).await;
    assert_eq!(again.cleanup().await.expect("cleanup again"), 0);
    assert_eq!(ns.foreign(), foreign);
}

#[tokio::test]
async fn counters_are_per_session_and_survive_reapplies() {
    let Some((ns, _, dp)) = setup("counters_are_per_session_and_survive_reapplies").await else {
        return;
    };
    ns.exec(&["ip", "link", "set", "lo", "up"]);
    let ping = |n: &str| {
        ns.exec(&["ping", "-c", n, "-i", "0.01", "-q", "127.0.0.1"]);
    };
    // Egress rules see loopback traffic in POSTROUTING; the clones go nowhere, which is fine.
    let egress = |session: &str, proto| rule(session, RuleDirection::Egress, "10.0.0.5", proto, None, None);
    let first = RuleSet::new(1, vec![egress("icmp", Protocol::Icmp), egress("udp", Protocol::Udp)]).expect("set");
    dp.apply(&first).await.expect("apply");
    ping("5");
    let check = dp.check().await.expect("check");
    let icmp: teefleet_model::SessionName = "icmp".parse().expect("name");
    let udp: teefleet_model::SessionName = "udp".parse().expect("name");
    // Echo requests and replies both leave through POSTROUTING on lo.
    assert_eq!(check.counters[&icmp].packets, 10, "{:?}", check.counters);
    assert_eq!(check.counters.get(&udp).map(|c| c.packets), Some(0));
    let bytes = check.counters[&icmp].bytes;
    assert!(bytes >= 10 * 84, "{bytes}");

    // A different set resets the kernel's counters; the totals carry on.
    let second = RuleSet::new(2, vec![egress("icmp", Protocol::All), egress("icmp", Protocol::Icmp)]).expect("set");
    dp.apply(&second).await.expect("apply");
    assert_eq!(dp.check().await.expect("check").counters[&icmp].packets, 10);
    ping("2");
    let check = dp.check().await.expect("check");
    assert_eq!(check.counters[&icmp].packets, 10 + 2 * 2 * 2, "two rules of the session match each packet");
    assert!(!check.counters.contains_key(&udp), "a session no longer applied is no longer reported");
}

#[tokio::test]
async fn a_table_iptables_save_calls_incompatible_is_reported_and_never_written() {
    if !root_or_skip("a_table_iptables_save_calls_incompatible_is_reported_and_never_written") {
        return;
    }
    let ns = Netns::new();
    // A base chain iptables-nft cannot represent: iptables-save exits 0 but says so.
    ns.exec(&["nft", "add", "table", "ip", "mangle"]);
    ns.exec(&["nft", "add", "chain", "ip", "mangle", "other", "{ type filter hook prerouting priority 0; }"]);
    let before = ns.exec(&["nft", "list", "ruleset"]);
    let dp = IptablesDataplane::new(Iptables::in_netns(&ns.name)).await;
    let info = dp.info();
    assert!(info.problems.iter().any(|p| p.contains("incompatible")), "{info:?}");
    let err = dp.apply(&set_a()).await.expect_err("refused");
    assert!(matches!(err, ApplyError::Incompatible(_)), "{err}");
    assert!(err.to_string().contains("incompatible"), "{err}");
    assert_eq!(ns.exec(&["nft", "list", "ruleset"]), before, "nothing was written");
}

/// Mirrors ICMP leaving the namespace (echo requests and replies on lo) to a collector.
fn icmp_set() -> RuleSet {
    RuleSet::new(1, vec![rule("icmp", RuleDirection::Egress, "10.0.0.5", Protocol::Icmp, None, None)]).expect("set")
}

/// A namespace with foreign rules and lo up, its foreign snapshot, and a dataplane with
/// the nft tools that may reuse counters for `counter_max_age`.
async fn setup_nft(test: &str, counter_max_age: Duration) -> Option<(Netns, String, IptablesDataplane)> {
    if !root_or_skip(test) {
        return None;
    }
    let ns = Netns::new();
    add_foreign_rules(&ns);
    ns.exec(&["ip", "link", "set", "lo", "up"]);
    let foreign = ns.foreign();
    let dp = IptablesDataplane::new(Iptables::in_netns(&ns.name).with_variant(Variant::Nft))
        .await
        .with_counter_max_age(counter_max_age);
    assert_eq!(dp.info().backend, "nft", "{:?}", dp.info());
    Some((ns, foreign, dp))
}

fn ping(ns: &Netns, count: &str) {
    ns.exec(&["ping", "-c", count, "-i", "0.01", "-q", "127.0.0.1"]);
}

fn icmp_packets(check: &teefleet_agent::firewall::Check) -> u64 {
    let icmp: teefleet_model::SessionName = "icmp".parse().expect("name");
    check.counters.get(&icmp).map_or(0, |c| c.packets)
}

#[tokio::test]
async fn a_check_reads_nothing_until_nf_tables_changes_and_then_repairs_at_once() {
    let test = "a_check_reads_nothing_until_nf_tables_changes_and_then_repairs_at_once";
    let Some((ns, foreign, dp)) = setup_nft(test, REUSE_ALWAYS).await else {
        return;
    };
    let set = icmp_set();
    dp.apply(&set).await.expect("apply");

    // Nothing committed since the apply read back: no check reads, and the counters are
    // the ones that read saw, although packets matched since (counters are no commit).
    ping(&ns, "5");
    let (reads, writes) = (dp.reads(), dp.writes());
    for _ in 0..3 {
        let check = dp.check().await.expect("check");
        assert_eq!((check.repairs.len(), icmp_packets(&check)), (0, 0));
    }
    assert_eq!((dp.reads() - reads, dp.writes() - writes), (0, 0), "clean checks read nothing");

    // A commit anywhere in the namespace's nf_tables, even in a table not ours, makes the
    // next check read (and take the counters), and the one after read nothing again.
    ns.exec(&["nft", "add", "table", "inet", "unrelated"]);
    let reads = dp.reads();
    let check = dp.check().await.expect("check");
    assert_eq!((check.repairs.len(), icmp_packets(&check), dp.reads() - reads), (0, 10, 1));
    dp.check().await.expect("check");
    assert_eq!(dp.reads() - reads, 1, "no read after the change was seen");

    // Foreign changes to our chains are found and repaired by the very next check.
    for (command, drift) in [
        ("-I TEEFLEET-POST 1 -j ACCEPT", "chain TEEFLEET-POST has 2 rules instead of 1"),
        ("-F TEEFLEET-POST", "chain TEEFLEET-POST was flushed"),
        (
            "-D POSTROUTING -m comment --comment teefleet -j TEEFLEET-POST",
            "the jump from POSTROUTING to TEEFLEET-POST was removed",
        ),
    ] {
        ns.iptables(command);
        let (repairs, reads, writes) = check_counting(&dp, command).await;
        assert_eq!(repairs, [(Scope::Rules(Family::V4), drift.to_owned())], "{command}");
        // The read that found it, the repair, and the read back that checks it.
        assert_eq!((reads, writes), (2, 1), "{command}");
        assert_applied(&ns, &set);
        assert_eq!(ns.foreign(), foreign, "{command}");
        // The repair's own commit is behind the read back, so nothing is read after it.
        assert_eq!(check_counting(&dp, command).await, (vec![], 0, 0), "{command}: the check after the repair");
    }
}

#[tokio::test]
async fn counters_are_read_again_once_older_than_their_max_age() {
    let test = "counters_are_read_again_once_older_than_their_max_age";
    let max_age = Duration::from_secs(1);
    let Some((ns, _, dp)) = setup_nft(test, max_age).await else {
        return;
    };
    dp.apply(&icmp_set()).await.expect("apply");
    ping(&ns, "5");
    // Nothing in nf_tables changes meanwhile; only the counters' age makes the check read.
    tokio::time::sleep(max_age + Duration::from_millis(500)).await;
    let reads = dp.reads();
    let check = dp.check().await.expect("check");
    assert_eq!((dp.reads() - reads, check.repairs.len()), (1, 0));
    assert_eq!(icmp_packets(&check), 10, "echo requests and replies both leave through POSTROUTING on lo");
}

#[tokio::test]
async fn the_generation_is_the_namespaces_own_and_bumped_by_every_nf_tables_commit() {
    if !root_or_skip("the_generation_is_the_namespaces_own_and_bumped_by_every_nf_tables_commit") {
        return;
    }
    let ns = Netns::new();
    let mut generation = Generation::new(Some(ns.name.clone()));
    let mut last = generation.read().await.expect("generation");
    // Reading tables commits nothing.
    ns.exec(&["iptables-nft-save", "-t", "mangle"]);
    ns.exec(&["nft", "list", "ruleset"]);
    assert_eq!(generation.read().await.expect("generation"), last);
    for command in [
        &["iptables-nft", "-t", "mangle", "-N", "TEEFLEET-TEST"][..],
        &["iptables-nft", "-t", "mangle", "-A", "TEEFLEET-TEST", "-j", "ACCEPT"],
        &["ip6tables-nft", "-t", "mangle", "-A", "PREROUTING", "-j", "ACCEPT"],
        &["nft", "add", "table", "inet", "other"],
    ] {
        ns.exec(command);
        let now = generation.read().await.expect("generation");
        assert_ne!(now, last, "{command:?}");
        last = now;
    }
    // Legacy tables are not in nf_tables.
    ns.exec(&["iptables-legacy", "-t", "mangle", "-N", "TEEFLEET-TEST"]);
    assert_eq!(generation.read().await.expect("generation"), last);

    // The agent's own namespace can be read too, and a missing one is an error.
    Generation::new(None).read().await.expect("the agent's namespace");
    let err = Generation::new(Some(format!("{}-missing", ns.name))).read().await.expect_err("no such namespace");
    assert!(matches!(err, GenerationError::Netns { .. }), "{err:?}");
}

#[tokio::test]
async fn the_agents_traffic_with_its_controllers_is_returned_before_any_session() {
    let Some((ns, foreign, dp)) = setup("the_agents_traffic_with_its_controllers_is_returned_before_any_session").await
    else {
        return;
    };
    let control =
        render::Control::new(vec!["10.0.0.1:7300".parse().expect("addr"), "10.0.0.2:7301".parse().expect("addr")]);
    let dp = dp.with_control(control);
    dp.apply(&set_a()).await.expect("apply");
    for (chain, flag) in [("TEEFLEET-PRE", "--sport"), ("TEEFLEET-POST", "--dport")] {
        let rules = ns.chain(chain);
        assert!(rules[0].contains(&format!("10.0.0.1/32 -p tcp -m tcp {flag} 7300")), "{rules:?}");
        assert!(rules[1].contains(&format!("10.0.0.2/32 -p tcp -m tcp {flag} 7301")), "{rules:?}");
        assert!(rules[..2].iter().all(|r| r.ends_with("-j RETURN")), "{rules:?}");
        assert!(rules[2..].iter().all(|r| r.contains("-j TEE")), "{rules:?}");
    }
    // What it applied reads back as applied: no drift, nothing rewritten.
    let writes = dp.writes();
    assert!(dp.check().await.expect("check").repairs.is_empty());
    dp.apply(&RuleSet::new(2, set_a().rules().to_vec()).expect("set")).await.expect("same rules");
    assert_eq!(dp.writes(), writes);
    // Removed with the rules.
    dp.apply(&RuleSet::new(3, vec![]).expect("empty")).await.expect("remove");
    assert!(!ns.save().contains("teefleet-control"), "{}", ns.save());
    assert_eq!(ns.foreign(), foreign);
}

/// A collector's counting rules are taken verbatim by the kernel in both families, a
/// second push of the same set writes nothing, and each VXLAN arrival counts only its
/// source's packets of its VNI.
#[tokio::test]
async fn a_collector_counts_arrivals_per_session_and_source() {
    let Some((ns, foreign, dp)) = setup("a_collector_counts_arrivals_per_session_and_source").await else {
        return;
    };
    ns.exec(&["ip", "link", "set", "lo", "up"]);
    let (web, db): (SessionName, SessionName) = ("web".parse().expect("name"), "db".parse().expect("name"));
    let (h1, h2): (HostId, HostId) = ("h1".parse().expect("host"), "h2".parse().expect("host"));
    let vni = |n| Some(Vni::new(n).expect("vni"));
    let arrivals = vec![
        Arrival::new(web.clone(), h1.clone(), "127.0.0.1".parse().expect("ip"), vni(42)),
        Arrival::new(web.clone(), h2.clone(), "127.0.0.2".parse().expect("ip"), vni(42)),
        Arrival::new(web.clone(), h1.clone(), "::1".parse().expect("ip"), vni(42)),
        Arrival::new(db.clone(), h1.clone(), "10.9.0.1".parse().expect("ip"), None),
        Arrival::new(db.clone(), h1.clone(), "fd00::1".parse().expect("ip"), None),
    ];
    let set = RuleSet::new(1, vec![]).expect("set").with_arrivals(arrivals).expect("arrivals");
    dp.apply(&set).await.expect("apply");
    let (v4, v6) = (render::render_rules(&set, Family::V4), render::render_rules(&set, Family::V6));
    assert_eq!(v4.len(), 2 + 4, "the gate, then the arrivals: {v4:?}");
    assert_eq!(ns.chain("TEEFLEET-PRE"), v4, "the kernel holds the rules as rendered");
    assert_eq!(ns.chain6("TEEFLEET-PRE"), v6);
    assert_eq!(ns.foreign(), foreign);
    let writes = dp.writes();
    dp.apply(&RuleSet::new(2, vec![]).expect("set").with_arrivals(set.arrivals().to_vec()).expect("arrivals"))
        .await
        .expect("same set");
    assert_eq!(dp.writes(), writes, "the same arrivals again write nothing");

    // Three VXLAN datagrams of VNI 42 from 127.0.0.1, one of VNI 43: the latter is no
    // clone of the session's.
    let send = |vni: u32, n: usize| {
        let header =
            format!("\\x08\\x00\\x00\\x00\\x{:02x}\\x{:02x}\\x{:02x}\\x00", vni >> 16, (vni >> 8) & 0xff, vni & 0xff);
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.bind(('127.0.0.1',0))\nfor _ in range({n}): s.sendto(b'{header}'+b'inner frame',('127.0.0.1',4789))"
        );
        ns.exec(&["python3", "-c", &script]);
    };
    send(42, 3);
    send(43, 1);
    // The host's own traffic that is no clone returns at the gate, before any arrival.
    let other = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                 for _ in range(5): s.sendto(b'x',('127.0.0.1',9999))";
    ns.exec(&["python3", "-c", other]);
    let saved = ns.exec(&["iptables-save", "-c", "-t", "mangle"]);
    let gate: Vec<&str> =
        saved.lines().filter(|l| l.contains("teefleet-rx-gate") && l.contains("! --dport 4789")).collect();
    assert!(matches!(gate.as_slice(), [line] if line.starts_with("[5:")), "{saved}");
    let check = dp.check().await.expect("check");
    assert_eq!(check.arrivals[&(web.clone(), h1.clone())].packets, 3, "{:?}", check.arrivals);
    assert_eq!(check.arrivals[&(web, h2)].packets, 0);
    assert_eq!(check.arrivals[&(db, h1)].packets, 0);
    assert!(check.counters.is_empty(), "a collector mirrors nothing");
    assert!(check.read_at.is_some());

    dp.apply(&RuleSet::new(3, vec![]).expect("empty")).await.expect("remove");
    assert!(!ns.save().contains("TEEFLEET") && !ns.save6().contains("TEEFLEET"));
    assert_eq!(ns.foreign(), foreign);
}
