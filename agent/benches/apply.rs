//! The apply benchmark of issue 3 ("Performance"); see `BENCHMARKS.md` for how to run it
//! and what the numbers mean. Needs root: it works in network namespaces of its own.
//!
//! The outer process creates a namespace, then runs itself again inside it (`ip netns exec
//! NS <this binary> --inside`), so that both the agent and the manual recipe call iptables
//! the way they do on a real host: directly, without `ip netns exec` in front of every
//! command. Inside, it measures for 1, 100, 1 000 and 5 000 rules, once with the nft
//! backend's binaries (`iptables-nft*`) and once with the legacy ones (`iptables-legacy*`):
//! - the agent's apply path (`IptablesDataplane::apply`, which writes one
//!   `iptables-restore` transaction and reads it back), from a state without our rules;
//! - the same through `Iptables::in_netns`, i.e. with `ip netns exec` in front of every
//!   iptables command, as the agent's integration tests run it;
//! - the manual recipe: one `iptables -t mangle -A` process per rule;
//! - how many writes a second apply of the same set makes.
//!
//! The outer process then measures the idle cost of the release `fleet-agent`: RSS and CPU
//! while it holds a 1 000-rule set and runs its drift checks with no controller reachable.
//!
//! `cargo bench` passes `--bench`; without it (`cargo test --all-targets`) this runs a
//! smoke version (1 and 100 rules, one run, no idle measurement) so tests stay fast.
//!
//! Environment: `BENCH_RUNS` (agent applies per size, default 5), `BENCH_IDLE_SECS`
//! (default 60), `BENCH_MANUAL_MAX_SECS` (run the manual recipe at 5 000 rules only if it
//! is projected to take less, default 120), `FLEET_AGENT_BIN` (default
//! `target/release/fleet-agent`).

#![allow(clippy::print_stdout)] // A benchmark's results are its output.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{
    IdleAgent, Mode, Netns, Stats, agent_binary, count_ours, env_number, ms, root_or_skip, run, run_in, run_with_input,
    verdict,
};
use teefleet_agent::firewall::render::{CONTROL_COMMENT, render_rule, render_rules};
use teefleet_agent::firewall::{Family, Variant};
use teefleet_agent::{Dataplane, Iptables, IptablesDataplane, StateStore};
use teefleet_model::{Cidr, MirrorRule, PortRange, Protocol, RuleDirection, RuleSet, SessionName};
use tokio::process::Command;

const SIZES: [usize; 4] = [1, 100, 1_000, 5_000];
const SMOKE_SIZES: [usize; 2] = [1, 100];
/// The collector every rule mirrors to: on the namespace's subnet, as on a real host.
const GATEWAY: &str = "10.99.0.2";
/// Targets from the issue, printed next to the measurements (not asserted).
const TARGET_APPLY_MS: f64 = 50.0;
const TARGET_RATIO: f64 = 50.0;
const TARGET_RSS_MB: f64 = 15.0;
const TARGET_CPU_PCT: f64 = 0.5;

/// The binaries of one iptables backend, named explicitly so the bench measures the backend
/// it says whatever the host's alternatives point `iptables` at.
#[derive(Debug, Clone, Copy)]
struct Backend {
    name: &'static str,
    variant: Variant,
    iptables: &'static str,
    restore: &'static str,
    save: &'static str,
}

