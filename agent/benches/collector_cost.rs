//! What one collector pays for counting arrivals (issue 15 §1); see `BENCHMARKS.md`
//! ("Collector arrival counting") for how to run it and what the numbers mean. Needs root:
//! it works in network namespaces of its own.
//!
//! A collector's set holds one arrival per session and source host; here every source
//! is a distinct host with a distinct address, 1 000 per session (a session's limit), each
//! session with its own VNI, host ids shaped like EC2's. Four parts, side by side:
//! 1. Inside a namespace (the bench runs itself again there, as `apply.rs` does), for 100,
//!    1 000 and 10 000 arrivals, with the nft and the legacy backend: the agent's apply
//!    from nothing (`IptablesDataplane::apply`), an apply that adds one arrival, a drift
//!    check that reads (what every check costs without the nf_tables shortcut), and its
//!    parts: one `iptables-save -c` and the agent's parsing and summing of it. Then, with
//!    the host's default backend, a real `Agent` restores the set from its state file, runs
//!    one check and builds its Health report: time to build, encoded size (as the agent
//!    reports zero counters, and with counters of a long-running collector), and how long
//!    the controller's decoding takes. Also the size of the push that carries the arrivals.
//! 2. The idle cost of the real `fleet-agent` (release unless `FLEET_AGENT_BIN` says
//!    otherwise) holding 0, 1 000 and 10 000 arrivals: RSS and CPU with its
//!    `iptables-save` children, default drift interval (5 s), both backends.
//! 3. What counting costs each packet: a sender namespace floods the collector namespace
//!    with VXLAN datagrams over a veth pair, from the address of the first arrival rule,
//!    of the last, and from an address no rule names, against no rules at all; packets per
//!    second received and kernel CPU per packet (`/proc/stat`, the whole machine).
//!
//! `cargo bench` passes `--bench`; without it (`cargo test --all-targets`) this runs a
//! smoke version (100 arrivals, one run, no idle measurement, 1 s floods) and skips without
//! root.
//!
//! Environment: `BENCH_RUNS` (per measurement, default 5), `BENCH_IDLE_SECS` (default 30),
//! `BENCH_FLOOD_SECS` (default 3), `FLEET_AGENT_BIN` (default `target/release/fleet-agent`).

#![allow(clippy::print_stdout)] // A benchmark's results are its output.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{IdleAgent, Mode, Netns, Stats, agent_binary, count_ours, env_number, ms, root_or_skip, run, run_in};
use prost::Message as _;
use teefleet_agent::firewall::render::{CONTROL_COMMENT, GATE_COMMENT};
use teefleet_agent::firewall::{Observed, Variant, tunnel};
use teefleet_agent::{Agent, Dataplane, Iptables, IptablesDataplane, StateStore};
use teefleet_model::report::{ArrivalCounters, Arrived};
use teefleet_model::{Arrival, HostId, RuleSet, SessionName, Vni, limits};
use teefleet_proto::v1 as pb;
use tokio::process::Command;

const SIZES: [usize; 3] = [100, 1_000, 10_000];
const SMOKE_SIZES: [usize; 1] = [100];
const IDLE_SIZES: [usize; 3] = [0, 1_000, 10_000];
const FLOOD_SIZES: [usize; 2] = [1_000, 10_000];
/// The collector's address in every namespace of this bench (`common::LOCAL_ADDR`).
const COLLECTOR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const SENDER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// A sender address no arrival names.
const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 98, 7, 7);
/// The largest message the controller accepts on an agent stream: a larger Health closes
/// the stream.
const MAX_AGENT_MESSAGE: usize = teefleet_proto::MAX_AGENT_MESSAGE;
/// Counters of a collector that has been receiving for a while: what their varints cost.
const LONG_RUN_PACKETS: u64 = 3_000_000_000;
const LONG_RUN_BYTES: u64 = 2_500_000_000_000;

/// The binaries of one iptables backend, named so the bench measures the backend it says.
#[derive(Debug, Clone, Copy)]
struct Backend {
    name: &'static str,
    variant: Variant,
    save: &'static str,
}

