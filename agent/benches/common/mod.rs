//! What the agent's benchmarks share: the root check, throwaway network namespaces,
//! running commands, timing statistics, and the idle measurement of a real `fleet-agent`
//! process (its RSS and CPU, children included, from `/proc`).

#![allow(dead_code)] // Each bench uses a different subset of these helpers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// The address of a bench namespace's own interface (`bench0`).
pub const LOCAL_ADDR: &str = "10.99.0.1/16";
/// The controller address of an idle agent: nothing listens on the discard port, so the
/// agent keeps retrying with backoff and never receives a push. Plaintext, so the agent
/// needs `--insecure` (or it refuses to start).
pub const UNREACHABLE: &str = "http://127.0.0.1:9";

/// How a bench was started: `cargo bench` passes `--bench`; without it
/// (`cargo test --all-targets`) a bench runs a smoke version that proves it still works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Full,
    Smoke,
}

impl Mode {
    pub fn from_args() -> Mode {
        if std::env::args().any(|a| a == "--bench") { Mode::Full } else { Mode::Smoke }
    }
}

/// Whether the bench can run: `Ok(true)` as root; without root a smoke run is skipped
/// (`Ok(false)`, said so on stdout) and a full run fails.
pub fn root_or_skip(bench: &str, mode: Mode) -> Result<bool> {
    if is_root() {
        return Ok(true);
    }
    if mode == Mode::Smoke {
        println!("{bench} bench: skipped (needs root for network namespaces and iptables)");
        return Ok(false);
    }
    bail!("the {bench} bench needs root (network namespaces, iptables)")
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|u| u.split_whitespace().nth(1)) == Some("0")
    })
}

/// A network namespace with `lo` up, deleted on drop (also when the bench fails or is
/// interrupted).
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A namespace with `lo` up and `bench0` on [`LOCAL_ADDR`], one end of a veth pair
    /// whose other end (`bench1`) is up in the same namespace.
    pub async fn create(name: &str) -> Result<Netns> {
        let netns = Netns::bare(name).await?;
        // A veth pair rather than a dummy device: the dummy module is missing from some
        // kernels (containers), and veth is what the lab needs anyway.
        run("ip", &["-n", name, "link", "add", "bench0", "type", "veth", "peer", "name", "bench1"]).await?;
        run("ip", &["-n", name, "addr", "add", LOCAL_ADDR, "dev", "bench0"]).await?;
        run("ip", &["-n", name, "link", "set", "bench0", "up"]).await?;
        run("ip", &["-n", name, "link", "set", "bench1", "up"]).await?;
        Ok(netns)
    }

    /// A namespace with only `lo`, up.
    pub async fn bare(name: &str) -> Result<Netns> {
        // A leftover of a bench that was killed hard (pids are reused only eventually).
        let _ = run("ip", &["netns", "del", name]).await;
        run("ip", &["netns", "add", name]).await?;
        let netns = Netns { name: name.to_owned() };
        run("ip", &["-n", name, "link", "set", "lo", "up"]).await?;
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

/// Median, minimum and maximum of a few runs.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: Duration,
    pub min: Duration,
    pub max: Duration,
}

impl Stats {
    pub fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        Stats { median: samples[samples.len() / 2], min: samples[0], max: samples[samples.len() - 1] }
    }
}

/// A real `fleet-agent` in a namespace of its own, holding a saved rule set, with an
/// unreachable controller and otherwise its defaults (drift check every 5 s): all it does
/// is restore the set, retry the controller and check for drift. Killed on drop.
pub struct IdleAgent {
    child: Child,
    pid: u32,
    pub log: PathBuf,
}

