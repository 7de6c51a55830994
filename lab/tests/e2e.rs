//! The end-to-end test of the issue: the real controller, agents and fleetctl in the
//! namespace lab, against a throwaway Postgres and moto's EC2.
//!
//! Every wait polls with a generous timeout; "nothing arrived" is proven with a sentinel
//! ping to the collector itself, which tcpdump must print after anything sent before it.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use teefleet_lab::{CLIENT, COLLECTOR, COLLECTOR_B, Capture, Lab, Packet, Pcap, require_root_or_skip, tshark_fields};

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

/// What the captures keep: pings, and the VXLAN packets clones travel in.
const CAPTURE: &str = "icmp or icmp6 or udp port 4789";

/// A clone inside VXLAN with `vni`, from `source` to `collector`.
fn clone_of(vni: u32, source: Ipv4Addr, collector: Ipv4Addr) -> impl Fn(&Packet) -> bool {
    move |p: &Packet| {
        p.vxlan.is_some_and(|v| v.vni == vni && v.outer_src == source && v.outer_dst == collector)
            && p.dst != collector
            && p.src != collector
    }
}

/// The echo packets tshark dissected inside VXLAN: (vni, inner source, inner destination,
/// ICMP type), from `ip.src` and `ip.dst` (or their IPv6 twins), which tshark prints
/// outer first, inner last.
async fn tshark_echoes(pcap: &std::path::Path, ipv6: bool) -> Result<Vec<(u32, String, String, String)>> {
    let (src, dst, kind, filter) = if ipv6 {
        ("ipv6.src", "ipv6.dst", "icmpv6.type", "vxlan && (icmpv6.type == 128 || icmpv6.type == 129)")
    } else {
        ("ip.src", "ip.dst", "icmp.type", "vxlan && (icmp.type == 0 || icmp.type == 8)")
    };
    let rows = tshark_fields(pcap, filter, &["vxlan.vni", src, dst, kind]).await?;
    let last = |s: &str| s.rsplit(',').next().unwrap_or_default().to_owned();
    rows.iter()
        .map(|r| {
            let vni = r.first().and_then(|v| v.parse().ok()).with_context(|| format!("vxlan.vni in {r:?}"))?;
            Ok((vni, last(&r[1]), last(&r[2]), r[3].clone()))
        })
        .collect()
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
        ensure!(added["encap"] == "vxlan", "VXLAN is the default: {added}");

        let capture = lab.capture(COLLECTOR, "active", Some(CAPTURE)).await?;
        let pcap = Pcap::start(&lab.network.host(COLLECTOR)?.netns, "active", lab.dir(), Some(CAPTURE)).await?;

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
        let vni = created["vni"].as_u64().and_then(|v| u32::try_from(v).ok()).context("vni")?;
        ensure!(created["encap"] == "vxlan" && vni > 0, "created session: {created}");
        let is_clone = clone_of(vni, source1, collector);
        let device = format!("tfvx{vni}");

        let rules = mangle(lab, "source1").await?;
        ensure!(rules.contains(":TEEFLEET-PRE") && rules.contains(":TEEFLEET-POST"), "chains missing:\n{rules}");
        ensure!(rules.contains(&format!("--oif {device}")), "no rule into the tunnel:\n{rules}");
        ensure!(rules.contains(FOREIGN_RULE), "foreign rule changed:\n{rules}");
        let link = lab.network.exec("source1", "ip", &["-d", "link", "show", &device]).await?;
        ensure!(link.contains(&format!("vxlan id {vni} remote {collector}")), "{link}");

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

        // VXLAN changes no Source/Dest Check anywhere, and the lab enforced every one.
        for host in ["source1", COLLECTOR] {
            ensure!(lab.source_dest_check(host).await?, "{host}'s Source/Dest Check was changed");
        }
        // What an operator's tool reads: tshark dissects VXLAN with the session's VNI around
        // the client's requests and source1's replies. The tcpdump writing the file reads
        // the kernel's buffer on its own schedule, and on a busy machine lags the text
        // capture; stopped early, it loses what it has not read. Wait for it to catch up.
        lab.wait_until("the pcap to hold 6 echo clones", WAIT, || async {
            Ok(tshark_echoes(pcap.path(), false).await.ok().filter(|e| e.len() >= 6).map(|_| ()))
        })
        .await?;
        let echoes = tshark_echoes(&pcap.finish().await, false).await?;
        let (client_s, source1_s) = (client.to_string(), source1.to_string());
        let request = (vni, client_s.clone(), source1_s.clone(), "8".to_owned());
        let reply = (vni, source1_s, client_s, "0".to_owned());
        let (requests, replies) =
            (echoes.iter().filter(|e| **e == request).count(), echoes.iter().filter(|e| **e == reply).count());
        ensure!((requests, replies) == (3, 3), "tshark saw {echoes:?}");
        let got = lab.fleetctl_ok(&["session", "get", "mirror1", "-o", "json"]).await?.json()?;
        let host = got["hosts"]
            .as_array()
            .and_then(|hosts| hosts.iter().find(|h| h["host_id"] == source1_id.as_str()))
            .with_context(|| format!("source1 missing from session hosts: {got}"))?;
        ensure!(host["applied"] == true && host["connected"] == true, "source1 status: {host}");
        let table = lab.fleetctl_ok(&["session", "get", "mirror1"]).await?.stdout;
        ensure!(table.contains("active") && table.contains(&source1_id), "session get table:\n{table}");
        ensure!(table.contains(&format!("vxlan, VNI {vni}")), "session get table:\n{table}");

        // Delete: rules, the tunnel device and the clones all go.
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
        // The agent removes the device right after the rules that sent into it.
        let gone = lab
            .wait_until("the tunnel device to go from source1", WAIT, || async {
                let links = lab.network.exec("source1", "ip", &["-br", "link", "show"]).await?;
                Ok((!links.contains("tfvx")).then_some(()))
            })
            .await;
        if gone.is_err() {
            let links = lab.network.exec("source1", "ip", &["-br", "link", "show"]).await?;
            bail!("a tunnel device is left:\n{links}");
        }

        let after = lab.capture(COLLECTOR, "deleted", Some(CAPTURE)).await?;
        lab.network.ping(CLIENT, source1, 3).await.context("client pings source1 after delete")?;
        flush_with_sentinel(lab, &after).await?;
        let n = after.count(|p| is_clone(p) && (p.src == source1 || p.dst == source1));
        ensure!(n == 0, "{n} clones after delete:\n{}", after.text());

        ensure!(lab.source_dest_check(COLLECTOR).await?, "the collector's Source/Dest Check was changed");
        let list = lab.fleetctl_ok(&["session", "list", "-o", "json"]).await?.json()?;
        ensure!(list == Value::Array(vec![]), "sessions left: {list}");
        Ok(())
    })
    .await;
}