const BACKENDS: [Backend; 2] = [
    Backend { name: "nft", variant: Variant::Nft, save: "iptables-nft-save" },
    Backend { name: "legacy", variant: Variant::Legacy, save: "iptables-legacy-save" },
];

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = Mode::from_args();
    if let Some(i) = args.iter().position(|a| a == "--flood") {
        return flood_child(&args[i + 1..]);
    }
    if args.iter().any(|a| a == "--inside") {
        return inside(mode).await;
    }
    if !root_or_skip("collector_cost", mode)? {
        return Ok(());
    }
    tokio::select! {
        result = outer(mode) => result,
        // The namespaces are removed by their guards when `outer` is dropped here.
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

async fn outer(mode: Mode) -> Result<()> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    println!(
        "collector_cost bench: {} cores, kernel {}, {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        run("uname", &["-r"]).await?.trim(),
        run("iptables", &["--version"]).await?.trim()
    );
    {
        let netns = Netns::create(&format!("tf-collector-{}", std::process::id())).await?;
        let mut inner = Command::new("ip");
        inner.args(["netns", "exec", &netns.name]).arg(&exe).arg("--inside");
        if mode == Mode::Full {
            inner.arg("--bench");
        }
        let status = inner.kill_on_drop(true).status().await.context("running the bench inside its namespace")?;
        ensure!(status.success(), "the bench inside the namespace failed ({status})");
    }
    if mode == Mode::Full {
        idle(&exe).await?;
    }
    packet_cost(&exe, mode).await
}

/// Host ids shaped like EC2's (`i-` and 17 hex digits), spread like real ones.
fn host_id(i: usize) -> Result<HostId> {
    let mixed = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 4;
    format!("i-0{mixed:016x}").parse().context("host id")
}

fn session_name(s: usize) -> Result<SessionName> {
    format!("ids-prod-tier-{s:02}").parse().context("session name")
}

/// The address of source `i`: 10.100.0.0 onwards.
fn source_addr(i: usize) -> Ipv4Addr {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + i)
}

/// `n` VXLAN arrivals: sessions of [`limits::MAX_SOURCES`] sources each, VNI 1000 + the
/// session's index, every source a distinct host with a distinct address.
fn arrivals(n: usize) -> Result<Vec<Arrival>> {
    (0..n)
        .map(|i| {
            let s = i / limits::MAX_SOURCES;
            let vni = Vni::new(1_000 + s as u32).context("vni")?;
            Ok(Arrival::new(session_name(s)?, host_id(i)?, IpAddr::V4(source_addr(i)), Some(vni)))
        })
        .collect()
}

/// A VXLAN collector's set counting `n` arrivals.
fn collector_set(n: usize, version: u64) -> Result<RuleSet> {
    let set = RuleSet::new(version, vec![])?.with_collector(true).with_arrivals(arrivals(n)?)?;
    ensure!(set.arrivals().len() == n, "the generated arrivals are not distinct");
    Ok(set)
}

/// Part 1, inside the bench namespace.
async fn inside(mode: Mode) -> Result<()> {
    let (runs, sizes): (usize, &[usize]) = match mode {
        Mode::Full => (env_number("BENCH_RUNS", 5)?.max(1) as usize, &SIZES),
        Mode::Smoke => (1, &SMOKE_SIZES),
    };
    for backend in BACKENDS {
        if let Err(e) = run(backend.save, &["--version"]).await {
            println!("backend {}: skipped ({e:#})", backend.name);
            continue;
        }
        let dp = IptablesDataplane::new(Iptables::host().with_variant(backend.variant)).await;
        let mut rows = Vec::new();
        for &n in sizes {
            rows.push(apply_row(&dp, backend, n, runs).await?);
        }
        println!();
        println!("{} backend, {runs} runs per size (median, min-max), ms:", backend.name);
        print_apply_table(&rows);
    }
    println!();
    println!("Health report of a collector (default backend), {runs} builds per size:");
    println!(
        "{:>9} | {:>13} | {:>20} | {:>22} | {:>16} | {:>18}",
        "arrivals",
        "build ms",
        "bytes, zero counters",
        "bytes, long-run counters",
        "controller decode ms",
        "push RuleSet bytes"
    );
    for &n in sizes {
        health_row(n, runs).await?;
    }
    // The most arrivals one collector can be given, without a kernel: does it fit?
    let most = limits::MAX_ARRIVALS;
    let bytes = health_message(&long_run_counters(most)?).encoded_len();
    println!(
        "at the limit of {most} arrivals per collector: {bytes} bytes with long-run counters ({:.0} % of the controller's \
         {} KiB limit for an agent message)",
        bytes as f64 / MAX_AGENT_MESSAGE as f64 * 100.0,
        MAX_AGENT_MESSAGE / 1024
    );
    Ok(())
}

