//! Sessions that change and sessions that end, and the preflight of a create, on real
//! Postgres: UpdateSession of each kind gives each affected host exactly one new version;
//! refused updates change nothing; an expired session deletes itself and is audited; a
//! preflight reports what create would do and changes nothing.

mod common;

use std::time::Duration;

use common::{Agent, Controller, FakeCloud, add_collector, add_collector_with, database, eventually, session};
use teefleet_proto::v1::{
    self as pb, agent_message::Msg, audit_service_client::AuditServiceClient, host_service_client::HostServiceClient,
    session_service_client::SessionServiceClient,
};
use tonic::{Code, transport::Channel};

const COLLECTOR: &str = "i-0c0000000000000c1";
const VXLAN: &str = "i-0c0000000000000d2";
const SOURCE: &str = "i-05000000000000001";
const OTHER: &str = "i-05000000000000002";
const THIRD: &str = "i-05000000000000003";
/// A source in another subnet than the collectors.
const FAR: &str = "i-05000000000000004";

fn cloud() -> std::sync::Arc<FakeCloud> {
    let cloud = FakeCloud::with(&[
        (COLLECTOR, "10.9.0.100"),
        (VXLAN, "10.9.0.200"),
        (SOURCE, "10.9.0.10"),
        (OTHER, "10.9.0.11"),
        (THIRD, "10.9.0.12"),
        (FAR, "10.8.0.13"),
    ]);
    cloud.instances.lock().expect("lock").get_mut(FAR).expect("far").subnet_id = Some("subnet-2".into());
    cloud
}

fn create(name: &str, sources: &[&str], collector: &str) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        name: name.into(),
        sources: sources.iter().map(|s| (*s).to_owned()).collect(),
        collector: collector.into(),
        ..Default::default()
    }
}

