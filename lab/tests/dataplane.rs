//! The agent's dataplane in the namespace lab: IPv6, several sessions and collectors,
//! sampling and caps, drift repair, cleanup, readiness and metrics, restarts without the
//! controller. Real controller, agents, fleetctl, Postgres and moto; nothing stubbed.
//!
//! Every wait polls with a generous timeout; "nothing more arrived" is proven with a
//! sentinel ping to the capturing collector, which tcpdump prints after anything sent
//! before it.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use teefleet_lab::{
    CLIENT, COLLECTOR, COLLECTOR_B, COLLECTOR2, Capture, Lab, LabBuilder, LabError, Packet, Pcap, SOURCES,
    require_root_or_skip, tshark_fields,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);
/// The agents' drift interval in these labs, so repairs are seen within seconds.
const DRIFT_SECS: &str = "1";
/// What the captures keep: pings, and the VXLAN packets clones travel in.
const CAPTURE: &str = "icmp or icmp6 or udp port 4789";
/// Where the agents serve /readyz and /metrics; 0.0.0.0 so the test reaches them over the bridge.
const METRICS_PORT: u16 = 9477;

/// Someone else's rules in every built-in mangle chain, IPv4 then IPv6.
const FOREIGN_V4: [&str; 5] = [
    "-A PREROUTING -p udp --dport 9999 -m comment --comment not-ours -j MARK --set-mark 0x99",
    "-A INPUT -s 10.99.0.0/16 -j MARK --set-mark 0x98",
    "-A FORWARD -p tcp --dport 25 -j MARK --set-mark 0x97",
    "-A OUTPUT -d 10.98.0.0/16 -j MARK --set-mark 0x96",
    "-A POSTROUTING -p udp --sport 9999 -j MARK --set-mark 0x95",
];
const FOREIGN_V6: [&str; 5] = [
    "-A PREROUTING -p udp --dport 9999 -m comment --comment not-ours6 -j MARK --set-mark 0x89",
    "-A INPUT -s fd99::/16 -j MARK --set-mark 0x88",
    "-A FORWARD -p tcp --dport 25 -j MARK --set-mark 0x87",
    "-A OUTPUT -d fd98::/16 -j MARK --set-mark 0x86",
    "-A POSTROUTING -p udp --sport 9999 -j MARK --set-mark 0x85",
];

fn lab_builder() -> LabBuilder {
    Lab::builder()
        .agent_arg("--health-interval")
        .agent_arg("1")
        .agent_arg("--drift-interval")
        .agent_arg(DRIFT_SECS)
        .agent_arg("--metrics-listen")
        .agent_arg(format!("0.0.0.0:{METRICS_PORT}"))
}

/// Starts the lab, runs the body, and on failure panics with the error and the logs.
async fn run(body: impl AsyncFnOnce(&Lab) -> Result<()>) {
    run_with(lab_builder(), body).await;
}

async fn run_with(builder: LabBuilder, body: impl AsyncFnOnce(&Lab) -> Result<()>) {
    if !require_root_or_skip() {
        return;
    }
    let lab = builder.start().await.unwrap_or_else(|e| panic!("the lab did not start: {e}"));
    if let Err(e) = body(&lab).await {
        // Lab's drop prints the logs and keeps the directory while panicking.
        panic!("{e:#}");
    }
}

/// Registers `collector` with both its addresses (`--ipv6`) and `collector2` with what EC2
/// knows of it.
async fn add_collectors(lab: &Lab) -> Result<(String, String)> {
    let (c1, c2) = (lab.instance_id(COLLECTOR)?.to_owned(), lab.instance_id(COLLECTOR2)?.to_owned());
    let ip6 = lab.ip6(COLLECTOR)?.to_string();
    let added = lab.fleetctl_ok(&["collector", "add", &c1, "--ipv6", &ip6, "-o", "json"]).await?.json()?;
    ensure!(added["ipv6"] == ip6.as_str(), "collector add --ipv6 printed {added}");
    lab.fleetctl_ok(&["collector", "add", &c2]).await?;
    Ok((c1, c2))
}

/// `fleetctl session create NAME --source source1 --collector C ARGS… --wait`.
async fn create_session(lab: &Lab, name: &str, collector: &str, args: &[&str]) -> Result<Value> {
    let source = lab.instance_id("source1")?.to_owned();
    let mut full = vec!["session", "create", name, "--source", &source, "--collector", collector];
    full.extend(args);
    full.extend(["--wait", "--timeout", "60", "-o", "json"]);
    let out = lab.fleetctl(&full).await?;
    ensure!(out.success(), "session create {name} failed: {out}");
    let session = out.json()?;
    ensure!(session["state"] == "active", "session {name}: {session}");
    Ok(session)
}

/// Pings `collector` from the client and waits until its capture printed that request:
/// everything that reached the collector before is in the capture file then.
async fn flush(lab: &Lab, capture: &Capture, collector: &str) -> Result<()> {
    let (client, target) = (IpAddr::from(lab.ip(CLIENT)?), IpAddr::from(lab.ip(collector)?));
    let sentinel = move |p: &Packet| p.src == client && p.dst == target && p.is_echo_request();
    let before = capture.count(sentinel);
    lab.network.ping(CLIENT, target, 1).await?;
    capture.wait_for("the sentinel ping to reach the capture", before + 1, WAIT, sentinel).await?;
    Ok(())
}

/// A clone arrives inside VXLAN addressed to the collector, and is a packet of others.
async fn clone_at(lab: &Lab, collector: &str) -> Result<impl Fn(&Packet) -> bool + use<>> {
    let own: [IpAddr; 2] = [lab.ip(collector)?.into(), lab.ip6(collector)?.into()];
    Ok(move |p: &Packet| {
        p.vxlan.is_some_and(|v| v.outer_dst == own[0]) && !own.contains(&p.dst) && !own.contains(&p.src)
    })
}

/// A raw clone arrives at the collector's MAC but is addressed to someone else.
async fn raw_clone_at(lab: &Lab, collector: &str) -> Result<impl Fn(&Packet) -> bool + use<>> {
    let mac = lab.network.mac(collector).await?;
    let own: [IpAddr; 2] = [lab.ip(collector)?.into(), lab.ip6(collector)?.into()];
    Ok(move |p: &Packet| p.vxlan.is_none() && p.dst_mac == mac && !own.contains(&p.dst) && !own.contains(&p.src))
}