/// VXLAN reaches a collector in the other subnet, behind the router, in both families,
/// with every Source/Dest Check on; raw TEE to it is refused, since it is not on-link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_reaches_a_collector_in_another_subnet_in_both_families() {
    run(async |lab: &Lab| {
        let (source1, client, far) = (lab.ip("source1")?, lab.ip(CLIENT)?, lab.ip(COLLECTOR_B)?);
        let (source1_6, client6) = (lab.ip6("source1")?, lab.ip6(CLIENT)?);
        let (source1_id, far_id) = (lab.instance_id("source1")?.to_owned(), lab.instance_id(COLLECTOR_B)?.to_owned());
        wait_agents_connected(lab).await?;
        lab.fleetctl_ok(&["collector", "add", &far_id]).await?;
        let pcap = Pcap::start(&lab.network.host(COLLECTOR_B)?.netns, "far", lab.dir(), Some("udp port 4789")).await?;
        let args = ["session", "create", "far", "--source", &source1_id, "--collector", &far_id];
        let out = lab
            .fleetctl(&[&args[..], &["--protocol", "icmp", "--vni", "777", "--wait", "-o", "json"]].concat())
            .await?;
        ensure!(out.success() && out.json()?["state"] == "active", "session to collector-b: {out}");

        lab.network.ping(CLIENT, source1, 3).await?;
        lab.network.ping6(CLIENT, source1_6, 3).await?;
        // Past the router: wait until tshark sees all of them.
        let (v4, v6) = lab
            .wait_until("12 echo clones at collector-b", WAIT, || async {
                let (v4, v6) = (tshark_echoes(pcap.path(), false).await, tshark_echoes(pcap.path(), true).await);
                let (v4, v6) = (v4.map_err(lab_error)?, v6.map_err(lab_error)?);
                Ok((v4.len() + v6.len() >= 12).then_some((v4, v6)))
            })
            .await?;
        pcap.finish().await;
        for (family, echoes, (client, source1)) in [
            ("IPv4", &v4, (client.to_string(), source1.to_string())),
            ("IPv6", &v6, (client6.to_string(), source1_6.to_string())),
        ] {
            let (request, reply) = if family == "IPv4" { ("8", "0") } else { ("128", "129") };
            let want =
                [(777, client.clone(), source1.clone(), request.to_owned()), (777, source1, client, reply.to_owned())];
            let counts: Vec<usize> = want.iter().map(|w| echoes.iter().filter(|e| *e == w).count()).collect();
            ensure!(counts == [3, 3] && echoes.len() == 6, "{family} echoes tshark saw at collector-b: {echoes:?}");
        }
        // Outer packets come from source1's own address, which the check lets through.
        ensure!(lab.source_dest_check("source1").await? && lab.source_dest_check(COLLECTOR_B).await?);
        let outer = tshark_fields(&lab.dir().join("capture-far.pcap"), "vxlan", &["ip.src", "ip.dst"]).await?;
        // tshark prints the outer address first (alone, when the clone inside is IPv6).
        let first = |s: &str| s.split(',').next().unwrap_or_default().to_owned();
        let (own, far) = (source1.to_string(), far.to_string());
        ensure!(outer.len() >= 12 && outer.iter().all(|r| first(&r[0]) == own && first(&r[1]) == far), "{outer:?}");

        // Raw TEE cannot reach it: refused, naming the ways out.
        lab.fleetctl_ok(&["session", "delete", "far"]).await?;
        lab.fleetctl_ok(&["collector", "remove", &far_id]).await?;
        lab.fleetctl_ok(&["collector", "add", &far_id, "--encap", "none"]).await?;
        let refused = lab.fleetctl(&[&args[..], &["--disable-source-check"]].concat()).await?;
        ensure!(!refused.success(), "a raw session across the router was accepted: {refused}");
        for part in ["--encap vxlan", "--allow-routed", &source1_id] {
            ensure!(refused.stderr.contains(part), "{part} missing from: {refused}");
        }
        Ok(())
    })
    .await;
}

