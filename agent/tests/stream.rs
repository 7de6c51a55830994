//! The stream client against an in-process tonic server, with a recording fake
//! dataplane: Hello first (with the version from the state file), RuleSet → Ack,
//! invalid or failing sets → Nack, the state file follows, reconnect after the server
//! goes away, and failover between the controller's replicas when one is killed or down.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::FakeDataplane;
use teefleet_agent::{
    Agent, StateStore, StreamOptions, Transport,
    backoff::Backoff,
    config::{ControllerUrl, ControllerUrls},
    firewall::{Check, Counter, Family, Repair},
};
use teefleet_model::{MirrorRule, Protocol, RuleDirection, RuleSet};
use teefleet_proto::v1::{
    self as pb,
    agent_message::Msg,
    agent_service_server::{AgentService, AgentServiceServer},
};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_stream::{StreamExt, wrappers::ReceiverStream, wrappers::TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(10);

/// One accepted stream: what the agent sent, and a sender for pushes.
struct Conn {
    inbound: Streaming<pb::AgentMessage>,
    outbound: mpsc::Sender<Result<pb::ControllerMessage, Status>>,
}

impl Conn {
    /// The next message that is not a Health report.
    async fn next(&mut self) -> Msg {
        loop {
            let msg = tokio::time::timeout(WAIT, self.inbound.next())
                .await
                .expect("message in time")
                .expect("open")
                .expect("ok");
            match msg.msg.expect("oneof set") {
                Msg::Health(_) => continue,
                other => return other,
            }
        }
    }

    async fn push(&self, set: pb::RuleSet) {
        let msg = pb::ControllerMessage { msg: Some(pb::controller_message::Msg::RuleSet(set)) };
        self.outbound.send(Ok(msg)).await.expect("push");
    }
}

struct FakeController {
    conns: mpsc::Sender<Conn>,
}

#[tonic::async_trait]
impl AgentService for FakeController {
    type SyncStream = ReceiverStream<Result<pb::ControllerMessage, Status>>;

    async fn sync(&self, request: Request<Streaming<pb::AgentMessage>>) -> Result<Response<Self::SyncStream>, Status> {
        let (outbound, rx) = mpsc::channel(16);
        self.conns
            .send(Conn { inbound: request.into_inner(), outbound })
            .await
            .map_err(|_| Status::internal("test gone"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    // These tests run the agent with --insecure, which never enrolls.
    async fn enroll(&self, _: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn renew(&self, _: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn leave(&self, _: Request<pb::LeaveRequest>) -> Result<Response<pb::LeaveResponse>, Status> {
        Err(Status::unimplemented("not part of these tests"))
    }
}

async fn serve(listener: TcpListener, conns: mpsc::Sender<Conn>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AgentServiceServer::new(FakeController { conns }))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    })
}

fn sample(version: u64) -> RuleSet {
    let rule = MirrorRule::new(
        "web".parse().expect("name"),
        RuleDirection::Ingress,
        "10.0.0.5".parse().expect("ip"),
        Protocol::Tcp,
        None,
        None,
    )
    .expect("rule");
    RuleSet::new(version, vec![rule]).expect("set")
}

fn push(version: u64, gateway: &str) -> pb::RuleSet {
    pb::RuleSet {
        version,
        rules: vec![pb::MirrorRule {
            session: "web".into(),
            direction: pb::Direction::Egress as i32,
            gateway: gateway.into(),
            protocol: pb::Protocol::Udp as i32,
            ports: Some(pb::PortRange { first: 53, last: 53 }),
            peer_cidr: String::new(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn url(addr: SocketAddr) -> ControllerUrl {
    format!("http://{addr}").parse().expect("url")
}

fn options(urls: Vec<ControllerUrl>, health_interval: Duration, backoff: Backoff) -> StreamOptions {
    StreamOptions {
        transport: Transport::Plaintext(ControllerUrls::new(urls).expect("one controller's URLs")),
        host_id: "host-1".parse().expect("id"),
        health_interval,
        addresses: Some(vec!["10.0.0.9".into()]),
        backoff,
        refused_retry: Duration::from_secs(60),
    }
}

fn fast_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(10), Duration::from_millis(100))
}

/// A fake controller on 127.0.0.1:0 and an agent streaming to it.
struct Harness {
    addr: SocketAddr,
    conns_tx: mpsc::Sender<Conn>,
    conns: mpsc::Receiver<Conn>,
    server: JoinHandle<()>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Harness {
    async fn start(mut agent: Agent<FakeDataplane>, health_interval: Duration) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (conns_tx, conns) = mpsc::channel(4);
        let server = serve(listener, conns_tx.clone()).await;
        let shutdown = CancellationToken::new();
        let opts = options(vec![url(addr)], health_interval, fast_backoff());
        let token = shutdown.clone();
        let task = tokio::spawn(async move { agent.run(&opts, &token).await });
        Harness { addr, conns_tx, conns, server, shutdown, task }
    }
}

fn expect_hello(msg: Msg, applied_version: u64) {
    let Msg::Hello(hello) = msg else { panic!("expected Hello first, got {msg:?}") };
    assert_eq!(hello.host_id, "host-1");
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(hello.addresses, ["10.0.0.9"]);
    assert_eq!(hello.applied_version, applied_version);
}

#[tokio::test]
async fn hello_ack_nack_state_and_reconnect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::new(dir.path());
    store.save(&sample(5)).await.expect("seed state");

    let dp = FakeDataplane::default();
    let mut agent = Agent::new(dp.clone(), StateStore::new(dir.path()), Duration::from_secs(5));
    agent.restore().await;
    assert_eq!(dp.versions(), [5], "the saved set is applied before connecting");
    let Harness { addr, conns_tx, mut conns, server, shutdown, task } =
        Harness::start(agent, Duration::from_secs(3600)).await;

    let mut conn = tokio::time::timeout(WAIT, conns.recv()).await.expect("connect").expect("conn");
    expect_hello(conn.next().await, 5);

    conn.push(push(6, "10.0.0.5")).await;
    assert_eq!(conn.next().await, Msg::Ack(pb::Ack { version: 6 }));
    assert_eq!(dp.versions(), [5, 6]);
    assert_eq!(store.load().await.expect("load").map(|s| s.version()), Some(6));

    conn.push(push(7, "10.0.0.5; iptables -F")).await;
    let Msg::Nack(nack) = conn.next().await else { panic!("expected Nack") };
    assert_eq!(nack.version, 7);
    assert!(nack.error.contains("rules[0].gateway"), "{}", nack.error);

    *dp.fail.lock().expect("lock") = Some("iptables-restore: line 3 failed".into());
    conn.push(push(8, "10.0.0.5")).await;
    let Msg::Nack(nack) = conn.next().await else { panic!("expected Nack") };
    assert_eq!(nack.version, 8);
    assert!(nack.error.contains("line 3 failed"), "{}", nack.error);
    *dp.fail.lock().expect("lock") = None;
    assert_eq!(dp.versions(), [5, 6], "invalid and failed sets are not applied");
    assert_eq!(store.load().await.expect("load").map(|s| s.version()), Some(6), "nor saved");

    // The controller ends the stream: the agent reconnects and reports what it has.
    drop(conn);
    let mut conn = tokio::time::timeout(WAIT, conns.recv()).await.expect("reconnect").expect("conn");
    expect_hello(conn.next().await, 6);

    // The controller goes away entirely and comes back on the same address.
    server.abort();
    let _ = server.await;
    drop(conn);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = TcpListener::bind(addr).await.expect("rebind");
    let server = serve(listener, conns_tx).await;
    let mut conn = tokio::time::timeout(WAIT, conns.recv()).await.expect("reconnect after restart").expect("conn");
    expect_hello(conn.next().await, 6);

    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.expect("stops on shutdown").expect("join");
    assert_eq!(dp.versions(), [5, 6], "shutdown removes nothing");
    server.abort();
}

#[tokio::test]
async fn health_reports_the_applied_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::new(FakeDataplane::default(), StateStore::new(dir.path()), Duration::from_secs(5));
    let Harness { mut conns, server, shutdown, task, .. } = Harness::start(agent, Duration::from_millis(50)).await;

    let mut conn = tokio::time::timeout(WAIT, conns.recv()).await.expect("connect").expect("conn");
    expect_hello(conn.next().await, 0);
    conn.push(push(3, "10.0.0.5")).await;
    assert_eq!(conn.next().await, Msg::Ack(pb::Ack { version: 3 }));
    let health = loop {
        let msg = tokio::time::timeout(WAIT, conn.inbound.next()).await.expect("health").expect("open").expect("ok");
        if let Some(Msg::Health(h)) = msg.msg
            && h.applied_version == 3
        {
            break h;
        }
    };
    assert_eq!(health.rule_count, 1);

    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.expect("stops").expect("join");
    server.abort();
}

#[tokio::test]
async fn queued_events_counters_and_repairs_reach_the_controller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::new(dir.path());
    std::fs::write(store.path(), "{\"version\": 3, \"rules\": [").expect("truncated state");
    let dp = FakeDataplane::default();
    *dp.check.lock().expect("lock") = Check {
        repairs: vec![Repair {
            scope: teefleet_agent::firewall::Scope::Rules(Family::V6),
            drift: "chain TEEFLEET-PRE was flushed".into(),
        }],
        counters: [("web".parse().expect("name"), Counter { packets: 7, bytes: 700 })].into(),
        ..Check::default()
    };
    let mut agent = Agent::new(dp.clone(), StateStore::new(dir.path()), Duration::from_secs(5));
    agent.restore().await;
    assert!(dp.versions().is_empty(), "a corrupt state file is never applied");

    // Events queue up while there is no controller: the ignored file, then one repair.
    let token = CancellationToken::new();
    let drift = tokio::spawn(teefleet_agent::drift::run(
        agent.dataplane(),
        agent.status(),
        agent.events(),
        Duration::from_secs(3600),
        token.clone(),
    ));
    let status = agent.status();
    tokio::time::timeout(WAIT, async {
        while status.drift_repairs() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the first drift check runs at once");
    let Harness { mut conns, server, shutdown, task, .. } = Harness::start(agent, Duration::from_millis(50)).await;

    let mut conn = tokio::time::timeout(WAIT, conns.recv()).await.expect("connect").expect("conn");
    expect_hello(conn.next().await, 0);
    let Msg::Event(ignored) = conn.next().await else { panic!("expected the state_ignored event") };
    assert_eq!(ignored.kind, "state_ignored");
    assert!(ignored.message.contains("corrupt"), "{}", ignored.message);
    let Msg::Event(repaired) = conn.next().await else { panic!("expected the drift_repaired event") };
    assert_eq!(
        (repaired.kind.as_str(), repaired.message.as_str()),
        ("drift_repaired", "ipv6: chain TEEFLEET-PRE was flushed")
    );
    assert!(repaired.at_unix_ms > 1_700_000_000_000, "{}", repaired.at_unix_ms);

    let health = loop {
        let msg = tokio::time::timeout(WAIT, conn.inbound.next()).await.expect("health").expect("open").expect("ok");
        if let Some(Msg::Health(h)) = msg.msg {
            break h;
        }
    };
    assert_eq!(health.drift_repairs, 1);
    assert_eq!(
        health.counters.iter().map(|c| (c.session.as_str(), c.packets, c.bytes)).collect::<Vec<_>>(),
        [("web", 7, 700)]
    );

    token.cancel();
    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.expect("stops").expect("join");
    tokio::time::timeout(WAIT, drift).await.expect("drift loop stops").expect("join");
    server.abort();
}

/// A fake controller replica on a runtime of its own, so that killing it closes its
/// listener and every connection at once, without a GOAWAY or an end of stream: what the
/// agent sees when a replica's process is killed with SIGKILL.
struct Replica {
    addr: SocketAddr,
    conns: mpsc::Receiver<Conn>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Replica {
    fn start_at(addr: SocketAddr) -> Replica {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let listener = std::net::TcpListener::bind(addr).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (conns_tx, conns) = mpsc::channel(4);
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            serve(listener, conns_tx).await.await.expect("serve");
        });
        Replica { addr, conns, runtime: Some(runtime) }
    }

    fn start() -> Replica {
        Replica::start_at("127.0.0.1:0".parse().expect("addr"))
    }

    fn url(&self) -> ControllerUrl {
        url(self.addr)
    }

    async fn accepted(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.conns.recv()).await.expect("the agent connects in time").expect("conn")
    }

    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 127.0.0.1 address where nothing listens: connecting is refused.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Moving to the next replica must not wait for the backoff: with this one, an agent that
/// waited would almost surely miss the test's deadlines, while a whole round of failures
/// (which does wait) never happens in these tests.
fn glacial_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600))
}

fn connected_to(metrics: &str) -> Vec<&str> {
    metrics.lines().filter(|l| l.starts_with("teefleet_agent_controller_info{")).collect()
}

#[tokio::test]
async fn agents_of_a_killed_replica_move_to_the_next_and_converge() {
    let mut first = Replica::start();
    let mut second = Replica::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let dp = FakeDataplane::default();
    let mut agent = Agent::new(dp.clone(), StateStore::new(dir.path()), Duration::from_secs(5));
    let status = agent.status();
    let opts = options(vec![first.url(), second.url()], Duration::from_secs(3600), glacial_backoff());
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { agent.run(&opts, &token).await });

    let mut conn = first.accepted().await;
    expect_hello(conn.next().await, 0);
    conn.push(push(4, "10.0.0.5")).await;
    assert_eq!(conn.next().await, Msg::Ack(pb::Ack { version: 4 }));
    let info = format!("teefleet_agent_controller_info{{url=\"http://{}\"}} 1", first.addr);
    assert_eq!(connected_to(&status.metrics()), [info.as_str()]);

    first.kill();
    let mut conn = second.accepted().await;
    expect_hello(conn.next().await, 4);
    conn.push(push(5, "10.0.0.6")).await;
    assert_eq!(conn.next().await, Msg::Ack(pb::Ack { version: 5 }));
    assert_eq!(dp.versions(), [4, 5], "the second replica's set is applied");
    let info = format!("teefleet_agent_controller_info{{url=\"http://{}\"}} 1", second.addr);
    assert_eq!(connected_to(&status.metrics()), [info.as_str()]);
    assert!(first.conns.try_recv().is_err(), "nothing reached the killed replica");

    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.expect("stops on shutdown").expect("join");
    assert_eq!(dp.versions(), [4, 5], "shutdown removes nothing");
    assert!(connected_to(&status.metrics()).is_empty());
}

