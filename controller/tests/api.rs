//! The controller end to end on real Postgres, with a scripted agent on a real gRPC
//! stream and an in-memory cloud: admin API status codes, the push/ack protocol, session
//! status and the Source/Dest Check reconciler.

mod common;

use std::time::Duration;

use common::{Agent, Controller, FakeCloud, add_collector, add_collector_with, database, eventually, session};
use teefleet_proto::v1::{
    self as pb, agent_message::Msg, agent_service_client::AgentServiceClient,
    collector_service_client::CollectorServiceClient, host_service_client::HostServiceClient,
    session_service_client::SessionServiceClient,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, transport::Channel};

const COLLECTOR: &str = "i-0c0000000000000c1";
const SOURCE: &str = "i-05000000000000001";
const OTHER: &str = "i-05000000000000002";
/// A collector EC2 knows an IPv6 address of.
const DUAL: &str = "i-0c0000000000000d2";

fn cloud() -> std::sync::Arc<FakeCloud> {
    let cloud = FakeCloud::with(&[
        (COLLECTOR, "10.9.0.100"),
        (SOURCE, "10.9.0.10"),
        (OTHER, "10.9.0.11"),
        (DUAL, "10.9.0.200"),
    ]);
    cloud.instances.lock().expect("lock").get_mut(DUAL).expect("dual").ipv6 =
        Some("2001:db8:9::200".parse().expect("ip"));
    cloud
}

/// A session to a raw collector, the delivery most of these tests are about: it mirrors
/// both directions, so it turns its sources' Source/Dest Check off.
fn create(name: &str, sources: &[&str], collector: &str, filter: Option<pb::Filter>) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest { disable_source_check: true, ..create_vxlan(name, sources, collector, filter) }
}

/// A session to a VXLAN collector: no Source/Dest Check changes anywhere.
fn create_vxlan(name: &str, sources: &[&str], collector: &str, filter: Option<pb::Filter>) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        name: name.into(),
        sources: sources.iter().map(|s| (*s).to_owned()).collect(),
        collector: collector.into(),
        filter,
        allow_routed: false,
        source_tags: Vec::new(),
        vni: 0,
        disable_source_check: false,
        max_loss: None,
        ttl_seconds: 0,
    }
}

async fn hosts(channel: &Channel) -> Vec<pb::Host> {
    HostServiceClient::new(channel.clone()).list_hosts(pb::ListHostsRequest {}).await.expect("hosts").into_inner().hosts
}

async fn state_becomes(channel: &Channel, name: &str, want: pb::SessionState) -> pb::Session {
    eventually(10, &format!("session {name} to become {want:?}"), || async {
        let s = session(channel, name).await;
        (s.state == i32::from(want)).then_some(s)
    })
    .await
}

