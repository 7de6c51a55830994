//! Access control end to end on real Postgres and real TLS: callers without a token, with
//! an unknown, expired or revoked one, or with too small a role get the right status and
//! change nothing; join tokens enroll agents within their uses; a certificate speaks only
//! for its own host; a revoked host is cut off; every change lands in the append-only
//! audit log, failures included.

mod common;

use std::time::Duration;

use common::{
    Controller, database,
    secure::{BOOTSTRAP, COLLECTOR, OTHER, SOURCE, audit, cloud, create_token, csr, enroll, hello, with_token},
    tls_channel,
};
use teefleet_proto::v1::{
    self as pb, agent_service_client::AgentServiceClient, audit_service_client::AuditServiceClient,
    collector_service_client::CollectorServiceClient, host_service_client::HostServiceClient,
    session_service_client::SessionServiceClient, token_service_client::TokenServiceClient,
};
use tonic::{Code, transport::Channel};

/// Registers the collector with the bootstrap token, which is an admin's.
async fn add_collector_as_admin(channel: &Channel) {
    let req = pb::AddCollectorRequest { instance_id: COLLECTOR.into(), ..Default::default() };
    CollectorServiceClient::new(channel.clone())
        .add_collector(with_token(req, BOOTSTRAP))
        .await
        .expect("the bootstrap token registers a collector");
}

fn session_request(name: &str) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        name: name.into(),
        sources: vec![SOURCE.into()],
        collector: COLLECTOR.into(),
        filter: None,
        allow_routed: false,
        source_tags: Vec::new(),
        vni: 0,
        disable_source_check: false,
        max_loss: None,
        ttl_seconds: 0,
    }
}

async fn session_names(channel: &Channel, token: &str) -> Vec<String> {
    let reply = SessionServiceClient::new(channel.clone())
        .list_sessions(with_token(pb::ListSessionsRequest {}, token))
        .await
        .expect("list sessions");
    reply.into_inner().sessions.into_iter().map(|s| s.name).collect()
}

