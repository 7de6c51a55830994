//! The largest messages an agent stream carries fit its limit: a collector's Health with
//! every arrival counter the controller keeps and its rule set with every arrival the model
//! admits, with the longest names, the longest addresses and the largest numbers; and a
//! source's set with the most rules.

use prost::Message;
use teefleet_model::{
    Arrival, Cidr, IpFamily, MirrorRule, PortRange, Protocol, RuleDirection, RuleSet, Throttle, Tunnel, Vni, limits,
    report::{MAX_ARRIVAL_COUNTERS, MAX_COUNTERS},
};
use teefleet_proto::{MAX_AGENT_MESSAGE, v1 as pb};

/// A valid name of `len` characters, distinct for each `i`.
fn name(i: usize, len: usize) -> String {
    format!("{i:0>len$}")
}

#[test]
fn the_largest_health_fits() {
    let arrivals = (0..MAX_ARRIVAL_COUNTERS)
        .map(|i| pb::ArrivalCounters { session: name(i, 63), source: name(i, 64), packets: u64::MAX, bytes: u64::MAX })
        .collect();
    let counters = (0..MAX_COUNTERS)
        .map(|i| pb::SessionCounters {
            session: name(i, 63),
            packets: u64::MAX,
            bytes: u64::MAX,
            packets_per_second: f64::MAX,
            bytes_per_second: f64::MAX,
        })
        .collect();
    let health = pb::Health {
        applied_version: RuleSet::MAX_VERSION,
        rule_count: u32::MAX,
        counters,
        drift_repairs: u64::MAX,
        dataplane: None,
        arrivals,
        counters_age_ms: u64::MAX,
    };
    let size = health.encoded_len();
    eprintln!("the largest Health: {size} bytes");
    assert!(size < MAX_AGENT_MESSAGE, "{size} bytes");
}

#[test]
fn the_largest_rule_sets_fit() {
    // Eight groups of four digits: the longest text an address has.
    let ipv6 = |i: usize| format!("fd00:ffff:ffff:ffff:ffff:ffff:{:x}:{:x}", 0x8000 | (i >> 15), 0x8000 | (i & 0x7fff));
    let arrivals = (0..limits::MAX_ARRIVALS).map(|i| {
        let from = ipv6(i).parse().expect("ip");
        Arrival::new(
            name(i, 63).parse().expect("name"),
            name(i, 64).parse().expect("host"),
            from,
            Vni::new(Vni::MAX).ok(),
        )
    });
    let collector = RuleSet::new(RuleSet::MAX_VERSION, vec![])
        .expect("set")
        .with_collector(true)
        .with_arrivals(arrivals.collect())
        .expect("arrivals");
    assert_eq!(collector.arrivals().len(), limits::MAX_ARRIVALS);
    let size = pb::RuleSet::from(&collector).encoded_len();
    eprintln!("the largest collector set: {size} bytes");
    assert!(size < MAX_AGENT_MESSAGE, "a collector's set: {size} bytes");

    let tunnel = Tunnel::new(Vni::new(Vni::MAX).expect("vni"), ipv6(1).parse().expect("ip")).expect("tunnel");
    let rules = (0..limits::MAX_RULES).map(|i| {
        let peer: Cidr = format!("{}/128", ipv6(i)).parse().expect("cidr");
        let ports = PortRange::new(60_000, 65_535).ok();
        let rule = MirrorRule::tunnelled(
            name(i, 63).parse().expect("name"),
            RuleDirection::Egress,
            IpFamily::Ipv6,
            tunnel,
            Protocol::Udp,
            ports,
            Some(peer),
        )
        .expect("rule");
        rule.with_throttle(Throttle::from_zeroable(0.123_456, 1_000_000).expect("throttle"))
    });
    let source = RuleSet::new(RuleSet::MAX_VERSION, rules.collect()).expect("set");
    assert_eq!(source.rules().len(), limits::MAX_RULES);
    let size = pb::RuleSet::from(&source).encoded_len();
    assert!(size < MAX_AGENT_MESSAGE, "a source's set: {size} bytes");
}