fn update(name: &str) -> pb::UpdateSessionRequest {
    pb::UpdateSessionRequest { name: name.into(), ..Default::default() }
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Every host's desired version, by host id.
async fn versions(channel: &Channel) -> Vec<(String, u64)> {
    let hosts = HostServiceClient::new(channel.clone())
        .list_hosts(pb::ListHostsRequest {})
        .await
        .expect("hosts")
        .into_inner()
        .hosts;
    hosts.into_iter().map(|h| (h.host_id, h.desired_version)).collect()
}

/// How each host's desired version moved between two snapshots.
fn grown(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<(String, u64)> {
    after
        .iter()
        .map(|(host, v)| {
            let was = before.iter().find(|(h, _)| h == host).map_or(0, |(_, v)| *v);
            (host.clone(), v - was)
        })
        .filter(|(_, d)| *d > 0)
        .collect()
}

async fn audit(channel: &Channel) -> Vec<pb::AuditRecord> {
    AuditServiceClient::new(channel.clone())
        .list_audit(pb::ListAuditRequest::default())
        .await
        .expect("audit")
        .into_inner()
        .records
}

#[tokio::test]
async fn an_update_of_each_kind_gives_each_affected_host_one_version() {
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud()).await;
    add_collector_with(&ctl.channel, VXLAN, "vxlan").await;
    let mut agent = Agent::connect(&ctl.channel, SOURCE, 0).await;
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());
    sessions.create_session(create("web", &[SOURCE, OTHER], VXLAN)).await.expect("created");
    sessions.create_session(create("db", &[THIRD], VXLAN)).await.expect("created");
    let set = agent.next_rule_set().await;
    agent.send(Msg::Ack(pb::Ack { version: set.version })).await;
    let one = |hosts: &[&str]| hosts.iter().map(|h| ((*h).to_owned(), 1)).collect::<Vec<_>>();

    // The throttle.
    let before = versions(&ctl.channel).await;
    let throttle = pb::UpdateSessionRequest { sample: Some(0.5), max_pps: Some(100), ..update("web") };
    let reply = sessions.update_session(throttle).await.expect("updated").into_inner();
    assert_eq!((reply.changed, reply.hosts_changed), (true, 2));
    let f = reply.session.expect("session").filter.expect("filter");
    assert_eq!((f.sample, f.max_pps), (0.5, 100));
    assert_eq!(grown(&before, &versions(&ctl.channel).await), one(&[SOURCE, OTHER]), "db's host is untouched");
    let set = agent.next_rule_set().await;
    assert!(set.rules.iter().all(|r| r.sample == 0.5 && r.max_pps == 100), "{set:?}");
    agent.send(Msg::Ack(pb::Ack { version: set.version })).await;

    // Every field of the filter at once, and the throttle back off: one version.
    let before = versions(&ctl.channel).await;
    let filter = pb::UpdateSessionRequest {
        direction: Some(pb::Direction::Ingress.into()),
        protocol: Some(pb::Protocol::Tcp.into()),
        port: Some(pb::PortsUpdate { ports: Some(pb::PortRange { first: 443, last: 443 }) }),
        cidrs: Some(pb::CidrsUpdate { cidrs: ids(&["10.0.0.0/8"]) }),
        sample: Some(0.0),
        max_pps: Some(0),
        ..update("web")
    };
    sessions.update_session(filter).await.expect("updated");
    assert_eq!(grown(&before, &versions(&ctl.channel).await), one(&[SOURCE, OTHER]));
    let s = session(&ctl.channel, "web").await;
    let f = s.filter.expect("filter");
    assert_eq!(
        (f.direction, f.protocol, f.ports, f.cidrs.as_slice()),
        (
            i32::from(pb::Direction::Ingress),
            i32::from(pb::Protocol::Tcp),
            Some(pb::PortRange { first: 443, last: 443 }),
            &["10.0.0.0/8".to_owned()][..]
        )
    );
    assert_eq!((f.sample, f.max_pps), (0.0, 0));
    let set = agent.next_rule_set().await;
    assert_eq!(set.rules.len(), 1, "ingress, IPv4 peers only: {set:?}");
    assert_eq!(set.rules[0].peer_cidr, "10.0.0.0/8");
    agent.send(Msg::Ack(pb::Ack { version: set.version })).await;

    // Sources: a host added and one removed; the one that stays keeps its version.
    let before = versions(&ctl.channel).await;
    let sources =
        pb::UpdateSessionRequest { add_sources: ids(&[THIRD]), remove_sources: ids(&[OTHER]), ..update("web") };
    let reply = sessions.update_session(sources).await.expect("updated").into_inner();
    assert_eq!(reply.hosts_changed, 2);
    assert_eq!(grown(&before, &versions(&ctl.channel).await), one(&[OTHER, THIRD]));
    assert_eq!(reply.session.expect("session").sources, ids(&[SOURCE, THIRD]));
    agent.nothing_within(Duration::from_millis(300)).await;

    // The expiry: no rule changes, so no version; and off again.
    let before = versions(&ctl.channel).await;
    let reply = sessions
        .update_session(pb::UpdateSessionRequest { ttl_seconds: Some(3_600), ..update("web") })
        .await
        .expect("updated")
        .into_inner();
    assert_eq!((reply.changed, reply.hosts_changed), (true, 0));
    let expires: chrono::DateTime<chrono::Utc> =
        reply.session.expect("session").expires_at.parse().expect("RFC 3339 expiry");
    let left = expires - chrono::Utc::now();
    assert!(left > chrono::TimeDelta::minutes(59) && left <= chrono::TimeDelta::hours(1), "{left}");
    let reply = sessions
        .update_session(pb::UpdateSessionRequest { ttl_seconds: Some(0), ..update("web") })
        .await
        .expect("updated")
        .into_inner();
    assert_eq!(reply.session.expect("session").expires_at, "", "--ttl off");
    assert_eq!(versions(&ctl.channel).await, before);

    // Several kinds in one update are still one version per host.
    let before = versions(&ctl.channel).await;
    let mixed = pb::UpdateSessionRequest {
        max_pps: Some(50),
        add_sources: ids(&[OTHER]),
        ttl_seconds: Some(600),
        ..update("web")
    };
    let reply = sessions.update_session(mixed).await.expect("updated").into_inner();
    assert_eq!(reply.hosts_changed, 3);
    assert_eq!(grown(&before, &versions(&ctl.channel).await), one(&[SOURCE, OTHER, THIRD]));
    let set = agent.next_rule_set().await;
    assert!(set.rules.iter().all(|r| r.max_pps == 50), "{set:?}");

    // A new loss limit is the session's own: no host gets a new version.
    let before = versions(&ctl.channel).await;
    let reply = sessions.update_session(pb::UpdateSessionRequest { max_loss: Some(0.2), ..update("web") }).await;
    let reply = reply.expect("updated").into_inner();
    assert_eq!((reply.changed, reply.hosts_changed, reply.session.map(|s| s.max_loss)), (true, 0, Some(0.2)));
    assert_eq!(versions(&ctl.channel).await, before);

    // An update that asks for what the session is says so, and writes nothing.
    let before = (versions(&ctl.channel).await, audit(&ctl.channel).await.len());
    let same = pb::UpdateSessionRequest {
        max_pps: Some(50),
        add_sources: ids(&[SOURCE]),
        direction: Some(pb::Direction::Ingress.into()),
        ..update("web")
    };
    let reply = sessions.update_session(same).await.expect("accepted").into_inner();
    assert_eq!((reply.changed, reply.hosts_changed), (false, 0));
    assert_eq!((versions(&ctl.channel).await, audit(&ctl.channel).await.len()), before);
    agent.nothing_within(Duration::from_millis(300)).await;

    let updates: Vec<_> = audit(&ctl.channel)
        .await
        .into_iter()
        .filter(|r| r.action == "session.update")
        .map(|r| (r.target, r.result))
        .collect();
    assert_eq!(updates, vec![("web".to_owned(), "ok".to_owned()); 7]);
    ctl.stop().await;
}

