//! fleet-siege: a controller serving TLS under the attack issue 12 describes, and an
//! operator's `fleetctl session list` timed before and during it.
//!
//! Each controller binary given runs on a fresh database with the open-file limits a
//! systemd service gets by default (soft 1024, hard 524288). For each: a quiet baseline,
//! then idle connections held from several loopback addresses (half raw TCP that reconnect
//! whenever closed, half finished TLS and HTTP/2 handshakes) while bogus-token callers
//! call as fast as they can; meanwhile the real `fleetctl` binary lists sessions from
//! 127.0.0.1 every few hundred milliseconds. Reported side by side: fleetctl's wall time
//! and failures, how fast the controller's log and audit log grow, its CPU and memory, and
//! what the attackers held.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use teefleet_lab::{TempPostgres, procs::Proc};
use teefleet_proto::v1::{self as pb, session_service_client::SessionServiceClient};
use tokio::{io::AsyncReadExt, process::Command};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tracing::{info, warn};

use crate::{
    error::LoadgenError,
    latency::Summary,
    procstat::{self, CpuWindow, Target},
};

const BOOTSTRAP: &str = "fleet-siege-bootstrap-admin-0123456789";
/// The soft and hard open-file limits systemd gives a service that sets none.
const SERVICE_NOFILE: (u64, u64) = (1024, 524_288);
/// How long one fleetctl call may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Attackers per loopback address: under the controller's default per-address cap (512),
/// so the global behaviour is what is measured.
const PER_ADDRESS: usize = 250;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fleet-siege",
    version,
    about = "A TLS controller under idle connections and bogus-token callers; fleetctl timed before and during"
)]
pub struct SiegeConfig {
    /// Controller binaries to compare, each on a fresh database (repeatable). Default: the
    /// workspace's fleet-controller.
    #[arg(long = "controller-bin", env = "FLEET_SIEGE_CONTROLLER_BIN", value_delimiter = ',')]
    pub controllers: Vec<PathBuf>,
    /// Idle connections held during the attack; half raw TCP, half finished TLS + HTTP/2.
    #[arg(long, env = "FLEET_SIEGE_IDLE", default_value_t = 2000)]
    pub idle: usize,
    /// Callers with bogus tokens, each on its own connection, calling in a loop.
    #[arg(long, env = "FLEET_SIEGE_CALLERS", default_value_t = 500)]
    pub callers: usize,
    /// Seconds of the quiet baseline.
    #[arg(long, env = "FLEET_SIEGE_BASELINE_SECS", default_value_t = 10)]
    pub baseline_secs: u64,
    /// Seconds the attack runs before measuring starts.
    #[arg(long, env = "FLEET_SIEGE_RAMP_SECS", default_value_t = 5)]
    pub ramp_secs: u64,
    /// Seconds measured under attack.
    #[arg(long, env = "FLEET_SIEGE_SECS", default_value_t = 30)]
    pub secs: u64,
    /// Milliseconds between the operator's fleetctl calls.
    #[arg(long, env = "FLEET_SIEGE_PROBE_MS", default_value_t = 250)]
    pub probe_ms: u64,
    /// Print the results as JSON instead of a table.
    #[arg(long, env = "FLEET_SIEGE_JSON")]
    pub json: bool,
}

/// One window's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub secs: f64,
    /// Wall time of each successful `fleetctl session list`, process start to exit.
    pub fleetctl: Option<Summary>,
    pub fleetctl_failed: usize,
    pub first_failure: Option<String>,
    pub log_lines_per_sec: f64,
    pub audit_rows_per_sec: f64,
    pub controller_cpu_pct: f64,
    pub controller_rss_mb: Option<f64>,
}

/// What the attackers did during the measured window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Attack {
    /// Idle connections open at the end of the window (out of those asked for).
    pub idle_held: u64,
    /// Raw idle connections reopened after the controller closed them.
    pub idle_reopened: u64,
    pub bogus_calls: u64,
    pub bogus_calls_per_sec: f64,
    /// Bogus calls that failed to reach the controller at all (connection refused or reset).
    pub bogus_transport_errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub controller: String,
    pub open_files_soft_limit: Option<u64>,
    pub baseline: Window,
    pub siege: Window,
    pub attack: Attack,
}

#[derive(Debug, Clone, Serialize)]
pub struct SiegeReport {
    pub idle: usize,
    pub callers: usize,
    pub runs: Vec<Run>,
}

