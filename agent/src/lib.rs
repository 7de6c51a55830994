//! fleet-agent: keeps one host's TEE mirroring rules in line with the teefleet controller.
//!
//! Code map:
//! - [`config`]: the typed configuration (flags and environment).
//! - [`client`]: the stream to the controller (Hello, RuleSet → Ack/Nack, Health, events)
//!   and the [`Agent`] that applies and persists what it receives.
//! - [`convert`]: the only place where wire types become domain types on the agent.
//! - [`firewall`]: the [`Dataplane`] trait and its iptables implementation (render,
//!   observe, apply, verify, repair, backend detection).
//! - [`drift`]: the periodic drift check, independent of the controller.
//! - [`status`], [`http`]: readiness and metrics, served on a local port.
//! - [`events`]: what the agent did on its own, queued for the controller.
//! - [`state`]: the last applied rule set on disk.
//! - [`imds`], [`host`]: the EC2 instance id and the host's addresses.
//!
//! Invariants: the agent only touches the chains it owns (`TEEFLEET-PRE`, `TEEFLEET-POST`
//! in `mangle`, IPv4 and IPv6) and one jump to each; the kernel holds the old rule set or
//! the new one, never a mix; stopping the agent leaves the rules in place.

use std::error::Error;

use teefleet_model::HostId;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub mod backoff;
pub mod client;
pub mod config;
pub mod convert;
pub mod drift;
pub mod events;
pub mod firewall;
pub mod host;
#[cfg(test)]
mod hostile_input;
pub mod http;
pub mod imds;
pub mod state;
pub mod status;

pub use client::{Agent, StreamError, StreamOptions};
pub use config::{CleanupConfig, Config, Listen};
pub use firewall::{ApplyError, Dataplane, Iptables, IptablesDataplane};
pub use state::StateStore;

/// Why the agent could not start. Both are configuration problems the operator fixes
/// with a flag, hence [`RunError::EXIT_CODE`].
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "cannot determine the host id from EC2 instance metadata at {endpoint}; pass --host-id (or set FLEET_HOST_ID)"
    )]
    HostId {
        endpoint: String,
        #[source]
        source: imds::ImdsError,
    },
    #[error("--state-dir {path}: cannot create the directory")]
    StateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--metrics-listen {addr}: cannot listen")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl RunError {
    /// EX_USAGE from sysexits.h, as for invalid flags.
    pub const EXIT_CODE: i32 = 64;
}

/// Runs the agent with the host's iptables until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    tokio::fs::create_dir_all(&config.state_dir)
        .await
        .map_err(|source| RunError::StateDir { path: config.state_dir.display().to_string(), source })?;
    let dataplane = IptablesDataplane::new(Iptables::host().with_variant(config.iptables_backend)).await;
    let info = dataplane.info();
    info!(backend = %info.backend, version = %info.iptables_version, ipv6 = info.ipv6, "iptables found");
    for problem in &info.problems {
        warn!(%problem, "dataplane problem");
    }
    let mut agent = Agent::new(dataplane, StateStore::new(&config.state_dir), config.drift_interval());
    let http = match config.metrics_listen {
        Listen::On(addr) => Some(
            http::serve(addr, agent.status(), shutdown.clone())
                .await
                .map_err(|source| RunError::Listen { addr, source })?,
        ),
        Listen::Off => None,
    };
    // The saved set goes back into the kernel before anything that needs the network.
    agent.restore().await;
    let drift = tokio::spawn(drift::run(
        agent.dataplane(),
        agent.status(),
        agent.events(),
        config.drift_interval(),
        shutdown.clone(),
    ));
    let host_id = match &config.host_id {
        Some(id) => id.clone(),
        None => resolve_host_id(&config.imds_endpoint).await?,
    };
    let options = StreamOptions {
        controller: config.controller.clone(),
        host_id,
        health_interval: config.health_interval(),
        addresses: None,
        backoff: backoff::Backoff::default(),
    };
    agent.run(&options, &shutdown).await;
    // Both watch `shutdown`, so they end promptly; a panic there is only logged.
    for task in [Some(drift), http].into_iter().flatten() {
        if let Err(e) = task.await {
            error!(error = %e, "a background task failed");
        }
    }
    Ok(())
}

/// Removes every chain and jump of ours in both families and, when `state_dir` is given,
/// the saved rule set. Returns a summary for the operator.
pub async fn cleanup(config: CleanupConfig) -> Result<String, CleanupError> {
    let dataplane = IptablesDataplane::new(Iptables::host().with_variant(config.iptables_backend)).await;
    let families = dataplane.cleanup().await?;
    let mut summary = if families == 0 {
        "no teefleet rules were installed".to_owned()
    } else {
        format!(
            "removed teefleet chains and jumps in {families} address famil{}",
            if families == 1 { "y" } else { "ies" }
        )
    };
    if let Some(dir) = config.state_dir
        && StateStore::new(&dir).remove().await?
    {
        summary.push_str("; deleted the saved rule set");
    }
    info!(%summary, "cleanup done");
    Ok(summary)
}

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("cannot remove the rules")]
    Rules(#[from] ApplyError),
    #[error("cannot delete the saved rule set")]
    State(#[from] state::StateError),
}

async fn resolve_host_id(endpoint: &str) -> Result<HostId, RunError> {
    let id = imds::instance_id(endpoint, imds::TIMEOUT)
        .await
        .map_err(|source| RunError::HostId { endpoint: endpoint.to_owned(), source })?;
    info!(host_id = %id, "host id from EC2 instance metadata");
    Ok(id)
}

/// An error and its sources on one line, for Nack messages and log fields.
pub(crate) fn error_chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
