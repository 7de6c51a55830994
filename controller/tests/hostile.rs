//! Hostile agents and hostile callers, end to end on real Postgres and real TLS, each
//! speaking raw gRPC as an attacker would: a join token cannot take over an enrolled host,
//! no agent report can break a host's versions, text from outside never reaches a
//! terminal as control sequences, connections are bounded, a copied certificate dies with
//! the next renewal, and bad agent messages end the stream with a reason.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use common::{
    Controller, database, eventually,
    secure::{
        BOOTSTRAP, COLLECTOR, OTHER, SOURCE, Stream, audit, cloud, create_host_token, create_token, enroll, enroll_key,
        hello, hello_with, renew, with_token,
    },
    tls_channel,
};
use teefleet_lab::postgres::TempPostgres;
use teefleet_proto::v1::{
    self as pb, agent_message::Msg, collector_service_client::CollectorServiceClient,
    host_service_client::HostServiceClient, session_service_client::SessionServiceClient,
    token_service_client::TokenServiceClient,
};
use tokio::io::AsyncReadExt;
use tonic::{Code, transport::Channel};

async fn start(url: &str, flags: &[&str]) -> (Controller, String) {
    Controller::start_secure_with(url.to_owned(), cloud(), BOOTSTRAP, flags).await
}

async fn add_collector(ch: &Channel) {
    let req = pb::AddCollectorRequest { instance_id: COLLECTOR.into(), ..Default::default() };
    CollectorServiceClient::new(ch.clone()).add_collector(with_token(req, BOOTSTRAP)).await.expect("collector");
}

fn session(name: &str, source: &str) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        name: name.into(),
        sources: vec![source.into()],
        collector: COLLECTOR.into(),
        ..Default::default()
    }
}

async fn create_session(ch: &Channel, name: &str, source: &str) -> Result<pb::Session, tonic::Status> {
    let req = with_token(session(name, source), BOOTSTRAP);
    Ok(SessionServiceClient::new(ch.clone()).create_session(req).await?.into_inner())
}

async fn delete_session(ch: &Channel, name: &str) -> Result<(), tonic::Status> {
    let req = with_token(pb::DeleteSessionRequest { name: name.into() }, BOOTSTRAP);
    SessionServiceClient::new(ch.clone()).delete_session(req).await.map(|_| ())
}

async fn get_session(ch: &Channel, name: &str) -> pb::Session {
    let req = with_token(pb::GetSessionRequest { name: name.into() }, BOOTSTRAP);
    SessionServiceClient::new(ch.clone()).get_session(req).await.expect("get session").into_inner()
}

async fn get_host(ch: &Channel, host: &str) -> pb::Host {
    let req = with_token(pb::GetHostRequest { host_id: host.into() }, BOOTSTRAP);
    HostServiceClient::new(ch.clone()).get_host(req).await.expect("get host").into_inner()
}

/// Enrolls `host` with a fresh join token; the channel carries its certificate.
async fn enrolled(ctl: &Controller, ca: &str, host: &str) -> Channel {
    let join = create_token(&ctl.channel, BOOTSTRAP, "agent", Some(1)).await.expect("join token");
    let (cert, key) = enroll(&ctl.channel, &join, host).await.expect("enroll");
    tls_channel(ctl.addr, ca, Some((&cert, &key))).await
}

/// What most findings start from: a controller serving TLS with a collector, session
/// "web" on SOURCE, and SOURCE's agent enrolled (`own`), streaming, and pushed its set.
struct Fleet {
    _pg: TempPostgres,
    ctl: Controller,
    ca: String,
    own: Channel,
    stream: Stream,
    pushed: pb::RuleSet,
}

