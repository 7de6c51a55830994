//! `teefleet-lab demo`: mirroring by teefleet, narrated on stdout. It starts the lab (a
//! VPC of two subnets whose bridges enforce Source/Dest Check as EC2 does), registers the
//! collector in the other subnet, creates a session for source1 and waits until it is
//! active, pings source1 (both families) and source2 from the client, shows what the
//! collector received as tshark dissects the VXLAN, and that no Source/Dest Check changed,
//! then deletes the session and shows that mirroring stopped.
//!
//! `teefleet-lab up`: the same lab, left running until Ctrl-C, with what to type to try
//! fleetctl against it.

#![allow(clippy::print_stdout)] // The demo's narrative is its output.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use teefleet_lab::{AGENT_HOSTS, CLIENT, COLLECTOR_B, Lab, Pcap, Range, tshark_fields};

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
    let up = match std::env::args().nth(1).as_deref() {
        Some("demo") => false,
        Some("up") => true,
        _ => bail!("usage: teefleet-lab demo|up"),
    };
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
    let result = if up { stay_up(&lab).await } else { demo(&lab).await };
    if let Err(e) = &result {
        eprintln!("{}", lab.log_report(30));
        eprintln!("demo failed: {e:#}");
    }
    println!("== tearing down");
    drop(lab);
    result
}

/// The VPC, its hosts and where the controller and logs are.
fn describe(lab: &Lab) -> Result<()> {
    println!(
        "   a VPC of two subnets behind a router: {} (bridge {}) and {} (bridge {}), IPv6 {}; \
         every instance's Source/Dest Check enforced",
        lab.network.cidr_of(0),
        lab.network.bridge_of(0),
        lab.network.cidr_of(1),
        lab.network.bridge_of(1),
        lab.network.cidr6()
    );
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
    println!(
        "   controller {}   logs {} (removed at the end; TEEFLEET_LAB_KEEP=1 keeps them)",
        lab.controller_url(),
        lab.dir().display()
    );
    Ok(())
}

async fn agents_connected(lab: &Lab) -> Result<()> {
    lab.wait_until("every agent to connect", WAIT, || async {
        let hosts = lab.fleetctl(&["host", "list", "-o", "json"]).await?;
        let n =
            hosts.json().ok().and_then(|v| v.as_array().map(|a| a.iter().filter(|h| h["connected"] == true).count()));
        Ok((n == Some(AGENT_HOSTS.len())).then_some(()))
    })
    .await?;
    Ok(())
}

