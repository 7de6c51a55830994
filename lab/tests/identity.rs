//! Joining by EC2 instance identity, end to end: every agent enrolls with the document its
//! host's IMDS stand-in serves (signed with the lab's key, which the controller trusts
//! through --iid-certs), with no join token, and a session mirrors. Documents the
//! controller must refuse are refused with a message that says why: a signature by
//! another key, another account, an instance that is stopped or lacks the required tag,
//! a replay of a used document. An instance whose certificate expired while its agent was
//! down enrolls again by the same route, and `fleet-agent leave` revokes the host.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use teefleet_lab::{
    CLIENT, COLLECTOR, CliOutput, Identity, IidSigner, JOIN_TAG, LAB_ACCOUNT, Lab, iid, launched_now, moto,
    require_root_or_skip,
};

const WAIT: Duration = Duration::from_secs(60);
/// Short certificates, so the expiry of one can be waited for.
const CERT_TTL: &str = "30s";

async fn wait_connected(lab: &Lab, host: &str) -> Result<()> {
    lab.wait_until(&format!("{host}'s agent to enroll and connect"), WAIT, || async move {
        lab.connected(host).await.map(|c| c.filter(|c| *c).map(|_| ()))
    })
    .await?;
    Ok(())
}

/// An agent in the client's namespace enrolling by identity with a fresh state directory,
/// expected to be refused (it exits 64 then).
async fn refused_enrollment(lab: &Lab, label: &str) -> Result<CliOutput> {
    let dir = lab.dir().join(format!("client-{label}-state"));
    let dir = dir.display().to_string();
    let id = lab.instance_id(CLIENT)?.to_owned();
    let args = ["--join-method", "instance-identity", "--host-id", &id, "--state-dir", &dir, "--metrics-listen", "off"];
    let out = lab.agent_once(CLIENT, &args, Duration::from_secs(30)).await?;
    ensure!(out.code == Some(64), "{label}: the agent should stop with 64 after a refusal: {out}");
    Ok(out)
}

/// Whether the agent said `text` (it logs to stdout, clap to stderr).
fn said(out: &CliOutput, text: &str) -> bool {
    out.stdout.contains(text) || out.stderr.contains(text)
}

/// The client's identity: its document for `account`, signed by `signer` (the lab's own
/// when `None`).
async fn client_identity(lab: &Lab, account: &str, signer: Option<&IidSigner>) -> Result<Identity> {
    let id = lab.instance_id(CLIENT)?.to_owned();
    let document = iid::document(account, &id, moto::REGION, &lab.ip(CLIENT)?.to_string(), &launched_now());
    let signature = match signer {
        Some(signer) => signer.sign(&document).await?,
        None => lab.sign_identity(&document).await?,
    };
    Ok(Identity { instance_id: id, document, signature })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_join_by_instance_identity_and_bad_documents_are_refused() {
    if !require_root_or_skip() {
        return;
    }
    if std::process::Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipping: the openssl CLI signs the lab's identity documents and is not installed (scripts/setup)");
        return;
    }
    let lab = Lab::builder()
        .secure(true)
        .join_by_identity(true)
        .controller_arg("--agent-cert-ttl")
        .controller_arg(CERT_TTL)
        .start()
        .await
        .unwrap_or_else(|e| panic!("the lab did not start: {e}"));
    if let Err(e) = body(&lab).await {
        panic!("{e:#}");
    }
}