async fn fleet() -> Fleet {
    let (pg, url) = database().await;
    let (ctl, ca) = start(&url, &[]).await;
    add_collector(&ctl.channel).await;
    create_session(&ctl.channel, "web", SOURCE).await.expect("session");
    let own = enrolled(&ctl, &ca, SOURCE).await;
    let mut stream = hello(&own, SOURCE).await.expect("the agent's stream");
    let pushed = next_rule_set(&mut stream).await;
    Fleet { _pg: pg, ctl, ca, own, stream, pushed }
}

async fn next_rule_set(stream: &mut Stream) -> pb::RuleSet {
    let msg = tokio::time::timeout(Duration::from_secs(5), stream.1.message())
        .await
        .expect("a push within 5 s")
        .expect("stream healthy")
        .expect("stream open");
    match msg.msg {
        Some(pb::controller_message::Msg::RuleSet(set)) => set,
        None => panic!("empty controller message"),
    }
}

async fn send(stream: &Stream, msg: Msg) {
    stream.0.send(pb::AgentMessage { msg: Some(msg) }).await.expect("send");
}

/// The status the stream ended with; `None` for a clean end (status OK).
async fn end_of(inbound: &mut tonic::Streaming<pb::ControllerMessage>) -> Option<tonic::Status> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
            Err(_) => panic!("the stream did not end within 10 s"),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return None,
            Ok(Err(status)) => return Some(status),
        }
    }
}

async fn still_open(stream: &mut Stream, wait: Duration) -> bool {
    match tokio::time::timeout(wait, stream.1.message()).await {
        Err(_) => true,
        Ok(Ok(Some(_))) => true,
        Ok(_) => false,
    }
}

/// Whether a terminal would act on some of `s` (controls, bidi overrides and isolates,
/// line separators): the model's definition, whose own tests name each character.
fn unsafe_for_terminals(s: &str) -> bool {
    s.chars().any(teefleet_model::text::acts_on_terminals)
}

const HOSTILE_TEXT: &str = "\u{1b}]0;owned\u{7}\u{1b}[31mred\u{202e}txt.exe\nforged line\r\u{2066}x\u{9b}2J";

#[tokio::test]
async fn a_join_token_cannot_take_over_an_enrolled_host() {
    let Fleet { _pg, ctl, ca, own, mut stream, .. } = fleet().await;
    let ch = &ctl.channel;

    // Another join token, as found in any host's user-data, names the enrolled host.
    let stolen = create_token(ch, BOOTSTRAP, "agent", Some(1)).await.expect("join token");
    let err = enroll(ch, &stolen, SOURCE).await.expect_err("an enrolled host is not for the taking");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    for hint in ["fleetctl host revoke", "--host"] {
        assert!(err.message().contains(hint), "{hint} in {err:?}");
    }
    assert!(still_open(&mut stream, Duration::from_secs(1)).await, "the real agent keeps its stream");
    // The refusal spent nothing: the one use still enrolls a new host.
    enroll(ch, &stolen, OTHER).await.expect("the token's one use is left");

    let refused = audit(ch, BOOTSTRAP).await;
    assert!(
        refused
            .iter()
            .any(|r| r.action == "host.enroll" && r.target == SOURCE && r.result.starts_with("AlreadyExists")),
        "the refused enrollment is audited: {refused:#?}"
    );

    // The way out for a rebuilt host: a token made for it, which retires the old identity.
    let for_source = create_host_token(ch, BOOTSTRAP, SOURCE).await.expect("a token for the host");
    let err = enroll(ch, &for_source, OTHER).await.expect_err("a token for one host enrolls no other");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let (cert, key) = enroll(ch, &for_source, SOURCE).await.expect("the host enrolls again");
    let end = end_of(&mut stream.1).await.expect("the old identity's stream ends");
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
    let err = hello(&own, SOURCE).await.expect_err("the old certificate is retired");
    assert!(err.message().contains("enrolled again"), "{err:?}");
    let rebuilt = tls_channel(ctl.addr, &ca, Some((&cert, &key))).await;
    hello(&rebuilt, SOURCE).await.expect("the new identity streams");
    let err = enroll(ch, &for_source, SOURCE).await.expect_err("one use by default");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    ctl.stop().await;
}