/// Keeps the lab up for an operator's own fleetctl until Ctrl-C or SIGTERM.
async fn stay_up(lab: &Lab) -> Result<()> {
    describe(lab)?;
    agents_connected(lab).await?;
    let bin = teefleet_lab::procs::bin_dir()?;
    let ns = |host: &str| lab.network.host(host).map(|h| h.netns.clone());
    let (source1, far) = (lab.instance_id("source1")?, lab.instance_id(COLLECTOR_B)?);
    println!("\n== the lab is up; in another shell (as root):");
    println!("   export PATH={}:$PATH", bin.display());
    for (name, value) in lab.fleetctl_env() {
        println!("   export {name}={value}");
    }
    println!("   fleetctl host list");
    println!("   fleetctl collector add {far}");
    println!("   fleetctl session create try --source {source1} --collector {far} --wait");
    println!("   ip netns exec {} ping -c 3 {}", ns(CLIENT)?, lab.ip("source1")?);
    println!(
        "   ip netns exec {} tcpdump -ni teefleet0     # the clones, decapsulated by collector-b's agent",
        ns(COLLECTOR_B)?
    );
    println!("   fleetctl session get try");
    println!("\n   Ctrl-C tears the lab down.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn demo(lab: &Lab) -> Result<()> {
    let (source1, source2, source1_6) = (lab.ip("source1")?, lab.ip("source2")?, lab.ip6("source1")?);
    let far = lab.ip(COLLECTOR_B)?;
    let source1_id = lab.instance_id("source1")?;
    let collector_id = lab.instance_id(COLLECTOR_B)?;
    describe(lab)?;
    agents_connected(lab).await?;
    show(lab, "$ fleetctl host list", &["host", "list"]).await?;
    show(lab, &format!("$ fleetctl collector add {collector_id}"), &["collector", "add", collector_id]).await?;

    let netns = &lab.network.host(COLLECTOR_B)?.netns;
    let pcap = Pcap::start(netns, "demo", lab.dir(), Some("udp port 4789")).await?;
    show(
        lab,
        &format!("$ fleetctl session create demo --source {source1_id} --collector {collector_id} --wait"),
        &["session", "create", "demo", "--source", source1_id, "--collector", collector_id, "--wait"],
    )
    .await?;

    println!("\n== mangle table of source1 (iptables-save -t mangle)");
    print_indented(&lab.network.mangle_rules("source1").await?);
    println!("\n== the tunnel device the agent made on source1 (ip -d link show type vxlan)");
    print_indented(&lab.network.exec("source1", "ip", &["-d", "-br", "link", "show", "type", "vxlan"]).await?);

    println!("\n== client pings source1 ({source1}, {source1_6}) and source2 ({source2})");
    lab.network.ping(CLIENT, source1, 3).await?;
    lab.network.ping6(CLIENT, source1_6, 3).await?;
    lab.network.ping(CLIENT, source2, 3).await?;
    let rows = lab
        .wait_until("12 clones at collector-b", WAIT, || async {
            let rows = tshark_fields(pcap.path(), ECHOES, &TSHARK_COLUMNS).await?;
            Ok((rows.len() >= 12).then_some(rows))
        })
        .await?;
    println!(
        "\n== what collector-b ({far}, the other subnet) received, as tshark dissects it\n   \
         $ tshark -r capture-demo.pcap -Y '{ECHOES}' -T fields -e {}",
        TSHARK_COLUMNS.join(" -e ")
    );
    println!("   VNI   {:<28} {:<28} inner", "outer src,inner src", "outer dst,inner dst");
    for row in &rows {
        let (src, dst) = if row[3].is_empty() { (&row[1], &row[2]) } else { (&row[3], &row[4]) };
        let (outer_src, outer_dst) = (&row[1], &row[2]);
        let src = if row[3].is_empty() { src.clone() } else { format!("{},{src}", first(outer_src)) };
        let dst = if row[3].is_empty() { dst.clone() } else { format!("{},{dst}", first(outer_dst)) };
        println!("   {:<5} {src:<28} {dst:<28} {}", row[0], row[5]);
    }
    let source2_s = source2.to_string();
    let of_source2 = rows.iter().filter(|r| r[1].contains(&source2_s) || r[2].contains(&source2_s)).count();
    println!("   packets of client<->source2: {of_source2} (source2 is not in the session)");

    // Counters travel with the next drift check and health report (one second each here).
    tokio::time::sleep(Duration::from_secs(3)).await;
    show(lab, "\n$ fleetctl session get demo", &["session", "get", "demo"]).await?;
    let counted = lab.fleetctl_ok(&["session", "get", "demo", "-o", "json"]).await?.json()?["packets"].as_u64();
    let all = tshark_fields(pcap.path(), "vxlan", &["vxlan.vni"]).await?.len();
    let others = tshark_fields(pcap.path(), &format!("vxlan && !({ECHOES})"), &["_ws.col.Info"]).await?;
    println!(
        "   PACKETS counts every packet source1's rules cloned, once each: {}. collector-b received {all} clones: \
         the {} echoes above and {} more, mirrored too since the session takes every protocol:",
        counted.map_or("unknown".to_owned(), |c| c.to_string()),
        rows.len(),
        others.len()
    );
    for info in others.iter().filter_map(|r| r.first()) {
        println!("     {info}");
    }
    show(lab, &format!("\n$ fleetctl host get {source1_id}"), &["host", "get", source1_id]).await?;
    println!("\n== EC2 sourceDestCheck, enforced by the lab's bridges as EC2 does: VXLAN changes none");
    for host in ["source1", COLLECTOR_B] {
        println!("   {host:<12} {}", lab.source_dest_check(host).await?);
    }

    show(lab, "\n$ fleetctl session delete demo", &["session", "delete", "demo"]).await?;
    lab.wait_until("source1's TEEFLEET chains and tunnel device to go", WAIT, || async {
        let rules = lab.network.mangle_rules("source1").await?;
        let links = lab.network.exec("source1", "ip", &["-br", "link", "show"]).await?;
        Ok((!rules.contains("TEEFLEET") && !links.contains("tfvx")).then_some(()))
    })
    .await?;
    println!("\n== mangle table of source1 after delete");
    print_indented(&lab.network.mangle_rules("source1").await?);
    let devices = lab.network.exec("source1", "ip", &["-br", "link", "show", "type", "vxlan"]).await?;
    println!(
        "== tunnel devices on source1 after delete: {}",
        if devices.trim().is_empty() { "none" } else { &devices }
    );
    let before = tshark_fields(pcap.path(), ECHOES, &TSHARK_COLUMNS).await?.len();
    lab.network.ping(CLIENT, source1, 3).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = tshark_fields(&pcap.finish().await, ECHOES, &TSHARK_COLUMNS).await?.len();
    println!("== client pings source1 again: {} clones reach collector-b", after - before);
    let me = std::env::current_exe().map_or_else(|_| "teefleet-lab".to_owned(), |p| p.display().to_string());
    println!("\n== next: keep a lab running and try fleetctl yourself: {me} up");
    Ok(())
}

/// The pings' clones inside VXLAN, in either family.
const ECHOES: &str = "vxlan && (icmp.type == 0 || icmp.type == 8 || icmpv6.type == 128 || icmpv6.type == 129)";
/// tshark's fields for the demo's table: outer and inner IPv4 come comma-separated.
const TSHARK_COLUMNS: [&str; 6] = ["vxlan.vni", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "_ws.col.Info"];

/// The first of tshark's comma-separated occurrences: the outer header's.
fn first(field: &str) -> &str {
    field.split(',').next().unwrap_or_default()
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

fn print_indented(text: &str) {
    for line in text.lines() {
        if line.is_empty() {
            println!();
        } else {
            println!("   {line}");
        }
    }
}
