//! The end-to-end test of the issue: the real controller, agents and fleetctl in the
//! namespace lab, against a throwaway Postgres and moto's EC2.
//!
//! Every wait polls with a generous timeout; "nothing arrived" is proven with a sentinel
//! ping to the collector itself, which tcpdump must print after anything sent before it.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use teefleet_lab::{CLIENT, COLLECTOR, Capture, Lab, Packet, require_root_or_skip};

const WAIT: Duration = Duration::from_secs(60);
/// A rule that belongs to someone else; the agent must never touch it.
const FOREIGN_RULE: &str =
    "-A PREROUTING -p udp -m udp --dport 9999 -m comment --comment not-teefleet -j MARK --set-xmark 0x99/0xffffffff";

/// Runs the body, and on failure panics with the error and the lab's log tails.
async fn run(body: impl AsyncFnOnce(&Lab) -> Result<()>) {
    if !require_root_or_skip() {
        return;
    }
    let lab = Lab::start().await.unwrap_or_else(|e| panic!("the lab did not start: {e}"));
    if let Err(e) = body(&lab).await {
        // Lab's drop prints the logs and keeps the directory while panicking.
        panic!("{e:#}");
    }
}

/// Waits until both agents show up connected in `fleetctl host list`.
async fn wait_agents_connected(lab: &Lab) -> Result<()> {
    let ids: Vec<&str> = ["source1", "source2"].iter().map(|h| lab.instance_id(h)).collect::<Result<_, _>>()?;
    lab.wait_until("both agents connected", WAIT, || {
        let ids = &ids;
        async move {
            let out = lab.fleetctl(&["host", "list", "-o", "json"]).await?;
            if !out.success() {
                return Ok(None);
            }
            let hosts = out.json()?;
            let connected = |id: &str| {
                hosts.as_array().is_some_and(|a| a.iter().any(|h| h["host_id"] == id && h["connected"] == true))
            };
            Ok(ids.iter().all(|id| connected(id)).then_some(()))
        }
    })
    .await?;
    Ok(())
}

async fn mangle(lab: &Lab, host: &str) -> Result<String, teefleet_lab::LabError> {
    lab.network.mangle_rules(host).await
}

/// Polls Source/Dest Check of a lab host's instance until it reads `want`.
async fn wait_source_dest_check(lab: &Lab, host: &str, want: bool) -> Result<()> {
    lab.wait_until(&format!("Source/Dest Check of {host} to read {want}"), WAIT, || async move {
        Ok((lab.source_dest_check(host).await? == want).then_some(()))
    })
    .await?;
    Ok(())
}

/// Pings the collector from the client and waits until tcpdump printed those requests:
/// everything sent before is then in the capture file too.
async fn flush_with_sentinel(lab: &Lab, capture: &Capture) -> Result<()> {
    let (client, collector) = (lab.ip(CLIENT)?, lab.ip(COLLECTOR)?);
    let before = capture.count(|p| p.src == client && p.dst == collector && p.is_echo_request());
    lab.network.ping(CLIENT, collector, 1).await?;
    capture
        .wait_for("the sentinel ping to reach the capture", before + 1, WAIT, |p| {
            p.src == client && p.dst == collector && p.is_echo_request()
        })
        .await?;
    Ok(())
}