#[tokio::test]
async fn an_agent_that_lost_its_enrollment_answer_retries_with_the_same_key() {
    let (_pg, url) = database().await;
    let (ctl, ca) = start(&url, &[]).await;
    let ch = &ctl.channel;
    let join = create_token(ch, BOOTSTRAP, "agent", Some(2)).await.expect("join token");
    let key = rcgen::KeyPair::generate().expect("key");
    enroll_key(ch, &join, SOURCE, &key).await.expect("enrolled; say the answer was lost");
    let (cert, key_pem) = enroll_key(ch, &join, SOURCE, &key).await.expect("the same key again");
    let err = enroll(ch, &join, SOURCE).await.expect_err("another key is another agent");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    enroll(ch, &join, OTHER).await.expect("the retry spent no use");
    let err = enroll(ch, &join, "i-05000000000000003").await.expect_err("two uses spent");
    assert!(err.message().contains("used up"), "{err:?}");
    let mtls = tls_channel(ctl.addr, &ca, Some((&cert, &key_pem))).await;
    hello(&mtls, SOURCE).await.expect("the retried certificate streams");
    ctl.stop().await;
}

#[tokio::test]
async fn racing_enrollments_of_one_host_make_one_identity() {
    let (_pg, url) = database().await;
    let (ctl, _) = start(&url, &[]).await;
    let ch = &ctl.channel;
    // Each with a token of its own: enrollments with one token wait for each other anyway.
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let join = create_token(ch, BOOTSTRAP, "agent", Some(1)).await.expect("join token");
        let ch = ch.clone();
        racers.spawn(async move { enroll(&ch, &join, SOURCE).await.map(|_| ()).map_err(|e| e.code()) });
    }
    let mut outcomes = Vec::new();
    while let Some(outcome) = racers.join_next().await {
        outcomes.push(outcome.expect("racer"));
    }
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, Ok(()) | Err(Code::AlreadyExists))), "{outcomes:?}");
    ctl.stop().await;
}

#[tokio::test]
async fn no_reported_version_breaks_a_host_and_operators_keep_control() {
    let Fleet { _pg, ctl, own, stream, pushed, .. } = fleet().await;
    let ch = &ctl.channel;
    send(&stream, Msg::Ack(pb::Ack { version: pushed.version })).await;
    let mut streams = vec![stream];

    // A compromised host reports versions no controller ever pushed to it.
    for claimed in [(1u64 << 63) - 2, u64::MAX, (1 << 53) + 1, pushed.version + 1] {
        let hello = pb::Hello { host_id: SOURCE.into(), applied_version: claimed, ..Default::default() };
        let mut liar = hello_with(&own, hello).await.expect("a stream");
        let fresh = next_rule_set(&mut liar).await;
        assert_eq!(fresh.version, pushed.version, "claimed {claimed}: the current set again, not a new version");
        assert_eq!(fresh.rules.len(), pushed.rules.len());
        assert_eq!(get_host(ch, SOURCE).await.desired_version, pushed.version, "claimed {claimed}");
        streams.push(liar);
    }

    // Operators still change the host's sessions, and versions stay small.
    delete_session(ch, "web").await.expect("delete after the lies");
    create_session(ch, "web2", SOURCE).await.expect("create after the lies");
    let host = get_host(ch, SOURCE).await;
    assert_eq!(host.desired_version, pushed.version + 2, "{host:?}");
    ctl.stop().await;
}

