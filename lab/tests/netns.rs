//! The namespace network reproduces the manual recipe under EC2's rules: with TEE rules put
//! in source1 by hand, the collector captures clones of client↔source1 traffic only as far
//! as the instances' Source/Dest Checks let them through, and nothing of client↔source2.
//! This proves the lab before any teefleet binary is involved, in both address families.

use std::time::Duration;

use teefleet_lab::{COLLECTOR, COLLECTOR_B, COLLECTOR2, Capture, Network, Packet, Range, require_root_or_skip};

#[tokio::test]
async fn manual_tee_recipe_under_ec2_rules_loses_inbound_clones_until_the_source_check_is_off() {
    if !require_root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let net = Network::create(Range::Tests).await.expect("network");
    let ip = |h: &str| net.host(h).expect("host").ip;
    let (source1, source2, collector, client) = (ip("source1"), ip("source2"), ip("collector"), ip("client"));
    let bridge = net.bridge().to_owned();
    let netns = net.host("source1").expect("host").netns.clone();

    // Step 1 of the recipe: TEE in both directions to the collector.
    let gateway = collector.to_string();
    for chain in ["PREROUTING", "POSTROUTING"] {
        net.iptables("source1", &["-t", "mangle", "-I", chain, "-p", "icmp", "-j", "TEE", "--gateway", &gateway])
            .await
            .expect("insert TEE rule");
    }
    let collector_mac = net.mac("collector").await.expect("mac");
    let capture = Capture::start(&net.host("collector").expect("host").netns, "manual", dir.path(), Some("icmp"))
        .await
        .expect("tcpdump");
    let is_clone = |p: &Packet| p.dst_mac == collector_mac && p.dst != collector && p.src != collector;
    let requests = |p: &Packet| is_clone(p) && p.src == client && p.dst == source1 && p.is_echo_request();
    let replies = |p: &Packet| is_clone(p) && p.src == source1 && p.dst == client && p.is_echo_reply();
    // Everything before a ping to the collector itself has been captured once it shows.
    let flush = async |label: &str| {
        let sentinel = |p: &Packet| p.src == client && p.dst == collector && p.is_echo_request();
        let before = capture.count(sentinel);
        net.ping("client", collector, 1).await.expect("sentinel ping");
        capture.wait_for(label, before + 1, Duration::from_secs(20), sentinel).await.expect("sentinel captured");
    };

    // Every check on (EC2's default): the collector refuses what is not addressed to it.
    net.ping("client", source1, 3).await.expect("ping source1");
    flush("the sentinel, checks on").await;
    assert_eq!((capture.count(requests), capture.count(replies)), (0, 0), "{}", capture.text());
    let dropped = net.checks().dropped("collector").await.expect("counters");
    assert!(dropped.received >= 3, "the collector's check dropped the reply clones: {dropped:?}");

    // Step 3: the collector's check off. The replies' clones carry source1's own address
    // and arrive; the requests' clones carry the client's and are dropped as source1 sends
    // them: a session mirroring both directions loses half.
    net.set_source_dest_check("collector", false).await.expect("collector check off");
    net.ping("client", source1, 3).await.expect("ping source1");
    net.ping("client", source2, 3).await.expect("ping source2");
    flush("the sentinel, collector's check off").await;
    assert_eq!((capture.count(requests), capture.count(replies)), (0, 3), "{}", capture.text());
    let dropped = net.checks().dropped("source1").await.expect("counters");
    assert!(dropped.sent >= 3, "source1's check dropped the inbound clones: {dropped:?}");

    // With source1's check off as well, both directions arrive.
    net.set_source_dest_check("source1", false).await.expect("source1 check off");
    net.ping("client", source1, 3).await.expect("ping source1");
    flush("the sentinel, both checks off").await;
    assert_eq!((capture.count(requests), capture.count(replies)), (3, 6), "{}", capture.text());
    let text = capture.text();
    assert_eq!(capture.count_between(client, source2), 0, "{text}");
    assert_eq!(capture.count_between(source2, client), 0, "{text}");
    // The root namespace reaches the hosts through the bridge's .1 address.
    assert_eq!(net.gateway().octets()[3], 1);

    drop(capture);
    drop(net);
    let links = std::process::Command::new("ip").args(["-o", "link"]).output().expect("ip link");
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&format!("{bridge}:")));
    let spaces = std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip netns");
    assert!(!String::from_utf8_lossy(&spaces.stdout).contains(&netns));
}