fn lab_error(e: anyhow::Error) -> teefleet_lab::LabError {
    teefleet_lab::LabError::Invalid(format!("{e:#}"))
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs fleetctl expecting exit 1 (the controller refused) with `error: …` naming `field`.
async fn expect_rejected(lab: &Lab, args: &[&str], field: &str) -> Result<String> {
    expect_exit(lab, args, field, 1).await
}

/// Runs fleetctl expecting exit 2 (fleetctl refused before sending) naming `field`.
async fn expect_refused_locally(lab: &Lab, args: &[&str], field: &str) -> Result<String> {
    let message = expect_exit(lab, args, field, 2).await?;
    ensure!(message.contains("nothing was sent"), "{message}");
    Ok(message)
}

async fn expect_exit(lab: &Lab, args: &[&str], field: &str, code: i32) -> Result<String> {
    let out = lab.fleetctl(args).await?;
    ensure!(out.code == Some(code), "expected exit {code} for {args:?}: {out}");
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
        // What fleetctl can check itself it checks before sending, every problem at once.
        let both = create("bad-both", &["--cidr", "10.0.0.300/8", "--port", "0"]);
        let message = expect_refused_locally(lab, &strs(&both), "cidr").await?;
        ensure!(message.contains("filter.port"), "both problems named: {message}");
        expect_refused_locally(lab, &strs(&create("bad-port", &["--protocol", "icmp", "--port", "80"])), "port")
            .await?;
        expect_rejected(
            lab,
            &["session", "create", "bad-collector", "--source", &source1_id, "--collector", "i-0123456789abcdef0"],
            "collector",
        )
        .await?;
        unchanged(&before, "after the rejected creates").await?;
        for gone in ["bad-both", "bad-port", "bad-collector"] {
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
