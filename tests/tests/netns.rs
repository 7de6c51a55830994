//! The namespace network reproduces the manual recipe: with TEE rules put in source1 by
//! hand, the collector captures clones of client↔source1 traffic in both directions and
//! nothing of client↔source2. This proves the lab before any teefleet binary is involved.

use std::time::Duration;

use teefleet_lab::{Capture, Network, Range, require_root_or_skip};

#[tokio::test]
async fn manual_tee_recipe_mirrors_to_the_collector() {
    if !require_root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let net = Network::create(Range::Tests).await.expect("network");
    let ip = |h: &str| net.host(h).expect("host").ip;
    let (source1, source2, collector, client) = (ip("source1"), ip("source2"), ip("collector"), ip("client"));
    let bridge = net.bridge().to_owned();
    let netns = net.host("source1").expect("host").netns.clone();

    let gateway = collector.to_string();
    for chain in ["PREROUTING", "POSTROUTING"] {
        net.iptables("source1", &["-t", "mangle", "-I", chain, "-j", "TEE", "--gateway", &gateway])
            .await
            .expect("insert TEE rule");
    }
    let collector_mac = net.mac("collector").await.expect("mac");
    let capture = Capture::start(&net.host("collector").expect("host").netns, "manual", dir.path(), Some("icmp"))
        .await
        .expect("tcpdump");

    net.ping("client", source1, 3).await.expect("ping source1");
    net.ping("client", source2, 3).await.expect("ping source2");
    // The root namespace reaches the hosts through the bridge's .1 address.
    assert_eq!(net.gateway().octets()[3], 1);

    let is_clone = |p: &teefleet_lab::Packet| p.dst_mac == collector_mac && p.dst != collector;
    capture
        .wait_for("echo request clones", 3, Duration::from_secs(20), |p| {
            is_clone(p) && p.src == client && p.dst == source1 && p.is_echo_request()
        })
        .await
        .expect("requests mirrored");
    capture
        .wait_for("echo reply clones", 3, Duration::from_secs(20), |p| {
            is_clone(p) && p.src == source1 && p.dst == client && p.is_echo_reply()
        })
        .await
        .expect("replies mirrored");
    let text = capture.text();
    assert_eq!(capture.count_between(client, source2), 0, "{text}");
    assert_eq!(capture.count_between(source2, client), 0, "{text}");

    drop(capture);
    drop(net);
    let links = std::process::Command::new("ip").args(["-o", "link"]).output().expect("ip link");
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&format!("{bridge}:")));
    let spaces = std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip netns");
    assert!(!String::from_utf8_lossy(&spaces.stdout).contains(&netns));
}
