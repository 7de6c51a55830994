//! The whole loop with access control on: the controller serves TLS and authenticates,
//! agents enroll with a join token and the CA's pin and then use client certificates,
//! fleetctl uses a bearer token. A caller without a token changes nothing; a revoked host
//! is cut off but keeps mirroring (fail-open); every change is in the audit log.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use teefleet_lab::{COLLECTOR, Lab, require_root_or_skip};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_agents_mirror_and_a_revoked_host_is_cut_off_but_keeps_its_rules() {
    if !require_root_or_skip() {
        return;
    }
    let lab = Lab::builder().secure(true).start().await.unwrap_or_else(|e| panic!("the lab did not start: {e}"));
    if let Err(e) = body(&lab).await {
        panic!("{e:#}");
    }
}

async fn body(lab: &Lab) -> Result<()> {
    for host in ["source1", "source2"] {
        lab.wait_until(&format!("{host}'s agent to enroll and connect"), WAIT, || async move {
            lab.connected(host).await.map(|c| c.filter(|c| *c).map(|_| ()))
        })
        .await?;
        // The key never left the host, and only root can read it.
        let dir = lab.agent_state_dir(host);
        for file in ["agent.key", "agent.crt"] {
            let mode =
                std::fs::metadata(dir.join(file)).with_context(|| format!("{host}'s {file}"))?.permissions().mode();
            ensure!(mode & 0o077 == 0, "{host}'s {file} has mode {mode:o}");
        }
    }

    // Without a token nothing is read or changed.
    let collector = lab.instance_id(COLLECTOR)?.to_owned();
    let anonymous = lab.fleetctl_anonymous(&["collector", "add", &collector]).await?;
    ensure!(!anonymous.success(), "an anonymous collector add succeeded: {anonymous}");
    ensure!(anonymous.stderr.to_lowercase().contains("token"), "the refusal should say a token is needed: {anonymous}");
    let listed = lab.fleetctl_ok(&["collector", "list", "-o", "json"]).await?.json()?;
    ensure!(listed.as_array().is_some_and(Vec::is_empty), "collectors after a refused add: {listed}");

    lab.fleetctl_ok(&["collector", "add", &collector]).await?;
    let source1 = lab.instance_id("source1")?.to_owned();
    let out = lab
        .fleetctl(&[
            "session",
            "create",
            "web",
            "--source",
            &source1,
            "--collector",
            &collector,
            "--protocol",
            "icmp",
            "--wait",
            "--timeout",
            "60",
            "-o",
            "json",
        ])
        .await?;
    ensure!(out.success(), "session create failed: {out}");
    lab.ping_is_mirrored("source1", "secure-before-revoke", WAIT).await?;

    let revoked = lab.fleetctl_ok(&["host", "revoke", &source1]).await?;
    lab.wait_until("source1 to be cut off", WAIT, || async { Ok(lab.connected("source1").await?.filter(|c| !c)) })
        .await
        .with_context(|| format!("after host revoke printed {revoked}"))?;
    // Fail-open: the host's rules stay, so mirroring goes on until an operator removes it.
    lab.ping_is_mirrored("source1", "secure-after-revoke", WAIT).await?;
    // And it stays cut off: its reconnects are refused.
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(lab.connected("source1").await? == Some(false), "a revoked host reconnected");

    let audit = lab.fleetctl_ok(&["audit", "list", "-o", "json"]).await?.json()?;
    let actions: Vec<&str> =
        audit.as_array().map(|a| a.iter().filter_map(|r| r["action"].as_str()).collect()).unwrap_or_default();
    for action in ["host.enroll", "collector.add", "session.create", "host.revoke"] {
        ensure!(actions.contains(&action), "{action} missing from the audit log: {actions:?}");
    }
    Ok(())
}