#[tokio::test]
async fn admin_errors_use_the_right_codes_and_change_nothing() {
    let cloud = cloud();
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud.clone()).await;
    let mut collectors = CollectorServiceClient::new(ctl.channel.clone());
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());

    let err = collectors
        .add_collector(pb::AddCollectorRequest { instance_id: "web-1".into(), ip: String::new(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("instance_id: "), "{}", err.message());
    let err = collectors
        .add_collector(pb::AddCollectorRequest {
            instance_id: "i-0ffffffffffffffff".into(),
            ip: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    let err = collectors
        .add_collector(pb::AddCollectorRequest {
            instance_id: COLLECTOR.into(),
            ip: "0.0.0.0".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.message().starts_with("ip: ")), (Code::InvalidArgument, true), "{}", err.message());
    let addresses = [
        ("fd00::1", "", "ip: "),
        ("", "10.0.0.1", "ipv6: "),
        ("", "ff02::1", "ipv6: "),
        ("", "fe80::1", "ipv6: "),
        ("", "::ffff:10.0.0.1", "ipv6: "),
        ("", "nope", "ipv6: "),
    ];
    for (ip, ipv6, prefix) in addresses {
        let err = collectors
            .add_collector(pb::AddCollectorRequest {
                instance_id: COLLECTOR.into(),
                ip: ip.into(),
                ipv6: ipv6.into(),
                ..Default::default()
            })
            .await
            .expect_err(&format!("{ip:?}/{ipv6:?} refused"));
        assert_eq!(err.code(), Code::InvalidArgument, "{ip:?}/{ipv6:?}: {}", err.message());
        assert!(err.message().starts_with(prefix), "{ip:?}/{ipv6:?}: {}", err.message());
    }
    let listed = collectors.list_collectors(pb::ListCollectorsRequest {}).await.expect("list").into_inner();
    assert!(listed.collectors.is_empty(), "refused collectors were stored");
    add_collector(&ctl.channel, COLLECTOR).await;
    let err = collectors
        .add_collector(pb::AddCollectorRequest {
            instance_id: COLLECTOR.into(),
            ip: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let icmp_port = pb::Filter {
        protocol: pb::Protocol::Icmp.into(),
        ports: Some(pb::PortRange { first: 80, last: 80 }),
        ..Default::default()
    };
    let bad_cidr = pb::Filter { cidrs: vec!["10.0.0.1/8".into()], ..Default::default() };
    let v6_cidr = pb::Filter { cidrs: vec!["2001:db8::/32".into()], ..Default::default() };
    let sample = |sample: f64| Some(pb::Filter { sample, ..Default::default() });
    let max_pps = |max_pps: u32| Some(pb::Filter { max_pps, ..Default::default() });
    let cases = [
        (create("bad name", &[SOURCE], COLLECTOR, None), Code::InvalidArgument, "name: "),
        (create("s", &[], COLLECTOR, None), Code::InvalidArgument, "sources: "),
        (create("s", &["bad host!"], COLLECTOR, None), Code::InvalidArgument, "sources[0]: "),
        // A collector may be a name (one that is not an instance); this one is not registered.
        (create("s", &[SOURCE], "nope", None), Code::NotFound, "collector nope"),
        (create("s", &[SOURCE], "no pe", None), Code::InvalidArgument, "collector: "),
        (create("s", &[SOURCE], COLLECTOR, Some(icmp_port)), Code::InvalidArgument, "filter.port: "),
        (create("s", &[SOURCE], COLLECTOR, Some(bad_cidr)), Code::InvalidArgument, "filter.cidrs[0]: "),
        (
            create("s", &[SOURCE], COLLECTOR, Some(v6_cidr)),
            Code::InvalidArgument,
            "filter.cidrs: 2001:db8::/32 is IPv6",
        ),
        (create("s", &[SOURCE], COLLECTOR, sample(1.5)), Code::InvalidArgument, "filter.sample: "),
        (create("s", &[SOURCE], COLLECTOR, sample(-0.1)), Code::InvalidArgument, "filter.sample: "),
        (create("s", &[SOURCE], COLLECTOR, sample(f64::NAN)), Code::InvalidArgument, "filter.sample: "),
        (create("s", &[SOURCE], COLLECTOR, sample(1e-9)), Code::InvalidArgument, "filter.sample: "),
        (create("s", &[SOURCE], COLLECTOR, max_pps(2_000_000)), Code::InvalidArgument, "filter.max_pps: "),
        (create("s", &[COLLECTOR], COLLECTOR, None), Code::InvalidArgument, "sources: "),
        (create("s", &[SOURCE], "i-0eeeeeeeeeeeeeeee", None), Code::NotFound, "collector i-0eeeeeeeeeeeeeeee"),
        (create("s", &["i-0dddddddddddddddd"], COLLECTOR, None), Code::NotFound, "host "),
        (create("s", &["on-prem-7"], COLLECTOR, None), Code::NotFound, "host on-prem-7 is unknown"),
    ];
    for (req, code, prefix) in cases {
        let err = sessions.create_session(req.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{req:?}: {}", err.message());
        assert!(err.message().starts_with(prefix), "{req:?}: {:?} does not start with {prefix:?}", err.message());
    }
    let listed = sessions.list_sessions(pb::ListSessionsRequest {}).await.expect("list").into_inner();
    assert!(listed.sessions.is_empty(), "failed creates left sessions behind");

    // A source that only EC2 knows is accepted (its agent may not be installed yet).
    sessions.create_session(create("web", &[SOURCE], COLLECTOR, None)).await.expect("created");
    let err = sessions.create_session(create("web", &[OTHER], COLLECTOR, None)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    // EC2 down while resolving an unknown source: UNAVAILABLE, nothing stored.
    *cloud.fail.lock().expect("lock") = true;
    let err = sessions.create_session(create("db", &[OTHER], COLLECTOR, None)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    *cloud.fail.lock().expect("lock") = false;

    let err =
        collectors.remove_collector(pb::RemoveCollectorRequest { instance_id: COLLECTOR.into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("web"), "{}", err.message());

    let err = sessions.delete_session(pb::DeleteSessionRequest { name: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let listed = sessions.list_sessions(pb::ListSessionsRequest {}).await.expect("list").into_inner();
    assert_eq!(listed.sessions.len(), 1);
    let hosts = hosts(&ctl.channel).await;
    let ids: Vec<_> = hosts.iter().map(|h| h.host_id.as_str()).collect();
    // The collector is a host from its registration on: its agent gets its role there.
    assert_eq!(ids, [SOURCE, COLLECTOR], "refused sessions registered no hosts");

    let mut host_service = HostServiceClient::new(ctl.channel.clone());
    let err = host_service.get_host(pb::GetHostRequest { host_id: OTHER.into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert!(err.message().contains(OTHER), "{}", err.message());
    let err = host_service.get_host(pb::GetHostRequest { host_id: "bad id;".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().starts_with("host_id: "), "{}", err.message());
    // A host EC2 registered before its agent connected has nothing to report yet.
    let host = host_service.get_host(pb::GetHostRequest { host_id: SOURCE.into() }).await.expect("host").into_inner();
    assert_eq!((host.dataplane, host.drift_repairs, host.events.len(), host.counters.len()), (None, 0, 0, 0));
    ctl.stop().await;
}

#[tokio::test]
async fn the_throttle_is_stored_and_pushed() {
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud()).await;
    add_collector(&ctl.channel, COLLECTOR).await;
    let mut agent = Agent::connect(&ctl.channel, SOURCE, 0).await;
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());
    let filter = pb::Filter { sample: 0.01, max_pps: 500, ..Default::default() };
    let created = sessions.create_session(create("web", &[SOURCE], COLLECTOR, Some(filter))).await.expect("created");
    let f = created.into_inner().filter.expect("filter");
    assert_eq!((f.sample, f.max_pps), (0.01, 500));

    let set = agent.next_rule_set().await;
    assert_eq!(set.rules.len(), 2);
    assert!(set.rules.iter().all(|r| r.sample == 0.01 && r.max_pps == 500), "{:?}", set.rules);

    // Read back from the database, not from the request.
    let listed = sessions.list_sessions(pb::ListSessionsRequest {}).await.expect("list").into_inner();
    let f = listed.sessions[0].filter.clone().expect("filter");
    assert_eq!((f.sample, f.max_pps), (0.01, 500));

    // A sample of 1 clones everything: the same as none.
    sessions
        .create_session(create("all", &[SOURCE], COLLECTOR, Some(pb::Filter { sample: 1.0, ..Default::default() })))
        .await
        .expect("created");
    let f = session(&ctl.channel, "all").await.filter.expect("filter");
    assert_eq!((f.sample, f.max_pps), (0.0, 0));
    let set = agent.next_rule_set().await;
    assert_eq!(set.rules.iter().filter(|r| r.session == "all" && r.sample == 0.0 && r.max_pps == 0).count(), 2);
    ctl.stop().await;
}

#[tokio::test]
async fn ipv6_collectors_mirror_both_families() {
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud()).await;
    let mut collectors = CollectorServiceClient::new(ctl.channel.clone());
    let from_ec2 = collectors
        .add_collector(pb::AddCollectorRequest { instance_id: DUAL.into(), encap: "none".into(), ..Default::default() })
        .await
        .expect("added")
        .into_inner();
    assert_eq!((from_ec2.ip.as_str(), from_ec2.ipv6.as_str()), ("10.9.0.200", "2001:db8:9::200"));
    let overridden = collectors
        .add_collector(pb::AddCollectorRequest {
            instance_id: COLLECTOR.into(),
            ip: String::new(),
            ipv6: "fd00::100".into(),
            encap: "none".into(),
            name: String::new(),
        })
        .await
        .expect("added")
        .into_inner();
    assert_eq!(overridden.ipv6, "fd00::100");
    let listed = collectors.list_collectors(pb::ListCollectorsRequest {}).await.expect("list").into_inner();
    let v6: Vec<_> = listed.collectors.iter().map(|c| c.ipv6.as_str()).collect();
    assert_eq!(v6, ["fd00::100", "2001:db8:9::200"]);

    let mut agent = Agent::connect(&ctl.channel, SOURCE, 0).await;
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());
    sessions.create_session(create("any", &[SOURCE], COLLECTOR, None)).await.expect("created");
    let set = agent.next_rule_set().await;
    let mut gateways: Vec<_> = set.rules.iter().map(|r| r.gateway.as_str()).collect();
    gateways.sort_unstable();
    assert_eq!(gateways, ["10.9.0.100", "10.9.0.100", "fd00::100", "fd00::100"], "both directions, both families");

    let v6_only = pb::Filter {
        direction: pb::Direction::Ingress.into(),
        cidrs: vec!["2001:db8:1::/48".into()],
        ..Default::default()
    };
    sessions.create_session(create("v6", &[SOURCE], COLLECTOR, Some(v6_only))).await.expect("created");
    let set = agent.next_rule_set().await;
    let v6: Vec<_> = set.rules.iter().filter(|r| r.session == "v6").collect();
    assert_eq!(v6.len(), 1, "{v6:?}");
    assert_eq!((v6[0].gateway.as_str(), v6[0].peer_cidr.as_str()), ("fd00::100", "2001:db8:1::/48"));
    ctl.stop().await;
}

fn counters(session: &str, packets: u64, pps: f64) -> pb::SessionCounters {
    pb::SessionCounters {
        session: session.into(),
        packets,
        bytes: packets * 100,
        packets_per_second: pps,
        bytes_per_second: pps * 100.0,
    }
}

async fn get_host(channel: &Channel, id: &str) -> pb::Host {
    HostServiceClient::new(channel.clone())
        .get_host(pb::GetHostRequest { host_id: id.into() })
        .await
        .expect("get host")
        .into_inner()
}

#[tokio::test]
async fn agent_reports_show_in_get_host_and_session_counters() {
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud()).await;
    add_collector(&ctl.channel, COLLECTOR).await;
    let dataplane = pb::Dataplane {
        backend: "nft".into(),
        iptables_version: "iptables v1.8.9 (nf_tables)".into(),
        ipv6: true,
        problems: vec![],
    };
    let mut source = Agent::hello(
        &ctl.channel,
        pb::Hello {
            host_id: SOURCE.into(),
            agent_version: "test".into(),
            dataplane: Some(dataplane.clone()),
            ..Default::default()
        },
    )
    .await;
    let mut other = Agent::connect(&ctl.channel, OTHER, 0).await;
    SessionServiceClient::new(ctl.channel.clone())
        .create_session(create("web", &[SOURCE, OTHER], COLLECTOR, None))
        .await
        .expect("created");
    for agent in [&mut source, &mut other] {
        let set = agent.next_rule_set().await;
        agent.send(Msg::Ack(pb::Ack { version: set.version })).await;
    }
    let host = get_host(&ctl.channel, SOURCE).await;
    assert_eq!(host.dataplane.as_ref().map(|d| d.backend.as_str()), Some("nft"), "from Hello");

    source
        .send(Msg::Health(pb::Health {
            applied_version: 1,
            rule_count: 2,
            counters: vec![counters("web", 100, 10.0), counters("bad name!", 1, 1.0)],
            drift_repairs: 3,
            dataplane: Some(pb::Dataplane { problems: vec!["ip6tables: TEE missing".into()], ..dataplane.clone() }),
            ..Default::default()
        }))
        .await;
    other
        .send(Msg::Health(pb::Health {
            applied_version: 1,
            rule_count: 2,
            counters: vec![counters("web", 50, 5.0)],
            ..Default::default()
        }))
        .await;
    source
        .send(Msg::Event(pb::HostEvent {
            kind: "drift_repaired".into(),
            message: "jump from PREROUTING was removed".into(),
            at_unix_ms: 1_700_000_000_000,
        }))
        .await;
    source
        .send(Msg::Event(pb::HostEvent { kind: "Not A Kind".into(), message: "dropped".into(), at_unix_ms: 1 }))
        .await;
    source
        .send(Msg::Event(pb::HostEvent { kind: "apply_failed".into(), message: "x".repeat(5000), at_unix_ms: 0 }))
        .await;

    // Health is stored in batches, so it may land after the events.
    let host = eventually(10, "the events and the health report to be stored", || async {
        let h = get_host(&ctl.channel, SOURCE).await;
        (h.events.len() == 2 && h.drift_repairs == 3).then_some(h)
    })
    .await;
    assert_eq!(host.drift_repairs, 3);
    let d = host.dataplane.clone().expect("dataplane");
    assert_eq!(
        (d.backend.as_str(), d.ipv6, d.problems.as_slice()),
        ("nft", true, &["ip6tables: TEE missing".to_owned()][..])
    );
    assert_eq!(host.counters, [counters("web", 100, 10.0)], "the bad entry is dropped, the good one kept");
    assert_eq!(host.events[0].kind, "apply_failed", "most recent first");
    assert_eq!(host.events[0].message.len(), 1024);
    assert!(host.events[0].at_unix_ms > 1_700_000_000_000, "a missing time is the time received");
    assert_eq!(
        (host.events[1].kind.as_str(), host.events[1].message.as_str(), host.events[1].at_unix_ms),
        ("drift_repaired", "jump from PREROUTING was removed", 1_700_000_000_000)
    );
    let listed = hosts(&ctl.channel).await;
    let h = listed.iter().find(|h| h.host_id == SOURCE).expect("listed");
    assert_eq!((h.drift_repairs, h.counters.len(), h.events.len()), (3, 1, 0), "ListHosts has no events");

    let s = eventually(10, "both hosts' counters", || async {
        let s = session(&ctl.channel, "web").await;
        (s.packets == 150).then_some(s)
    })
    .await;
    let per_host: Vec<_> =
        s.hosts.iter().map(|h| (h.host_id.as_str(), h.packets, h.bytes, h.packets_per_second)).collect();
    assert_eq!(per_host, [(SOURCE, 100, 10_000, 10.0), (OTHER, 50, 5_000, 5.0)]);
    assert_eq!((s.bytes, s.packets_per_second, s.bytes_per_second), (15_000, 15.0, 1_500.0));

    // A host that goes away keeps its counts but no longer has a rate.
    drop(other);
    let s = eventually(10, "the other host's rate to go", || async {
        let s = session(&ctl.channel, "web").await;
        (s.packets_per_second == 10.0).then_some(s)
    })
    .await;
    assert_eq!((s.packets, s.bytes), (150, 15_000));
    ctl.stop().await;
}

#[tokio::test]
async fn only_the_most_recent_events_are_kept() {
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud()).await;
    let agent = Agent::connect(&ctl.channel, SOURCE, 0).await;
    for i in 0..55 {
        agent
            .send(Msg::Event(pb::HostEvent {
                kind: "drift_repaired".into(),
                message: format!("repair {i}"),
                at_unix_ms: 1,
            }))
            .await;
    }
    let host = eventually(10, "the last event to be stored", || async {
        let h = get_host(&ctl.channel, SOURCE).await;
        h.events.first().is_some_and(|e| e.message == "repair 54").then_some(h)
    })
    .await;
    let messages: Vec<_> = host.events.iter().map(|e| e.message.as_str()).collect();
    let want: Vec<_> = (5..55).rev().map(|i| format!("repair {i}")).collect();
    assert_eq!(messages, want);
    ctl.stop().await;
}

#[tokio::test]
async fn pushes_acks_status_and_source_dest_check() {
    let cloud = cloud();
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud.clone()).await;
    add_collector(&ctl.channel, COLLECTOR).await;
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());

    let mut agent = Agent::connect(&ctl.channel, SOURCE, 0).await;
    // A host whose desired set is empty and which has applied nothing is sent nothing.
    agent.nothing_within(Duration::from_millis(300)).await;

    let filter = pb::Filter {
        protocol: pb::Protocol::Tcp.into(),
        ports: Some(pb::PortRange { first: 443, last: 443 }),
        ..Default::default()
    };
    let created = sessions.create_session(create("web", &[SOURCE], COLLECTOR, Some(filter))).await.expect("created");
    assert_eq!(created.get_ref().state, i32::from(pb::SessionState::Pending));

    let set = agent.next_rule_set().await;
    assert_eq!(set.version, 1);
    assert_eq!(set.rules.len(), 2, "ingress and egress");
    assert!(set.rules.iter().all(|r| r.gateway == "10.9.0.100" && r.session == "web"));
    agent.send(Msg::Ack(pb::Ack { version: 1 })).await;

    let active = state_becomes(&ctl.channel, "web", pb::SessionState::Active).await;
    assert!(active.hosts[0].applied);
    assert_eq!(cloud.source_dest_check(COLLECTOR), Some(false), "collector's check disabled");

    // Reconnecting with the desired version applied: nothing is re-sent.
    drop(agent);
    let mut agent = Agent::connect(&ctl.channel, SOURCE, 1).await;
    agent.nothing_within(Duration::from_millis(1500)).await;

    // A second session on the same host: version 2, which the agent rejects.
    sessions.create_session(create("all", &[SOURCE], COLLECTOR, None)).await.expect("created");
    let set = agent.next_rule_set().await;
    assert_eq!((set.version, set.rules.len()), (2, 4));
    agent.send(Msg::Nack(pb::Nack { version: 2, error: "line 3 failed: bad".into() })).await;
    let degraded = state_becomes(&ctl.channel, "all", pb::SessionState::Degraded).await;
    assert_eq!(degraded.hosts[0].error, "line 3 failed: bad");
    // The host still holds version 1, which contains "web": that session stays active.
    assert_eq!(session(&ctl.channel, "web").await.state, i32::from(pb::SessionState::Active));

    sessions.delete_session(pb::DeleteSessionRequest { name: "all".into() }).await.expect("deleted");
    let set = agent.next_rule_set().await;
    assert_eq!((set.version, set.rules.len()), (3, 2));
    agent.send(Msg::Ack(pb::Ack { version: 3 })).await;

    sessions.delete_session(pb::DeleteSessionRequest { name: "web".into() }).await.expect("deleted");
    let set = agent.next_rule_set().await;
    assert_eq!((set.version, set.rules.len()), (4, 0), "an empty set removes the rules");
    agent.send(Msg::Ack(pb::Ack { version: 4 })).await;
    eventually(10, "Source/Dest Check restored", || async {
        (cloud.source_dest_check(COLLECTOR) == Some(true)).then_some(())
    })
    .await;

    // The Ack is recorded asynchronously; Source/Dest Check being restored says nothing
    // about it.
    let host = eventually(10, "the ack of version 4 to be recorded", || async {
        hosts(&ctl.channel).await.into_iter().find(|h| h.host_id == SOURCE && h.applied_version == 4)
    })
    .await;
    assert_eq!((host.desired_version, host.applied_version, host.connected), (4, 4, true));
    assert_eq!(host.addresses, ["10.9.0.10"]);
    ctl.stop().await;
}

#[tokio::test]
async fn disconnected_source_degrades_its_session() {
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud()).await;
    add_collector(&ctl.channel, COLLECTOR).await;
    let mut agent = Agent::connect(&ctl.channel, SOURCE, 0).await;
    SessionServiceClient::new(ctl.channel.clone())
        .create_session(create("web", &[SOURCE], COLLECTOR, None))
        .await
        .expect("created");
    let set = agent.next_rule_set().await;
    agent.send(Msg::Ack(pb::Ack { version: set.version })).await;
    state_becomes(&ctl.channel, "web", pb::SessionState::Active).await;
    drop(agent);
    let s = state_becomes(&ctl.channel, "web", pb::SessionState::Degraded).await;
    assert_eq!(s.hosts[0].error, "agent is not connected");
    ctl.stop().await;
}

#[tokio::test]
async fn ec2_failures_show_in_the_session_and_are_retried() {
    let cloud = cloud();
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud.clone()).await;
    add_collector(&ctl.channel, COLLECTOR).await;
    let mut agent = Agent::connect(&ctl.channel, SOURCE, 0).await;
    *cloud.fail.lock().expect("lock") = true;
    SessionServiceClient::new(ctl.channel.clone())
        .create_session(create("web", &[SOURCE], COLLECTOR, None))
        .await
        .expect("created: EC2 trouble does not refuse the session");
    let set = agent.next_rule_set().await;
    agent.send(Msg::Ack(pb::Ack { version: set.version })).await;
    // The Ack and the EC2 failure are recorded independently; wait until both show.
    let degraded = eventually(10, "session web to be degraded with its source applied", || async {
        let s = session(&ctl.channel, "web").await;
        let applied = s.hosts.first().is_some_and(|h| h.applied);
        (s.state == i32::from(pb::SessionState::Degraded) && applied).then_some(s)
    })
    .await;
    assert!(
        degraded.problems.iter().any(|p| p.contains("could not disable Source/Dest Check") && p.contains(COLLECTOR)),
        "{:?}",
        degraded.problems
    );
    *cloud.fail.lock().expect("lock") = false;
    // The reconciler may be in a backoff of several seconds by now.
    eventually(40, "session web to recover", || async {
        let s = session(&ctl.channel, "web").await;
        (s.state == i32::from(pb::SessionState::Active)).then_some(())
    })
    .await;
    assert_eq!(cloud.source_dest_check(COLLECTOR), Some(false));
    ctl.stop().await;
}

#[tokio::test]
async fn stream_must_start_with_a_valid_hello() {
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud()).await;
    let (tx, rx) = mpsc::channel(1);
    tx.send(pb::AgentMessage { msg: Some(Msg::Ack(pb::Ack { version: 1 })) }).await.expect("queue");
    let err = AgentServiceClient::new(ctl.channel.clone()).sync(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let (tx, rx) = mpsc::channel(1);
    let hello = pb::Hello { host_id: "bad id;".into(), ..Default::default() };
    tx.send(pb::AgentMessage { msg: Some(Msg::Hello(hello)) }).await.expect("queue");
    let err = AgentServiceClient::new(ctl.channel.clone()).sync(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("host_id: "), "{}", err.message());
    ctl.stop().await;
}

#[tokio::test]
async fn sources_off_the_collectors_subnet_need_allow_routed() {
    let (_pg, url) = database().await;
    let cloud = cloud();
    cloud.instances.lock().expect("lock").get_mut(OTHER).expect("other").subnet_id = Some("subnet-2".into());
    let ctl = Controller::start(url, cloud).await;
    add_collector(&ctl.channel, COLLECTOR).await;
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());

    let err = sessions.create_session(create("far", &[SOURCE, OTHER], COLLECTOR, None)).await.expect_err("off-link");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    for part in [OTHER, "subnet-2", "subnet-1", "--allow-routed"] {
        assert!(err.message().contains(part), "{part} in {err:?}");
    }
    let listed = sessions.list_sessions(pb::ListSessionsRequest {}).await.expect("list").into_inner();
    assert!(listed.sessions.is_empty(), "a refused session is not stored");

    let routed = pb::CreateSessionRequest { allow_routed: true, ..create("far", &[SOURCE, OTHER], COLLECTOR, None) };
    sessions.create_session(routed).await.expect("the operator says it is reachable");
    sessions.create_session(create("near", &[SOURCE], COLLECTOR, None)).await.expect("same subnet");
    ctl.stop().await;
}

/// A VXLAN collector (the default): sessions to it compile into tunnels with the session's
/// VNI, accept sources in any subnet, become active without touching the collector's
/// Source/Dest Check; VNIs are unique, and a bad VNI or encapsulation is refused.
#[tokio::test]
async fn vxlan_collectors_take_tunnels_from_any_subnet_and_keep_their_check() {
    let (_pg, url) = database().await;
    let cloud = cloud();
    cloud.instances.lock().expect("lock").get_mut(OTHER).expect("other").subnet_id = Some("subnet-2".into());
    let ctl = Controller::start(url, cloud.clone()).await;
    let mut collectors = CollectorServiceClient::new(ctl.channel.clone());
    let bad = pb::AddCollectorRequest { instance_id: COLLECTOR.into(), encap: "gre".into(), ..Default::default() };
    let err = collectors.add_collector(bad).await.expect_err("unknown encapsulation");
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "encap: \"gre\" is not vxlan or none"));
    let added = collectors
        .add_collector(pb::AddCollectorRequest { instance_id: COLLECTOR.into(), ..Default::default() })
        .await
        .expect("added")
        .into_inner();
    assert_eq!(added.encap, "vxlan", "the default");
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());
    let mut agent = Agent::connect(&ctl.channel, OTHER, 0).await;

    let far = pb::CreateSessionRequest { vni: 4242, ..create_vxlan("far", &[OTHER], COLLECTOR, None) };
    let created = sessions.create_session(far).await.expect("another subnet is fine").into_inner();
    assert_eq!((created.vni, created.encap.as_str()), (4242, "vxlan"));
    let set = agent.next_rule_set().await;
    assert_eq!(set.rules.len(), 4, "both directions, both families: {set:?}");
    for r in &set.rules {
        assert_eq!((r.vni, r.vxlan_remote.as_str(), r.gateway.as_str()), (4242, "10.9.0.100", ""), "{r:?}");
    }
    agent.send(Msg::Ack(pb::Ack { version: set.version })).await;
    state_becomes(&ctl.channel, "far", pb::SessionState::Active).await;
    assert_eq!(cloud.source_dest_check(COLLECTOR), Some(true), "a VXLAN collector's check is left alone");

    for (vni, code, message) in [
        (4242, Code::AlreadyExists, "4242"),
        (1 << 24, Code::InvalidArgument, "vni: 16777216 is not a VXLAN VNI (1 to 16777215)"),
    ] {
        let req = pb::CreateSessionRequest { vni, ..create_vxlan("again", &[SOURCE], COLLECTOR, None) };
        let err = sessions.create_session(req).await.expect_err("refused");
        assert_eq!(err.code(), code, "{vni}: {err:?}");
        assert!(err.message().contains(message), "{vni}: {}", err.message());
    }
    let next = sessions.create_session(create_vxlan("next", &[SOURCE], COLLECTOR, None)).await.expect("created");
    assert_eq!(next.get_ref().vni, 1, "the lowest free VNI");

    // A raw collector in the same fleet still needs its sources on-link.
    add_collector_with(&ctl.channel, DUAL, "none").await;
    let err = sessions.create_session(create("raw", &[OTHER], DUAL, None)).await.expect_err("off-link");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    ctl.stop().await;
}