struct ApplyRow {
    arrivals: usize,
    apply: Stats,
    add_one: Stats,
    check: Stats,
    save: Stats,
    parse: Stats,
}

/// One size: applies from nothing, applies adding one arrival, checks, and the parts of a
/// check. Leaves nothing of ours behind.
async fn apply_row(dp: &IptablesDataplane, backend: Backend, n: usize, runs: usize) -> Result<ApplyRow> {
    let empty = RuleSet::default();
    let set = collector_set(n, 1)?;
    let bigger = collector_set(n + 1, 2)?;
    let (mut apply, mut add_one, mut check, mut save, mut parse) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        dp.apply(&empty).await.context("removing our rules between runs")?;
        let started = Instant::now();
        dp.apply(&set).await.with_context(|| format!("applying {n} arrivals"))?;
        apply.push(started.elapsed());
        let text = run(backend.save, &["-c", "-t", "mangle"]).await?;
        let (rules, control) = count_ours(&text, CONTROL_COMMENT);
        let gate = count_ours(&text, GATE_COMMENT).1;
        let counting = rules - control - gate;
        ensure!(
            counting == n && gate == 2,
            "applied {n} arrivals but the kernel holds {counting} rules and {gate} gates"
        );

        // A drift check that reads (the dataplane reuses no counters), and its parts.
        let started = Instant::now();
        let result = dp.check().await.context("drift check")?;
        check.push(started.elapsed());
        ensure!(result.repairs.is_empty() && result.arrivals.len() == n, "the check saw {result:?}");
        let started = Instant::now();
        let text = run(backend.save, &["-c", "-t", "mangle"]).await?;
        save.push(started.elapsed());
        let started = Instant::now();
        let tallies = Observed::parse(&text)?.tallies();
        parse.push(started.elapsed());
        ensure!(tallies.len() == n, "parsed {} owners instead of {n}", tallies.len());

        let started = Instant::now();
        dp.apply(&bigger).await.context("adding one arrival")?;
        add_one.push(started.elapsed());
    }
    dp.apply(&empty).await?;
    println!("  {} backend: measured {n} arrivals", backend.name);
    Ok(ApplyRow {
        arrivals: n,
        apply: Stats::of(apply),
        add_one: Stats::of(add_one),
        check: Stats::of(check),
        save: Stats::of(save),
        parse: Stats::of(parse),
    })
}