pub async fn run(config: &SiegeConfig) -> Result<SiegeReport, LoadgenError> {
    let bins = if config.controllers.is_empty() {
        vec![teefleet_lab::procs::binary(teefleet_lab::procs::CONTROLLER_BIN)?]
    } else {
        config.controllers.clone()
    };
    let dir = tempfile::Builder::new()
        .prefix("teefleet-siege-")
        .tempdir()
        .map_err(|source| LoadgenError::Io { context: "creating the work directory".into(), source })?;
    let postgres = TempPostgres::start().await?;
    let mut runs = Vec::new();
    for (i, bin) in bins.iter().enumerate() {
        let url = postgres.create_database(&format!("siege_{i}")).await?;
        runs.push(one(config, bin, &url, &dir.path().join(format!("controller-{i}.log"))).await?);
    }
    Ok(SiegeReport { idle: config.idle, callers: config.callers, runs })
}

async fn one(config: &SiegeConfig, bin: &Path, database_url: &str, log: &Path) -> Result<Run, LoadgenError> {
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut command = Command::new("sh");
    // The limits a service gets from systemd unless its unit says otherwise.
    let (soft, hard) = service_limits();
    command.arg("-c").arg(format!("ulimit -Sn {soft}; ulimit -Hn {hard}; exec \"$@\"")).arg("sh");
    command.arg(bin).args(["--database-url", database_url, "--listen", &listen, "--bootstrap-token", BOOTSTRAP]);
    command.env("FLEET_METRICS_LISTEN", "off").env("RUST_LOG", "info");
    let mut proc = Proc::spawn("fleet-controller", command, log)?;
    let pid = proc.pid().ok_or_else(|| LoadgenError::Invalid("the controller has no pid".into()))?;
    let ca = wait_for_ca(bin, database_url, log).await?;
    let ca_path = log.with_extension("ca.pem");
    std::fs::write(&ca_path, &ca).map_err(|source| LoadgenError::Io { context: "writing the CA".into(), source })?;
    let fleetctl = teefleet_lab::procs::binary(teefleet_lab::procs::FLEETCTL_BIN)?;
    let operator = Operator { fleetctl, url: format!("https://{listen}"), ca: ca_path };
    wait_serving(&operator, &mut proc).await?;
    let pool = sqlx::PgPool::connect(database_url).await?;
    let addr: SocketAddr = listen.parse().map_err(|_| LoadgenError::Invalid(listen.clone()))?;
    info!(controller = %bin.display(), pid, "baseline");
    let baseline = measure(config, &operator, pid, log, &pool, config.baseline_secs).await?;

    info!(idle = config.idle, callers = config.callers, "siege");
    let stop = CancellationToken::new();
    let stats = Arc::new(Stats::default());
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..config.idle {
        let ip = attacker_ip(1, i);
        let (stop, stats, ca) = (stop.clone(), stats.clone(), ca.clone());
        if i % 2 == 0 {
            attackers.spawn(hold_raw(ip, addr, stop, stats));
        } else {
            attackers.spawn(hold_tls(ip, addr, ca, stop, stats));
        }
    }
    for i in 0..config.callers {
        let (stop, stats, ca) = (stop.clone(), stats.clone(), ca.clone());
        attackers.spawn(bogus_caller(attacker_ip(2, i), addr, ca, i, stop, stats));
    }
    tokio::time::sleep(Duration::from_secs(config.ramp_secs)).await;
    let before = stats.snapshot();
    let siege = measure(config, &operator, pid, log, &pool, config.secs).await?;
    let after = stats.snapshot();
    stop.cancel();
    while attackers.join_next().await.is_some() {}
    let attack = Attack {
        idle_held: after.held,
        idle_reopened: after.reopened - before.reopened,
        bogus_calls: after.calls - before.calls,
        bogus_calls_per_sec: (after.calls - before.calls) as f64 / siege.secs,
        bogus_transport_errors: after.transport_errors - before.transport_errors,
    };
    let open_files = procstat::open_file_limits(&pid.to_string()).map(|(soft, _)| soft);
    proc.terminate(Duration::from_secs(15)).await;
    Ok(Run { controller: bin.display().to_string(), open_files_soft_limit: open_files, baseline, siege, attack })
}

/// The open-file limits a systemd service gets unless its unit sets them, the hard one
/// no higher than this process's own (only root may raise it).
fn service_limits() -> (u64, u64) {
    let (soft, hard) = SERVICE_NOFILE;
    let ours = procstat::open_file_limits("self").map_or(hard, |(_, h)| h);
    (soft, hard.min(ours))
}

fn free_port() -> Result<u16, LoadgenError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|source| LoadgenError::Io { context: "finding a free port".into(), source })?;
    Ok(listener
        .local_addr()
        .map_err(|source| LoadgenError::Io { context: "finding a free port".into(), source })?
        .port())
}

/// The n-th attacker's address in 127.`group`.x.0: `PER_ADDRESS` attackers each.
fn attacker_ip(group: u8, n: usize) -> IpAddr {
    let block = u8::try_from(n / PER_ADDRESS).unwrap_or(u8::MAX);
    IpAddr::V4(Ipv4Addr::new(127, group, block, 1))
}