/// A collector is never a source: naming one is refused, and so is registering an
/// instance that is a source of a live session; both change nothing.
#[tokio::test]
async fn a_collector_is_never_a_source() {
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud()).await;
    add_collector_with(&ctl.channel, COLLECTOR, "vxlan").await;
    add_collector_with(&ctl.channel, DUAL, "vxlan").await;
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());
    sessions.create_session(create_vxlan("web", &[SOURCE], COLLECTOR, None)).await.expect("created");

    let err =
        sessions.create_session(create_vxlan("loop", &[SOURCE, DUAL], COLLECTOR, None)).await.expect_err("refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(DUAL) && err.message().contains("never a source"), "{}", err.message());
    let err = CollectorServiceClient::new(ctl.channel.clone())
        .add_collector(pb::AddCollectorRequest { instance_id: SOURCE.into(), ..Default::default() })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("web") && err.message().contains("never a source"), "{}", err.message());
    let listed = sessions.list_sessions(pb::ListSessionsRequest {}).await.expect("list").into_inner();
    assert_eq!(listed.sessions.len(), 1);
    let collectors = CollectorServiceClient::new(ctl.channel.clone())
        .list_collectors(pb::ListCollectorsRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(collectors.collectors.len(), 2);
    ctl.stop().await;
}