/// Echo requests from `src` to `dst` and the replies back, as (requests, replies).
fn echoes(capture: &Capture, is_clone: &impl Fn(&Packet) -> bool, src: IpAddr, dst: IpAddr) -> (usize, usize) {
    let requests = capture.count(|p| is_clone(p) && p.src == src && p.dst == dst && p.is_echo_request());
    let replies = capture.count(|p| is_clone(p) && p.src == dst && p.dst == src && p.is_echo_reply());
    (requests, replies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sessions_two_collectors_both_families_each_clone_exactly_once() {
    // EC2 knows no IPv6 addresses here: collector2 has none, and VXLAN carries IPv6 clones
    // inside IPv4 to it all the same.
    run_with(lab_builder().ec2_ipv6(false), async |lab: &Lab| {
        let (c1, c2) = add_collectors(lab).await?;
        // collector gets both families from one session; collector2 gets requests from
        // one session and replies from another, each in its own VNI.
        let all = create_session(lab, "all-icmp", &c1, &["--protocol", "icmp"]).await?;
        let inbound = create_session(lab, "in-icmp", &c2, &["--protocol", "icmp", "--direction", "ingress"]).await?;
        let outbound = create_session(
            lab,
            "out-icmp",
            &c2,
            &["--protocol", "icmp", "--direction", "egress", "--max-pps", "1000"],
        )
        .await?;
        let vni = |s: &Value| s["vni"].as_u64().and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
        let (all, inbound, outbound) = (vni(&all), vni(&inbound), vni(&outbound));
        ensure!(all != inbound && inbound != outbound && all != outbound && all > 0, "VNIs {all} {inbound} {outbound}");
        let v6_rules = lab.network.mangle_rules6("source1").await?;
        for session in ["all-icmp", "in-icmp", "out-icmp"] {
            ensure!(v6_rules.contains(&format!("teefleet:{session}")), "IPv6 rules on source1:\n{v6_rules}");
        }

        let cap1 = lab.capture(COLLECTOR, "three-sessions-c1", Some(CAPTURE)).await?;
        let cap2 = lab.capture(COLLECTOR2, "three-sessions-c2", Some(CAPTURE)).await?;
        let (clone1, clone2) = (clone_at(lab, COLLECTOR).await?, clone_at(lab, COLLECTOR2).await?);
        let in_vni = |vni: u32| move |p: &Packet| p.vxlan.is_some_and(|v| v.vni == vni);
        let (client, source1) = (IpAddr::from(lab.ip(CLIENT)?), IpAddr::from(lab.ip("source1")?));
        let (client6, source1_6) = (IpAddr::from(lab.ip6(CLIENT)?), IpAddr::from(lab.ip6("source1")?));

        lab.network.ping(CLIENT, source1, 4).await.context("ping source1")?;
        lab.network.ping6(CLIENT, lab.ip6("source1")?, 4).await.context("ping6 source1")?;
        cap1.wait_for("IPv6 clones at collector", 8, WAIT, |p| clone1(p) && p.is_ipv6()).await?;
        flush(lab, &cap1, COLLECTOR).await?;
        flush(lab, &cap2, COLLECTOR2).await?;

        let got = [
            ("collector v4", echoes(&cap1, &clone1, client, source1)),
            ("collector v6", echoes(&cap1, &clone1, client6, source1_6)),
            ("collector2 v4", echoes(&cap2, &clone2, client, source1)),
            ("collector2 v6", echoes(&cap2, &clone2, client6, source1_6)),
        ];
        let want = [("collector v4", (4, 4)), ("collector v6", (4, 4)), ("collector2 v4", (4, 4)), ("collector2 v6", (4, 4))];
        ensure!(
            got == want,
            "(requests, replies) cloned per collector and family: {got:?}, expected {want:?}\n--- collector ---\n{}--- collector2 ---\n{}",
            cap1.text(),
            cap2.text()
        );
        // Each session's clones travel in its own VNI: requests in in-icmp's, replies in out-icmp's.
        let echo = |p: &Packet| p.is_echo_request() || p.is_echo_reply();
        let (in_clones, out_clones) = (in_vni(inbound), in_vni(outbound));
        let per_vni = (cap2.count(|p| clone2(p) && echo(p) && in_clones(p)), cap2.count(|p| clone2(p) && echo(p) && out_clones(p)));
        ensure!(per_vni == (8, 8), "echo clones in VNI {inbound} and {outbound}: {per_vni:?}\n{}", cap2.text());
        ensure!(cap2.count(|p| clone2(p) && in_clones(p) && p.is_echo_reply()) == 0, "{}", cap2.text());
        ensure!(cap1.count(|p| clone1(p) && echo(p) && !in_vni(all)(p)) == 0, "{}", cap1.text());
        Ok(())
    })
    .await;
}

/// The value of `key` for `source1` in `session get -o json`, and the session's total.
async fn session_counter(lab: &Lab, session: &str, key: &str) -> Result<(u64, u64)> {
    let got = lab.fleetctl_ok(&["session", "get", session, "-o", "json"]).await?.json()?;
    let id = lab.instance_id("source1")?;
    let host = got["hosts"]
        .as_array()
        .and_then(|hosts| hosts.iter().find(|h| h["host_id"] == id))
        .with_context(|| format!("source1 missing from {got}"))?;
    let host_value = host[key].as_u64().with_context(|| format!("hosts[].{key} in {got}"))?;
    let total = got[key].as_u64().with_context(|| format!("{key} in {got}"))?;
    Ok((host_value, total))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_percent_sample_of_a_flood_arrives_at_about_one_percent_and_a_cap_holds() {
    run(async |lab: &Lab| {
        let (c1, _) = add_collectors(lab).await?;
        let (client, source1) = (IpAddr::from(lab.ip(CLIENT)?), IpAddr::from(lab.ip("source1")?));
        let is_clone = clone_at(lab, COLLECTOR).await?;

        // Ingress only: every rule match sends exactly one clone, so counters and capture agree.
        create_session(lab, "sampled", &c1, &["--protocol", "icmp", "--direction", "ingress", "--sample", "1%"])
            .await?;
        let capture = lab.capture(COLLECTOR, "sampled", Some(CAPTURE)).await?;
        let flood = lab.network.flood(CLIENT, source1, 20_000).await?;
        flush(lab, &capture, COLLECTOR).await?;
        let cloned = echoes(&capture, &is_clone, client, source1).0;
        // Binomial(20 000, 0.01): mean 200, standard deviation 14; the bounds are 7 of those.
        ensure!(
            (100..=300).contains(&cloned),
            "{cloned} of {} flood packets were cloned; a 1 % sample should be about 200",
            flood.sent
        );
        // The counters reach the controller with the next Health after a drift check.
        let counted = lab
            .wait_until("the session's counters to show the clones", WAIT, || async {
                let (host, total) = session_counter(lab, "sampled", "packets")
                    .await
                    .map_err(|e| LabError::Invalid(format!("{e:#}")))?;
                Ok((host >= cloned as u64 && total == host).then_some(host))
            })
            .await?;
        ensure!(counted == cloned as u64, "the counters say {counted} packets, the collector saw {cloned}");
        lab.fleetctl_ok(&["session", "delete", "sampled"]).await?;

        // A cap: however fast the flood, at most max-pps clones per second (plus one burst).
        create_session(lab, "capped", &c1, &["--protocol", "icmp", "--direction", "ingress", "--max-pps", "100"])
            .await?;
        let capture = lab.capture(COLLECTOR, "capped", Some(CAPTURE)).await?;
        let flood = lab.network.flood(CLIENT, source1, 5_000).await?;
        flush(lab, &capture, COLLECTOR).await?;
        let cloned = echoes(&capture, &is_clone, client, source1).0;
        let allowed = 100.0 * (flood.elapsed.as_secs_f64() + 1.0) + 100.0;
        ensure!(
            (cloned as f64) <= allowed && cloned >= 100,
            "{cloned} clones of {} packets in {:?}; the cap allows at most {allowed:.0}",
            flood.sent,
            flood.elapsed
        );
        ensure!(
            (cloned as u64) < flood.sent / 2,
            "the flood ({} packets in {:?}) was too slow to show the cap: {cloned} clones",
            flood.sent,
            flood.elapsed
        );
        Ok(())
    })
    .await;
}

/// Both families' mangle tables of `host` without our objects, timestamps or counters.
async fn foreign(lab: &Lab, host: &str) -> Result<String> {
    let both = lab.network.mangle_rules(host).await? + &lab.network.mangle_rules6(host).await?;
    Ok(both
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("TEEFLEET"))
        .map(|l| match l.find(" [") {
            Some(i) if l.starts_with(':') => format!("{}\n", &l[..i]),
            _ => format!("{l}\n"),
        })
        .collect())
}

/// `GET path` from an agent's HTTP endpoint: (status code, body).
async fn http_get(lab: &Lab, host: &str, path: &str) -> Result<(u16, String)> {
    let addr = (lab.ip(host)?, METRICS_PORT);
    let mut stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr)).await.context("connect")??;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response)).await.context("read")??;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("status line")?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_and_reported_and_cleanup_removes_only_ours() {
    run(async |lab: &Lab| {
        for rule in FOREIGN_V4 {
            let args: Vec<&str> = ["-t", "mangle"].into_iter().chain(rule.split_whitespace()).collect();
            lab.network.iptables("source1", &args).await?;
        }
        for rule in FOREIGN_V6 {
            let args: Vec<&str> = ["-t", "mangle"].into_iter().chain(rule.split_whitespace()).collect();
            lab.network.ip6tables("source1", &args).await?;
        }
        let before = foreign(lab, "source1").await?;
        ensure!(before.matches("MARK").count() == 10, "foreign rules:\n{before}");

        let (c1, _) = add_collectors(lab).await?;
        create_session(lab, "watched", &c1, &["--protocol", "icmp"]).await?;
        ensure!(foreign(lab, "source1").await? == before, "apply changed foreign rules");

        // Someone flushes our IPv4 chain and deletes our IPv6 jump.
        lab.network.iptables("source1", &["-t", "mangle", "-F", "TEEFLEET-PRE"]).await?;
        lab.network
            .ip6tables(
                "source1",
                &["-t", "mangle", "-D", "POSTROUTING", "-m", "comment", "--comment", "teefleet", "-j", "TEEFLEET-POST"],
            )
            .await?;
        let id = lab.instance_id("source1")?.to_owned();
        let host = lab
            .wait_until("two drift repairs to show in fleetctl host get", WAIT, || async {
                let host = lab.fleetctl_ok(&["host", "get", &id, "-o", "json"]).await?.json()?;
                let repairs = host["drift_repairs"].as_u64().unwrap_or(0);
                let events =
                    host["events"].as_array().map_or(0, |e| e.iter().filter(|e| e["kind"] == "drift_repaired").count());
                Ok((repairs >= 2 && events >= 2).then_some(host))
            })
            .await?;
        let messages: Vec<&str> =
            host["events"].as_array().into_iter().flatten().filter_map(|e| e["message"].as_str()).collect();
        ensure!(
            messages.iter().any(|m| m.contains("TEEFLEET-PRE was flushed"))
                && messages.iter().any(|m| m.contains("ipv6") && m.contains("POSTROUTING")),
            "drift events: {messages:?}"
        );
        ensure!(host["dataplane"]["backend"] == "nft" || host["dataplane"]["backend"] == "legacy", "dataplane: {host}");
        ensure!(host["dataplane"]["ipv6"] == true, "dataplane: {host}");
        let table = lab.fleetctl_ok(&["host", "get", &id]).await?.stdout;
        ensure!(table.contains("drift_repaired"), "host get table:\n{table}");
        let v4 = lab.network.mangle_rules("source1").await?;
        let v6 = lab.network.mangle_rules6("source1").await?;
        ensure!(
            v4.contains("-A TEEFLEET-PRE -p icmp")
                && v6.contains("-A POSTROUTING -m comment --comment teefleet -j TEEFLEET-POST"),
            "not restored:\n{v4}\n{v6}"
        );
        ensure!(foreign(lab, "source1").await? == before, "repair changed foreign rules");

        // Readiness and metrics come from the agent itself.
        let (status, body) = http_get(lab, "source1", "/readyz").await?;
        ensure!(status == 200 && body.starts_with("ready"), "/readyz: {status} {body}");
        let (status, metrics) = http_get(lab, "source1", "/metrics").await?;
        let repairs = metrics
            .lines()
            .find_map(|l| l.strip_prefix("teefleet_agent_drift_repairs_total "))
            .and_then(|v| v.parse::<u64>().ok());
        ensure!(status == 200 && repairs >= Some(2), "/metrics: {status}\n{metrics}");
        ensure!(metrics.contains("teefleet_agent_rules{family=\"ipv6\"} 2"), "/metrics:\n{metrics}");

        // Uninstall: the agent stops, cleanup removes all of ours in both families, twice.
        lab.stop_agent("source1").await;
        for _ in 0..2 {
            let agent = teefleet_lab::procs::binary("fleet-agent")?;
            let agent = agent.to_str().context("agent path")?.to_owned();
            lab.network.exec("source1", &agent, &["cleanup"]).await?;
            let all = lab.network.mangle_rules("source1").await? + &lab.network.mangle_rules6("source1").await?;
            ensure!(!all.contains("TEEFLEET"), "left after cleanup:\n{all}");
            ensure!(foreign(lab, "source1").await? == before, "cleanup changed foreign rules");
        }
        Ok(())
    })
    .await;
}