/// The CA the controller created, once it has: `fleet-controller ca print`.
async fn wait_for_ca(bin: &Path, database_url: &str, log: &Path) -> Result<String, LoadgenError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new(bin).args(["ca", "print", "--database-url", database_url]).output().await;
        if let Ok(out) = out.as_ref()
            && out.status.success()
        {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if Instant::now() > deadline {
            return Err(LoadgenError::NotServing { seconds: 60, log: log.display().to_string() });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The operator: the real fleetctl, from 127.0.0.1.
struct Operator {
    fleetctl: PathBuf,
    url: String,
    ca: PathBuf,
}

impl Operator {
    /// One `fleetctl session list`: its wall time, or why it failed.
    async fn list(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let run = Command::new(&self.fleetctl)
            .args(["--controller", &self.url, "--ca-cert"])
            .arg(&self.ca)
            .args(["--token", BOOTSTRAP, "-o", "json", "session", "list"])
            .env("XDG_CONFIG_HOME", "/nonexistent/fleet-siege")
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(PROBE_TIMEOUT, run).await {
            Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
            Ok(Err(e)) => Err(format!("cannot run fleetctl: {e}")),
            Ok(Ok(out)) if out.status.success() => Ok(started.elapsed()),
            Ok(Ok(out)) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        }
    }
}

async fn wait_serving(operator: &Operator, proc: &mut Proc) -> Result<(), LoadgenError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        proc.check_running()?;
        if operator.list().await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LoadgenError::NotServing { seconds: 60, log: proc.log_path().display().to_string() });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn lines(log: &Path) -> usize {
    std::fs::read(log).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

async fn audit_rows(pool: &sqlx::PgPool) -> Result<i64, LoadgenError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM audit_log").fetch_one(pool).await?)
}

/// `secs` of fleetctl calls every `probe_ms`, with what the controller wrote meanwhile.
async fn measure(
    config: &SiegeConfig,
    operator: &Operator,
    pid: u32,
    log: &Path,
    pool: &sqlx::PgPool,
    secs: u64,
) -> Result<Window, LoadgenError> {
    let (lines_before, audit_before) = (lines(log), audit_rows(pool).await?);
    let cpu = CpuWindow::start(Target::Process(pid));
    let started = Instant::now();
    let mut samples = Vec::new();
    let (mut failed, mut first_failure) = (0, None);
    while started.elapsed() < Duration::from_secs(secs) {
        match operator.list().await {
            Ok(took) => samples.push(took.as_secs_f64() * 1000.0),
            Err(why) => {
                failed += 1;
                first_failure.get_or_insert(why);
            }
        }
        tokio::time::sleep(Duration::from_millis(config.probe_ms)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let controller_cpu_pct = cpu.percent(procstat::clock_ticks());
    let audit_after = audit_rows(pool).await?;
    Ok(Window {
        secs: elapsed,
        fleetctl: Summary::of(samples),
        fleetctl_failed: failed,
        first_failure,
        log_lines_per_sec: lines(log).saturating_sub(lines_before) as f64 / elapsed,
        audit_rows_per_sec: (audit_after - audit_before) as f64 / elapsed,
        controller_cpu_pct,
        controller_rss_mb: procstat::status_mb(Some(pid), "VmRSS"),
    })
}

#[derive(Default)]
struct Stats {
    held: AtomicU64,
    reopened: AtomicU64,
    calls: AtomicU64,
    transport_errors: AtomicU64,
}

#[derive(Clone, Copy)]
struct Snapshot {
    held: u64,
    reopened: u64,
    calls: u64,
    transport_errors: u64,
}

impl Stats {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            held: self.held.load(Ordering::Relaxed),
            reopened: self.reopened.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
            transport_errors: self.transport_errors.load(Ordering::Relaxed),
        }
    }
}

/// An idle TCP connection that sends nothing, reopened whenever the controller closes it.
async fn hold_raw(from: IpAddr, to: SocketAddr, stop: CancellationToken, stats: Arc<Stats>) {
    let mut first = true;
    while !stop.is_cancelled() {
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else { return };
        if socket.bind(SocketAddr::new(from, 0)).is_err() {
            return;
        }
        let Ok(mut conn) = socket.connect(to).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !first {
            stats.reopened.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        stats.held.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 64];
        tokio::select! {
            () = stop.cancelled() => {}
            _ = conn.read(&mut buf) => {}
        }
        stats.held.fetch_sub(1, Ordering::Relaxed);
        // A connection refused at once is not retried in a tight loop.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn endpoint(from: IpAddr, to: SocketAddr, ca: &str) -> Option<Endpoint> {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    Endpoint::from_shared(format!("https://{to}"))
        .ok()?
        .tls_config(tls)
        .ok()
        .map(|e| e.local_address(Some(from)).connect_timeout(Duration::from_secs(10)))
}

/// A connection that finished TLS and HTTP/2 and then makes no call.
async fn hold_tls(from: IpAddr, to: SocketAddr, ca: String, stop: CancellationToken, stats: Arc<Stats>) {
    let Some(endpoint) = endpoint(from, to, &ca) else { return };
    match endpoint.connect().await {
        Ok(channel) => {
            stats.held.fetch_add(1, Ordering::Relaxed);
            stop.cancelled().await;
            drop(channel);
            stats.held.fetch_sub(1, Ordering::Relaxed);
        }
        Err(e) => warn!(error = %e, "an idle TLS connection could not be opened"),
    }
}

/// A caller with a bogus token on its own connection, calling as fast as it is answered.
async fn bogus_caller(from: IpAddr, to: SocketAddr, ca: String, n: usize, stop: CancellationToken, stats: Arc<Stats>) {
    let Some(endpoint) = endpoint(from, to, &ca) else { return };
    let channel = endpoint.connect_lazy();
    let token = format!("Bearer tf1.bogus{n:06}.0000");
    while !stop.is_cancelled() {
        let mut req = tonic::Request::new(pb::ListSessionsRequest {});
        if let Ok(value) = token.parse() {
            req.metadata_mut().insert("authorization", value);
        }
        let mut client = SessionServiceClient::new(channel.clone());
        let call = client.list_sessions(req);
        let result = tokio::select! {
            () = stop.cancelled() => return,
            result = call => result,
        };
        stats.calls.fetch_add(1, Ordering::Relaxed);
        if let Err(status) = result
            && !matches!(status.code(), tonic::Code::Unauthenticated)
        {
            stats.transport_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl SiegeReport {
    /// A Markdown table, one column per controller binary.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} idle connections, {} bogus-token callers; fleetctl session list every call, from 127.0.0.1\n\n",
            self.idle, self.callers
        );
        out.push_str("| |");
        for r in &self.runs {
            out.push_str(&format!(" {} |", r.controller));
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(self.runs.len()));
        out.push('\n');
        let mut row = |label: &str, cell: &dyn Fn(&Run) -> String| {
            out.push_str(&format!("| {label} |"));
            for r in &self.runs {
                out.push_str(&format!(" {} |", cell(r)));
            }
            out.push('\n');
        };
        let latency = |w: &Window| {
            w.fleetctl.map_or("–".to_owned(), |s| format!("{:.0} / {:.0} / {:.0}", s.p50_ms, s.p99_ms, s.max_ms))
        };
        let failed = |w: &Window| {
            let total = w.fleetctl_failed + w.fleetctl.map_or(0, |s| s.count);
            match &w.first_failure {
                Some(why) => format!("{} of {total} ({})", w.fleetctl_failed, why.lines().next().unwrap_or("")),
                None => format!("0 of {total}"),
            }
        };
        row("open-file soft limit of the controller", &|r| {
            r.open_files_soft_limit.map_or("?".to_owned(), |n| n.to_string())
        });
        row("quiet: fleetctl session list p50 / p99 / max ms", &|r| latency(&r.baseline));
        row("quiet: fleetctl failed", &|r| failed(&r.baseline));
        row("quiet: log lines / s", &|r| format!("{:.1}", r.baseline.log_lines_per_sec));
        row("quiet: controller CPU, % of a core", &|r| format!("{:.1}", r.baseline.controller_cpu_pct));
        row("siege: fleetctl session list p50 / p99 / max ms", &|r| latency(&r.siege));
        row("siege: fleetctl failed", &|r| failed(&r.siege));
        row("siege / quiet, fleetctl p99", &|r| match (r.siege.fleetctl, r.baseline.fleetctl) {
            (Some(s), Some(b)) if b.p99_ms > 0.0 => format!("{:.1}×", s.p99_ms / b.p99_ms),
            _ => "–".to_owned(),
        });
        row("siege: log lines / s", &|r| format!("{:.1}", r.siege.log_lines_per_sec));
        row("siege: audit rows / s", &|r| format!("{:.1}", r.siege.audit_rows_per_sec));
        row("siege: controller CPU, % of a core", &|r| format!("{:.0}", r.siege.controller_cpu_pct));
        row("siege: controller RSS MB", &|r| r.siege.controller_rss_mb.map_or("?".to_owned(), |m| format!("{m:.0}")));
        row("idle connections open at the end", &|r| r.attack.idle_held.to_string());
        row("raw idle connections the controller closed (reopened)", &|r| r.attack.idle_reopened.to_string());
        row("bogus calls answered / s", &|r| format!("{:.0}", r.attack.bogus_calls_per_sec));
        row("bogus calls that failed in transport", &|r| r.attack.bogus_transport_errors.to_string());
        out
    }
}