#[tokio::test]
async fn tags_change_and_the_last_source_stays() {
    let (_pg, url) = database().await;
    let cloud = cloud();
    cloud.tag(OTHER, &[("role", "web")]);
    cloud.tag(THIRD, &[("role", "db")]);
    let ctl = Controller::start(url, cloud).await;
    add_collector_with(&ctl.channel, VXLAN, "vxlan").await;
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());
    let tagged = pb::CreateSessionRequest { source_tags: ids(&["role=web"]), ..create("web", &[SOURCE], VXLAN) };
    sessions.create_session(tagged).await.expect("created");

    let before = versions(&ctl.channel).await;
    let retag = pb::UpdateSessionRequest {
        remove_source_tags: ids(&["role=web"]),
        add_source_tags: ids(&["role=db"]),
        ..update("web")
    };
    let s = sessions.update_session(retag).await.expect("updated").into_inner().session.expect("session");
    assert_eq!((s.source_tags, s.sources.clone()), (ids(&["role=db"]), ids(&[SOURCE, THIRD])));
    assert!(s.hosts.iter().any(|h| h.host_id == THIRD && h.from_tags), "{:?}", s.hosts);
    let one = |hosts: &[&str]| hosts.iter().map(|h| ((*h).to_owned(), 1)).collect::<Vec<_>>();
    assert_eq!(grown(&before, &versions(&ctl.channel).await), one(&[OTHER, THIRD]));

    // The named source may go while a tag remains; the tag may not go then.
    let s = sessions
        .update_session(pb::UpdateSessionRequest { remove_sources: ids(&[SOURCE]), ..update("web") })
        .await
        .expect("tags remain")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(s.sources, ids(&[THIRD]));
    let err = sessions
        .update_session(pb::UpdateSessionRequest { remove_source_tags: ids(&["role=db"]), ..update("web") })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("remove_source_tags: session web would be left without a source"), "{err:?}");
    ctl.stop().await;
}

/// What a refused update could have touched (its status moves on its own, with what
/// agents and EC2 report).
type Snapshot = (Option<pb::Filter>, Vec<String>, Vec<String>, String, f64, Vec<(String, u64)>);

async fn snapshot(channel: &Channel) -> Snapshot {
    let s = session(channel, "web").await;
    (s.filter, s.sources, s.source_tags, s.expires_at, s.max_loss, versions(channel).await)
}