/// A collector that is not an EC2 instance (a load balancer): registered by name at an
/// address, VXLAN only; sessions reach it like any VXLAN collector.
#[tokio::test]
async fn a_collector_that_is_not_an_instance_is_registered_by_name() {
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud()).await;
    let mut collectors = CollectorServiceClient::new(ctl.channel.clone());
    let named = |name: &str, ip: &str, encap: &str| pb::AddCollectorRequest {
        name: name.into(),
        ip: ip.into(),
        encap: encap.into(),
        ..Default::default()
    };
    for (req, field) in [
        (named("ids-lb", "", ""), "ip: "),
        (named("ids-lb", "10.7.0.5", "none"), "encap: "),
        (named("bad name", "10.7.0.5", ""), "name: "),
        (named(COLLECTOR, "10.7.0.5", ""), "name: "),
    ] {
        let err = collectors.add_collector(req).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with(field), "{field}: {}", err.message());
    }
    let added = collectors.add_collector(named("ids-lb", "10.7.0.5", "")).await.expect("added").into_inner();
    assert_eq!((added.instance_id.as_str(), added.ip.as_str(), added.encap.as_str()), ("ids-lb", "10.7.0.5", "vxlan"));
    let mut agent = Agent::connect(&ctl.channel, SOURCE, 0).await;
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());
    sessions.create_session(create_vxlan("lb", &[SOURCE], "ids-lb", None)).await.expect("created");
    let set = agent.next_rule_set().await;
    assert!(set.rules.iter().all(|r| r.vxlan_remote == "10.7.0.5" && r.vni > 0), "{set:?}");
    sessions.delete_session(pb::DeleteSessionRequest { name: "lb".into() }).await.expect("deleted");
    collectors
        .remove_collector(pb::RemoveCollectorRequest { instance_id: "ids-lb".into() })
        .await
        .expect("removed without EC2");
    ctl.stop().await;
}