fn print_apply_table(rows: &[ApplyRow]) {
    let cell = |s: &Stats| format!("{:.1} ({:.1}-{:.1})", ms(s.median), ms(s.min), ms(s.max));
    println!(
        "{:>9} | {:>22} | {:>22} | {:>22} | {:>22} | {:>22} | {:>12}",
        "arrivals",
        "apply from nothing",
        "apply adding one",
        "drift check (reads)",
        "iptables-save -c",
        "parse + sum",
        "check per 1k"
    );
    for row in rows {
        println!(
            "{:>9} | {:>22} | {:>22} | {:>22} | {:>22} | {:>22} | {:>12.1}",
            row.arrivals,
            cell(&row.apply),
            cell(&row.add_one),
            cell(&row.check),
            cell(&row.save),
            cell(&row.parse),
            ms(row.check.median) / row.arrivals as f64 * 1_000.0
        );
    }
    // Side by side: how each grows from the smallest size measured to the largest.
    if let (Some(small), Some(large)) = (rows.first(), rows.last())
        && large.arrivals > small.arrivals
    {
        let growth =
            |f: fn(&ApplyRow) -> Duration| format!("{:.1}x", f(large).as_secs_f64() / f(small).as_secs_f64().max(1e-9));
        println!(
            "{:>9} | {:>22} | {:>22} | {:>22} | {:>22} | {:>22} |",
            format!("{}/{}", large.arrivals, small.arrivals),
            growth(|r| r.apply.median),
            growth(|r| r.add_one.median),
            growth(|r| r.check.median),
            growth(|r| r.save.median),
            growth(|r| r.parse.median),
        );
    }
}

/// A real agent restores a set of `n` arrivals from its state file, checks once and builds
/// its Health report.
async fn health_row(n: usize, runs: usize) -> Result<()> {
    let state = tempfile::Builder::new().prefix("teefleet-bench-").tempdir().context("creating the state dir")?;
    let set = collector_set(n, 1)?;
    StateStore::new(state.path()).save(&set).await?;
    let dp = IptablesDataplane::new(Iptables::host()).await;
    let mut agent = Agent::new(dp, StateStore::new(state.path()), Duration::from_secs(5));
    agent.restore().await;
    ensure!(agent.applied_version() == set.version(), "the agent did not restore the saved set");
    let check = agent.dataplane().check().await?;
    agent.status().record_check(Ok(&check));
    let mut builds = Vec::with_capacity(runs);
    let mut health = pb::Health::default();
    for _ in 0..runs {
        let started = Instant::now();
        health = agent.health();
        builds.push(started.elapsed());
    }
    ensure!(health.arrivals.len() == n, "the Health report holds {} arrivals, not {n}", health.arrivals.len());
    let zero = pb::AgentMessage { msg: Some(pb::agent_message::Msg::Health(health.clone())) }.encoded_len();
    for (i, a) in health.arrivals.iter_mut().enumerate() {
        a.packets = LONG_RUN_PACKETS + i as u64;
        a.bytes = LONG_RUN_BYTES + i as u64;
    }
    let long_run = pb::AgentMessage { msg: Some(pb::agent_message::Msg::Health(health.clone())) }.encoded_len();
    let mut decodes = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let (decoded, dropped) = teefleet_proto::arrivals(&health.arrivals);
        decodes.push(started.elapsed());
        ensure!(decoded.len() == n && dropped.is_empty(), "the controller kept {} of {n}", decoded.len());
    }
    let push = pb::ControllerMessage { msg: Some(pb::controller_message::Msg::RuleSet(pb::RuleSet::from(&set))) }
        .encoded_len();
    let (builds, decodes) = (Stats::of(builds), Stats::of(decodes));
    println!(
        "{n:>9} | {:>13} | {zero:>20} | {long_run:>24} | {:>20} | {push:>18}",
        format!("{:.2} ({:.2}-{:.2})", ms(builds.median), ms(builds.min), ms(builds.max)),
        format!("{:.2}", ms(decodes.median)),
    );
    agent.dataplane().apply(&RuleSet::default()).await?;
    Ok(())
}

/// `n` arrival counters as a long-running collector would report them.
fn long_run_counters(n: usize) -> Result<Vec<pb::ArrivalCounters>> {
    arrivals(n)?
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let arrived = Arrived { packets: LONG_RUN_PACKETS + i as u64, bytes: LONG_RUN_BYTES + i as u64 };
            let counters = ArrivalCounters { session: a.session().clone(), source: a.source().clone(), arrived };
            Ok(pb::ArrivalCounters::from(&counters))
        })
        .collect()
}