const BACKENDS: [Backend; 2] = [
    Backend {
        name: "nft",
        variant: Variant::Nft,
        iptables: "iptables-nft",
        restore: "iptables-nft-restore",
        save: "iptables-nft-save",
    },
    Backend {
        name: "legacy",
        variant: Variant::Legacy,
        iptables: "iptables-legacy",
        restore: "iptables-legacy-restore",
        save: "iptables-legacy-save",
    },
];

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = Mode::from_args();
    if let Some(i) = args.iter().position(|a| a == "--inside") {
        let netns = args.get(i + 1).context("--inside needs the namespace name")?;
        return inside(netns, mode).await;
    }
    if !root_or_skip("apply", mode)? {
        return Ok(());
    }
    tokio::select! {
        result = outer(mode) => result,
        // The namespaces are removed by their guards when `outer` is dropped here.
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

async fn outer(mode: Mode) -> Result<()> {
    let netns = Netns::create(&format!("teefleet-bench-{}", std::process::id())).await?;
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let mut inner = Command::new("ip");
    inner.args(["netns", "exec", &netns.name]).arg(&exe).args(["--inside", &netns.name]);
    if mode == Mode::Full {
        inner.arg("--bench");
    }
    let status = inner.kill_on_drop(true).status().await.context("running the bench inside its namespace")?;
    ensure!(status.success(), "the bench inside the namespace failed ({status})");
    drop(netns);
    if mode == Mode::Full {
        idle(&exe).await?;
    }
    Ok(())
}

/// Runs inside the bench namespace.
async fn inside(netns: &str, mode: Mode) -> Result<()> {
    let runs = match mode {
        Mode::Full => env_number("BENCH_RUNS", 5)?.max(1) as usize,
        Mode::Smoke => 1,
    };
    println!("apply bench: {runs} runs per size, namespace {netns}");
    for backend in BACKENDS {
        println!();
        match run(backend.iptables, &["--version"]).await {
            Ok(version) => println!("backend {}: {}", backend.name, version.trim()),
            Err(e) => {
                println!("backend {}: skipped ({e:#})", backend.name);
                continue;
            }
        }
        sizes_table(netns, mode, runs, backend).await?;
    }
    no_change_push(mode).await
}

/// The table of apply times by size for one backend.
async fn sizes_table(netns: &str, mode: Mode, runs: usize, backend: Backend) -> Result<()> {
    let sizes: &[usize] = if mode == Mode::Full { &SIZES } else { &SMOKE_SIZES };
    let manual_max = Duration::from_secs(env_number("BENCH_MANUAL_MAX_SECS", 120)?);
    let host = IptablesDataplane::new(Iptables::host().with_variant(backend.variant)).await;
    let via_exec = IptablesDataplane::new(Iptables::in_netns(netns).with_variant(backend.variant)).await;
    let empty = RuleSet::default();
    let mut rows = Vec::new();
    let mut manual_times: Vec<(usize, Duration)> = Vec::new();
    for &n in sizes {
        let set = rule_set(n, 1)?;
        let agent = time_applies(&host, &set, &empty, runs, backend).await?;
        let (restore, read) = time_parts(&set, runs, backend).await?;
        let exec = time_applies(&via_exec, &set, &empty, runs, backend).await?;
        let manual = match projected_manual(&manual_times, n) {
            Some(projected) if projected > manual_max => Manual::Skipped(projected),
            _ => {
                let t = manual_recipe(&set, backend).await?;
                manual_times.push((n, t));
                Manual::Ran(t)
            }
        };
        rows.push(Row { rules: n, agent, restore, read, exec, manual });
        // Print as we go: the manual recipe at large sizes takes a while.
        println!("  measured {n} rules");
    }
    println!();
    print_table(&rows);
    Ok(())
}

/// A push that changes nothing: the same rules again, then at a new version (what the
/// controller sends when a recompile yields the same rules). With the host's default
/// backend, as the agent runs by default.
async fn no_change_push(mode: Mode) -> Result<()> {
    let host = IptablesDataplane::new(Iptables::host()).await;
    let empty = RuleSet::default();
    let n = if mode == Mode::Full { 1_000 } else { 100 };
    let set = rule_set(n, 1)?;
    host.apply(&empty).await?;
    host.apply(&set).await?;
    let (before, reads_before) = (host.writes(), host.reads());
    let started = Instant::now();
    host.apply(&set).await?;
    let same = started.elapsed();
    let (same_writes, same_reads) = (host.writes() - before, host.reads() - reads_before);
    let before = host.writes();
    host.apply(&rule_set(n, 2)?).await?;
    let bumped_writes = host.writes() - before;
    host.apply(&empty).await?;
    println!();
    println!("no-change push ({n} rules already applied, default backend, target: 0 writes):");
    println!(
        "  same set again:                 {same_writes} iptables-restore writes, {same_reads} iptables-save reads, {:.1} ms",
        ms(same)
    );
    println!("  same rules at a higher version: {bumped_writes} iptables-restore writes");
    Ok(())
}

struct Row {
    rules: usize,
    agent: Stats,
    restore: Stats,
    read: Stats,
    exec: Stats,
    manual: Manual,
}

enum Manual {
    Ran(Duration),
    /// Not run: projected to take longer than `BENCH_MANUAL_MAX_SECS`.
    Skipped(Duration),
}

/// Applies `set` `runs` times, each from a state without our rules (reached by applying
/// the empty set, untimed), and checks every time that the kernel holds all the rules.
async fn time_applies(
    dataplane: &IptablesDataplane,
    set: &RuleSet,
    empty: &RuleSet,
    runs: usize,
    backend: Backend,
) -> Result<Stats> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        dataplane.apply(empty).await.context("removing our rules between runs")?;
        ensure!(count_our_rules(backend).await? == 0, "our rules are still there after applying the empty set");
        let started = Instant::now();
        dataplane.apply(set).await.with_context(|| format!("applying {} rules", set.rules().len()))?;
        samples.push(started.elapsed());
        let n = count_our_rules(backend).await?;
        ensure!(n == set.rules().len(), "applied {} rules but the kernel holds {n}", set.rules().len());
    }
    dataplane.apply(empty).await?;
    Ok(Stats::of(samples))
}

