//! `teefleet-lab demo`: the manual TEE recipe, done by teefleet, narrated on stdout. It
//! starts the lab, registers the collector, creates a session for source1 and waits until
//! it is active, pings source1 and source2 from the client, shows what the collector
//! captured and what EC2 says about Source/Dest Check, then deletes the session and shows
//! that mirroring stopped.

#![allow(clippy::print_stdout)] // The demo's narrative is its output.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use teefleet_lab::{CLIENT, COLLECTOR, Capture, Lab, Packet, Range};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match std::env::args().nth(1).as_deref() {
        Some("demo") => {}
        _ => bail!("usage: teefleet-lab demo"),
    }
    println!("== starting the lab: Postgres, moto (EC2), namespaces, controller, agents");
    // Frequent health reports and drift checks, so the counters show within seconds.
    let lab = Lab::builder()
        .range(Range::Demo)
        .agent_arg("--health-interval")
        .agent_arg("1")
        .agent_arg("--drift-interval")
        .agent_arg("1")
        .start()
        .await
        .context("starting the lab")?;
    let result = demo(&lab).await;
    if let Err(e) = &result {
        eprintln!("{}", lab.log_report(30));
        eprintln!("demo failed: {e:#}");
    }
    println!("== tearing down");
    drop(lab);
    result
}

async fn demo(lab: &Lab) -> Result<()> {
    let (source1, source2) = (lab.ip("source1")?, lab.ip("source2")?);
    let (client, collector) = (lab.ip(CLIENT)?, lab.ip(COLLECTOR)?);
    let source1_id = lab.instance_id("source1")?;
    let collector_id = lab.instance_id(COLLECTOR)?;
    println!("   subnets {} and {} on bridge {}", lab.network.cidr(), lab.network.cidr6(), lab.network.bridge());
    for host in lab.network.hosts() {
        println!(
            "   {:<10} {:<15} {:<16} {} (netns {})",
            host.name,
            host.ip.to_string(),
            host.ip6.to_string(),
            lab.instance_id(&host.name)?,
            host.netns
        );
    }
    println!("   controller {}   logs {}", lab.controller_url(), lab.dir().display());

    lab.wait_until("both agents to connect", WAIT, || async {
        let hosts = lab.fleetctl(&["host", "list", "-o", "json"]).await?;
        let n =
            hosts.json().ok().and_then(|v| v.as_array().map(|a| a.iter().filter(|h| h["connected"] == true).count()));
        Ok((n == Some(2)).then_some(()))
    })
    .await?;
    show(lab, "$ fleetctl host list", &["host", "list"]).await?;
    show(lab, &format!("$ fleetctl collector add {collector_id}"), &["collector", "add", collector_id]).await?;

    let collector_mac = lab.network.mac(COLLECTOR).await?;
    let capture = lab.capture(COLLECTOR, "demo-active", Some("icmp")).await?;
    show(
        lab,
        &format!("$ fleetctl session create demo --source {source1_id} --collector {collector_id} --wait"),
        &["session", "create", "demo", "--source", source1_id, "--collector", collector_id, "--wait"],
    )
    .await?;

    println!("\n== mangle table of source1 (iptables-save -t mangle)");
    print_indented(&lab.network.mangle_rules("source1").await?);

    println!("\n== client pings source1 ({source1}) and source2 ({source2})");
    lab.network.ping(CLIENT, source1, 3).await?;
    lab.network.ping(CLIENT, source2, 3).await?;
    let is_clone = |p: &Packet| p.dst_mac == collector_mac && p.dst != collector;
    capture.wait_for("echo reply clones", 3, WAIT, |p| is_clone(p) && p.src == source1 && p.dst == client).await?;
    sentinel(lab, &capture, client, collector).await?;
    println!("\n== what the collector captured (tcpdump -nn -e -i eth0 icmp, clones only)");
    for p in capture.packets().iter().filter(|p| is_clone(p)) {
        println!("   {} > {}: {}", p.src, p.dst, p.info);
    }
    let to_source2 = capture.count(|p| p.src == source2 || p.dst == source2);
    println!(
        "   clones of client<->source1: {}",
        capture.count(|p| is_clone(p) && (p.src == source1 || p.dst == source1))
    );
    println!("   packets of client<->source2: {to_source2} (source2 is not in the session)");

    // Counters travel with the next drift check and health report (one second each here).
    tokio::time::sleep(Duration::from_secs(3)).await;
    show(lab, "\n$ fleetctl session get demo", &["session", "get", "demo"]).await?;
    show(lab, &format!("\n$ fleetctl host get {source1_id}"), &["host", "get", source1_id]).await?;
    let check = lab.source_dest_check(COLLECTOR).await?;
    println!("\n== EC2 DescribeInstanceAttribute sourceDestCheck of the collector: {check}");

    show(lab, "\n$ fleetctl session delete demo", &["session", "delete", "demo"]).await?;
    lab.wait_until("source1's TEEFLEET chains to go", WAIT, || async {
        let rules = lab.network.mangle_rules("source1").await?;
        Ok((!rules.contains("TEEFLEET")).then_some(()))
    })
    .await?;
    println!("\n== mangle table of source1 after delete");
    print_indented(&lab.network.mangle_rules("source1").await?);
    let after = lab.capture(COLLECTOR, "demo-deleted", Some("icmp")).await?;
    lab.network.ping(CLIENT, source1, 3).await?;
    sentinel(lab, &after, client, collector).await?;
    println!(
        "== client pings source1 again: {} clones reach the collector",
        after.count(|p| is_clone(p) && (p.src == source1 || p.dst == source1))
    );
    lab.wait_until("Source/Dest Check to be restored", WAIT, || async {
        Ok(lab.source_dest_check(COLLECTOR).await?.then_some(()))
    })
    .await?;
    println!("== EC2 sourceDestCheck of the collector: {}", lab.source_dest_check(COLLECTOR).await?);
    Ok(())
}

/// Runs fleetctl and prints the command and its output.
async fn show(lab: &Lab, title: &str, args: &[&str]) -> Result<()> {
    println!("{title}");
    let out = lab.fleetctl(args).await?;
    print_indented(&out.stdout);
    if !out.success() {
        bail!("fleetctl {} failed: {}", args.join(" "), out.stderr.trim());
    }
    Ok(())
}

/// Pings the collector itself and waits until tcpdump printed it, so everything sent
/// before is in the capture.
async fn sentinel(lab: &Lab, capture: &Capture, client: Ipv4Addr, collector: Ipv4Addr) -> Result<()> {
    let mark = |p: &Packet| p.src == client && p.dst == collector && p.is_echo_request();
    let before = capture.count(mark);
    lab.network.ping(CLIENT, collector, 1).await?;
    capture.wait_for("the sentinel ping", before + 1, WAIT, mark).await?;
    Ok(())
}

fn print_indented(text: &str) {
    for line in text.lines() {
        if line.is_empty() {
            println!();
        } else {
            println!("   {line}");
        }
    }
}