#[tokio::test]
async fn an_unreachable_first_replica_is_skipped_and_tried_again_in_turn() {
    let down = closed_port();
    let mut second = Replica::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let dp = FakeDataplane::default();
    let mut agent = Agent::new(dp.clone(), StateStore::new(dir.path()), Duration::from_secs(5));
    let opts = options(vec![url(down), second.url()], Duration::from_secs(3600), glacial_backoff());
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { agent.run(&opts, &token).await });

    let mut conn = second.accepted().await;
    expect_hello(conn.next().await, 0);
    conn.push(push(2, "10.0.0.5")).await;
    assert_eq!(conn.next().await, Msg::Ack(pb::Ack { version: 2 }));

    // The first replica comes up and the second dies: its agents go round to the first.
    let mut first = Replica::start_at(down);
    second.kill();
    let mut conn = first.accepted().await;
    expect_hello(conn.next().await, 2);
    conn.push(push(3, "10.0.0.5")).await;
    assert_eq!(conn.next().await, Msg::Ack(pb::Ack { version: 3 }));
    assert_eq!(dp.versions(), [2, 3]);

    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.expect("stops on shutdown").expect("join");
}

#[tokio::test]
async fn with_every_replica_down_the_agent_keeps_going_round() {
    let (first, second) = (closed_port(), closed_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::new(FakeDataplane::default(), StateStore::new(dir.path()), Duration::from_secs(5));
    let opts = options(vec![url(first), url(second)], Duration::from_secs(3600), fast_backoff());
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let mut agent = agent;
        agent.run(&opts, &token).await
    });
    // Several rounds fail (with the backoff between them) before the second comes up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut second = Replica::start_at(second);
    let mut conn = second.accepted().await;
    expect_hello(conn.next().await, 0);

    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.expect("stops on shutdown").expect("join");
}