/// A collector's agent is told which clones to count (the session's VNI from each source
/// address), and `session get` compares what the sources sent with what it counted, over
/// the window, at the times each was read: degraded above the session's limit, unknown
/// when the collector's agent says nothing.
#[tokio::test]
async fn delivery_compares_what_sources_sent_with_what_the_collector_counted() {
    let (_pg, url) = database().await;
    let ctl = Controller::start_with(url, cloud(), &["--delivery-window", "10s"]).await;
    add_collector_with(&ctl.channel, COLLECTOR, "vxlan").await;
    let hello = |host: &str, addresses: &[&str]| pb::Hello {
        host_id: host.into(),
        agent_version: "test".into(),
        addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
        ..Default::default()
    };
    let mut collector = Agent::hello(&ctl.channel, hello(COLLECTOR, &["10.9.0.100"])).await;
    let set = collector.next_rule_set().await;
    assert!(set.collector && set.arrivals.is_empty(), "{set:?}");
    collector.send(Msg::Ack(pb::Ack { version: set.version })).await;
    let mut source = Agent::hello(&ctl.channel, hello(SOURCE, &["10.9.0.10", "fe80::1", "2001:db8::10"])).await;
    let mut other = Agent::hello(&ctl.channel, hello(OTHER, &["10.9.0.11"])).await;
    let created = SessionServiceClient::new(ctl.channel.clone())
        .create_session(pb::CreateSessionRequest {
            max_loss: Some(0.05),
            ..create_vxlan("web", &[SOURCE, OTHER], COLLECTOR, None)
        })
        .await
        .expect("created")
        .into_inner();
    assert_eq!(created.max_loss, 0.05);
    for agent in [&mut source, &mut other] {
        let set = agent.next_rule_set().await;
        agent.send(Msg::Ack(pb::Ack { version: set.version })).await;
    }
    // The collector counts the session's VNI from each source's IPv4 address, the family
    // its tunnel uses.
    let set = collector.next_rule_set().await;
    let counted: Vec<(&str, &str, u32)> =
        set.arrivals.iter().map(|a| (a.source.as_str(), a.address.as_str(), a.vni)).collect();
    assert_eq!(counted, [(SOURCE, "10.9.0.10", created.vni), (OTHER, "10.9.0.11", created.vni)]);
    collector.send(Msg::Ack(pb::Ack { version: set.version })).await;

    // Nothing reported yet: unknown, not lost. (Acks are stored in batches, so within
    // a moment.)
    let s = state_becomes(&ctl.channel, "web", pb::SessionState::Active).await;
    assert_eq!(s.loss_ratio, None, "{s:?}");
    assert!(s.hosts.iter().all(|h| !h.delivery_unknown.is_empty()), "{s:?}");

    // Readings 8 s and 0 s ago. SOURCE sent 1000 and 1000 arrived; OTHER sent 1000 and
    // 700 arrived. The collector read its counters 1 s after the sources: skew, not loss.
    let sent = |packets| vec![counters("web", packets, 0.0)];
    let arrived = |from_source, from_other| {
        vec![
            pb::ArrivalCounters { session: "web".into(), source: SOURCE.into(), packets: from_source, bytes: 0 },
            pb::ArrivalCounters { session: "web".into(), source: OTHER.into(), packets: from_other, bytes: 0 },
        ]
    };
    for (age, s_sent, o_sent, c_source, c_other) in [(9_000, 0, 0, 125, 88), (1_000, 1000, 1000, 1125, 788)] {
        source
            .send(Msg::Health(pb::Health { counters: sent(s_sent), counters_age_ms: age, ..Default::default() }))
            .await;
        other
            .send(Msg::Health(pb::Health { counters: sent(o_sent), counters_age_ms: age, ..Default::default() }))
            .await;
        let arrivals = arrived(c_source, c_other);
        collector.send(Msg::Health(pb::Health { arrivals, counters_age_ms: age - 1_000, ..Default::default() })).await;
    }
    let s = eventually(10, "delivery is compared", || async {
        let s = session(&ctl.channel, "web").await;
        s.loss_ratio.is_some().then_some(s)
    })
    .await;
    let by_host = |id: &str| s.hosts.iter().find(|h| h.host_id == id).expect("host").clone();
    let (src, oth) = (by_host(SOURCE), by_host(OTHER));
    // Over the 7 s both cover, at 125 packets a second: 875 sent by each (give or take the
    // milliseconds between the reports' arrivals, which time the readings).
    let near = |got: Option<u64>, want: u64| got.is_some_and(|g| g.abs_diff(want) <= 3);
    assert!(near(src.sent_packets, 875) && near(src.delivered_packets, 875), "{s:?}");
    assert!(src.loss_ratio.is_some_and(|l| l < 0.01), "{s:?}");
    assert!(near(oth.sent_packets, 875) && near(oth.delivered_packets, 613), "{s:?}");
    assert!((oth.loss_ratio.expect("ratio") - 0.3).abs() < 0.01, "{s:?}");
    assert!(near(s.sent_packets, 1750) && near(s.delivered_packets, 1488) && s.window_seconds == 10, "{s:?}");
    assert_eq!(s.state, pb::SessionState::Degraded as i32);
    assert_eq!(s.problems, [format!("30 % of the clones from {OTHER} were lost over the last 10 s")]);

    // The collector's agent goes away while the sources go on: delivery is unknown, and
    // the loss is no longer claimed.
    drop(collector);
    let mut s_sent = 1000;
    let s = eventually(45, "a silent collector makes delivery unknown", || {
        s_sent += 100;
        let (source, other, channel) = (&source, &other, &ctl.channel);
        async move {
            for agent in [source, other] {
                agent.send(Msg::Health(pb::Health { counters: sent(s_sent), ..Default::default() })).await;
            }
            let s = session(channel, "web").await;
            (s.loss_ratio.is_none() && s.sent_packets.is_none()).then_some(s)
        }
    })
    .await;
    assert!(s.delivery_unknown.contains(&format!("collector {COLLECTOR}'s agent has not reported")), "{s:?}");
    assert_eq!(s.state, pb::SessionState::Active as i32, "{s:?}");
}

