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

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use teefleet_agent::firewall::render::{CONTROL_COMMENT, render_rule, render_rules};
use teefleet_agent::firewall::{Family, Variant};
use teefleet_agent::{Dataplane, Iptables, IptablesDataplane, StateStore};
use teefleet_model::{Cidr, MirrorRule, PortRange, Protocol, RuleDirection, RuleSet, SessionName};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const SIZES: [usize; 4] = [1, 100, 1_000, 5_000];
const SMOKE_SIZES: [usize; 2] = [1, 100];
/// The collector every rule mirrors to: on the namespace's subnet, as on a real host.
const GATEWAY: &str = "10.99.0.2";
const LOCAL_ADDR: &str = "10.99.0.1/16";
/// The controller address of the idle agent: nothing listens on the discard port, so the
/// agent keeps retrying with backoff and never receives a push. Plaintext, so the agent
/// needs `--insecure` (or it refuses to start).
const UNREACHABLE: &str = "http://127.0.0.1:9";
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `cargo bench`: every size, `BENCH_RUNS` runs, the idle measurement.
    Full,
    /// `cargo test --all-targets`: proves the bench still works, quickly.
    Smoke,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = if args.iter().any(|a| a == "--bench") { Mode::Full } else { Mode::Smoke };
    if let Some(i) = args.iter().position(|a| a == "--inside") {
        let netns = args.get(i + 1).context("--inside needs the namespace name")?;
        return inside(netns, mode).await;
    }
    if !is_root() {
        if mode == Mode::Smoke {
            println!("apply bench: skipped (needs root for network namespaces and iptables)");
            return Ok(());
        }
        bail!("the apply bench needs root (network namespaces, iptables)");
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

/// Median, minimum and maximum of a few runs.
#[derive(Debug, Clone, Copy)]
struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        Stats { median: samples[samples.len() / 2], min: samples[0], max: samples[samples.len() - 1] }
    }
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
    let log_path = state.path().join("agent.log");
    let log = std::fs::File::create(&log_path).context("creating the agent log")?;
    let mut command = Command::new("ip");
    // The agent's defaults apply (drift interval included): the operator's own FLEET_*
    // variables must not change what is measured.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("FLEET_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(["netns", "exec", &netns.name])
        .arg(&agent)
        .args(["--controller", UNREACHABLE, "--insecure", "--host-id", "bench", "--state-dir"])
        .arg(state.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("agent log")?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting fleet-agent")?;
    // `ip netns exec` execs the agent, so this is the agent's own pid.
    let pid = child.id().context("fleet-agent has no pid")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    if let Some(status) = child.try_wait()? {
        bail!("fleet-agent exited ({status}); see {}", log_path.display());
    }
    let installed = run_in(&netns.name, "iptables-save", &["-t", "mangle"]).await?;
    // Besides the set's rules, the agent keeps its own controller traffic out of the
    // mirror with a RETURN rule per chain.
    let ours = |l: &&str| l.starts_with("-A TEEFLEET-");
    let control = installed.lines().filter(ours).filter(|l| l.contains(CONTROL_COMMENT)).count();
    let rules = installed.lines().filter(ours).count() - control;
    ensure!(
        (rules, control) == (1_000, 2),
        "the agent restored {rules} rules and {control} control rules instead of 1000 and 2; see {}",
        log_path.display()
    );

    let ticks_per_sec = clock_ticks().await?;
    let start = ProcStat::read(pid)?;
    let started = Instant::now();
    let mut rss_max = start.rss_kb;
    for _ in 0..secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_max = rss_max.max(ProcStat::read(pid)?.rss_kb);
    }
    let end = ProcStat::read(pid)?;
    let wall = started.elapsed().as_secs_f64();
    child.kill().await.ok();
    let pct = |ticks: u64| ticks as f64 / ticks_per_sec as f64 / wall * 100.0;
    let own = pct(end.own_ticks - start.own_ticks);
    let with_children = pct(end.own_ticks + end.children_ticks - start.own_ticks - start.children_ticks);
    let rss_mb = end.rss_kb as f64 / 1024.0;
    println!();
    println!("idle fleet-agent ({}), 1 000 rules applied, controller unreachable, {secs} s:", agent.display());
    println!(
        "  RSS {rss_mb:.1} MB at the end, {:.1} MB max (target < {TARGET_RSS_MB:.0} MB: {})",
        rss_max as f64 / 1024.0,
        verdict(rss_max as f64 / 1024.0 < TARGET_RSS_MB)
    );
    println!(
        "  CPU {with_children:.3} % of one core including its iptables-save children, {own:.3} % the agent alone \
         (target < {TARGET_CPU_PCT} %: {})",
        verdict(with_children < TARGET_CPU_PCT)
    );
    Ok(())
}