fn health_message(arrivals: &[pb::ArrivalCounters]) -> pb::AgentMessage {
    let health = pb::Health { arrivals: arrivals.to_vec(), ..pb::Health::default() };
    pb::AgentMessage { msg: Some(pb::agent_message::Msg::Health(health)) }
}

/// Part 2: the real agent holding 0, 1 000 and 10 000 arrivals, left alone.
async fn idle(bench_exe: &Path) -> Result<()> {
    let secs = env_number("BENCH_IDLE_SECS", 30)?;
    let Some(agent) = agent_binary(bench_exe) else {
        println!();
        println!(
            "idle: skipped (no release fleet-agent; run `cargo build --release -p teefleet-agent --bin fleet-agent`)"
        );
        return Ok(());
    };
    println!();
    println!(
        "idle fleet-agent ({}), controller unreachable, defaults (drift check every 5 s), {secs} s:",
        agent.display()
    );
    println!(
        "{:>7} | {:>9} | {:>15} | {:>17} | {:>19} | {:>15}",
        "backend", "arrivals", "start → applied", "RSS MB (max)", "CPU % with children", "CPU % agent alone"
    );
    for backend in BACKENDS {
        let mut baseline: Option<f64> = None;
        for n in IDLE_SIZES {
            let netns = Netns::create(&format!("tf-collector-{}-idle", std::process::id())).await?;
            let state = tempfile::Builder::new().prefix("teefleet-bench-").tempdir().context("state dir")?;
            StateStore::new(state.path()).save(&collector_set(n, 1)?).await?;
            let started = Instant::now();
            let mut child =
                IdleAgent::start(&agent, &netns.name, state.path(), &["--iptables-backend", backend.name]).await?;
            // The agent also keeps its own controller traffic out with a RETURN rule per
            // chain, once it has chains, and puts the two gate rules in front of the arrivals.
            let want = if n == 0 { (0, 0) } else { (n + 2 + 2, 2) };
            loop {
                child.ensure_running()?;
                let text = run_in(&netns.name, backend.save, &["-t", "mangle"]).await?;
                if count_ours(&text, CONTROL_COMMENT) == want {
                    break;
                }
                let log = child.log.display();
                ensure!(started.elapsed() < Duration::from_secs(120), "the agent did not restore the set; see {log}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let applied = started.elapsed();
            // Past the first checks after the restore.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let m = child.measure(secs).await?;
            child.stop().await;
            let vs = baseline.map(|b| format!(" ({:+.1} MB)", m.rss_max_mb - b)).unwrap_or_default();
            baseline.get_or_insert(m.rss_max_mb);
            println!(
                "{:>7} | {n:>9} | {:>13.1} s | {:>17} | {:>19.3} | {:>17.3}",
                backend.name,
                applied.as_secs_f64(),
                format!("{:.1} ({:.1}){vs}", m.rss_mb, m.rss_max_mb),
                m.total_pct,
                m.own_pct
            );
        }
    }
    Ok(())
}

/// Where a flood's packets come from, and so which rule counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// The collector holds no arrival rules at all (its device only).
    NoRules,
    /// From the first arrival rule's source, with its VNI.
    First,
    /// From the last one's.
    Last,
    /// From an address no rule names: every rule is looked at, none matches.
    Unknown,
    /// The collector's own traffic (UDP to another port): the gate returns it before the
    /// arrival rules.
    Own,
}

impl Position {
    fn label(self) -> &'static str {
        match self {
            Position::NoRules => "no rules",
            Position::First => "matches the first rule",
            Position::Last => "matches the last rule",
            Position::Unknown => "matches no rule",
            Position::Own => "not a clone (port 9999)",
        }
    }

    /// The UDP port the flood goes to.
    fn port(self) -> u16 {
        if self == Position::Own { OWN_PORT } else { tunnel::PORT }
    }
}

/// Where the collector's own traffic goes in the flood that stands for it.
const OWN_PORT: u16 = 9999;