#[tokio::test]
async fn reflection_describes_the_api_without_a_token() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let (_pg, url) = database().await;
    let (ctl, _) = Controller::start_secure(url, cloud(), BOOTSTRAP).await;
    let ask = |request| ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let requests = vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol("fleet.v1.SessionService".into())),
    ];
    let mut replies = ServerReflectionClient::new(ctl.channel.clone())
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("reflection needs no token")
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        replies.message().await.expect("a reply").and_then(|r| r.message_response)
    else {
        panic!("a service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for service in ["fleet.v1.SessionService", "fleet.v1.AgentService", "fleet.v1.TokenService"] {
        assert!(names.contains(&service), "{names:?}");
    }
    let Some(MessageResponse::FileDescriptorResponse(file)) =
        replies.message().await.expect("a reply").and_then(|r| r.message_response)
    else {
        panic!("the file declaring SessionService");
    };
    assert!(!file.file_descriptor_proto.is_empty());
    // Describing the API is not calling it.
    let err = SessionServiceClient::new(ctl.channel.clone())
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn callers_need_a_usable_token_with_a_big_enough_role() {
    let (_pg, url) = database().await;
    let (ctl, _) = Controller::start_secure(url.clone(), cloud(), BOOTSTRAP).await;
    let ch = &ctl.channel;
    add_collector_as_admin(ch).await;

    let sessions = SessionServiceClient::new(ch.clone());
    let err = sessions.clone().create_session(session_request("nobody")).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("FLEET_TOKEN"), "{err:?}");
    let err =
        sessions.clone().create_session(with_token(session_request("x"), "tf1.000.bad")).await.expect_err("unknown");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let viewer = create_token(ch, BOOTSTRAP, "viewer", None).await.expect("viewer token");
    assert!(session_names(ch, &viewer).await.is_empty(), "a viewer reads");
    let err = sessions.clone().create_session(with_token(session_request("v"), &viewer)).await.expect_err("viewer");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("needs operator"), "{err:?}");
    let err = create_token(ch, &viewer, "admin", None).await.expect_err("a viewer cannot mint tokens");
    assert_eq!(err.code(), Code::PermissionDenied);

    let operator = create_token(ch, BOOTSTRAP, "operator", None).await.expect("operator token");
    sessions.clone().create_session(with_token(session_request("web"), &operator)).await.expect("operator creates");
    let err = CollectorServiceClient::new(ch.clone())
        .remove_collector(with_token(pb::RemoveCollectorRequest { instance_id: COLLECTOR.into() }, &operator))
        .await
        .expect_err("collectors are an admin act");
    assert_eq!(err.code(), Code::PermissionDenied);

    let agent = create_token(ch, BOOTSTRAP, "agent", Some(1)).await.expect("join token");
    let err = sessions.clone().list_sessions(with_token(pb::ListSessionsRequest {}, &agent)).await.expect_err("agent");
    assert_eq!(err.code(), Code::PermissionDenied, "a join token is not an operator token");

    // Expired and revoked tokens: the caller must get another one.
    let store = teefleet_controller::store::Store::connect(&url).await.expect("store");
    let tokens = store.list_tokens().await.expect("tokens");
    let operator_id = tokens.iter().find(|t| t.role.as_str() == "operator").expect("operator").id.clone();
    let pool = sqlx::PgPool::connect(&url).await.expect("pool");
    sqlx::query("UPDATE tokens SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(&operator_id)
        .execute(&pool)
        .await
        .expect("expire");
    let err =
        sessions.clone().create_session(with_token(session_request("late"), &operator)).await.expect_err("expired");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{err:?}");
    let viewer_id = tokens.iter().find(|t| t.role.as_str() == "viewer").expect("viewer").id.clone();
    TokenServiceClient::new(ch.clone())
        .revoke_token(with_token(pb::RevokeTokenRequest { id: viewer_id }, BOOTSTRAP))
        .await
        .expect("revoke");
    let err =
        sessions.clone().list_sessions(with_token(pb::ListSessionsRequest {}, &viewer)).await.expect_err("revoked");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("revoked"), "{err:?}");

    // None of the refused calls changed anything.
    assert_eq!(session_names(ch, BOOTSTRAP).await, ["web"]);

    // Token rules: uses only for join tokens; lifetimes within bounds.
    let err = create_token(ch, BOOTSTRAP, "viewer", Some(3)).await.expect_err("uses on a viewer token");
    assert_eq!(err.code(), Code::InvalidArgument);
    let req = pb::CreateTokenRequest { role: "admin".into(), ttl_seconds: 5, uses: None, ..Default::default() };
    let err = TokenServiceClient::new(ch.clone()).create_token(with_token(req, BOOTSTRAP)).await.expect_err("5 s");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = create_token(ch, BOOTSTRAP, "root", None).await.expect_err("no such role");
    assert_eq!(err.code(), Code::InvalidArgument);

    // Secrets are stored hashed.
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT secret_sha256 FROM tokens").fetch_all(&pool).await.expect("q");
    assert!(
        stored.iter().all(|h| h.len() == 32 && !h.windows(8).any(|w| operator.as_bytes().windows(8).any(|o| o == w)))
    );
    ctl.stop().await;
}

