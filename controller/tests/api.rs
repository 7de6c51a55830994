//! The controller end to end on real Postgres, with a scripted agent on a real gRPC
//! stream and an in-memory cloud: admin API status codes, the push/ack protocol, session
//! status and the Source/Dest Check reconciler.

mod common;

use std::time::Duration;

use common::{Controller, FakeCloud, database, eventually};
use teefleet_proto::v1::{
    self as pb, agent_message::Msg, agent_service_client::AgentServiceClient,
    collector_service_client::CollectorServiceClient, controller_message, host_service_client::HostServiceClient,
    session_service_client::SessionServiceClient,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming, transport::Channel};

const COLLECTOR: &str = "i-0c0000000000000c1";
const SOURCE: &str = "i-05000000000000001";
const OTHER: &str = "i-05000000000000002";

fn cloud() -> std::sync::Arc<FakeCloud> {
    FakeCloud::with(&[(COLLECTOR, "10.9.0.100"), (SOURCE, "10.9.0.10"), (OTHER, "10.9.0.11")])
}

fn create(name: &str, sources: &[&str], collector: &str, filter: Option<pb::Filter>) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        name: name.into(),
        sources: sources.iter().map(|s| (*s).to_owned()).collect(),
        collector: collector.into(),
        filter,
    }
}

async fn add_collector(channel: &Channel) {
    CollectorServiceClient::new(channel.clone())
        .add_collector(pb::AddCollectorRequest {
            instance_id: COLLECTOR.into(),
            ip: String::new(),
            ..Default::default()
        })
        .await
        .expect("collector added");
}

/// A scripted agent: one stream, messages sent by hand.
struct Agent {
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: Streaming<pb::ControllerMessage>,
}

impl Agent {
    async fn connect(channel: &Channel, host: &str, applied_version: u64) -> Agent {
        let (tx, rx) = mpsc::channel(8);
        let hello = pb::Hello {
            host_id: host.into(),
            agent_version: "test".into(),
            addresses: vec!["10.9.0.10".into()],
            applied_version,
            ..Default::default()
        };
        tx.send(pb::AgentMessage { msg: Some(Msg::Hello(hello)) }).await.expect("queue hello");
        let inbound = AgentServiceClient::new(channel.clone())
            .sync(ReceiverStream::new(rx))
            .await
            .expect("stream opened")
            .into_inner();
        Agent { tx, inbound }
    }

    async fn next_rule_set(&mut self) -> pb::RuleSet {
        let msg = tokio::time::timeout(Duration::from_secs(5), self.inbound.message())
            .await
            .expect("a rule set within 5 s")
            .expect("stream healthy")
            .expect("stream open");
        match msg.msg {
            Some(controller_message::Msg::RuleSet(set)) => set,
            None => panic!("empty controller message"),
        }
    }

    async fn nothing_within(&mut self, wait: Duration) {
        if let Ok(msg) = tokio::time::timeout(wait, self.inbound.message()).await {
            panic!("expected no push, got {msg:?}");
        }
    }

    async fn send(&self, msg: Msg) {
        self.tx.send(pb::AgentMessage { msg: Some(msg) }).await.expect("send");
    }
}

async fn hosts(channel: &Channel) -> Vec<pb::Host> {
    HostServiceClient::new(channel.clone()).list_hosts(pb::ListHostsRequest {}).await.expect("hosts").into_inner().hosts
}

async fn session(channel: &Channel, name: &str) -> pb::Session {
    SessionServiceClient::new(channel.clone())
        .get_session(pb::GetSessionRequest { name: name.into() })
        .await
        .expect("get session")
        .into_inner()
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
    add_collector(&ctl.channel).await;
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
    let cases = [
        (create("bad name", &[SOURCE], COLLECTOR, None), Code::InvalidArgument, "name: "),
        (create("s", &[], COLLECTOR, None), Code::InvalidArgument, "sources: "),
        (create("s", &["bad host!"], COLLECTOR, None), Code::InvalidArgument, "sources[0]: "),
        (create("s", &[SOURCE], "nope", None), Code::InvalidArgument, "collector: "),
        (create("s", &[SOURCE], COLLECTOR, Some(icmp_port)), Code::InvalidArgument, "filter.port: "),
        (create("s", &[SOURCE], COLLECTOR, Some(bad_cidr)), Code::InvalidArgument, "filter.cidrs[0]: "),
        (create("s", &[SOURCE], COLLECTOR, Some(v6_cidr)), Code::InvalidArgument, "filter: "),
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
    assert_eq!(ids, [SOURCE], "refused sessions registered no hosts");
    ctl.stop().await;
}

#[tokio::test]
async fn pushes_acks_status_and_source_dest_check() {
    let cloud = cloud();
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud.clone()).await;
    add_collector(&ctl.channel).await;
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

    let hosts = hosts(&ctl.channel).await;
    let host = hosts.iter().find(|h| h.host_id == SOURCE).expect("host listed");
    assert_eq!((host.desired_version, host.applied_version, host.connected), (4, 4, true));
    assert_eq!(host.addresses, ["10.9.0.10"]);
    ctl.stop().await;
}

#[tokio::test]
async fn disconnected_source_degrades_its_session() {
    let (_pg, url) = database().await;
    let ctl = Controller::start(url, cloud()).await;
    add_collector(&ctl.channel).await;
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
    add_collector(&ctl.channel).await;
    let mut agent = Agent::connect(&ctl.channel, SOURCE, 0).await;
    *cloud.fail.lock().expect("lock") = true;
    SessionServiceClient::new(ctl.channel.clone())
        .create_session(create("web", &[SOURCE], COLLECTOR, None))
        .await
        .expect("created: EC2 trouble does not refuse the session");
    let set = agent.next_rule_set().await;
    agent.send(Msg::Ack(pb::Ack { version: set.version })).await;
    let degraded = state_becomes(&ctl.channel, "web", pb::SessionState::Degraded).await;
    assert!(
        degraded.problems.iter().any(|p| p.contains("could not disable Source/Dest Check") && p.contains(COLLECTOR)),
        "{:?}",
        degraded.problems
    );
    assert!(degraded.hosts[0].applied, "the source itself is fine");
    *cloud.fail.lock().expect("lock") = false;
    state_becomes(&ctl.channel, "web", pb::SessionState::Active).await;
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