/// Part 3: packets per second through the collector's chain.
async fn packet_cost(exe: &Path, mode: Mode) -> Result<()> {
    let (secs, sizes): (u64, &[usize]) = match mode {
        Mode::Full => (env_number("BENCH_FLOOD_SECS", 3)?.max(1), &FLOOD_SIZES),
        Mode::Smoke => (1, &SMOKE_SIZES),
    };
    let pid = std::process::id();
    let collector = Netns::create(&format!("tf-collector-{pid}-rx")).await?;
    let sender = Netns::bare(&format!("tf-collector-{pid}-tx")).await?;
    let (c, s) = (&collector.name, &sender.name);
    run("ip", &["-n", c, "link", "set", "bench1", "netns", s]).await?;
    run("ip", &["-n", s, "addr", "add", &format!("{SENDER}/16"), "dev", "bench1"]).await?;
    run("ip", &["-n", s, "link", "set", "bench1", "up"]).await?;
    // The sources' addresses are on the sender's side.
    run("ip", &["-n", c, "route", "add", "10.96.0.0/12", "via", &SENDER.to_string()]).await?;
    // The sender holds the address of every rule it sends as, and one no rule names.
    let sets = sizes.iter().map(|&n| collector_set(n, 2)).collect::<Result<Vec<_>>>()?;
    let ends = sets.iter().flat_map(|set| [set.arrivals().first(), set.arrivals().last()]).flatten();
    let addrs: BTreeSet<IpAddr> = ends.map(Arrival::from).chain([IpAddr::V4(STRANGER)]).collect();
    for addr in addrs {
        run("ip", &["-n", s, "addr", "add", &format!("{addr}/32"), "dev", "bench1"]).await?;
    }
    println!();
    println!(
        "packet cost: VXLAN datagrams (100-byte IP packets) from one sender over a veth pair, {secs} s per run, \
         one run each"
    );
    println!(
        "{:>7} | {:>9} | {:>23} | {:>12} | {:>10} | {:>15} | {:>12}",
        "backend", "arrivals", "packets", "received/s", "vs none", "kernel ns/pkt", "counted"
    );
    for backend in BACKENDS {
        let dp = IptablesDataplane::new(Iptables::in_netns(c).with_variant(backend.variant)).await;
        let mut version = 1;
        dp.apply(&collector_set(0, version)?).await?;
        let none = flood(exe, &collector, &sender, Position::NoRules, STRANGER, 1_000, secs).await?;
        print_flood(backend, 0, Position::NoRules, &none, &none, None);
        for &n in sizes {
            version += 1;
            let set = collector_set(n, version)?;
            dp.apply(&set).await?;
            let ordered = set.arrivals();
            for position in [Position::First, Position::Last, Position::Unknown, Position::Own] {
                let (arrival, from) = match position {
                    Position::First => (Some(&ordered[0]), ordered[0].from()),
                    Position::Last => (ordered.last(), ordered[n - 1].from()),
                    _ => (None, IpAddr::V4(STRANGER)),
                };
                let IpAddr::V4(from) = from else { bail!("an IPv6 source") };
                let vni = arrival.and_then(Arrival::vni).map_or(1, Vni::get);
                let before = counted(&dp, arrival).await?;
                let result = flood(exe, &collector, &sender, position, from, vni, secs).await?;
                let counted = counted(&dp, arrival).await?.map(|after| after - before.unwrap_or(0));
                print_flood(backend, n, position, &result, &none, counted);
            }
        }
        dp.apply(&RuleSet::default()).await?;
    }
    Ok(())
}

/// The packets the kernel counted for `arrival` so far (through a drift check).
async fn counted(dp: &IptablesDataplane, arrival: Option<&Arrival>) -> Result<Option<u64>> {
    let Some(arrival) = arrival else { return Ok(None) };
    let check = dp.check().await?;
    Ok(check.arrivals.get(&(arrival.session().clone(), arrival.source().clone())).map(|c| c.packets))
}

struct Flood {
    sent: u64,
    received: u64,
    secs: f64,
    /// Kernel CPU (system + irq + softirq) of the whole machine during the flood, seconds.
    kernel: f64,
}