#[tokio::test]
async fn a_host_an_older_controller_left_broken_repairs_itself() {
    let (_pg, url) = database().await;
    // The schema and rows an agent's Hello of 2^63 - 2 left behind before this was fixed.
    let pool = sqlx::PgPool::connect(&url).await.expect("pool");
    sqlx::migrate!("../migrations").run_to(4, &pool).await.expect("the schema of migrations 1 to 4");
    for statement in [
        "INSERT INTO collectors (instance_id, ip, subnet_id, original_source_dest_check)
         VALUES ('i-0c0000000000000c1', '10.9.0.100', 'subnet-1', true)",
        "INSERT INTO hosts (host_id, desired_version, applied_version, desired_rules)
         VALUES ('i-05000000000000001', 9223372036854775807, 9223372036854775806, '[]')",
        "INSERT INTO sessions (name, collector_id, direction, protocol) VALUES ('web', 'i-0c0000000000000c1', 'both', 'all')",
        "INSERT INTO session_sources (session_id, host_id, required_version)
         SELECT id, 'i-05000000000000001', 3 FROM sessions",
    ] {
        sqlx::query(statement).execute(&pool).await.expect(statement);
    }
    let (ctl, _) = start(&url, &[]).await;
    let ch = &ctl.channel;
    delete_session(ch, "web").await.expect("delete on the repaired host");
    // A collector registered before VXLAN takes raw clones: mirroring both directions
    // turns the source's check off.
    let raw = pb::CreateSessionRequest { disable_source_check: true, ..session("web2", SOURCE) };
    SessionServiceClient::new(ch.clone())
        .create_session(with_token(raw, BOOTSTRAP))
        .await
        .expect("create on the repaired host");
    let host = get_host(ch, SOURCE).await;
    assert!(host.desired_version < 1 << 53 && host.applied_version == 0, "{host:?}");
    ctl.stop().await;
}

#[tokio::test]
async fn acks_and_nacks_count_only_for_versions_pushed() {
    let Fleet { _pg, ctl, stream, pushed, .. } = fleet().await;
    let ch = &ctl.channel;

    send(&stream, Msg::Ack(pb::Ack { version: pushed.version + 1_000_000 })).await;
    send(&stream, Msg::Nack(pb::Nack { version: pushed.version + 7, error: "never pushed".into() })).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let host = get_host(ch, SOURCE).await;
    assert_eq!((host.applied_version, host.last_error.as_str()), (0, ""), "{host:?}");

    send(&stream, Msg::Ack(pb::Ack { version: pushed.version })).await;
    eventually(5, "the real Ack recorded", || async {
        (get_session(ch, "web").await.state == pb::SessionState::Active as i32).then_some(())
    })
    .await;
    // A session nobody acknowledged is not active, whatever came before.
    create_session(ch, "later", SOURCE).await.expect("second session");
    send(&stream, Msg::Ack(pb::Ack { version: pushed.version + 1_000_000 })).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get_session(ch, "later").await.state, pb::SessionState::Pending as i32);
    ctl.stop().await;
}