fn clone_of(collector_mac: &str, collector: Ipv4Addr) -> impl Fn(&Packet) -> bool {
    let mac = collector_mac.to_owned();
    move |p: &Packet| p.dst_mac == mac && p.dst != collector && p.src != collector
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mirrors_source1_and_delete_undoes_everything() {
    run(async |lab: &Lab| {
        let source1 = lab.ip("source1")?;
        let source2 = lab.ip("source2")?;
        let client = lab.ip(CLIENT)?;
        let collector = lab.ip(COLLECTOR)?;
        let source1_id = lab.instance_id("source1")?.to_owned();
        let collector_id = lab.instance_id(COLLECTOR)?.to_owned();

        // Someone else's mangle rule, present before teefleet arrives.
        lab.network
            .iptables(
                "source1",
                &[
                    "-t",
                    "mangle",
                    "-A",
                    "PREROUTING",
                    "-p",
                    "udp",
                    "--dport",
                    "9999",
                    "-m",
                    "comment",
                    "--comment",
                    "not-teefleet",
                    "-j",
                    "MARK",
                    "--set-mark",
                    "0x99",
                ],
            )
            .await?;
        ensure!(mangle(lab, "source1").await?.contains(FOREIGN_RULE), "foreign rule not as expected");

        wait_agents_connected(lab).await?;
        let added = lab.fleetctl_ok(&["collector", "add", &collector_id, "-o", "json"]).await?.json()?;
        ensure!(added["instance_id"] == collector_id.as_str(), "collector add printed {added}");
        ensure!(added["ip"] == collector.to_string().as_str(), "collector ip: {added}");

        let collector_mac = lab.network.mac(COLLECTOR).await?;
        let is_clone = clone_of(&collector_mac, collector);
        let capture = lab.capture(COLLECTOR, "active", Some("icmp")).await?;

        let created = lab
            .fleetctl(&[
                "session",
                "create",
                "mirror1",
                "--source",
                &source1_id,
                "--collector",
                &collector_id,
                "--wait",
                "--timeout",
                "60",
                "-o",
                "json",
            ])
            .await?;
        ensure!(created.success(), "session create --wait failed: {created}");
        let created = created.json()?;
        ensure!(created["state"] == "active", "created session: {created}");
        ensure!(created["name"] == "mirror1" && created["collector"] == collector_id.as_str());

        let rules = mangle(lab, "source1").await?;
        ensure!(rules.contains(":TEEFLEET-PRE") && rules.contains(":TEEFLEET-POST"), "chains missing:\n{rules}");
        ensure!(rules.contains(FOREIGN_RULE), "foreign rule changed:\n{rules}");

        lab.network.ping(CLIENT, source1, 3).await.context("client pings source1")?;
        lab.network.ping(CLIENT, source2, 3).await.context("client pings source2")?;
        capture
            .wait_for("clones of client→source1 echo requests", 3, WAIT, |p| {
                is_clone(p) && p.src == client && p.dst == source1 && p.is_echo_request()
            })
            .await?;
        capture
            .wait_for("clones of source1→client echo replies", 3, WAIT, |p| {
                is_clone(p) && p.src == source1 && p.dst == client && p.is_echo_reply()
            })
            .await?;
        flush_with_sentinel(lab, &capture).await?;
        let n = capture.count(|p| (p.src == client && p.dst == source2) || (p.src == source2 && p.dst == client));
        ensure!(n == 0, "{n} packets of client↔source2 reached the collector:\n{}", capture.text());

        wait_source_dest_check(lab, COLLECTOR, false).await?;
        let got = lab.fleetctl_ok(&["session", "get", "mirror1", "-o", "json"]).await?.json()?;
        let host = got["hosts"]
            .as_array()
            .and_then(|hosts| hosts.iter().find(|h| h["host_id"] == source1_id.as_str()))
            .with_context(|| format!("source1 missing from session hosts: {got}"))?;
        ensure!(host["applied"] == true && host["connected"] == true, "source1 status: {host}");
        let table = lab.fleetctl_ok(&["session", "get", "mirror1"]).await?.stdout;
        ensure!(table.contains("active") && table.contains(&source1_id), "session get table:\n{table}");

        // Delete: rules, clones and the collector's Source/Dest Check all go back.
        lab.fleetctl_ok(&["session", "delete", "mirror1"]).await?;
        let waited = lab
            .wait_until("the TEEFLEET chains to disappear from source1", WAIT, || async {
                let rules = mangle(lab, "source1").await?;
                Ok((!rules.contains("TEEFLEET")).then_some(rules))
            })
            .await;
        let rules = match waited {
            Ok(rules) => rules,
            Err(e) => bail!("{e}\n{}", mangle(lab, "source1").await.unwrap_or_default()),
        };
        ensure!(rules.contains(FOREIGN_RULE), "foreign rule changed:\n{rules}");

        let after = lab.capture(COLLECTOR, "deleted", Some("icmp")).await?;
        lab.network.ping(CLIENT, source1, 3).await.context("client pings source1 after delete")?;
        flush_with_sentinel(lab, &after).await?;
        let n = after.count(|p| is_clone(p) && (p.src == source1 || p.dst == source1));
        ensure!(n == 0, "{n} clones after delete:\n{}", after.text());

        wait_source_dest_check(lab, COLLECTOR, true).await?;
        let list = lab.fleetctl_ok(&["session", "list", "-o", "json"]).await?.json()?;
        ensure!(list == Value::Array(vec![]), "sessions left: {list}");
        Ok(())
    })
    .await;
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs fleetctl expecting exit 1 with `error: …` naming `field`.
async fn expect_rejected(lab: &Lab, args: &[&str], field: &str) -> Result<String> {
    let out = lab.fleetctl(args).await?;
    ensure!(out.code == Some(1), "expected exit 1 for {args:?}: {out}");
    let message = out.stderr.trim().to_owned();
    ensure!(message.starts_with("error: "), "expected `error: …` for {args:?}: {out}");
    ensure!(message.to_lowercase().contains(field), "the message for {args:?} does not name {field:?}: {message}");
    Ok(message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_and_changes_nothing() {
    run(async |lab: &Lab| {
        let source1_id = lab.instance_id("source1")?.to_owned();
        let collector_id = lab.instance_id(COLLECTOR)?.to_owned();
        wait_agents_connected(lab).await?;
        lab.fleetctl_ok(&["collector", "add", &collector_id]).await?;
        let snapshot = async || -> Result<(Value, Value, String, Value)> {
            let sessions = lab.fleetctl_ok(&["session", "list", "-o", "json"]).await?.json()?;
            let collectors = lab.fleetctl_ok(&["collector", "list", "-o", "json"]).await?.json()?;
            // iptables-save's comment lines carry a timestamp.
            let rules = mangle(lab, "source1").await?;
            let rules: String = rules.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect();
            // The versions show whether anything was compiled and pushed to the sources.
            let hosts = lab.fleetctl_ok(&["host", "list", "-o", "json"]).await?.json()?;
            let versions: Value = hosts
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| serde_json::json!([h["host_id"], h["desired_version"]]))
                .collect();
            Ok((sessions, collectors, rules, versions))
        };
        let unchanged = async |before: &(Value, Value, String, Value), what: &str| -> Result<()> {
            let after = snapshot().await?;
            ensure!(after.0 == before.0, "{what}: sessions changed:\n{}\n→\n{}", before.0, after.0);
            ensure!(after.1 == before.1, "{what}: collectors changed:\n{}\n→\n{}", before.1, after.1);
            ensure!(after.2 == before.2, "{what}: source1's rules changed:\n{}\n→\n{}", before.2, after.2);
            ensure!(after.3 == before.3, "{what}: desired versions changed:\n{}\n→\n{}", before.3, after.3);
            Ok(())
        };

        let create = |name: &str, extra: &[&str]| -> Vec<String> {
            ["session", "create", name, "--source", &source1_id, "--collector", &collector_id]
                .iter()
                .chain(extra)
                .map(|s| (*s).to_owned())
                .collect()
        };
        let before = snapshot().await?;
        ensure!(before.0 == Value::Array(vec![]), "sessions at start: {}", before.0);
        expect_rejected(lab, &strs(&create("bad-cidr", &["--cidr", "10.0.0.300/8"])), "cidr").await?;
        expect_rejected(lab, &strs(&create("bad-port", &["--protocol", "icmp", "--port", "80"])), "port").await?;
        expect_rejected(
            lab,
            &["session", "create", "bad-collector", "--source", &source1_id, "--collector", "i-0123456789abcdef0"],
            "collector",
        )
        .await?;
        unchanged(&before, "after the rejected creates").await?;
        for gone in ["bad-cidr", "bad-port", "bad-collector"] {
            expect_rejected(lab, &["session", "get", gone], "not found").await?;
        }

        // A duplicate name is refused and leaves the first session as it was.
        lab.fleetctl_ok(&strs(&create("dup", &["--wait"]))).await?;
        let before = snapshot().await?;
        expect_rejected(lab, &strs(&create("dup", &["--protocol", "tcp"])), "exists").await?;
        unchanged(&before, "after the duplicate").await?;
        ensure!(before.0[0]["protocol"] == "all", "the first session: {}", before.0);

        // A usage error is clap's: exit 2, and no call is made.
        let usage =
            lab.fleetctl(&["session", "create", "x", "--source", "i", "--collector", "c", "--direction", "up"]).await?;
        ensure!(usage.code == Some(2), "usage error: {usage}");
        Ok(())
    })
    .await;
}