#[tokio::test]
async fn refused_updates_say_why_and_change_nothing() {
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud()).await;
    add_collector(&ctl.channel, COLLECTOR).await;
    add_collector_with(&ctl.channel, VXLAN, "vxlan").await;
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());
    let raw = pb::CreateSessionRequest {
        filter: Some(pb::Filter { direction: pb::Direction::Egress.into(), ..Default::default() }),
        ttl_seconds: 3_600,
        ..create("web", &[SOURCE], COLLECTOR)
    };
    sessions.create_session(raw).await.expect("created");
    let before = snapshot(&ctl.channel).await;

    let cidr = |c: &str| Some(pb::CidrsUpdate { cidrs: ids(&[c]) });
    let cases = [
        (pb::UpdateSessionRequest { cidrs: cidr("10.0.0.1/8"), ..update("web") }, Code::InvalidArgument, "cidrs[0]: "),
        (pb::UpdateSessionRequest { ttl_seconds: Some(30), ..update("web") }, Code::InvalidArgument, "ttl_seconds: "),
        (
            pb::UpdateSessionRequest { ttl_seconds: Some(31 * 86_400), ..update("web") },
            Code::InvalidArgument,
            "ttl_seconds: ",
        ),
        (pb::UpdateSessionRequest { sample: Some(2.0), ..update("web") }, Code::InvalidArgument, "sample: "),
        (pb::UpdateSessionRequest { max_loss: Some(1.5), ..update("web") }, Code::InvalidArgument, "max_loss: "),
        (pb::UpdateSessionRequest { max_pps: Some(10), ..update("nope") }, Code::NotFound, "session nope not found"),
        (pb::UpdateSessionRequest { max_pps: Some(10), ..update("bad name") }, Code::InvalidArgument, "name: "),
        (
            pb::UpdateSessionRequest { remove_sources: ids(&[SOURCE]), ..update("web") },
            Code::InvalidArgument,
            "remove_sources: session web would be left without a source",
        ),
        (
            pb::UpdateSessionRequest { remove_sources: ids(&[OTHER]), ..update("web") },
            Code::InvalidArgument,
            "remove_sources[0]: i-05000000000000002 is not a source session web names",
        ),
        (
            pb::UpdateSessionRequest { add_sources: ids(&["i-0dddddddddddddddd"]), ..update("web") },
            Code::NotFound,
            "host i-0dddddddddddddddd is unknown",
        ),
        (
            pb::UpdateSessionRequest { add_sources: ids(&[VXLAN]), max_pps: Some(10), ..update("web") },
            Code::FailedPrecondition,
            "i-0c0000000000000d2 is a registered collector",
        ),
        (
            pb::UpdateSessionRequest { add_sources: ids(&[FAR]), ..update("web") },
            Code::FailedPrecondition,
            "source i-05000000000000004 is in subnet subnet-2",
        ),
        (
            pb::UpdateSessionRequest { direction: Some(pb::Direction::Both.into()), ..update("web") },
            Code::FailedPrecondition,
            "collector i-0c0000000000000c1 takes raw clones",
        ),
        (
            pb::UpdateSessionRequest { cidrs: cidr("2001:db8::/32"), ..update("web") },
            Code::InvalidArgument,
            "filter.cidrs: 2001:db8::/32 is IPv6",
        ),
    ];
    for (req, code, prefix) in cases {
        let err = sessions.update_session(req.clone()).await.expect_err("refused");
        assert_eq!(err.code(), code, "{req:?}: {}", err.message());
        assert!(err.message().starts_with(prefix), "{req:?}: {:?} does not start with {prefix:?}", err.message());
        assert_eq!(snapshot(&ctl.channel).await, before, "{req:?} changed something");
    }
    // A port needs tcp or udp: the protocol alone cannot leave a port behind.
    let port = pb::UpdateSessionRequest {
        protocol: Some(pb::Protocol::Tcp.into()),
        port: Some(pb::PortsUpdate { ports: Some(pb::PortRange { first: 80, last: 80 }) }),
        ..update("web")
    };
    sessions.update_session(port).await.expect("tcp port 80");
    let icmp = pb::UpdateSessionRequest { protocol: Some(pb::Protocol::Icmp.into()), ..update("web") };
    let err = sessions.update_session(icmp).await.expect_err("a port with icmp");
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "port: a port needs protocol tcp or udp, not icmp")
    );

    let failed: Vec<_> =
        audit(&ctl.channel).await.into_iter().filter(|r| r.action == "session.update" && r.result != "ok").collect();
    assert!(failed.iter().any(|r| r.result.starts_with("InvalidArgument: remove_sources")), "{failed:?}");
    ctl.stop().await;
}