#[tokio::test]
async fn agent_and_caller_text_reaches_terminals_as_data() {
    let Fleet { _pg, ctl, own, .. } = fleet().await;
    let ch = &ctl.channel;
    let hello = pb::Hello {
        host_id: SOURCE.into(),
        agent_version: HOSTILE_TEXT.into(),
        dataplane: Some(pb::Dataplane {
            backend: HOSTILE_TEXT.into(),
            iptables_version: HOSTILE_TEXT.into(),
            ipv6: false,
            problems: vec![HOSTILE_TEXT.into()],
        }),
        ..Default::default()
    };
    let mut stream = hello_with(&own, hello).await.expect("stream");
    let pushed = next_rule_set(&mut stream).await;
    send(&stream, Msg::Nack(pb::Nack { version: pushed.version, error: HOSTILE_TEXT.into() })).await;
    let event = pb::HostEvent { kind: "drift_repaired".into(), message: HOSTILE_TEXT.into(), at_unix_ms: 1 };
    send(&stream, Msg::Event(event)).await;
    let host = eventually(5, "the Nack and the event recorded", || async {
        let host = get_host(ch, SOURCE).await;
        (!host.last_error.is_empty() && !host.events.is_empty()).then_some(host)
    })
    .await;
    let dataplane = host.dataplane.clone().expect("dataplane");
    let mut texts =
        vec![host.agent_version.clone(), host.last_error.clone(), dataplane.backend, dataplane.iptables_version];
    texts.extend(dataplane.problems);
    texts.extend(host.events.iter().map(|e| e.message.clone()));
    texts.extend(get_session(ch, "web").await.hosts.iter().map(|h| h.error.clone()));
    for text in &texts {
        assert!(!unsafe_for_terminals(text), "{text:?}");
        assert!(text.contains("red") || text.is_empty(), "the printable rest is kept: {text:?}");
    }

    // Refused callers' text lands in the audit log as data too.
    let sessions = SessionServiceClient::new(ch.clone());
    for name in ["a\u{1b}[31m", "a\nb", "a\u{202e}b"] {
        let err = sessions.clone().create_session(with_token(session(name, SOURCE), BOOTSTRAP)).await;
        assert_eq!(err.expect_err("invalid name").code(), Code::InvalidArgument);
    }
    let err = TokenServiceClient::new(ch.clone())
        .revoke_token(with_token(pb::RevokeTokenRequest { id: "x\u{1b}[2J\n".into() }, BOOTSTRAP))
        .await
        .expect_err("no such token");
    assert_eq!(err.code(), Code::InvalidArgument);
    let records = audit(ch, BOOTSTRAP).await;
    let refused: Vec<_> = records.iter().filter(|r| r.result != "ok").collect();
    assert_eq!(refused.len(), 3, "the three refused names: {records:#?}");
    for r in &records {
        for field in [&r.actor, &r.peer, &r.action, &r.target, &r.result] {
            assert!(!unsafe_for_terminals(field), "{r:?}");
        }
    }
    ctl.stop().await;
}

#[tokio::test]
async fn a_renewal_retires_the_certificate_it_replaces() {
    let (_pg, url) = database().await;
    let (ctl, ca) = start(&url, &[]).await;
    let ch = &ctl.channel;
    let join = create_token(ch, BOOTSTRAP, "agent", Some(1)).await.expect("join token");
    let first = enroll(ch, &join, SOURCE).await.expect("enroll");
    let mut current = first.clone();
    let mut older = Vec::new();
    for _ in 0..5 {
        let mtls = tls_channel(ctl.addr, &ca, Some((&current.0, &current.1))).await;
        let next = renew(&mtls, SOURCE).await.expect("renew");
        let renewed = tls_channel(ctl.addr, &ca, Some((&next.0, &next.1))).await;
        let _open = hello(&renewed, SOURCE).await.expect("the new certificate connects");
        older.push(mtls);
        current = next;
    }
    for (i, mtls) in older.iter().enumerate() {
        let err = hello(mtls, SOURCE).await.expect_err("a replaced certificate is dead");
        assert_eq!(err.code(), Code::Unauthenticated, "certificate {i}: {err:?}");
        assert!(err.message().contains("replaced"), "{err:?}");
    }
    ctl.stop().await;
}

#[tokio::test]
async fn bad_agent_messages_end_the_stream_with_a_reason() {
    let (_pg, url) = database().await;
    let (ctl, ca) = start(&url, &[]).await;
    let own = enrolled(&ctl, &ca, SOURCE).await;

    let mut stream = hello(&own, SOURCE).await.expect("stream");
    let counters = (0..500_000)
        .map(|i| pb::SessionCounters { session: format!("session-{i:08}"), ..Default::default() })
        .collect();
    send(&stream, Msg::Health(pb::Health { counters, ..Default::default() })).await;
    let status = end_of(&mut stream.1).await.expect("an oversize message ends the stream with a status");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("8 MiB"), "{status:?}");

    let (_keep, mut inbound) = malformed_stream(&own).await;
    let status = end_of(&mut inbound).await.expect("a malformed message ends the stream with a status");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    ctl.stop().await;
}