async fn body(lab: &Lab) -> Result<()> {
    // Every agent enrolled without a token, and mirroring works.
    for host in ["source1", "source2", COLLECTOR] {
        wait_connected(lab, host).await?;
    }
    let collector = lab.instance_id(COLLECTOR)?.to_owned();
    let source1 = lab.instance_id("source1")?.to_owned();
    lab.fleetctl_ok(&["collector", "add", &collector]).await?;
    let args = ["session", "create", "web", "--source", &source1, "--collector", &collector, "--protocol", "icmp"];
    lab.fleetctl_ok(&[&args[..], &["--wait", "--timeout", "60"]].concat()).await?;
    lab.ping_is_mirrored("source1", "iid-mirror", WAIT).await?;

    // The client's instance lacks the tag the controller asks for.
    let out = refused_enrollment(lab, "untagged").await?;
    ensure!(said(&out, &format!("does not carry the tag {}={}", JOIN_TAG.0, JOIN_TAG.1)), "{out}");
    lab.ec2.tag(CLIENT, JOIN_TAG.0, JOIN_TAG.1).await?;

    // A document signed by a key the controller does not trust.
    let stranger = IidSigner::create(lab.dir(), "stranger").await?;
    lab.imds(CLIENT)?.serve(client_identity(lab, LAB_ACCOUNT, Some(&stranger)).await?);
    let out = refused_enrollment(lab, "stranger").await?;
    ensure!(said(&out, "not signed by any certificate the controller trusts"), "{out}");

    // A genuine document of another account.
    lab.imds(CLIENT)?.serve(client_identity(lab, "210987654321", None).await?);
    let out = refused_enrollment(lab, "account").await?;
    ensure!(said(&out, "account 210987654321, which may not enroll"), "{out}");

    // A stopped instance.
    let genuine = client_identity(lab, LAB_ACCOUNT, None).await?;
    lab.imds(CLIENT)?.serve(genuine.clone());
    let client_id = lab.instance_id(CLIENT)?.to_owned();
    lab.ec2.client().stop_instances().instance_ids(&client_id).send().await.context("stopping the client")?;
    let out = refused_enrollment(lab, "stopped").await?;
    ensure!(said(&out, "only a running instance enrolls"), "{out}");
    lab.ec2.client().start_instances().instance_ids(&client_id).send().await.context("starting the client")?;

    // Now it may: the client enrolls and connects.
    lab.start_agent(CLIENT)?;
    wait_connected(lab, CLIENT).await?;
    lab.stop_agent(CLIENT).await;

    // The same document again, from a host without the key: a replay.
    let out = refused_enrollment(lab, "replay").await?;
    ensure!(said(&out, "a copy of it cannot enroll again"), "{out}");

    // Stopped past its certificate's life, the client enrolls again with the same document.
    tokio::time::sleep(Duration::from_secs(32)).await;
    lab.start_agent(CLIENT)?;
    wait_connected(lab, CLIENT).await?;
    let audit = lab.fleetctl_ok(&["audit", "list", "-o", "json"]).await?.json()?;
    let enrolls: Vec<&serde_json::Value> = audit
        .as_array()
        .map(|a| a.iter().filter(|r| r["action"] == "host.enroll" && r["target"] == client_id.as_str()).collect())
        .unwrap_or_default();
    let ok = enrolls.iter().filter(|r| r["result"] == "ok").count();
    ensure!(ok == 2, "the client enrolled {ok} times, not twice: {enrolls:?}");
    ensure!(
        enrolls.iter().any(|r| r["actor"] == format!("instance identity (account {LAB_ACCOUNT})").as_str()),
        "enrollments are audited by account: {enrolls:?}"
    );

    // `leave` revokes the host; its next stream is refused.
    lab.stop_agent("source2").await;
    let state = lab.agent_state_dir("source2").display().to_string();
    let unreachable = lab
        .agent_once("source2", &["leave", "--state-dir", &state, "--controller", "https://127.0.0.1:1"], WAIT)
        .await?;
    ensure!(unreachable.code == Some(69), "leave without a controller: {unreachable}");
    let out = lab.agent_once("source2", &["leave", "--state-dir", &state], WAIT).await?;
    ensure!(out.success(), "leave: {out}");
    lab.start_agent("source2")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(lab.connected("source2").await? == Some(false), "a host that left reconnected");
    let again = lab.agent_once("source2", &["leave", "--state-dir", &state], WAIT).await?;
    // Refused as revoked, or found expired: either way not 0 and not 69.
    ensure!(again.code == Some(1), "leave twice: {again}");
    let audit = lab.fleetctl_ok(&["audit", "list", "-o", "json"]).await?.json()?;
    let source2 = lab.instance_id("source2")?;
    let left = audit.as_array().is_some_and(|a| {
        a.iter().any(|r| r["action"] == "host.leave" && r["target"] == source2 && r["result"] == "ok")
    });
    ensure!(left, "host.leave is audited: {audit}");
    Ok(())
}