/// The two parts an apply is made of, timed on their own with the rules the agent renders:
/// one `iptables-restore --noflush` transaction writing the chains and all rules into an
/// empty table, and one `iptables-save -t mangle` reading them back (the agent reads once
/// before writing and once after, and once per drift check). Medians of `runs`.
async fn time_parts(set: &RuleSet, runs: usize, backend: Backend) -> Result<(Stats, Stats)> {
    let mut input = String::from("*mangle\n:TEEFLEET-PRE - [0:0]\n:TEEFLEET-POST - [0:0]\n");
    for line in render_rules(set, Family::V4) {
        input.push_str(&line);
        input.push('\n');
    }
    input.push_str("COMMIT\n");
    let (mut restores, mut reads) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        run_with_input(backend.restore, &["-w", "5", "--noflush"], &input).await?;
        restores.push(started.elapsed());
        let started = Instant::now();
        let text = run(backend.save, &["-t", "mangle"]).await?;
        reads.push(started.elapsed());
        let n = text.lines().filter(|l| l.starts_with("-A TEEFLEET-")).count();
        ensure!(n == set.rules().len(), "restored {} rules but read back {n}", set.rules().len());
        remove_chains(backend).await?;
    }
    Ok((Stats::of(restores), Stats::of(reads)))
}

async fn remove_chains(backend: Backend) -> Result<()> {
    for chain in ["TEEFLEET-PRE", "TEEFLEET-POST"] {
        run(backend.iptables, &["-w", "-t", "mangle", "-F", chain]).await?;
        run(backend.iptables, &["-w", "-t", "mangle", "-X", chain]).await?;
    }
    Ok(())
}