/// Sends an echo through source1 and returns whether a clone reached the collector.
async fn mirrored(lab: &Lab, label: &str) -> Result<bool> {
    let capture = lab.capture(COLLECTOR, label, Some(CAPTURE)).await?;
    let is_clone = clone_at(lab, COLLECTOR).await?;
    let (client, source1) = (IpAddr::from(lab.ip(CLIENT)?), IpAddr::from(lab.ip("source1")?));
    lab.network.ping(CLIENT, source1, 2).await?;
    flush(lab, &capture, COLLECTOR).await?;
    Ok(capture.count(|p| is_clone(p) && p.src == client && p.dst == source1) > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_without_its_controller_keeps_mirroring_and_ignores_a_corrupt_state() {
    run(async |lab: &Lab| {
        let (c1, _) = add_collectors(lab).await?;
        create_session(lab, "steady", &c1, &["--protocol", "icmp"]).await?;
        ensure!(mirrored(lab, "before").await?, "no clones before the restart");

        // A reboot while the controller is down: the kernel forgets, the agent remembers.
        lab.stop_agent("source1").await;
        lab.stop_controller().await;
        let agent = teefleet_lab::procs::binary("fleet-agent")?.to_str().context("agent path")?.to_owned();
        lab.network.exec("source1", &agent, &["cleanup"]).await?;
        ensure!(!mirrored(lab, "rebooted").await?, "clones without rules");
        lab.start_agent("source1")?;
        lab.wait_until("the saved rules to come back", WAIT, || async {
            Ok(lab.network.mangle_rules("source1").await?.contains("teefleet:steady").then_some(()))
        })
        .await?;
        ensure!(mirrored(lab, "restored").await?, "no clones from the saved rules");

        // A corrupt state file is reported and ignored; the controller sends the set again.
        lab.stop_agent("source1").await;
        lab.network.exec("source1", &agent, &["cleanup"]).await?;
        let state = lab.agent_state_dir("source1").join("ruleset.json");
        let text = std::fs::read_to_string(&state).context("state file")?;
        std::fs::write(&state, &text[..text.len() / 2]).context("truncating the state file")?;
        lab.restart_controller().await?;
        lab.start_agent("source1")?;
        let id = lab.instance_id("source1")?.to_owned();
        let host = lab
            .wait_until("the ignored state file to show in host get", WAIT, || async {
                let host = lab.fleetctl_ok(&["host", "get", &id, "-o", "json"]).await?.json()?;
                let ignored = host["events"].as_array().is_some_and(|e| e.iter().any(|e| e["kind"] == "state_ignored"));
                Ok(ignored.then_some(host))
            })
            .await?;
        lab.wait_until("the controller to re-apply the session", WAIT, || async {
            Ok(lab.network.mangle_rules("source1").await?.contains("teefleet:steady").then_some(()))
        })
        .await?;
        ensure!(mirrored(lab, "re-pushed").await?, "no clones after the controller re-pushed: {host}");
        let saved = std::fs::read_to_string(&state).context("state file")?;
        if serde_json::from_str::<Value>(&saved).is_err() {
            bail!("the state file was not rewritten: {saved}");
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_moves_its_agents_to_another_without_a_gap_in_mirroring() {
    run_with(lab_builder().replicas(2), async |lab: &Lab| {
        let (c1, _) = add_collectors(lab).await?;
        // Through the first replica, which the agents reach first.
        create_session(lab, "steady", &c1, &["--protocol", "icmp"]).await?;
        ensure!(mirrored(lab, "before").await?, "no clones before the replica died");

        lab.stop_controller().await;
        ensure!(mirrored(lab, "orphaned").await?, "mirroring stopped with the replica");

        // A change through the survivor converges on source1, so its agent moved there.
        let second = lab.replica_urls().first().context("a second replica")?.clone();
        let source = lab.instance_id("source1")?.to_owned();
        let args = ["--source", &source, "--collector", &c1, "--protocol", "udp", "--wait", "--timeout", "60"];
        let out =
            lab.fleetctl_via(&second, &[&["session", "create", "more", "-o", "json"][..], &args[..]].concat()).await?;
        ensure!(out.success() && out.json()?["state"] == "active", "session create through the survivor: {out}");
        ensure!(mirrored(lab, "after").await?, "no clones after failing over");

        // Nothing the dead replica acknowledged is lost.
        let sessions = lab.fleetctl_via(&second, &["session", "list", "-o", "json"]).await?.json()?;
        let names: Vec<&str> = sessions.as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect();
        ensure!(names == ["more", "steady"], "sessions after the failover: {sessions}");
        let audit = lab.fleetctl_via(&second, &["audit", "list", "-o", "json"]).await?.json()?;
        let created = |name: &str| {
            audit.as_array().is_some_and(|a| a.iter().any(|r| r["action"] == "session.create" && r["target"] == name))
        };
        ensure!(created("steady") && created("more"), "audit after the failover: {audit}");
        Ok(())
    })
    .await;
}

/// The tag the lab's tag session selects its sources by.
const ROLE: &str = "role";
const WEB: &str = "web";

/// `session get NAME -o json` and its sources, sorted, once every source has applied the
/// session: only then are the rules in place, so that traffic shows what the session says.
async fn applied_sources(lab: &Lab, name: &str) -> Result<Option<(Value, Vec<String>)>, LabError> {
    let session = lab.fleetctl_ok(&["session", "get", name, "-o", "json"]).await?.json()?;
    let mut sources: Vec<String> =
        session["sources"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect();
    sources.sort();
    let hosts = session["hosts"].as_array().map_or(&[][..], Vec::as_slice);
    let applied = hosts.len() == sources.len() && hosts.iter().all(|h| h["applied"] == true);
    Ok((applied && session["state"] == "active").then_some((session, sources)))
}

/// Waits until the session's sources are exactly `want` (instance ids), all applied, and
/// returns `session get`'s JSON.
async fn wait_for_sources(lab: &Lab, name: &str, want: &[&str]) -> Result<Value> {
    let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    let what = format!("session {name} to have the sources {want:?}, applied");
    let session = lab
        .wait_until(&what, WAIT, || async {
            Ok(applied_sources(lab, name).await?.and_then(|(session, got)| (got == want).then_some(session)))
        })
        .await?;
    Ok(session)
}

/// Pings each source twice from the client; returns, per source in [`SOURCES`] order, the
/// echo (requests, replies) cloned to [`COLLECTOR`].
async fn clones_per_source(lab: &Lab, label: &str) -> Result<Vec<(usize, usize)>> {
    let capture = lab.capture(COLLECTOR, label, Some(CAPTURE)).await?;
    let is_clone = clone_at(lab, COLLECTOR).await?;
    let client = IpAddr::from(lab.ip(CLIENT)?);
    let mut ips = Vec::new();
    for source in SOURCES {
        let ip = IpAddr::from(lab.ip(source)?);
        lab.network.ping(CLIENT, ip, 2).await.with_context(|| format!("ping {source}"))?;
        ips.push(ip);
    }
    flush(lab, &capture, COLLECTOR).await?;
    let got = ips.into_iter().map(|ip| echoes(&capture, &is_clone, client, ip)).collect();
    capture.stop().await;
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_by_ec2_tag_follows_the_tag_from_host_to_host() {
    // Re-resolution every 2 s instead of 30, so each tag change takes seconds to follow.
    let builder = lab_builder().controller_arg("--selector-interval").controller_arg("2s");
    run_with(builder, async |lab: &Lab| {
        let (c1, _) = add_collectors(lab).await?;
        let (s1, s2) = (lab.instance_id("source1")?.to_owned(), lab.instance_id("source2")?.to_owned());
        lab.ec2.tag("source1", ROLE, WEB).await?;

        let tag = format!("{ROLE}={WEB}");
        let args = ["session", "create", "web", "--source-tag", &tag, "--collector", &c1, "--protocol", "icmp"];
        let out = lab.fleetctl(&[&args[..], &["--wait", "--timeout", "60", "-o", "json"]].concat()).await?;
        ensure!(out.success(), "session create --source-tag failed: {out}");
        let created = out.json()?;
        let hosts = created["hosts"].as_array().map_or(&[][..], Vec::as_slice);
        ensure!(
            created["state"] == "active"
                && created["source_tags"] == serde_json::json!([tag])
                && created["sources"] == serde_json::json!([s1])
                && hosts.len() == 1
                && hosts[0]["host_id"] == s1.as_str()
                && hosts[0]["from_tags"] == true,
            "session create should select source1 ({s1}) alone, by its tag: {created}"
        );
        let got = clones_per_source(lab, "tag-source1").await?;
        ensure!(got == [(2, 2), (0, 0)], "only source1 is tagged, yet (requests, replies) cloned were {got:?}");

        // The tier grows: re-resolution adds source2 without anyone touching the session.
        lab.ec2.tag("source2", ROLE, WEB).await?;
        let grown = wait_for_sources(lab, "web", &[&s1, &s2]).await?;
        let from_tags = grown["hosts"].as_array().is_some_and(|h| h.iter().all(|h| h["from_tags"] == true));
        ensure!(from_tags && grown["problems"] == serde_json::json!([]), "after tagging source2: {grown}");
        let got = clones_per_source(lab, "tag-both").await?;
        ensure!(got == [(2, 2), (2, 2)], "both sources are tagged, yet (requests, replies) cloned were {got:?}");

        // source1 leaves the tier: it leaves the session and its rules go.
        lab.ec2.untag("source1", ROLE).await?;
        let shrunk = wait_for_sources(lab, "web", &[&s2]).await?;
        ensure!(shrunk["source_tags"] == serde_json::json!([tag]), "after untagging source1: {shrunk}");
        lab.wait_until("source1 to apply an empty rule set", WAIT, || async {
            let host = lab.fleetctl_ok(&["host", "get", &s1, "-o", "json"]).await?.json()?;
            let (applied, desired) = (host["applied_version"].as_u64(), host["desired_version"].as_u64());
            let caught_up = applied.zip(desired).is_some_and(|(a, d)| a >= d);
            Ok((caught_up && host["rule_count"] == 0).then_some(()))
        })
        .await?;
        let rules = lab.network.mangle_rules("source1").await?;
        ensure!(!rules.contains("teefleet:web"), "source1 still has the session's rules:\n{rules}");
        let got = clones_per_source(lab, "tag-source2").await?;
        ensure!(got == [(0, 0), (2, 2)], "only source2 is tagged, yet (requests, replies) cloned were {got:?}");

        // Each change the tags made is audited as the controller's; passes that change
        // nothing are not.
        let audit = lab.fleetctl_ok(&["audit", "list", "-o", "json"]).await?.json()?;
        let resolves: Vec<&Value> = audit
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["action"] == "session.resolve" && r["target"] == "web")
            .collect();
        ensure!(
            resolves.len() == 2 && resolves.iter().all(|r| r["actor"] == "controller" && r["result"] == "ok"),
            "two session.resolve rows expected (source2 added, source1 removed): {audit}"
        );
        Ok(())
    })
    .await;
}

/// Raw TEE on a lab that enforces EC2's Source/Dest Check per instance: a session that
/// mirrors inbound traffic is refused unless it turns its sources' checks off; with
/// `--disable-source-check` both directions arrive, as tshark reads them. The bridge
/// follows EC2: with source1's check put back on behind teefleet's back, every clone of
/// an inbound packet is lost as source1 sends it (the loss a default session had before
/// VXLAN). After the last delete every check is back at its original value, and each
/// change is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tee_needs_the_sources_checks_off_and_teefleet_puts_them_back() {
    run(async |lab: &Lab| {
        let c1 = lab.instance_id(COLLECTOR)?.to_owned();
        let source = lab.instance_id("source1")?.to_owned();
        lab.fleetctl_ok(&["collector", "add", &c1, "--encap", "none"]).await?;
        let args = ["session", "create", "raw", "--source", &source, "--collector", &c1, "--protocol", "icmp"];
        let refused = lab.fleetctl(&args).await?;
        ensure!(!refused.success(), "a raw session mirroring inbound traffic was accepted: {refused}");
        for way_out in ["--encap vxlan", "--disable-source-check"] {
            ensure!(refused.stderr.contains(way_out), "{way_out} missing: {refused}");
        }
        let session = create_session(lab, "raw", &c1, &["--protocol", "icmp", "--disable-source-check"]).await?;
        let host = &session["hosts"][0];
        ensure!(host["source_dest_check"] == "disabled", "session create --wait: {session}");
        ensure!(!lab.source_dest_check("source1").await? && !lab.source_dest_check(COLLECTOR).await?);
        lab.sync_source_dest_checks().await?;

        let netns = lab.network.host(COLLECTOR)?.netns.clone();
        let pcap = Pcap::start(&netns, "raw", lab.dir(), Some("icmp")).await?;
        let capture = lab.capture(COLLECTOR, "raw-ec2", Some(CAPTURE)).await?;
        let is_clone = raw_clone_at(lab, COLLECTOR).await?;
        let (client, source1) = (IpAddr::from(lab.ip(CLIENT)?), IpAddr::from(lab.ip("source1")?));
        lab.network.ping(CLIENT, source1, 5).await?;
        flush(lab, &capture, COLLECTOR).await?;
        let got = echoes(&capture, &is_clone, client, source1);
        ensure!(got == (5, 5), "(requests, replies) with source1's check off: {got:?}\n{}", capture.text());
        // tshark: raw packets at the collector's MAC, addressed to the original endpoints.
        let mac = lab.network.mac(COLLECTOR).await?;
        let filter = format!("eth.dst == {mac} && icmp && !(ip.dst == {})", lab.ip(COLLECTOR)?);
        let (c, s) = (client.to_string(), source1.to_string());
        let count = |rows: &[Vec<String>], src: &str, dst: &str, kind: &str| {
            rows.iter().filter(|r| r[0] == src && r[1] == dst && r[2] == kind).count()
        };
        let both = |rows: &[Vec<String>]| (count(rows, &c, &s, "8"), count(rows, &s, &c, "0"));
        let rows = pcap
            .rows_when(&filter, &["ip.src", "ip.dst", "icmp.type"], WAIT, |r| {
                let (requests, replies) = both(r);
                requests >= 5 && replies >= 5
            })
            .await?;
        ensure!(both(&rows) == (5, 5), "tshark saw {rows:?}");
        pcap.finish().await;

        // Behind teefleet's back, source1's check goes on again: EC2 drops the inbound clones.
        let before = lab.network.checks().dropped("source1").await?;
        lab.set_source_dest_check("source1", true).await?;
        lab.network.ping(CLIENT, source1, 5).await?;
        flush(lab, &capture, COLLECTOR).await?;
        let got = echoes(&capture, &is_clone, client, source1);
        let dropped = lab.network.checks().dropped("source1").await?;
        ensure!(got == (5, 10), "(requests, replies) with source1's check on: {got:?}\n{}", capture.text());
        ensure!(dropped.sent - before.sent >= 5, "source1's check dropped {dropped:?} (before {before:?})");
        lab.set_source_dest_check("source1", false).await?;

        lab.fleetctl_ok(&["session", "delete", "raw"]).await?;
        for host in ["source1", COLLECTOR] {
            lab.wait_until(&format!("{host}'s Source/Dest Check to be restored"), WAIT, || async move {
                Ok(lab.source_dest_check(host).await?.then_some(()))
            })
            .await?;
        }
        let audit = lab.fleetctl_ok(&["audit", "list", "-o", "json"]).await?.json()?;
        let rows = |action: &str| {
            audit.as_array().is_some_and(|a| a.iter().any(|r| r["action"] == action && r["target"] == source.as_str()))
        };
        ensure!(rows("source_dest_check.disable") && rows("source_dest_check.restore"), "audit: {audit}");
        Ok(())
    })
    .await;
}

/// `nstat -az NAME` inside a lab host: the kernel's counter, absolute.
async fn nstat(lab: &Lab, host: &str, name: &str) -> Result<u64> {
    let text = lab.network.exec(host, "nstat", &["-az", name]).await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.split_whitespace().next()?.parse().ok()))
        .with_context(|| format!("{name} in {text}"))
}

/// The agent on a VXLAN collector takes every clone on UDP 4789 (no "port unreachable"
/// back to the sources, none counted as UDP to no port) and offers the inner packets on
/// `teefleet0`, where tcpdump sees them raw; it repairs that device and removes it when
/// the collector is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collectors_agent_takes_the_clones_and_offers_them_decapsulated() {
    run(async |lab: &Lab| {
        let c1 = lab.instance_id(COLLECTOR)?.to_owned();
        lab.fleetctl_ok(&["collector", "add", &c1]).await?;
        let link = lab
            .wait_until("the collector's agent to make teefleet0", WAIT, || async {
                let links = lab.network.exec(COLLECTOR, "ip", &["-d", "link", "show"]).await?;
                Ok(links.contains("teefleet0").then_some(links))
            })
            .await?;
        ensure!(link.contains("vxlan external") && link.contains("dstport 4789"), "{link}");
        // IPv4 pings with the client only: IPv6 neighbour discovery would add clones of its
        // own to the count below.
        let peer = format!("{}/32", lab.ip(CLIENT)?);
        create_session(lab, "decap", &c1, &["--protocol", "icmp", "--cidr", &peer]).await?;

        let netns = lab.network.host(COLLECTOR)?.netns.clone();
        let inner = Capture::start_on(&netns, "teefleet0", "decap-inner", lab.dir(), Some("icmp")).await?;
        let outer = lab.capture(COLLECTOR, "decap-outer", Some(CAPTURE)).await?;
        let (no_ports, unreachable) =
            (nstat(lab, COLLECTOR, "UdpNoPorts").await?, nstat(lab, COLLECTOR, "IcmpOutDestUnreachs").await?);
        let (client, source1) = (IpAddr::from(lab.ip(CLIENT)?), IpAddr::from(lab.ip("source1")?));
        lab.network.ping(CLIENT, source1, 5).await?;
        inner.wait_for("raw clones on teefleet0", 10, WAIT, |p| p.src == source1 || p.dst == source1).await?;
        flush(lab, &outer, COLLECTOR).await?;
        let raw = inner.packets();
        ensure!(raw.iter().all(|p| p.vxlan.is_none()), "teefleet0 shows the inner frames: {}", inner.text());
        let got = (
            raw.iter().filter(|p| p.src == client && p.dst == source1 && p.is_echo_request()).count(),
            raw.iter().filter(|p| p.src == source1 && p.dst == client && p.is_echo_reply()).count(),
        );
        ensure!(got == (5, 5), "(requests, replies) on teefleet0: {got:?}\n{}", inner.text());
        let after = (nstat(lab, COLLECTOR, "UdpNoPorts").await?, nstat(lab, COLLECTOR, "IcmpOutDestUnreachs").await?);
        ensure!(
            after == (no_ports, unreachable),
            "UDP to no port / ICMP unreachables sent: {after:?}, before {:?}",
            (no_ports, unreachable)
        );
        let collector = IpAddr::from(lab.ip(COLLECTOR)?);
        let errors = outer.count(|p| p.src == collector && p.info.contains("unreachable"));
        ensure!(errors == 0, "the collector answered clones with ICMP errors:\n{}", outer.text());
        // The clones are not the collector's own traffic: its stack drops them unanswered
        // (the one reply is to the sentinel ping).
        let replies = outer.count(|p| p.src == collector && p.dst == client && p.is_echo_reply());
        ensure!(replies == 1, "the collector answered clones:\n{}", outer.text());
        // Each clone is counted once: 5 requests in, 5 replies out (the echo replies'
        // clones pass POSTROUTING again into the tunnel, unmatched).
        let counted = lab
            .wait_until("source1's counters to show the 10 clones", WAIT, || async {
                let (host, _) =
                    session_counter(lab, "decap", "packets").await.map_err(|e| LabError::Invalid(format!("{e:#}")))?;
                Ok((host >= 10).then_some(host))
            })
            .await?;
        ensure!(counted == 10, "source1 counted {counted} clones for 10 sent");
        // A full-size packet (1500 bytes, Don't Fragment) is cloned whole: the outer packet
        // is fragmented on the way, and the collector reassembles it.
        let source1_ip = lab.ip("source1")?.to_string();
        lab.network
            .exec(CLIENT, "ping", &["-n", "-c", "2", "-i", "0.2", "-M", "do", "-s", "1472", &source1_ip])
            .await?;
        inner
            .wait_for("1500-byte clones on teefleet0", 2, WAIT, |p| {
                p.src == client && p.dst == source1 && p.is_echo_request() && p.info.ends_with("length 1480")
            })
            .await?;

        // Deleted behind its back: back within a drift interval or two.
        lab.network.exec(COLLECTOR, "ip", &["link", "del", "teefleet0"]).await?;
        lab.wait_until("teefleet0 to be repaired", WAIT, || async {
            let links = lab.network.exec(COLLECTOR, "ip", &["-br", "link", "show"]).await?;
            Ok(links.contains("teefleet0").then_some(()))
        })
        .await?;
        lab.fleetctl_ok(&["session", "delete", "decap"]).await?;
        lab.fleetctl_ok(&["collector", "remove", &c1]).await?;
        lab.wait_until("teefleet0 to go with the collector", WAIT, || async {
            let links = lab.network.exec(COLLECTOR, "ip", &["-br", "link", "show"]).await?;
            Ok((!links.contains("teefleet0")).then_some(()))
        })
        .await?;
        Ok(())
    })
    .await;
}

/// Two sessions mirror all of source1's traffic to two collectors: the VXLAN packets one
/// tunnel sends are never mirrored into the other (nor into their own), so each collector
/// gets the pings once and no tunnel inside a tunnel; and the agent's own stream with its
/// controller is mirrored to neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outer_packets_of_one_tunnel_are_never_mirrored_into_another() {
    run(async |lab: &Lab| {
        let (c1, c2) = add_collectors(lab).await?;
        create_session(lab, "to-c1", &c1, &[]).await?;
        create_session(lab, "to-c2", &c2, &[]).await?;
        let cap1 = lab.capture(COLLECTOR, "all-c1", Some(CAPTURE)).await?;
        let cap2 = lab.capture(COLLECTOR2, "all-c2", Some(CAPTURE)).await?;
        let (clone1, clone2) = (clone_at(lab, COLLECTOR).await?, clone_at(lab, COLLECTOR2).await?);
        let (client, source1) = (IpAddr::from(lab.ip(CLIENT)?), IpAddr::from(lab.ip("source1")?));
        lab.network.ping(CLIENT, source1, 5).await?;
        flush(lab, &cap1, COLLECTOR).await?;
        flush(lab, &cap2, COLLECTOR2).await?;
        for (name, cap, clone) in [("collector", &cap1, &clone1), ("collector2", &cap2, &clone2)] {
            let got = echoes(cap, clone, client, source1);
            ensure!(got == (5, 5), "(requests, replies) at {name}: {got:?}\n{}", cap.text());
            // A mirrored VXLAN packet would show as an inner frame that is VXLAN itself.
            let nested = cap.count(|p| p.vxlan.is_some() && p.info.starts_with("VXLAN"));
            ensure!(nested == 0, "a tunnel's packets were mirrored to {name}:\n{}", cap.text());
            // Nor is the agent's own stream with the controller (Health every second here).
            let controller = IpAddr::from(lab.network.gateway());
            let own = cap.count(|p| p.vxlan.is_some() && (p.src == controller || p.dst == controller));
            ensure!(own == 0, "the agent's traffic with its controller was mirrored to {name}:\n{}", cap.text());
        }
        // The exclusion did see that traffic: its RETURN rule counted packets.
        let saved = lab.network.exec("source1", "iptables-save", &["-c", "-t", "mangle"]).await?;
        let returned: u64 = saved
            .lines()
            .filter(|l| l.contains("teefleet-control"))
            .filter_map(|l| l.strip_prefix('[')?.split(':').next()?.parse::<u64>().ok())
            .sum();
        ensure!(returned > 0, "no packet of the agent's stream met its exclusion:\n{saved}");
        Ok(())
    })
    .await;
}

/// What the bridges drop of the clones toward a collector: VXLAN frames only, so the
/// collector's agent keeps talking to the controller.
const VXLAN_FRAMES: &str = "ether type ip udp dport 4789";

/// Polls `session get NAME` until its delivery loss satisfies `ok` and its state is
/// `state`; returns that session. Fails after a minute, with what it last saw.
async fn wait_delivery(lab: &Lab, name: &str, ok: impl Fn(f64) -> bool, state: &str) -> Result<Value> {
    let last = std::sync::Mutex::new(Value::Null);
    let found = lab
        .wait_until(&format!("session {name}: loss as expected and {state}"), WAIT, || async {
            let s = lab.fleetctl_ok(&["session", "get", name, "-o", "json"]).await?.json()?;
            let done = s["loss_ratio"].as_f64().is_some_and(&ok) && s["state"] == state;
            *last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = s.clone();
            Ok(done.then_some(s))
        })
        .await;
    let s = found.with_context(|| {
        format!("session {name} last showed {}", last.lock().map(|v| v.to_string()).unwrap_or_default())
    })?;
    eprintln!(
        "session {name}: {state}, loss ratio {}, {} of {} delivered",
        s["loss_ratio"], s["delivered_packets"], s["sent_packets"]
    );
    Ok(s)
}

/// Verified delivery, judged where the clones arrive: a healthy path loses nothing; 30 %
/// of the VXLAN frames toward a collector dropped in its bridge shows as about 30 % lost
/// and the session degraded, naming the source; healed, it is active again. Once with the
/// collector in the sources' subnet and once behind the router. tshark at the far
/// collector counts what arrived while the drop was on, and sees the same loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_path_to_a_collector_degrades_its_session_until_it_heals() {
    let builder = lab_builder().controller_arg("--delivery-window").controller_arg("10s");
    run_with(builder, async |lab: &Lab| {
        let (near, far) = (lab.instance_id(COLLECTOR)?.to_owned(), lab.instance_id(COLLECTOR_B)?.to_owned());
        let (s1, s2) = (lab.instance_id("source1")?.to_owned(), lab.instance_id("source2")?.to_owned());
        for collector in [&near, &far] {
            lab.fleetctl_ok(&["collector", "add", collector]).await?;
        }
        // source1's clones go to the collector in its subnet, source2's past the router.
        for (name, source, collector) in [("near", &s1, &near), ("far", &s2, &far)] {
            let args = ["session", "create", name, "--source", source, "--collector", collector, "--protocol", "icmp"];
            lab.fleetctl_ok(&[&args[..], &["--wait"]].concat()).await?;
        }
        let _traffic = [
            lab.network.steady(CLIENT, lab.ip("source1")?, 200)?,
            lab.network.steady(CLIENT, lab.ip("source2")?, 200)?,
        ];
        for name in ["near", "far"] {
            let s = wait_delivery(lab, name, |loss| loss < 0.05, "active").await?;
            ensure!(s["delivered_packets"].as_u64().unwrap_or(0) > 500, "a healthy path delivers: {s}");
        }

        let drops = [
            lab.network.drop_toward(COLLECTOR, 30, VXLAN_FRAMES).await?,
            lab.network.drop_toward(COLLECTOR_B, 30, VXLAN_FRAMES).await?,
        ];
        // Both ends of source2's path captured over the same time: the echo requests
        // source2 received, and their clones that reached collector-b.
        let at_source = Pcap::start(&lab.network.host("source2")?.netns, "lossy-sent", lab.dir(), Some("icmp")).await?;
        let at_far =
            Pcap::start(&lab.network.host(COLLECTOR_B)?.netns, "lossy", lab.dir(), Some("udp port 4789")).await?;
        for (name, source) in [("near", &s1), ("far", &s2)] {
            // Once the window lies inside the drop, the loss is the drop's (the issue asks
            // for 0.15 to 0.45); binomial noise over a 10 s window is about 0.01.
            let s = wait_delivery(lab, name, |loss| (0.25..=0.35).contains(&loss), "degraded").await?;
            let problems = s["problems"].to_string();
            ensure!(problems.contains(&format!("of the clones from {source} were lost over the last 10 s")), "{s}");
        }
        let (sent_file, far_file) = (at_source.finish().await, at_far.finish().await);
        let client = lab.ip(CLIENT)?.to_string();
        let requests = format!("icmp.type == 8 && ip.src == {client}");
        let sent = tshark_fields(&sent_file, &requests, &["frame.number"]).await?.len() as f64;
        let arrived = tshark_fields(&far_file, &format!("vxlan && {requests}"), &["frame.number"]).await?.len() as f64;
        // tshark says what the collector's IDS would have seen: about 70 % of them.
        eprintln!("tshark: {arrived} echo clones at collector-b of {sent} echo requests source2 received");
        ensure!(
            sent > 500.0 && (0.55..=0.85).contains(&(arrived / sent)),
            "tshark saw {arrived} echo clones at collector-b of {sent} echo requests source2 received"
        );

        drop(drops);
        for name in ["near", "far"] {
            let s = wait_delivery(lab, name, |loss| loss < 0.05, "active").await?;
            ensure!(s["problems"] == Value::Array(vec![]), "healed, nothing is wrong: {s}");
        }
        Ok(())
    })
    .await;
}