#[tokio::test]
async fn every_change_is_audited_and_the_log_is_append_only() {
    let (_pg, url) = database().await;
    let (ctl, _) = Controller::start_secure(url.clone(), cloud(), BOOTSTRAP).await;
    let ch = &ctl.channel;
    add_collector_as_admin(ch).await;
    let operator = create_token(ch, BOOTSTRAP, "operator", None).await.expect("operator token");
    let sessions = SessionServiceClient::new(ch.clone());
    sessions.clone().create_session(with_token(session_request("web"), &operator)).await.expect("create");
    let err = sessions.clone().create_session(with_token(session_request("web"), &operator)).await.expect_err("twice");
    assert_eq!(err.code(), Code::AlreadyExists);
    sessions
        .clone()
        .delete_session(with_token(pb::DeleteSessionRequest { name: "web".into() }, &operator))
        .await
        .expect("delete");

    let records = audit(ch, BOOTSTRAP).await;
    let summary: Vec<(String, String, String)> = records
        .iter()
        .map(|r| (r.action.clone(), r.target.clone(), r.result.split(':').next().unwrap_or_default().to_owned()))
        .collect();
    let want = [
        ("token.bootstrap", "bootstrap", "ok"),
        ("collector.add", COLLECTOR, "ok"),
        ("token.create", "", "ok"),
        ("session.create", "web", "ok"),
        ("session.create", "web", "AlreadyExists"),
        ("session.delete", "web", "ok"),
    ];
    assert_eq!(summary.len(), want.len(), "{records:#?}");
    for ((action, target, result), (want_action, want_target, want_result)) in summary.iter().zip(want) {
        assert_eq!((action.as_str(), result.as_str()), (want_action, want_result), "{records:#?}");
        assert!(target.starts_with(want_target), "{target} vs {want_target}");
    }
    let create = &records[3];
    assert!(create.actor.starts_with("token:") && create.actor.ends_with("(operator)"), "{create:?}");
    assert!(create.peer.starts_with("127.0.0.1:"), "{create:?}");
    assert!(records.iter().skip(1).all(|r| r.actor != "insecure"));

    // --since returns records from then on.
    let since = records[3].at.clone();
    let later = AuditServiceClient::new(ch.clone())
        .list_audit(with_token(pb::ListAuditRequest { since, limit: 0 }, BOOTSTRAP))
        .await
        .expect("since")
        .into_inner()
        .records;
    assert_eq!(later.first().map(|r| r.id), Some(records[3].id));
    let err = AuditServiceClient::new(ch.clone())
        .list_audit(with_token(pb::ListAuditRequest { since: "yesterday".into(), limit: 0 }, BOOTSTRAP))
        .await
        .expect_err("bad time");
    assert_eq!(err.code(), Code::InvalidArgument);

    let pool = sqlx::PgPool::connect(&url).await.expect("pool");
    for statement in ["UPDATE audit_log SET result = 'ok'", "DELETE FROM audit_log", "TRUNCATE audit_log"] {
        let err = sqlx::query(statement).execute(&pool).await.expect_err(statement);
        assert!(err.to_string().contains("append-only"), "{statement}: {err}");
    }
    assert_eq!(audit(ch, BOOTSTRAP).await.len(), records.len());
    ctl.stop().await;
}

#[tokio::test]
async fn join_tokens_enroll_agents_that_speak_only_for_themselves_until_revoked() {
    let (_pg, url) = database().await;
    let (ctl, ca) = Controller::start_secure(url.clone(), cloud(), BOOTSTRAP).await;
    let ch = &ctl.channel;
    let join = create_token(ch, BOOTSTRAP, "agent", Some(1)).await.expect("join token");
    let viewer = create_token(ch, BOOTSTRAP, "viewer", None).await.expect("viewer token");

    let err = enroll(ch, &viewer, SOURCE).await.expect_err("a viewer token does not enroll");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = enroll(ch, "", SOURCE).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let (cert, key) = enroll(ch, &join, SOURCE).await.expect("enrolled");
    let err = enroll(ch, &join, OTHER).await.expect_err("one use only");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("used up"), "{err:?}");

    // Without a client certificate there is no stream.
    let err = hello(ch, SOURCE).await.expect_err("no certificate");
    assert_eq!(err.code(), Code::Unauthenticated);

    let mtls = tls_channel(ctl.addr, &ca, Some((&cert, &key))).await;
    let err = hello(&mtls, OTHER).await.expect_err("speaking for another host");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let (_open, mut stream) = hello(&mtls, SOURCE).await.expect("its own host");

    // Renewal uses the certificate, not a token, and keeps the host.
    let (_, csr) = csr();
    let renewed = AgentServiceClient::new(mtls.clone())
        .renew(pb::EnrollRequest { host_id: SOURCE.into(), csr, ..Default::default() })
        .await
        .expect("renew")
        .into_inner();
    assert!(renewed.certificate.contains("BEGIN CERTIFICATE") && renewed.certificate != cert);

    let revoked = HostServiceClient::new(ch.clone())
        .revoke_host(with_token(pb::RevokeHostRequest { host_id: SOURCE.into() }, BOOTSTRAP))
        .await
        .expect("revoke")
        .into_inner();
    assert_eq!(revoked.revoked_certificates, 2, "the enrolled and the renewed certificate");
    assert!(revoked.disconnected);
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("the stream ends at once");
    assert_eq!(end.expect_err("revoked").code(), Code::Unauthenticated);
    let err = hello(&mtls, SOURCE).await.expect_err("revoked certificate");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("revoked"), "{err:?}");

    let actions: Vec<String> = audit(ch, BOOTSTRAP).await.into_iter().map(|r| r.action).collect();
    for action in ["host.enroll", "host.renew", "host.revoke"] {
        assert!(actions.iter().any(|a| a == action), "{action} in {actions:?}");
    }
    ctl.stop().await;
}