/// A source whose agent says Hello after its session was created (or from a new address)
/// is counted at its collector from then on: what collectors count follows Hellos.
#[tokio::test]
async fn a_collector_counts_a_source_from_the_address_its_hello_gives() {
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud()).await;
    add_collector_with(&ctl.channel, COLLECTOR, "vxlan").await;
    let mut collector = Agent::connect(&ctl.channel, COLLECTOR, 0).await;
    let set = collector.next_rule_set().await;
    collector.send(Msg::Ack(pb::Ack { version: set.version })).await;
    // SOURCE is known to EC2 only: no agent, no address yet.
    let created = SessionServiceClient::new(ctl.channel.clone())
        .create_session(create_vxlan("web", &[SOURCE], COLLECTOR, None))
        .await
        .expect("created")
        .into_inner();
    collector.nothing_within(Duration::from_millis(1500)).await;
    let hello = |address: &str| pb::Hello {
        host_id: SOURCE.into(),
        agent_version: "test".into(),
        addresses: vec![address.into()],
        ..Default::default()
    };
    let counted = |set: &pb::RuleSet| -> Vec<(String, String, u32)> {
        set.arrivals.iter().map(|a| (a.source.clone(), a.address.clone(), a.vni)).collect()
    };
    let source = Agent::hello(&ctl.channel, hello("10.9.0.10")).await;
    let set = collector.rule_set_within(10).await;
    assert_eq!(counted(&set), [(SOURCE.to_owned(), "10.9.0.10".to_owned(), created.vni)]);
    collector.send(Msg::Ack(pb::Ack { version: set.version })).await;
    // The same address again changes nothing; another one moves the count.
    drop(source);
    let source = Agent::hello(&ctl.channel, hello("10.9.0.10")).await;
    collector.nothing_within(Duration::from_millis(1500)).await;
    drop(source);
    let _source = Agent::hello(&ctl.channel, hello("10.9.0.12")).await;
    let set = collector.rule_set_within(10).await;
    assert_eq!(counted(&set), [(SOURCE.to_owned(), "10.9.0.12".to_owned(), created.vni)]);
}