#[tokio::test]
async fn an_expired_session_deletes_itself_and_is_audited() {
    let (_pg, url) = database().await;
    let ctl = Controller::start_with(url.clone(), cloud(), &["--expiry-interval", "1s"]).await;
    add_collector_with(&ctl.channel, VXLAN, "vxlan").await;
    let mut agent = Agent::connect(&ctl.channel, SOURCE, 0).await;
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());
    for (ttl, field) in [(59, "ttl_seconds: "), (31 * 86_400, "ttl_seconds: ")] {
        let req = pb::CreateSessionRequest { ttl_seconds: ttl, ..create("web", &[SOURCE], VXLAN) };
        let err = sessions.create_session(req).await.expect_err("out of bounds");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with(field) && err.message().contains("1m to 30d"), "{err:?}");
    }
    let short = pb::CreateSessionRequest { ttl_seconds: 60, ..create("web", &[SOURCE], VXLAN) };
    let created = sessions.create_session(short).await.expect("created").into_inner();
    assert!(!created.expires_at.is_empty());
    let long = pb::CreateSessionRequest { ttl_seconds: 3_600, ..create("kept", &[SOURCE], VXLAN) };
    sessions.create_session(long).await.expect("created");
    assert!(session(&ctl.channel, "kept").await.expires_at.parse::<chrono::DateTime<chrono::Utc>>().is_ok());
    let set = agent.next_rule_set().await;
    assert_eq!(set.rules.len(), 4);
    let set = agent.next_rule_set().await;
    assert_eq!(set.rules.len(), 8);

    // A minute is the shortest lifetime: the test moves its end into the past.
    let pool = sqlx::PgPool::connect(&url).await.expect("database");
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE name = 'web'")
        .execute(&pool)
        .await
        .expect("expire");

    let set = agent.rule_set_within(10).await;
    assert!(set.rules.iter().all(|r| r.session == "kept") && set.rules.len() == 4, "{set:?}");
    let err = SessionServiceClient::new(ctl.channel.clone())
        .get_session(pb::GetSessionRequest { name: "web".into() })
        .await
        .expect_err("deleted");
    assert_eq!(err.code(), Code::NotFound);
    let expired: Vec<_> = audit(&ctl.channel)
        .await
        .into_iter()
        .filter(|r| r.action == "session.expire")
        .map(|r| (r.actor, r.target, r.result))
        .collect();
    assert_eq!(expired, [("ttl".to_owned(), "web".to_owned(), "ok".to_owned())]);
    agent.nothing_within(Duration::from_millis(1_500)).await;
    assert_eq!(session(&ctl.channel, "kept").await.name, "kept");
    ctl.stop().await;
}

