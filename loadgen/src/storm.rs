//! A controller restarted under its whole fleet: it is killed (SIGKILL, as a crash or a
//! lost host would end it), a new one starts on the same address and database, and every
//! agent comes back on its own with the real agent's backoff. Measures when each stream
//! is open again, what the new controller spent taking them, and that nothing was pushed:
//! every agent's Hello names the version it holds, which is the one the database wants.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::agents::Fleet;
use crate::dbstat;
use crate::error::LoadgenError;
use crate::latency::{Summary, signed_ms};
use crate::procstat;
use crate::rig::{Controller, Lab};

/// How often the agents' streams are counted while they come back; the resolution of
/// the per-agent times.
const POLL: Duration = Duration::from_millis(10);

/// What the restart measured.
#[derive(Debug, Clone, Serialize)]
pub struct Storm {
    /// Spawn of the new controller to its health check answering, with the fleet already
    /// knocking.
    pub start_ms: Option<f64>,
    /// Per agent, from the kill to its stream being open again (±10 ms).
    pub back: Option<Summary>,
    /// Agents without a stream when the timeout ran out.
    pub missing: usize,
    /// Opens that failed and waited for another try (the controller was not up yet, or
    /// refused).
    pub failed_opens: usize,
    /// Rule sets pushed on the new streams: each agent already holds its version.
    pub pushes: usize,
    /// The new controller's CPU from its start to the last stream, in seconds.
    pub controller_cpu_secs: Option<f64>,
    pub controller_rss_mb: Option<f64>,
}

/// Waits until every agent holds the version the database wants for its host, so that
/// a push still on its way when the controller dies is not counted as the restart's.
async fn settle(fleet: &Fleet, database_url: &str, timeout: Duration) -> Result<(), LoadgenError> {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let desired = dbstat::desired_versions(database_url).await?;
        let behind = fleet
            .agents()
            .iter()
            .filter(|a| desired.get(&a.host_id).is_some_and(|&want| a.held().unwrap_or(0) < want))
            .count();
        if behind == 0 {
            info!(waited_ms = started.elapsed().as_millis(), "the fleet holds what the database wants");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LoadgenError::NotSettled { behind, seconds: timeout.as_secs() });
        }
        tokio::time::sleep(POLL * 10).await;
    }
}

/// Kills `controller` once the fleet holds what it wants, starts another on its address and database, and waits up to
/// `timeout` for every agent to be back and then `quiet` for stray pushes. Returns the
/// new controller, which the fleet now uses.
pub async fn restart(
    lab: &Lab,
    fleet: &Fleet,
    controller: Controller,
    database_url: &str,
    label: &str,
    (timeout, quiet): (Duration, Duration),
    ticks: u64,
) -> Result<(Controller, Storm), LoadgenError> {
    settle(fleet, database_url, timeout).await?;
    let opens = fleet.opens();
    let pushes = fleet.pushes();
    let failed = fleet.failed_reopens();
    let listen = controller.listen.clone();
    info!(agents = fleet.len(), %listen, "killing the controller under its fleet");
    let killed = Instant::now();
    controller.kill().await;
    let mut restarted = lab.controller_on(database_url, label, Some(&listen)).await?;

    let agents = fleet.agents();
    let mut back: Vec<Option<Instant>> = vec![None; agents.len()];
    let mut pending: Vec<usize> = (0..agents.len()).collect();
    let deadline = Instant::now() + timeout;
    while !pending.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        let now = Instant::now();
        pending.retain(|&i| {
            let reopened = agents[i].opens() > opens[i];
            if reopened {
                back[i] = Some(now);
            }
            !reopened
        });
    }
    let pid = restarted.pid;
    let controller_cpu_secs = pid.and_then(procstat::cpu_ticks).map(|t| t as f64 / ticks.max(1) as f64);
    let controller_rss_mb = procstat::status_mb(pid, "VmRSS");
    if !pending.is_empty() {
        warn!(missing = pending.len(), first = %agents[pending[0]].host_id, "agents not back in time");
    }
    tokio::time::sleep(quiet).await;
    restarted.check_running()?;
    let storm = Storm {
        start_ms: restarted.start.map(|d| d.as_secs_f64() * 1000.0),
        back: Summary::of(back.iter().flatten().map(|&at| signed_ms(at, killed)).collect()),
        missing: pending.len(),
        failed_opens: fleet.failed_reopens().saturating_sub(failed),
        pushes: fleet.pushes().iter().zip(&pushes).map(|(a, b)| a - b).sum(),
        controller_cpu_secs,
        controller_rss_mb,
    };
    info!(
        back_p50_ms = storm.back.map(|b| b.p50_ms),
        back_p99_ms = storm.back.map(|b| b.p99_ms),
        back_max_ms = storm.back.map(|b| b.max_ms),
        missing = storm.missing,
        failed_opens = storm.failed_opens,
        pushes = storm.pushes,
        cpu_secs = storm.controller_cpu_secs,
        "the fleet is back on the restarted controller"
    );
    Ok((restarted, storm))
}