/// A stream that says Hello properly, then sends a Nack whose error is not UTF-8, which
/// prost cannot decode.
async fn malformed_stream(
    channel: &Channel,
) -> (tokio::sync::mpsc::Sender<Raw>, tonic::Streaming<pb::ControllerMessage>) {
    use prost::Message;
    let hello = pb::Hello { host_id: SOURCE.into(), ..Default::default() }.encode_to_vec();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Raw { hello, nack: Vec::new() }).await.expect("hello");
    tx.send(Raw { hello: Vec::new(), nack: vec![0x12, 0x02, 0xff, 0xfe] }).await.expect("malformed");
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/fleet.v1.AgentService/Sync");
    let codec = tonic_prost::ProstCodec::<Raw, pb::ControllerMessage>::default();
    let request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let inbound = grpc.streaming(request, path, codec).await.expect("stream opened").into_inner();
    (tx, inbound)
}

/// AgentMessage on the wire, with its fields as raw bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct Raw {
    #[prost(bytes = "vec", tag = "1")]
    hello: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    nack: Vec<u8>,
}

/// A TCP connection to `to` from `from` (any 127.0.0.0/8 address is this machine).
async fn connect_from(from: IpAddr, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    socket.connect(to).await.expect("connect")
}

/// A TLS connection to the controller that sends nothing after its handshake.
async fn tls_without_preface(to: SocketAddr, ca: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.as_bytes()).expect("CA")).expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(to).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.expect("handshake")
}

/// Whether the server closed the connection within `wait`.
async fn closed_within(conn: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(wait, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn connections_are_bounded() {
    let (_pg, url) = database().await;
    let flags = ["--max-connections", "40", "--max-connections-per-address", "8", "--handshake-timeout", "2s"];
    let (ctl, ca) = start(&url, &flags).await;
    let ch = &ctl.channel;
    let attacker: IpAddr = "127.0.0.2".parse().expect("ip");

    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(connect_from(attacker, ctl.addr).await);
    }
    let mut ninth = connect_from(attacker, ctl.addr).await;
    assert!(closed_within(&mut ninth, Duration::from_millis(500)).await, "over the per-address cap: closed at once");
    // Others keep working while the attacker holds its share.
    let req = with_token(pb::ListSessionsRequest {}, BOOTSTRAP);
    SessionServiceClient::new(ch.clone()).list_sessions(req).await.expect("an operator is served");
    // A connection that never finishes its TLS handshake is closed after the timeout, and
    // so is one that finishes it but never sends the HTTP/2 preface.
    let mut silent = tls_without_preface(ctl.addr, &ca).await;
    for conn in &mut idle {
        assert!(closed_within(conn, Duration::from_secs(4)).await, "idle without a handshake: closed");
    }
    let mut buf = [0u8; 16];
    let end = tokio::time::timeout(Duration::from_secs(4), silent.read(&mut buf)).await;
    assert!(matches!(end, Ok(Ok(0) | Err(_))), "a TLS connection without a preface is closed: {end:?}");

    // Many addresses together meet the global cap.
    let mut held = Vec::new();
    for i in 0..5u8 {
        for _ in 0..8 {
            held.push(connect_from(IpAddr::from([127, 0, 1, i]), ctl.addr).await);
        }
    }
    let mut over = connect_from("127.0.2.1".parse().expect("ip"), ctl.addr).await;
    assert!(closed_within(&mut over, Duration::from_millis(500)).await, "over the global cap: closed at once");
    drop(held);
    // A new connection is served again once they are gone.
    let fresh = tls_channel(ctl.addr, &ca, None).await;
    let req = with_token(pb::ListSessionsRequest {}, BOOTSTRAP);
    SessionServiceClient::new(fresh).list_sessions(req).await.expect("served once the attackers left");
    ctl.stop().await;
}