/// A TCP relay to `to` that, once `freeze` is cancelled, forwards nothing more but keeps
/// every connection open: a replica whose host vanished, which only keepalive can notice.
async fn freezable_relay(to: SocketAddr, freeze: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let freeze = freeze.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await else { return };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    () = freeze.cancelled() => std::future::pending().await,
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_replica_gone_silent_is_noticed_by_keepalive_and_left() {
    let mut first = Replica::start();
    let mut second = Replica::start();
    let freeze = CancellationToken::new();
    let relay = freezable_relay(first.addr, freeze.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::new(FakeDataplane::default(), StateStore::new(dir.path()), Duration::from_secs(5));
    // No Health reports, which would not notice a silent peer for minutes anyway.
    let opts = options(vec![url(relay), second.url()], Duration::from_secs(3600), glacial_backoff());
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let mut agent = agent;
        agent.run(&opts, &token).await
    });

    let mut conn = first.accepted().await;
    expect_hello(conn.next().await, 0);
    conn.push(push(4, "10.0.0.5")).await;
    assert_eq!(conn.next().await, Msg::Ack(pb::Ack { version: 4 }));

    freeze.cancel();
    // Keepalive pings every 10 s and gives up 5 s later; a minute is room to spare.
    let mut conn = tokio::time::timeout(Duration::from_secs(60), second.conns.recv())
        .await
        .expect("failover in time")
        .expect("conn");
    expect_hello(conn.next().await, 4);

    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.expect("stops on shutdown").expect("join");
}
