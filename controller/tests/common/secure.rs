//! Raw gRPC as an operator or an agent would send it to a controller serving TLS: bearer
//! tokens, enrollment with a CSR, and agent streams opened by hand.

use rcgen::{CertificateParams, KeyPair};
use teefleet_proto::v1::{
    self as pb, agent_message::Msg, agent_service_client::AgentServiceClient, audit_service_client::AuditServiceClient,
    token_service_client::TokenServiceClient,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, transport::Channel};

use super::FakeCloud;

pub const BOOTSTRAP: &str = "bootstrap-admin-secret-0123456789";
pub const COLLECTOR: &str = "i-0c0000000000000c1";
pub const SOURCE: &str = "i-05000000000000001";
pub const OTHER: &str = "i-05000000000000002";

/// EC2 with the collector and two sources.
pub fn cloud() -> std::sync::Arc<FakeCloud> {
    FakeCloud::with(&[(COLLECTOR, "10.9.0.100"), (SOURCE, "10.9.0.10"), (OTHER, "10.9.0.11")])
}

pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    req
}

pub async fn create_token(
    channel: &Channel,
    admin: &str,
    role: &str,
    uses: Option<u32>,
) -> Result<String, tonic::Status> {
    let req = pb::CreateTokenRequest { role: role.into(), ttl_seconds: 3600, uses, ..Default::default() };
    Ok(TokenServiceClient::new(channel.clone()).create_token(with_token(req, admin)).await?.into_inner().secret)
}

/// A join token made for `host`, with the controller's default number of uses.
pub async fn create_host_token(channel: &Channel, admin: &str, host: &str) -> Result<String, tonic::Status> {
    let req = pb::CreateTokenRequest { role: "agent".into(), ttl_seconds: 3600, host_id: host.into(), uses: None };
    Ok(TokenServiceClient::new(channel.clone()).create_token(with_token(req, admin)).await?.into_inner().secret)
}

pub async fn audit(channel: &Channel, admin: &str) -> Vec<pb::AuditRecord> {
    AuditServiceClient::new(channel.clone())
        .list_audit(with_token(pb::ListAuditRequest { since: String::new(), limit: 1000 }, admin))
        .await
        .expect("audit")
        .into_inner()
        .records
}

/// A key and a CSR asking for more than an agent should get (a CA, another name).
pub fn csr() -> (KeyPair, String) {
    let key = KeyPair::generate().expect("key");
    let pem = csr_for(&key);
    (key, pem)
}

/// Another CSR for the same key, as an agent retrying with the key it made.
pub fn csr_for(key: &KeyPair) -> String {
    let mut params = CertificateParams::new(vec!["anything.example".to_owned()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.serialize_request(key).expect("csr").pem().expect("pem")
}

/// Enrolls `host` with a new key: the certificate and the key, both PEM.
pub async fn enroll(channel: &Channel, token: &str, host: &str) -> Result<(String, String), tonic::Status> {
    let key = KeyPair::generate().expect("key");
    enroll_key(channel, token, host, &key).await
}

pub async fn enroll_key(
    channel: &Channel,
    token: &str,
    host: &str,
    key: &KeyPair,
) -> Result<(String, String), tonic::Status> {
    let req =
        pb::EnrollRequest { join_token: token.into(), host_id: host.into(), csr: csr_for(key), ..Default::default() };
    let reply = AgentServiceClient::new(channel.clone()).enroll(req).await?.into_inner();
    Ok((reply.certificate, key.serialize_pem()))
}

/// Renews over `mtls` (a channel with the current certificate): the new certificate and key.
pub async fn renew(mtls: &Channel, host: &str) -> Result<(String, String), tonic::Status> {
    let (key, csr) = csr();
    let req = pb::EnrollRequest { host_id: host.into(), csr, ..Default::default() };
    let reply = AgentServiceClient::new(mtls.clone()).renew(req).await?.into_inner();
    Ok((reply.certificate, key.serialize_pem()))
}

/// The agent stream after Hello as `host`, with the sender that keeps it open.
pub type Stream = (tokio::sync::mpsc::Sender<pb::AgentMessage>, tonic::Streaming<pb::ControllerMessage>);

pub async fn hello(channel: &Channel, host: &str) -> Result<Stream, tonic::Status> {
    hello_with(channel, pb::Hello { host_id: host.into(), agent_version: "test".into(), ..Default::default() }).await
}

pub async fn hello_with(channel: &Channel, hello: pb::Hello) -> Result<Stream, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(pb::AgentMessage { msg: Some(Msg::Hello(hello)) }).await.expect("queue hello");
    let stream = AgentServiceClient::new(channel.clone()).sync(ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, stream))
}
