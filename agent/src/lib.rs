//! fleet-agent: keeps one host's TEE mirroring rules in line with the teefleet controller.
//!
//! Code map:
//! - [`config`]: the typed configuration (flags and environment).
//! - [`client`]: the stream to the controller (Hello, RuleSet → Ack/Nack, Health) and the
//!   [`Agent`] that applies and persists what it receives.
//! - [`convert`]: the only place where wire types become domain types on the agent.
//! - [`firewall`]: the [`Dataplane`] trait and its iptables implementation.
//! - [`state`]: the last applied rule set on disk.
//! - [`imds`], [`host`]: the EC2 instance id and the host's addresses.
//!
//! Invariants: the agent only touches the chains it owns (`TEEFLEET-PRE`, `TEEFLEET-POST`
//! in `mangle`) and one jump to each; the kernel holds the old rule set or the new one,
//! never a mix; stopping the agent leaves the rules in place.

use std::error::Error;

use teefleet_model::HostId;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub mod backoff;
pub mod client;
pub mod config;
pub mod convert;
pub mod firewall;
pub mod host;
pub mod imds;
pub mod state;

pub use client::{Agent, StreamError, StreamOptions};
pub use config::Config;
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
    let mut agent = Agent::new(IptablesDataplane::new(Iptables::host()), StateStore::new(&config.state_dir));
    // The saved set goes back into the kernel before anything that needs the network.
    agent.restore().await;
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
    Ok(())
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