/// The manual recipe: create the chains, then one `iptables -A` process per rule with the
/// text the agent renders. Returns the time of the appends (the chains are created first,
/// untimed); removes everything afterwards.
async fn manual_recipe(set: &RuleSet, backend: Backend) -> Result<Duration> {
    let lines: Vec<Vec<String>> = set.rules().iter().map(|r| split_args(&render_rule(r, Family::V4))).collect();
    for chain in ["TEEFLEET-PRE", "TEEFLEET-POST"] {
        run(backend.iptables, &["-w", "-t", "mangle", "-N", chain]).await?;
    }
    let started = Instant::now();
    for argv in &lines {
        let mut args = vec!["-w", "-t", "mangle"];
        args.extend(argv.iter().map(String::as_str));
        run(backend.iptables, &args).await?;
    }
    let elapsed = started.elapsed();
    let n = count_our_rules(backend).await?;
    ensure!(n == set.rules().len(), "the manual recipe left {n} rules instead of {}", set.rules().len());
    remove_chains(backend).await?;
    Ok(elapsed)
}

/// How long the manual recipe would take for `n` rules, from the sizes measured so far.
/// Every `iptables` process reads the whole table (and legacy writes it back), so the cost
/// per rule grows with the chain: a mean per-rule cost `a + b·n/2` is fitted to the last
/// two measurements. `None` until two sizes are known.
fn projected_manual(measured: &[(usize, Duration)], n: usize) -> Option<Duration> {
    let [.., (n1, t1), (n2, t2)] = measured else {
        return None;
    };
    let (n1, n2) = (*n1 as f64, *n2 as f64);
    let (c1, c2) = (t1.as_secs_f64() / n1, t2.as_secs_f64() / n2);
    let half_b = ((c2 - c1) / (n2 - n1)).max(0.0);
    let a = (c1 - half_b * n1).max(0.0);
    let n = n as f64;
    Some(Duration::from_secs_f64(n * (a + half_b * n)))
}