/// `FLEET_AGENT_BIN`, or `fleet-agent` next to the bench's `deps/` directory (the bench
/// runs from `target/release/deps/`).
fn agent_binary(bench_exe: &Path) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FLEET_AGENT_BIN") {
        return Some(PathBuf::from(path));
    }
    let path = bench_exe.parent()?.parent()?.join("fleet-agent");
    path.is_file().then_some(path)
}

/// What `/proc/PID/status` and `/proc/PID/stat` say about a process.
struct ProcStat {
    rss_kb: u64,
    /// utime + stime, in clock ticks.
    own_ticks: u64,
    /// cutime + cstime: children that have exited and been waited for.
    children_ticks: u64,
}

impl ProcStat {
    fn read(pid: u32) -> Result<ProcStat> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
        let rss_kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS in /proc/PID/status")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
        // The command name is in parentheses and may contain spaces; fields follow the last
        // `)`, starting with field 3 (state), so field k is at index k - 3.
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .context("malformed /proc/PID/stat")?
            .1
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let field = |k: usize| fields.get(k - 3).copied().context("short /proc/PID/stat");
        Ok(ProcStat { rss_kb, own_ticks: field(14)? + field(15)?, children_ticks: field(16)? + field(17)? })
    }
}

async fn clock_ticks() -> Result<u64> {
    run("getconf", &["CLK_TCK"]).await?.trim().parse().context("getconf CLK_TCK")
}

/// A network namespace with `lo` up and an interface on the collector's subnet,
/// deleted on drop (also when the bench fails or is interrupted).
struct Netns {
    name: String,
}

impl Netns {
    async fn create(name: &str) -> Result<Netns> {
        // A leftover of a bench that was killed hard (pids are reused only eventually).
        let _ = run("ip", &["netns", "del", name]).await;
        run("ip", &["netns", "add", name]).await?;
        let netns = Netns { name: name.to_owned() };
        run("ip", &["-n", name, "link", "set", "lo", "up"]).await?;
        // A veth pair rather than a dummy device: the dummy module is missing from some
        // kernels (containers), and veth is what the lab needs anyway.
        run("ip", &["-n", name, "link", "add", "bench0", "type", "veth", "peer", "name", "bench1"]).await?;
        run("ip", &["-n", name, "addr", "add", LOCAL_ADDR, "dev", "bench0"]).await?;
        run("ip", &["-n", name, "link", "set", "bench0", "up"]).await?;
        run("ip", &["-n", name, "link", "set", "bench1", "up"]).await?;
        Ok(netns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs a command (never through a shell) and returns its stdout; fails on a non-zero exit.
async fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    check_status(program, args, &output)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn check_status(program: &str, args: &[&str], output: &std::process::Output) -> Result<()> {
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a command with `input` on stdin; fails on a non-zero exit.
async fn run_with_input(program: &str, args: &[&str], input: &str) -> Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {program}"))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    // Written while the child runs and then closed, so it sees the end of its input.
    let feed = async move {
        let written = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
        written
    };
    let (written, output) = tokio::join!(feed, child.wait_with_output());
    let output = output.with_context(|| format!("waiting for {program}"))?;
    check_status(program, args, &output)?;
    written.with_context(|| format!("writing to {program}"))?;
    Ok(())
}

async fn run_in(netns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", netns, program];
    full.extend_from_slice(args);
    run("ip", &full).await
}

fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|u| u.split_whitespace().nth(1)) == Some("0")
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}