#[tokio::test]
async fn a_preflight_says_what_create_would_do_and_changes_nothing() {
    let (_pg, url) = database().await;
    let cloud = cloud();
    let ctl = Controller::start(url, cloud.clone()).await;
    add_collector(&ctl.channel, COLLECTOR).await;
    add_collector_with(&ctl.channel, VXLAN, "vxlan").await;
    let _source = Agent::connect(&ctl.channel, SOURCE, 0).await;
    let _collector = Agent::connect(&ctl.channel, VXLAN, 0).await;
    drop(Agent::connect(&ctl.channel, THIRD, 0).await);
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());
    sessions.create_session(create("taken", &[SOURCE], VXLAN)).await.expect("created");
    let before = (versions(&ctl.channel).await, audit(&ctl.channel).await.len());

    // Raw, to a collector without an agent, over a source in another subnet, one whose
    // agent left, one with no agent yet, and a collector.
    let raw = pb::CreateSessionRequest {
        disable_source_check: true,
        ..create("web", &[SOURCE, OTHER, THIRD, FAR, VXLAN], COLLECTOR)
    };
    let plan = eventually(10, "THIRD's agent to count as gone", || {
        let mut sessions = sessions.clone();
        let raw = raw.clone();
        async move {
            let plan = sessions.preflight_session(raw).await.expect("preflight").into_inner();
            plan.sources.iter().any(|s| s.host_id == THIRD && s.agent == "disconnected").then_some(plan)
        }
    })
    .await;
    assert_eq!((plan.encap.as_str(), plan.collector_agent.as_str()), ("none", "none"));
    assert_eq!(plan.collector_source_dest_check, "enabled -> disabled");
    assert!(!plan.would_create);
    let source = plan.sources.iter().find(|s| s.host_id == SOURCE).expect("SOURCE");
    assert_eq!(
        (source.subnet_id.as_str(), source.agent.as_str(), source.encap.as_str(), source.rule_count),
        ("subnet-1", "connected", "none", 2)
    );
    assert_eq!(
        (source.gateways.clone(), source.source_dest_check.as_str()),
        (ids(&["10.9.0.100"]), "enabled -> disabled")
    );
    let problems: Vec<(&str, bool, &str)> =
        plan.problems.iter().map(|p| (p.host_id.as_str(), p.refuses, p.message.as_str())).collect();
    let has = |host: &str, refuses: bool, words: &str| {
        problems.iter().any(|(h, r, m)| *h == host && *r == refuses && m.contains(words))
    };
    assert!(has(OTHER, false, "no agent has connected"), "{problems:#?}");
    assert!(has(THIRD, false, "agent is not connected"), "{problems:#?}");
    assert!(has(FAR, true, "subnet-2"), "{problems:#?}");
    assert!(has(VXLAN, true, "registered collector"), "{problems:#?}");
    assert!(has("", false, "has no agent: delivery will be unknown"), "{problems:#?}");
    assert!(!problems.iter().any(|(h, ..)| *h == SOURCE), "{problems:#?}");

    // VXLAN to a collector with its agent: nothing in the way, and the VNI it would get.
    let plan = sessions.preflight_session(create("web", &[SOURCE, FAR], VXLAN)).await.expect("preflight").into_inner();
    assert!(plan.would_create, "{:?}", plan.problems);
    assert_eq!(
        (plan.vni, plan.collector_agent.as_str(), plan.collector_source_dest_check.as_str()),
        (2, "connected", "")
    );
    assert!(
        plan.sources
            .iter()
            .all(|s| s.rule_count == 4 && s.gateways == ids(&["10.9.0.200"]) && s.source_dest_check.is_empty())
    );
    assert_eq!(plan.problems.len(), 1, "FAR's agent: {:?}", plan.problems);

    // What create would refuse for the session as a whole.
    let taken = pb::CreateSessionRequest { vni: 1, ..create("taken", &[SOURCE], VXLAN) };
    let plan = sessions.preflight_session(taken).await.expect("preflight").into_inner();
    let refused: Vec<_> = plan.problems.iter().filter(|p| p.refuses).map(|p| p.message.as_str()).collect();
    assert_eq!(refused, ["session taken already exists", "VNI 1 is taken by another session"]);
    let inbound = create("in", &[SOURCE], COLLECTOR);
    let plan = sessions.preflight_session(inbound).await.expect("preflight").into_inner();
    assert!(plan.problems.iter().any(|p| p.refuses && p.message.contains("--disable-source-check")), "{plan:?}");

    // Bad input is refused as create refuses it.
    let bad = pb::CreateSessionRequest {
        filter: Some(pb::Filter { cidrs: ids(&["10.0.0.1/8"]), ..Default::default() }),
        ..create("web", &[SOURCE], VXLAN)
    };
    let err = sessions.preflight_session(bad).await.expect_err("bad CIDR");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = sessions.preflight_session(create("web", &[SOURCE], "nope")).await.expect_err("no collector");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // Nothing was written: no session, no host, no version, no audit row, no EC2 change.
    let listed = sessions.list_sessions(pb::ListSessionsRequest {}).await.expect("list").into_inner().sessions;
    assert_eq!(listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["taken"]);
    assert_eq!((versions(&ctl.channel).await, audit(&ctl.channel).await.len()), before);
    assert_eq!((cloud.source_dest_check(COLLECTOR), cloud.source_dest_check(SOURCE)), (Some(true), Some(true)));
    ctl.stop().await;
}