async fn flood(
    exe: &Path,
    collector: &Netns,
    sender: &Netns,
    position: Position,
    from: Ipv4Addr,
    vni: u32,
    secs: u64,
) -> Result<Flood> {
    let received_before = rx_packets(&collector.name).await?;
    let cpu_before = kernel_seconds()?;
    let started = Instant::now();
    let args = [&from.to_string(), &COLLECTOR.to_string(), &vni.to_string(), &secs.to_string()];
    let (exe, port) = (exe.to_str().context("bench path")?, position.port().to_string());
    let flood = ["netns", "exec", &sender.name, exe, "--flood", args[0], args[1], args[2], args[3], &port];
    let out = run("ip", &flood).await.with_context(|| format!("flooding ({})", position.label()))?;
    let elapsed = started.elapsed().as_secs_f64();
    let kernel = kernel_seconds()? - cpu_before;
    // Packets still queued reach the collector within a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let received = rx_packets(&collector.name).await? - received_before;
    let sent = out.trim().parse().context("the flood's count")?;
    Ok(Flood { sent, received, secs: elapsed, kernel })
}

fn print_flood(backend: Backend, n: usize, position: Position, f: &Flood, none: &Flood, counted: Option<u64>) {
    let rate = |f: &Flood| f.received as f64 / f.secs;
    println!(
        "{:>7} | {n:>9} | {:>23} | {:>12.0} | {:>9.0}% | {:>15.0} | {:>12}",
        backend.name,
        position.label(),
        rate(f),
        rate(f) / rate(none) * 100.0,
        f.kernel * 1e9 / f.received.max(1) as f64,
        counted.map_or("-".to_owned(), |c| format!("{c} of {}", f.received)),
    );
    if f.sent > f.received + f.received / 100 {
        println!("          ({} sent, {} received)", f.sent, f.received);
    }
}

/// Packets the collector's veth received.
async fn rx_packets(netns: &str) -> Result<u64> {
    let text = run("ip", &["-n", netns, "-s", "-j", "link", "show", "dev", "bench0"]).await?;
    let json: serde_json::Value = serde_json::from_str(&text).context("ip -s -j link output")?;
    json[0]["stats64"]["rx"]["packets"].as_u64().context("no rx packets in ip -s -j link")
}

/// The machine's kernel CPU time (system + irq + softirq) from `/proc/stat`, seconds.
fn kernel_seconds() -> Result<f64> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text.lines().next().context("empty /proc/stat")?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq; USER_HZ is 100 on Linux.
    Ok((field(2) + field(5) + field(6)) as f64 / 100.0)
}

/// Runs in the sender's namespace: sends VXLAN datagrams of `VNI` from `FROM` to `TO`
/// for `SECS` seconds as fast as one thread can, and prints how many went out.
fn flood_child(args: &[String]) -> Result<()> {
    let [from, to, vni, secs, port, ..] = args else { bail!("--flood FROM TO VNI SECS PORT") };
    let (from, to): (Ipv4Addr, Ipv4Addr) = (from.parse()?, to.parse()?);
    let (vni, secs, port): (u32, u64, u16) = (vni.parse()?, secs.parse()?, port.parse()?);
    let socket = UdpSocket::bind((from, 0)).context("binding the sender")?;
    socket.connect((to, port)).context("connecting the sender")?;
    // VXLAN header (flags, VNI), then an inner Ethernet frame to a MAC nobody has, so the
    // collector's stack drops it after decapsulation, as it does real clones.
    let mut datagram = vec![0x08, 0, 0, 0, (vni >> 16) as u8, (vni >> 8) as u8, vni as u8, 0];
    datagram.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    datagram.resize(72, 0);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0u64;
    while Instant::now() < deadline {
        for _ in 0..256 {
            // A full queue refuses a datagram now and then; the count says what went out.
            if socket.send(&datagram).is_ok() {
                sent += 1;
            }
        }
    }
    println!("{sent}");
    Ok(())
}