/// The second subnet is behind the router, as in a VPC: its collector is reachable from
/// every host and from the root namespace, but not on-link, so raw TEE cannot reach it.
#[tokio::test]
async fn the_second_subnet_is_routed_and_not_on_link() {
    if !require_root_or_skip() {
        return;
    }
    let net = Network::create(Range::Tests).await.expect("network");
    let far = net.host(COLLECTOR_B).expect("host").clone();
    assert_eq!(far.subnet, 1);
    assert_ne!(net.cidr_of(0), net.cidr_of(1));
    net.ping("source1", far.ip, 1).await.expect("source1 → collector-b through the router");
    net.ping6("source1", far.ip6, 1).await.expect("source1 → collector-b over IPv6");
    net.ping(COLLECTOR_B, net.gateway(), 1).await.expect("collector-b → the root namespace's services");
    let trace = net.exec("source1", "ip", &["route", "get", &far.ip.to_string()]).await.expect("route get");
    assert!(trace.contains(&format!("via {}", net.router_ip(0))), "{trace}");
    // One hop: the router decrements the TTL.
    let reply = net.ping("source1", far.ip, 1).await.expect("ping");
    assert!(reply.contains("ttl=63"), "{reply}");
}

/// The dual-stack network: every host and the bridge have an IPv6 ULA address that works at
/// once, the manual recipe done with ip6tables mirrors IPv6 traffic to the second collector,
/// and a flood's sent count and a capture's statistics agree with what TEE cloned.
#[tokio::test]
async fn ipv6_second_collector_and_a_counted_flood() {
    if !require_root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let net = Network::create(Range::Tests).await.expect("network");
    let ip6 = |h: &str| net.ip6(h).expect("host");
    let (source1, collector2, client) = (ip6("source1"), ip6(COLLECTOR2), ip6("client"));
    assert_eq!(net.hosts().len(), 6);
    // The manual recipe with the checks its clones need off (see the test above).
    for host in ["source1", COLLECTOR, COLLECTOR2] {
        net.set_source_dest_check(host, false).await.expect("check off");
    }
    assert!(net.cidr6().starts_with("fd00:213:") && net.cidr6().ends_with("::/64"), "{}", net.cidr6());
    let octets = net.host("source1").expect("host").ip.octets();
    assert_eq!(source1.segments()[7], 0x11, "IPv6 mirrors the IPv4 address: {source1}");
    assert_eq!(format!("{:x}", source1.segments()[2]), octets[2].to_string());

    // No duplicate address detection: usable right away, from every host and from the root
    // namespace through the bridge.
    for host in ["source1", "source2", COLLECTOR, COLLECTOR2] {
        net.ping6("client", ip6(host), 1).await.unwrap_or_else(|e| panic!("ping6 {host}: {e}"));
    }
    let root = std::process::Command::new("ping")
        .args(["-6", "-n", "-c", "1", "-W", "2", &source1.to_string()])
        .output()
        .expect("ping from the root namespace");
    assert!(root.status.success(), "root → source1 over IPv6: {root:?}");
    net.ping6("source1", net.gateway6(), 1).await.expect("source1 → bridge over IPv6");

    // The manual recipe in IPv6: TEE in source1's ip6tables mangle table to collector2.
    let gateway = collector2.to_string();
    for chain in ["PREROUTING", "POSTROUTING"] {
        net.ip6tables("source1", &["-t", "mangle", "-I", chain, "-p", "ipv6-icmp", "-j", "TEE", "--gateway", &gateway])
            .await
            .expect("insert ip6tables TEE rule");
    }
    assert!(net.mangle_rules6("source1").await.expect("ip6tables-save").contains("--gateway"));
    assert!(!net.mangle_rules("source1").await.expect("iptables-save").contains("TEE"));
    let collector2_mac = net.mac(COLLECTOR2).await.expect("mac");
    let netns = |h: &str| net.host(h).expect("host").netns.clone();
    let capture = Capture::start(&netns(COLLECTOR2), "ipv6", dir.path(), Some("icmp6")).await.expect("tcpdump");
    net.ping6("client", source1, 3).await.expect("ping6 source1");
    let is_clone = |p: &Packet| p.is_ipv6() && p.dst_mac == collector2_mac && p.dst != collector2;
    capture
        .wait_for("IPv6 echo request clones", 3, Duration::from_secs(20), |p| {
            is_clone(p) && p.src == client && p.dst == source1 && p.is_echo_request()
        })
        .await
        .expect("requests mirrored");
    capture
        .wait_for("IPv6 echo reply clones", 3, Duration::from_secs(20), |p| {
            is_clone(p) && p.src == source1 && p.dst == client && p.is_echo_reply()
        })
        .await
        .expect("replies mirrored");
    drop(capture);

    // A flood through an IPv4 TEE rule that clones only echo requests: every request ping
    // says it sent reaches the collector once, unless tcpdump says it dropped some.
    let v4 = |h: &str| net.host(h).expect("host").ip;
    let (source1_v4, client_v4) = (v4("source1"), v4("client"));
    let tee = |extra: &'static [&'static str]| {
        let gateway = v4(COLLECTOR).to_string();
        let mut args: Vec<String> = ["-t", "mangle", "-A", "PREROUTING", "-p", "icmp", "--icmp-type", "echo-request"]
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect();
        args.extend(["-j".to_owned(), "TEE".to_owned(), "--gateway".to_owned(), gateway]);
        args
    };
    let request_clone = move |p: &Packet| p.src == client_v4 && p.dst == source1_v4 && p.is_echo_request();
    let args = tee(&[]);
    net.iptables("source1", &args.iter().map(String::as_str).collect::<Vec<_>>()).await.expect("TEE rule");
    let capture = Capture::start(&netns(COLLECTOR), "flood", dir.path(), Some("icmp")).await.expect("tcpdump");
    let flood = net.flood("client", source1_v4, 5_000).await.expect("flood");
    assert_eq!(flood.sent, 5_000, "{flood:?}");
    assert!(flood.received > 4_900, "{flood:?}");
    // tcpdump may still be writing; a shortfall is then explained by its statistics.
    let _ = capture.wait_for("all clones", 5_000, Duration::from_secs(5), request_clone).await;
    let finished = capture.finish().await.expect("tcpdump statistics");
    let clones = finished.packets.iter().filter(|p| request_clone(p)).count() as u64;
    assert!(
        clones == flood.sent || (finished.dropped_by_kernel > 0 && clones + finished.dropped_by_kernel >= flood.sent),
        "{flood:?}: {clones} clones, {} dropped by the kernel ({})",
        finished.dropped_by_kernel,
        finished.path.display()
    );

    // The same flood sampled at 1 % (the statistic match a session's --sample becomes).
    net.iptables("source1", &["-t", "mangle", "-F", "PREROUTING"]).await.expect("flush");
    let args = tee(&["-m", "statistic", "--mode", "random", "--probability", "0.01"]);
    net.iptables("source1", &args.iter().map(String::as_str).collect::<Vec<_>>()).await.expect("sampled TEE");
    let capture = Capture::start(&netns(COLLECTOR), "sampled", dir.path(), Some("icmp")).await.expect("tcpdump");
    let flood = net.flood("client", source1_v4, 20_000).await.expect("flood");
    assert_eq!(flood.sent, 20_000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let finished = capture.finish().await.expect("tcpdump statistics");
    let clones = finished.packets.iter().filter(|p| request_clone(p)).count();
    // 200 expected; ±7 standard deviations (σ ≈ 14) keeps this from ever flaking.
    assert!((100..=300).contains(&clones), "1 % of {} requests: {clones} clones", flood.sent);
}