/// `n` rules with distinct /32 peers and ports, half ingress and half egress, all to
/// [`GATEWAY`].
fn rule_set(n: usize, version: u64) -> Result<RuleSet> {
    let gateway = GATEWAY.parse().context("gateway")?;
    let session: SessionName = "bench".parse().context("session name")?;
    let rules = (0..n)
        .map(|i| {
            let direction = if i % 2 == 0 { RuleDirection::Ingress } else { RuleDirection::Egress };
            let port = 1_024 + (i % 60_000) as u32;
            let peer: Cidr = format!("10.{}.{}.{}/32", 100 + i / 65_536, (i / 256) % 256, i % 256).parse()?;
            MirrorRule::new(
                session.clone(),
                direction,
                gateway,
                Protocol::Tcp,
                Some(PortRange::new(port, port)?),
                Some(peer),
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .context("building the rules")?;
    let set = RuleSet::new(version, rules).context("building the rule set")?;
    ensure!(set.rules().len() == n, "the generated rules are not distinct");
    Ok(set)
}

/// Splits a rendered rule into argv the way a shell would, for the manual recipe: the only
/// quoting the renderer produces is a double-quoted comment without spaces or escapes.
fn split_args(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    args.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        args.push(current);
    }
    args
}

async fn count_our_rules(backend: Backend) -> Result<usize> {
    let text = run(backend.save, &["-t", "mangle"]).await?;
    Ok(text.lines().filter(|l| l.starts_with("-A TEEFLEET-")).count())
}

fn print_table(rows: &[Row]) {
    let median = |s: &Stats| format!("{:.1}", ms(s.median));
    let header =
        ["rules", "agent apply", "(min-max)", "restore", "save", "agent, netns exec", "1 process/rule", "ratio"];
    let widths = [6, 11, 13, 8, 7, 17, 30, 6];
    let line = |cells: &[String]| {
        let cells: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:>w$}")).collect();
        println!("{}", cells.join(" | "));
    };
    line(&header.map(str::to_owned));
    line(&["", "median ms", "ms", "ms", "ms", "median ms", "ms", ""].map(str::to_owned));
    println!("{}", "-".repeat(widths.iter().sum::<usize>() + 3 * (widths.len() - 1)));
    for row in rows {
        let (manual, ratio) = match row.manual {
            Manual::Ran(t) => (format!("{:.0}", ms(t)), ratio(t, row.agent.median)),
            Manual::Skipped(p) => (format!("skipped (too slow, ~{:.0} s)", p.as_secs_f64()), "-".to_owned()),
        };
        line(&[
            row.rules.to_string(),
            median(&row.agent),
            format!("{:.1}-{:.1}", ms(row.agent.min), ms(row.agent.max)),
            median(&row.restore),
            median(&row.read),
            median(&row.exec),
            manual,
            ratio,
        ]);
    }
    if let Some(row) = rows.iter().find(|r| r.rules == 1_000) {
        let apply = ms(row.agent.median);
        println!();
        println!(
            "target: 1 000 rules applied and verified < {TARGET_APPLY_MS:.0} ms: measured {apply:.1} ms ({})",
            verdict(apply < TARGET_APPLY_MS)
        );
        if let Manual::Ran(t) = row.manual {
            let times = t.as_secs_f64() / row.agent.median.as_secs_f64();
            println!(
                "target: >= {TARGET_RATIO:.0}x faster than one process per rule at 1 000: measured {} ({})",
                ratio(t, row.agent.median),
                verdict(times >= TARGET_RATIO)
            );
        }
    }
}

/// How many times faster the agent was, with a decimal where it matters.
fn ratio(manual: Duration, agent: Duration) -> String {
    let times = manual.as_secs_f64() / agent.as_secs_f64();
    if times < 10.0 { format!("{times:.1}x") } else { format!("{times:.0}x") }
}

/// The idle cost of the release agent: started in a fresh namespace with a saved 1 000-rule
/// set and an unreachable controller, so all it does is restore the set, retry the
/// controller and check for drift.
async fn idle(bench_exe: &Path) -> Result<()> {
    let secs = env_number("BENCH_IDLE_SECS", 60)?;
    let Some(agent) = agent_binary(bench_exe) else {
        println!();
        println!(
            "idle: skipped (no release fleet-agent; run `cargo build --release -p teefleet-agent --bin fleet-agent`)"
        );
        return Ok(());
    };
    let netns = Netns::create(&format!("teefleet-bench-{}-idle", std::process::id())).await?;
    let state = tempfile::Builder::new().prefix("teefleet-bench-").tempdir().context("creating the state dir")?;
    StateStore::new(state.path()).save(&rule_set(1_000, 1)?).await.context("writing the saved rule set")?;
    let mut child = IdleAgent::start(&agent, &netns.name, state.path(), &[]).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    child.ensure_running()?;
    let installed = run_in(&netns.name, "iptables-save", &["-t", "mangle"]).await?;
    // Besides the set's rules, the agent keeps its own controller traffic out of the
    // mirror with a RETURN rule per chain.
    let (all, control) = count_ours(&installed, CONTROL_COMMENT);
    let rules = all - control;
    ensure!(
        (rules, control) == (1_000, 2),
        "the agent restored {rules} rules and {control} control rules instead of 1000 and 2; see {}",
        child.log.display()
    );

    let idle = child.measure(secs).await?;
    child.stop().await;
    let (rss_mb, own, with_children) = (idle.rss_mb, idle.own_pct, idle.total_pct);
    println!();
    println!("idle fleet-agent ({}), 1 000 rules applied, controller unreachable, {secs} s:", agent.display());
    println!(
        "  RSS {rss_mb:.1} MB at the end, {:.1} MB max (target < {TARGET_RSS_MB:.0} MB: {})",
        idle.rss_max_mb,
        verdict(idle.rss_max_mb < TARGET_RSS_MB)
    );
    println!(
        "  CPU {with_children:.3} % of one core including its iptables-save children, {own:.3} % the agent alone \
         (target < {TARGET_CPU_PCT} %: {})",
        verdict(with_children < TARGET_CPU_PCT)
    );
    Ok(())
}
