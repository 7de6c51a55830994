//! VXLAN delivery on a real kernel: the agent creates one device per tunnel before the
//! rules that name it, reads it back, repairs it when something deletes or changes it,
//! removes it when no rule needs it and at cleanup, and never touches another device,
//! route, neighbour or sysctl.

mod common;

use common::{Netns, root_or_skip};
use teefleet_agent::{
    Dataplane, Iptables, IptablesDataplane,
    firewall::{Scope, devices, tunnel},
};
use teefleet_model::{IpFamily, MirrorRule, Protocol, RuleDirection, RuleSet, Tunnel, Vni};

fn tunnelled(session: &str, family: IpFamily, vni: u32, remote: &str) -> MirrorRule {
    let tunnel = Tunnel::new(Vni::new(vni).expect("vni"), remote.parse().expect("ip")).expect("tunnel");
    MirrorRule::tunnelled(
        session.parse().expect("name"),
        RuleDirection::Egress,
        family,
        tunnel,
        Protocol::All,
        None,
        None,
    )
    .expect("rule")
}

fn set(version: u64, rules: Vec<MirrorRule>) -> RuleSet {
    RuleSet::new(version, rules).expect("set")
}

/// The namespace's devices, routes of every table and family, and sysctls, without those
/// of our own devices: what must be identical before and after.
fn foreign_state(ns: &Netns) -> String {
    let ours = |l: &str| l.contains(tunnel::PREFIX) || l.contains(tunnel::DECAP_DEVICE);
    let mut out = String::new();
    for args in [
        &["ip", "-br", "link", "show"][..],
        &["ip", "route", "show", "table", "all"],
        &["ip", "-6", "route", "show", "table", "all"],
        &["ip", "neigh", "show"],
        &["sysctl", "-a"],
    ] {
        let text = ns.exec(args);
        for line in text.lines().filter(|l| !ours(l)) {
            // Counters that move by themselves are not settings.
            if line.starts_with("fs.") || line.starts_with("kernel.") || line.contains("stable_secret") {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[tokio::test]
async fn tunnel_devices_follow_the_rules_and_are_repaired_and_removed() {
    if !root_or_skip("tunnel_devices_follow_the_rules_and_are_repaired_and_removed") {
        return;
    }
    let ns = Netns::new();
    // Someone else's VXLAN device and a veth pair: never ours, whatever happens.
    ns.exec(&["ip", "link", "add", "vx-other", "type", "vxlan", "id", "9", "remote", "10.9.9.9", "dstport", "4789"]);
    ns.exec(&["ip", "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b"]);
    let foreign = foreign_state(&ns);
    let ipt = Iptables::in_netns(&ns.name);
    let dp = IptablesDataplane::new(ipt.clone()).await;

    let web = set(
        1,
        vec![tunnelled("web", IpFamily::Ipv4, 42, "10.0.0.9"), tunnelled("web", IpFamily::Ipv6, 42, "10.0.0.9")],
    );
    dp.apply(&web).await.expect("apply");
    let devices = devices::observe(&ipt).await.expect("observe");
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0].problem(web.tunnels()[0], true), None, "{devices:?}");
    let save = ns.save();
    assert!(save.contains("-j TEE --gateway 169.254.77.77 --oif tfvx42"), "{save}");
    assert!(save.contains("! --src-range 10.0.0.9-10.0.0.9"), "the outer packets are never mirrored: {save}");
    assert!(ns.save6().contains("-j TEE --gateway fe80::77 --oif tfvx42"), "{}", ns.save6());

    // Deleted, or moved to another collector behind our back: the next check puts it back.
    for (change, drift) in [
        (vec!["ip", "link", "del", "tfvx42"], "tfvx42 was deleted"),
        (vec!["ip", "link", "set", "tfvx42", "down"], "tfvx42 is down"),
        (vec!["ip", "neigh", "del", "169.254.77.77", "dev", "tfvx42"], "tfvx42 has no permanent neighbour"),
        (vec!["ip", "link", "set", "tfvx42", "mtu", "1450"], "tfvx42 has MTU Some(1450)"),
        (vec!["ip", "link", "set", "tfvx42", "name", "renamed0"], "a device of ours was renamed to renamed0"),
    ] {
        ns.exec(&change);
        let check = dp.check().await.expect("check");
        let repairs: Vec<_> = check.repairs.iter().filter(|r| r.scope == Scope::Tunnels).collect();
        // A rename is two things: ours under another name, and ours missing.
        assert_eq!(repairs.len(), if drift.contains("renamed") { 2 } else { 1 }, "{change:?}: {:?}", check.repairs);
        assert!(repairs.iter().any(|r| r.drift.starts_with(drift)), "{change:?}: {repairs:?}");
        let devices = devices::observe(&ipt).await.expect("observe");
        assert_eq!(devices[0].problem(web.tunnels()[0], true), None, "{change:?}: {devices:?}");
        assert!(dp.check().await.expect("check").repairs.is_empty(), "{change:?}: repaired once");
    }

    // Another session's tunnel replaces it: the old device goes once no rule names it.
    let dns = set(2, vec![tunnelled("dns", IpFamily::Ipv4, 7, "fd00::9")]);
    dp.apply(&dns).await.expect("apply");
    let names: Vec<_> = devices::observe(&ipt).await.expect("observe").into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["tfvx7"]);
    dp.apply(&set(3, vec![])).await.expect("empty");
    assert!(devices::observe(&ipt).await.expect("observe").is_empty());

    // A collector's decapsulating device comes and goes with its role, and cleanup
    // removes devices too, and still nothing else.
    dp.apply(&set(4, vec![]).with_collector(true)).await.expect("collector");
    let names: Vec<_> = devices::observe(&ipt).await.expect("observe").into_iter().map(|d| d.name).collect();
    assert_eq!(names, [tunnel::DECAP_DEVICE]);
    dp.apply(&web).await.expect("apply");
    assert!(dp.cleanup().await.expect("cleanup") > 0);
    assert!(devices::observe(&ipt).await.expect("observe").is_empty());
    assert!(!ns.save().contains("TEEFLEET"));
    let after = foreign_state(&ns);
    let diff: Vec<_> = after.lines().filter(|l| !foreign.contains(l)).collect();
    assert_eq!(after, foreign, "changed: {diff:?}");
}
