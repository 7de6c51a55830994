//! One fleet size, start to finish: a fresh controller (and database), the agents
//! connected, the idle cost, the scenarios, seeding, and the restart on the full database.

use std::time::Duration;

use serde::Serialize;
use teefleet_model::limits::MAX_SOURCES;
use tracing::{info, warn};

use crate::agents::{Fleet, FleetOptions};
use crate::config::Config;
use crate::dbstat;
use crate::error::LoadgenError;
use crate::procstat::{self, CpuWindow, Target};
use crate::rig::{self, Controller, Lab};
use crate::scenario::{Admin, Scenario, Seeded, Windows};
use crate::storm::{self, Storm};

/// Descriptors a process needs beside one per agent connection.
const SPARE_FILES: u64 = 256;

/// What the fleet cost while nothing changed.
#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    pub window_secs: f64,
    pub controller_rss_mb: Option<f64>,
    /// Percent of one core.
    pub controller_cpu_pct: Option<f64>,
    /// The postmaster and all its backends.
    pub postgres_cpu_pct: Option<f64>,
    pub loadgen_cpu_pct: f64,
    pub db_transactions_per_sec: Option<f64>,
    pub health_reports_per_sec: f64,
    /// Rule sets pushed while nothing changed (must be 0).
    pub pushes: usize,
}

/// Everything measured at one fleet size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeReport {
    pub agents: usize,
    pub connect_secs: f64,
    pub connect_retries: u64,
    /// Spawn to serving on the size's fresh database (migrations included).
    pub start_empty_ms: Option<f64>,
    pub idle: Idle,
    pub scenarios: Vec<Scenario>,
    /// Pushes caused by a session on a host without an agent (must be 0).
    pub unrelated_pushes: Option<usize>,
    pub seeded: Option<Seeded>,
    pub controller_rss_end_mb: Option<f64>,
    pub controller_rss_peak_mb: Option<f64>,
    /// Streams that ended before the run closed them (the restart aside).
    pub streams_ended: usize,
    /// The controller killed and restarted under the connected fleet, after seeding.
    pub storm: Option<Storm>,
    /// Spawn to serving with this size's hosts and the seeded sessions in the database.
    pub start_loaded_ms: Option<f64>,
    /// What was in the database for that start.
    pub loaded_hosts: Option<usize>,
    pub loaded_sessions: Option<usize>,
}

/// Fails early when this process (and so the controller child, which inherits the limit)
/// cannot hold `agents` connections.
pub fn check_file_limit(agents: usize) -> Result<(), LoadgenError> {
    let need = agents as u64 + SPARE_FILES;
    match procstat::open_file_limit() {
        Some(have) if have < need => Err(LoadgenError::FileLimit { have, need, agents }),
        _ => Ok(()),
    }
}

/// Where one size runs: against the lab (a new database and controller) or an external
/// controller.
pub enum Against<'a> {
    Lab(&'a mut Lab),
    External { url: &'a str, pid: Option<u32>, collector: &'a str },
}