fn names(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

/// A session to the raw collector mirroring egress only: checked on-link, and no
/// Source/Dest Check to change, so the reconciler asks EC2 nothing about its sources.
fn egress(name: &str, sources: &[&str], collector: &str) -> pb::CreateSessionRequest {
    let filter = pb::Filter { direction: pb::Direction::Egress.into(), ..Default::default() };
    create_vxlan(name, sources, collector, Some(filter))
}

/// A session naming a thousand sources is checked with one question to the store and one
/// to EC2 per check, never one per source, and answers as checking them one by one did:
/// the first source nobody knows is named, a collector among them is refused, so is one
/// off the collector's link, and a refusal changes nothing. An update adding sources is
/// checked the same way.
#[tokio::test]
async fn a_thousand_sources_are_checked_in_batches_with_the_same_answers() {
    let (_pg, url) = database().await;
    let cloud = cloud();
    let ids: Vec<String> = (0..1000).map(|i| format!("i-0a{i:015x}")).collect();
    for (i, id) in ids.iter().enumerate() {
        cloud.add(id, &format!("10.9.{}.{}", i / 250, i % 250 + 1), "subnet-1");
    }
    let ctl = Controller::start(url, cloud.clone()).await;
    add_collector(&ctl.channel, COLLECTOR).await;
    add_collector_with(&ctl.channel, DUAL, "vxlan").await;
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());
    let hosts_before = hosts(&ctl.channel).await.len();
    let unchanged = |ctl_channel: Channel| async move {
        assert_eq!(hosts(&ctl_channel).await.len(), hosts_before, "no host registered");
        let listed = SessionServiceClient::new(ctl_channel)
            .list_sessions(pb::ListSessionsRequest {})
            .await
            .expect("list")
            .into_inner();
        assert!(listed.sessions.is_empty(), "{listed:?}");
    };

    // Two sources EC2 does not know: the first one in the request is named.
    let missing = [ids[500].clone(), ids[700].clone()];
    let taken: Vec<_> = missing.iter().map(|id| cloud.instances.lock().expect("lock").remove(id)).collect();
    let before = cloud.describes();
    let err = sessions.create_session(egress("many", &names(&ids), COLLECTOR)).await.expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&ids[500]) && !err.message().contains(&ids[700]), "{}", err.message());
    let after = cloud.describes();
    assert_eq!((after.single, after.batches), (before.single, before.batches + 1), "one batch for 1 000 sources");
    unchanged(ctl.channel.clone()).await;
    for (id, info) in missing.iter().zip(taken) {
        cloud.instances.lock().expect("lock").insert(id.clone(), info.expect("was there"));
    }

    // A collector among them.
    let with_collector: Vec<String> = ids[..999].iter().cloned().chain([DUAL.to_owned()]).collect();
    let err = sessions.create_session(egress("many", &names(&with_collector), COLLECTOR)).await.expect_err("loop");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(DUAL) && err.message().contains("never a source"), "{}", err.message());
    unchanged(ctl.channel.clone()).await;

    // Two off the raw collector's link: the first is named.
    for i in [900, 950] {
        cloud.instances.lock().expect("lock").get_mut(&ids[i]).expect("instance").subnet_id = Some("subnet-2".into());
    }
    let err = sessions.create_session(egress("many", &names(&ids), COLLECTOR)).await.expect_err("off-link");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&ids[900]) && !err.message().contains(&ids[950]), "{}", err.message());
    unchanged(ctl.channel.clone()).await;
    for i in [900, 950] {
        cloud.instances.lock().expect("lock").get_mut(&ids[i]).expect("instance").subnet_id = Some("subnet-1".into());
    }

    let before = cloud.describes();
    let created = sessions.create_session(egress("many", &names(&ids[..999]), COLLECTOR)).await.expect("created");
    assert_eq!(created.into_inner().hosts.len(), 999);
    let after = cloud.describes();
    assert_eq!(after.single, before.single, "no source asked about on its own");
    assert!(after.batches - before.batches <= 2, "the sources asked about once per check: {before:?} {after:?}");
    assert_eq!(hosts(&ctl.channel).await.len(), hosts_before + 999);

    // An update adding a source nobody knows changes nothing; adding a known one works.
    let update = |add: &[&str]| pb::UpdateSessionRequest {
        name: "many".into(),
        add_sources: add.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    let nobody = "i-0b000000000000001";
    let err = sessions.update_session(update(&[nobody])).await.expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(nobody), "{}", err.message());
    assert_eq!(session(&ctl.channel, "many").await.hosts.len(), 999, "nothing changed");
    let updated = sessions.update_session(update(&[&ids[999]])).await.expect("updated").into_inner();
    assert_eq!(updated.session.expect("session").hosts.len(), 1000);
    ctl.stop().await;
}

