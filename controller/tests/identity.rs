//! Enrollment by EC2 instance identity against real Postgres and real TLS, with documents
//! signed as AWS signs them (the lab's `openssl cms` signer, trusted through --iid-certs):
//! each refusal gets the status and message an operator can act on, a used document is a
//! replay for as long as the host's certificates live (renewals included), the same key
//! may retry, and a host that left may join again with the same document.

mod common;

use common::{
    Controller, database,
    secure::{BOOTSTRAP, OTHER, SOURCE, audit, cloud, csr_for, hello},
    tls_channel,
};
use rcgen::KeyPair;
use teefleet_lab::{IidSigner, iid};
use teefleet_proto::v1::{self as pb, agent_service_client::AgentServiceClient};
use tonic::{Code, transport::Channel};

const ACCOUNT: &str = "123456789012";

fn openssl_missing() -> bool {
    let missing = std::process::Command::new("openssl").arg("version").output().is_err();
    if missing {
        eprintln!("skipping: the openssl CLI signs the test's identity documents and is not installed (scripts/setup)");
    }
    missing
}

/// A document for `instance` in `account`, signed by `signer`: (document, signature).
async fn signed(signer: &IidSigner, account: &str, instance: &str) -> (String, String) {
    let document = iid::document(account, instance, "us-east-1", "10.9.0.10", "2026-12-05T10:00:00Z");
    let signature = signer.sign(&document).await.expect("sign");
    (document, signature)
}

async fn enroll_by(
    channel: &Channel,
    host: &str,
    key: &KeyPair,
    (document, signature): &(String, String),
) -> Result<(String, String), tonic::Status> {
    let req = pb::EnrollRequest {
        host_id: host.into(),
        csr: csr_for(key),
        identity_document: document.clone(),
        identity_signature: signature.clone(),
        ..Default::default()
    };
    let reply = AgentServiceClient::new(channel.clone()).enroll(req).await?.into_inner();
    Ok((reply.certificate, key.serialize_pem()))
}

fn refused(result: Result<(String, String), tonic::Status>, code: Code, says: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(says), "{:?} should say {says:?}", status.message());
}

#[tokio::test]
async fn documents_enroll_once_per_live_identity_and_bad_ones_are_refused() {
    if openssl_missing() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let signer = IidSigner::create(dir.path(), "aws").await.expect("signer");
    let stranger = IidSigner::create(dir.path(), "stranger").await.expect("signer");
    let (_pg, url) = database().await;
    let cert = signer.cert_path().display().to_string();
    let flags = ["--join-account", ACCOUNT, "--iid-certs", &cert];
    let (ctl, ca) = Controller::start_secure_with(url, cloud(), BOOTSTRAP, &flags).await;
    let channel = ctl.channel.clone();
    let document = signed(&signer, ACCOUNT, SOURCE).await;

    let key = KeyPair::generate().expect("key");
    let (cert_pem, key_pem) = enroll_by(&channel, SOURCE, &key, &document).await.expect("enrolls");
    let mtls = tls_channel(ctl.addr, &ca, Some((&cert_pem, &key_pem))).await;
    let _stream = hello(&mtls, SOURCE).await.expect("the certificate opens a stream");

    // A copy of the document, with another key, is a replay; the same key is a retry.
    let thief = KeyPair::generate().expect("key");
    refused(enroll_by(&channel, SOURCE, &thief, &document).await, Code::AlreadyExists, "a copy of it cannot enroll");
    enroll_by(&channel, SOURCE, &key, &document).await.expect("the same key retries");

    // After a renewal the document is still the live certificate's.
    let new_key = KeyPair::generate().expect("key");
    let renewed = AgentServiceClient::new(mtls.clone())
        .renew(pb::EnrollRequest { host_id: SOURCE.into(), csr: csr_for(&new_key), ..Default::default() })
        .await
        .expect("renews")
        .into_inner();
    let renewed_mtls = tls_channel(ctl.addr, &ca, Some((&renewed.certificate, &new_key.serialize_pem()))).await;
    let _renewed_stream = hello(&renewed_mtls, SOURCE).await.expect("the renewed certificate streams");
    refused(enroll_by(&channel, SOURCE, &thief, &document).await, Code::AlreadyExists, "a copy of it cannot enroll");

    // Another instance's document, another signer, an instance EC2 does not know, and
    // two proofs at once.
    let other = signed(&signer, ACCOUNT, OTHER).await;
    refused(enroll_by(&channel, SOURCE, &thief, &other).await, Code::PermissionDenied, "not host i-05000000000000001");
    let forged = signed(&stranger, ACCOUNT, OTHER).await;
    refused(enroll_by(&channel, OTHER, &thief, &forged).await, Code::Unauthenticated, "not signed by any certificate");
    let ghost = "i-0ffffffffffffffff";
    let unknown = signed(&signer, ACCOUNT, ghost).await;
    refused(enroll_by(&channel, ghost, &thief, &unknown).await, Code::PermissionDenied, "EC2 does not know");
    let both = pb::EnrollRequest {
        join_token: "t".into(),
        host_id: OTHER.into(),
        csr: csr_for(&thief),
        identity_document: other.0.clone(),
        identity_signature: other.1.clone(),
    };
    let status = AgentServiceClient::new(channel.clone()).enroll(both).await.expect_err("two proofs");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // The host leaves: its certificates are revoked, its next stream refused, and the same
    // document may enroll it again.
    let left =
        AgentServiceClient::new(renewed_mtls.clone()).leave(pb::LeaveRequest {}).await.expect("leaves").into_inner();
    assert!(left.revoked_certificates >= 1, "{left:?}");
    let status = hello(&renewed_mtls, SOURCE).await.map(|_| ()).expect_err("revoked");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    enroll_by(&channel, SOURCE, &thief, &document).await.expect("a host that left joins again");

    let records = audit(&channel, BOOTSTRAP).await;
    let by_identity = records
        .iter()
        .filter(|r| r.action == "host.enroll" && r.actor == format!("instance identity (account {ACCOUNT})"))
        .count();
    assert!(by_identity >= 3, "enrollments and refusals are audited by account: {records:#?}");
    assert!(records.iter().any(|r| r.action == "host.leave" && r.target == SOURCE && r.result == "ok"));
    ctl.stop().await;
}

#[tokio::test]
async fn without_a_join_account_the_route_is_off() {
    if openssl_missing() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let signer = IidSigner::create(dir.path(), "aws").await.expect("signer");
    let (_pg, url) = database().await;
    let (ctl, _) = Controller::start_secure(url, cloud(), BOOTSTRAP).await;
    let document = signed(&signer, ACCOUNT, SOURCE).await;
    let key = KeyPair::generate().expect("key");
    refused(enroll_by(&ctl.channel, SOURCE, &key, &document).await, Code::FailedPrecondition, "--join-account");
    ctl.stop().await;
}