/// Runs one fleet size.
pub async fn measure(
    mut against: Against<'_>,
    agents: usize,
    config: &Config,
    ticks: u64,
) -> Result<SizeReport, LoadgenError> {
    info!(agents, "== fleet size");
    let (mut controller, database, collector, offline) = match &mut against {
        Against::Lab(lab) => {
            let url = lab.database(agents).await?;
            let controller = lab.controller(&url, &format!("{agents}-empty")).await?;
            let (collector, offline) = (lab.collector()?.to_owned(), lab.offline_host()?.to_owned());
            (controller, Some((url, lab.postgres().postmaster_pid())), collector, Some(offline))
        }
        Against::External { url, pid, collector } => {
            (Controller::external(url, *pid), None, (*collector).to_owned(), None)
        }
    };
    let start_empty_ms = controller.start.map(|d| d.as_secs_f64() * 1000.0);
    let channel = controller.admin_channel().await?;
    rig::register_collector(&channel, &collector).await?;
    let mut admin = Admin::new(channel, &collector);

    let options = FleetOptions { concurrency: config.connect_concurrency, health: config.health(), seed: config.seed };
    let (fleet, connected) = Fleet::connect(&controller.url, agents, &options).await?;
    controller.check_running()?;

    tokio::time::sleep(config.settle()).await;
    let idle = idle(&fleet, &controller, database.as_ref(), config.idle(), ticks).await?;
    info!(
        rss_mb = idle.controller_rss_mb,
        controller_cpu_pct = idle.controller_cpu_pct,
        postgres_cpu_pct = idle.postgres_cpu_pct,
        db_tps = idle.db_transactions_per_sec,
        pushes = idle.pushes,
        "idle fleet measured"
    );

    let windows = Windows { quiet: config.quiet(), converge_timeout: config.converge_timeout() };
    let some = agents.min(MAX_SOURCES);
    // The update is measured on one session of up to 1 000 sources, what an operator's
    // `session update` is; the whole fleet's sessions are only created and deleted.
    let mut scenarios = vec![admin.scenario(&fleet, &format!("{agents}-some"), 0..some, true, windows).await?];
    scenarios.push(admin.scenario(&fleet, &format!("{agents}-all"), 0..agents, false, windows).await?);
    let unrelated_pushes = match &offline {
        Some(host) => Some(admin.unrelated(&fleet, host, config.quiet()).await?),
        None => None,
    };
    controller.check_running()?;

    // Seeding leaves sessions behind: only in a database of our own.
    let seeded = match (&database, config.seed_sessions) {
        (Some(_), n) if n > 0 => Some(admin.seed(agents, n).await?),
        _ => None,
    };
    let pid = controller.pid;
    let controller_rss_end_mb = procstat::status_mb(pid, "VmRSS");
    let controller_rss_peak_mb = procstat::status_mb(pid, "VmHWM");
    let (streams_ended, first) = fleet.ended();
    if let Some(why) = first {
        warn!(streams_ended, first = %why, "some agent streams ended during the run");
    }
    drop(admin);
    // The seeded database, with every agent holding its version: what a replica that
    // crashed comes back to.
    let storm = match (&mut against, &database) {
        (Against::Lab(lab), Some((url, _))) => {
            let windows = (config.converge_timeout(), config.quiet());
            let label = format!("{agents}-restarted");
            let (restarted, storm) = storm::restart(lab, &fleet, controller, url, &label, windows, ticks).await?;
            controller = restarted;
            Some(storm)
        }
        _ => None,
    };
    fleet.disconnect().await;
    controller.stop().await;

    let mut report = SizeReport {
        agents,
        connect_secs: connected.elapsed.as_secs_f64(),
        connect_retries: connected.retries,
        start_empty_ms,
        idle,
        scenarios,
        unrelated_pushes,
        seeded,
        controller_rss_end_mb,
        controller_rss_peak_mb,
        streams_ended,
        storm,
        start_loaded_ms: None,
        loaded_hosts: None,
        loaded_sessions: None,
    };
    if let (Against::Lab(lab), Some((url, _))) = (&against, &database) {
        // The database now holds every host and the seeded sessions; nothing connects.
        match dbstat::counts(url).await {
            Ok((hosts, sessions)) => (report.loaded_hosts, report.loaded_sessions) = (Some(hosts), Some(sessions)),
            Err(e) => warn!(error = %e, "could not count hosts and sessions"),
        }
        let restarted = lab.controller(url, &format!("{agents}-loaded")).await?;
        report.start_loaded_ms = restarted.start.map(|d| d.as_secs_f64() * 1000.0);
        restarted.stop().await;
    }
    Ok(report)
}

/// Idle cost over `window`: the controller's RSS at the end, CPU of the controller,
/// Postgres and this process, database transactions, and any push (none may come).
async fn idle(
    fleet: &Fleet,
    controller: &Controller,
    database: Option<&(String, Option<u32>)>,
    window: Duration,
    ticks: u64,
) -> Result<Idle, LoadgenError> {
    let pushes = fleet.pushes();
    let healths = fleet.healths();
    let ctl = controller.pid.map(|p| CpuWindow::start(Target::Process(p)));
    let pg = database.and_then(|(_, pid)| *pid).map(|p| CpuWindow::start(Target::Tree(p)));
    let me = CpuWindow::start(Target::Process(std::process::id()));
    let tx = match database {
        Some((url, _)) => Some(dbstat::transactions(url).await?),
        None => None,
    };
    let started = tokio::time::Instant::now();
    tokio::time::sleep(window).await;
    let secs = started.elapsed().as_secs_f64();
    let tx_end = match database {
        Some((url, _)) => Some(dbstat::transactions(url).await?),
        None => None,
    };
    Ok(Idle {
        window_secs: secs,
        controller_rss_mb: procstat::status_mb(controller.pid, "VmRSS"),
        controller_cpu_pct: ctl.map(|w| w.percent(ticks)),
        postgres_cpu_pct: pg.map(|w| w.percent(ticks)),
        loadgen_cpu_pct: me.percent(ticks),
        db_transactions_per_sec: tx.zip(tx_end).map(|(a, b)| b.saturating_sub(a) as f64 / secs),
        health_reports_per_sec: fleet.healths().saturating_sub(healths) as f64 / secs,
        pushes: fleet.pushes().iter().zip(&pushes).map(|(a, b)| a - b).sum(),
    })
}