/// A collector whose agent says Hello only after its sessions exist is told all it counts.
#[tokio::test]
async fn a_collector_agent_arriving_late_is_told_what_to_count() {
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud()).await;
    add_collector_with(&ctl.channel, COLLECTOR, "vxlan").await;
    let hello = pb::Hello {
        host_id: SOURCE.into(),
        agent_version: "test".into(),
        addresses: vec!["10.9.0.10".into()],
        ..Default::default()
    };
    let _source = Agent::hello(&ctl.channel, hello).await;
    let created = SessionServiceClient::new(ctl.channel.clone())
        .create_session(create_vxlan("web", &[SOURCE], COLLECTOR, None))
        .await
        .expect("created")
        .into_inner();
    let mut collector = Agent::connect(&ctl.channel, COLLECTOR, 0).await;
    let mut set = collector.next_rule_set().await;
    if set.arrivals.is_empty() {
        // Its first Hello asks for its counts: they follow within a second or so.
        collector.send(Msg::Ack(pb::Ack { version: set.version })).await;
        set = collector.rule_set_within(10).await;
    }
    let counted: Vec<(&str, &str, u32)> =
        set.arrivals.iter().map(|a| (a.source.as_str(), a.address.as_str(), a.vni)).collect();
    assert_eq!(counted, [(SOURCE, "10.9.0.10", created.vni)]);
}