impl IdleAgent {
    /// Starts `agent` in `netns` on `state_dir` (which holds the saved set) with `--host-id
    /// bench` and `extra` arguments. The agent's log goes to `agent.log` in `state_dir`.
    pub async fn start(agent: &Path, netns: &str, state_dir: &Path, extra: &[&str]) -> Result<IdleAgent> {
        let log = state_dir.join("agent.log");
        let file = std::fs::File::create(&log).context("creating the agent log")?;
        let mut command = Command::new("ip");
        // The agent's defaults apply (drift interval included): the operator's own FLEET_*
        // variables must not change what is measured.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("FLEET_") {
                command.env_remove(name);
            }
        }
        let child = command
            .args(["netns", "exec", netns])
            .arg(agent)
            .args(["--controller", UNREACHABLE, "--insecure", "--host-id", "bench", "--state-dir"])
            .arg(state_dir)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("agent log")?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("starting fleet-agent")?;
        // `ip netns exec` execs the agent, so this is the agent's own pid.
        let pid = child.id().context("fleet-agent has no pid")?;
        Ok(IdleAgent { child, pid, log })
    }

    /// Fails when the agent has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            // The log lives in a directory removed with the error: its end goes with it.
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("fleet-agent exited ({status}); the end of its log:\n{}", tail.join("\n"));
        }
        Ok(())
    }

    /// Samples `VmRSS` every second and the CPU time over `secs` seconds.
    pub async fn measure(&mut self, secs: u64) -> Result<Idle> {
        self.ensure_running()?;
        let ticks_per_sec = clock_ticks().await?;
        let start = ProcStat::read(self.pid)?;
        let started = Instant::now();
        let mut rss_max = start.rss_kb;
        for _ in 0..secs {
            tokio::time::sleep(Duration::from_secs(1)).await;
            rss_max = rss_max.max(ProcStat::read(self.pid)?.rss_kb);
        }
        let end = ProcStat::read(self.pid)?;
        let wall = started.elapsed().as_secs_f64();
        let pct = |ticks: u64| ticks as f64 / ticks_per_sec as f64 / wall * 100.0;
        Ok(Idle {
            rss_mb: end.rss_kb as f64 / 1024.0,
            rss_max_mb: rss_max as f64 / 1024.0,
            own_pct: pct(end.own_ticks - start.own_ticks),
            total_pct: pct(end.own_ticks + end.children_ticks - start.own_ticks - start.children_ticks),
        })
    }

    pub async fn stop(mut self) {
        self.child.kill().await.ok();
    }
}

/// What an idle agent cost over the measured window.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    /// `VmRSS` at the end and the largest sample.
    pub rss_mb: f64,
    pub rss_max_mb: f64,
    /// CPU as % of one core: the agent process alone, and with its reaped children (a
    /// drift check is an `iptables-save` process, so the children are where the cost is).
    pub own_pct: f64,
    pub total_pct: f64,
}

/// `FLEET_AGENT_BIN`, or `fleet-agent` next to the bench's `deps/` directory (the bench
/// runs from `target/<profile>/deps/`).
pub fn agent_binary(bench_exe: &Path) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FLEET_AGENT_BIN") {
        // cargo runs benches in the package's directory; a relative path is meant from the
        // workspace's, where the scripts run.
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        return Some(workspace.join(path));
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

/// Runs a command (never through a shell) and returns its stdout; fails on a non-zero exit.
pub async fn run(program: &str, args: &[&str]) -> Result<String> {
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
pub async fn run_with_input(program: &str, args: &[&str], input: &str) -> Result<()> {
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

pub async fn run_in(netns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", netns, program];
    full.extend_from_slice(args);
    run("ip", &full).await
}

/// Counts the rules of `iptables-save` output (with `-c` or without) in our chains: all,
/// and those with `marker`.
pub fn count_ours(save: &str, marker: &str) -> (usize, usize) {
    let rule = |l: &str| l.split_once("] ").filter(|_| l.starts_with('[')).map_or(l, |(_, rule)| rule).to_owned();
    let ours: Vec<String> = save.lines().map(rule).filter(|l| l.starts_with("-A TEEFLEET-")).collect();
    (ours.len(), ours.iter().filter(|l| l.contains(marker)).count())
}

pub fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}
