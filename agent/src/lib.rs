//! fleet-agent: keeps one host's TEE mirroring rules in line with the teefleet controller.
//!
//! Code map:
//! - [`config`]: the typed configuration (flags and environment).
//! - [`client`]: the stream to the controller (Hello, RuleSet → Ack/Nack, Health, events),
//!   moving between its replicas, and the [`Agent`] that applies and persists what it
//!   receives; [`backoff`]: when to reconnect, and to which replica.
//! - [`enroll`], [`discovery`], [`credentials`], [`pki`]: TLS to the controller: the CA
//!   found by its pin, enrollment with a join token or the instance identity, the client
//!   certificate on disk and its renewal; [`leave`]: the host revokes itself.
//! - [`convert`]: the only place where wire types become domain types on the agent.
//! - [`firewall`]: the [`Dataplane`] trait and its iptables implementation (render,
//!   observe, apply, verify, repair, backend detection, the nf_tables generation that lets
//!   a drift check skip reading).
//! - [`drift`]: the periodic drift check, independent of the controller.
//! - [`status`], [`http`]: readiness and metrics, served on a local port; [`notify`]:
//!   readiness and stopping as systemd hears them (`Type=notify`).
//! - [`events`]: what the agent did on its own, queued for the controller.
//! - [`state`]: the last applied rule set on disk.
//! - [`imds`], [`host`]: the EC2 instance id, its signed identity, and the host's addresses.
//!
//! Invariants: the agent only touches the chains it owns (`TEEFLEET-PRE`, `TEEFLEET-POST`
//! in `mangle`, IPv4 and IPv6) and one jump to each; the kernel holds the old rule set or
//! the new one, never a mix; stopping the agent leaves the rules in place; mirroring never
//! waits for the controller (the saved set is applied before any network, and a refused
//! or lost stream leaves the rules as they are); the private key never leaves the host.

use std::{error::Error, time::Duration};

use teefleet_model::HostId;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub mod backoff;
pub mod client;
pub mod config;
pub mod credentials;
pub mod discovery;
pub mod drift;
pub mod enroll;
pub mod events;
pub mod firewall;
pub mod host;
#[cfg(test)]
mod hostile_input;
pub mod http;
pub mod imds;
pub mod leave;
pub mod notify;
pub mod pki;
pub mod state;
pub mod status;

pub use client::{Agent, StreamError, StreamOptions, Transport};
pub use config::{CleanupConfig, Config, Invocation, JoinMethod, LeaveConfig};
pub use firewall::{ApplyError, Dataplane, Iptables, IptablesDataplane};
pub use state::StateStore;
pub use teefleet_model::Listen;

/// How long the agent may take to stop after a signal before the process exits anyway; the
/// unit's `TimeoutStopSec` is above it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Why the agent could not start. All are problems the operator fixes with a flag or in
/// the state directory, hence [`RunError::EXIT_CODE`].
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(String),
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
    #[error("cannot set up TLS to the controller {controller}")]
    Tls {
        controller: config::ControllerUrls,
        #[source]
        source: enroll::SetupError,
    },
}

impl RunError {
    /// EX_USAGE from sysexits.h, as for invalid flags.
    pub const EXIT_CODE: i32 = 64;
}

/// Runs the agent with the host's iptables until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let ready_by = tokio::time::Instant::now() + notify::READY_WAIT;
    let controllers = config.check().map_err(RunError::Config)?;
    info!(%controllers, "controller replicas, tried in this order");
    tokio::fs::create_dir_all(&config.state_dir)
        .await
        .map_err(|source| RunError::StateDir { path: config.state_dir.display().to_string(), source })?;
    let dataplane = IptablesDataplane::new(Iptables::host().with_variant(config.iptables_backend))
        .await
        .with_counter_max_age(drift::counter_max_age(config.health_interval, config.drift_interval))
        .with_control(control_addresses(&controllers).await);
    let info = dataplane.info();
    info!(backend = %info.backend, version = %info.iptables_version, ipv6 = info.ipv6, "iptables found");
    for problem in &info.problems {
        warn!(%problem, "dataplane problem");
    }
    // Before the saved set: a state directory copied from another host must not apply
    // that host's rules here.
    let host_id = match &config.host_id {
        Some(id) => id.clone(),
        None => resolve_host_id(&config.imds_endpoint).await?,
    };
    let state = StateStore::new(&config.state_dir).for_host(host_id.clone());
    let mut agent = Agent::new(dataplane, state, config.drift_interval);
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
    let ready_wait = tokio::spawn(started_anyway(agent.status(), ready_by, shutdown.clone()));
    let drift = tokio::spawn(drift::run(
        agent.dataplane(),
        agent.status(),
        agent.events(),
        config.drift_interval,
        shutdown.clone(),
    ));
    let mut renewal = None;
    if let Some((transport, renewal_task)) = transport(&config, controllers, &host_id, &agent, &shutdown).await? {
        renewal = renewal_task;
        let options = StreamOptions {
            transport,
            host_id,
            health_interval: config.health_interval,
            addresses: None,
            backoff: backoff::Backoff::default(),
            refused_retry: client::REFUSED_RETRY,
        };
        agent.run(&options, &shutdown).await;
    }
    // All watch `shutdown`, so they end promptly; a panic there is only logged.
    for task in [Some(drift), Some(ready_wait), http, renewal].into_iter().flatten() {
        if let Err(e) = task.await {
            error!(error = %e, "a background task failed");
        }
    }
    Ok(())
}

/// Tells systemd the agent has started at `by` if nothing did before (no saved set, and
/// the controller not reached yet), or at once if `by` has passed.
async fn started_anyway(status: std::sync::Arc<status::Status>, by: tokio::time::Instant, shutdown: CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep_until(by) => {
            if !status.is_started() {
                warn!(
                    waited_secs = notify::READY_WAIT.as_secs(),
                    "no saved rule set and no word from the controller yet; telling systemd the agent started, /readyz says it is not ready"
                );
            }
            status.started("no rules applied yet: not in touch with the controller (see /readyz); retrying");
        }
    }
}

/// The controllers' addresses, for the rules that keep the agent's own traffic with them
/// out of every session. A name that does not resolve at start is left out, and said so.
async fn control_addresses(controllers: &config::ControllerUrls) -> firewall::render::Control {
    let mut addrs = Vec::new();
    for url in controllers.as_slice() {
        let lookup = tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host(url.authority())).await;
        match lookup {
            Ok(Ok(found)) => addrs.extend(found),
            Ok(Err(e)) => {
                warn!(controller = %url, error = %e, "cannot resolve the controller: its traffic with this host is not kept out of mirroring")
            }
            Err(_) => {
                warn!(controller = %url, "resolving the controller timed out: its traffic with this host is not kept out of mirroring")
            }
        }
    }
    info!(addresses = ?addrs, "the agent's traffic with these is never mirrored");
    firewall::render::Control::new(addrs)
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

/// How the stream reaches the controller and, with TLS, the running renewal loop; `None`
/// when `shutdown` came while enrolling.
async fn transport<D: Dataplane>(
    config: &Config,
    controllers: config::ControllerUrls,
    host_id: &HostId,
    agent: &Agent<D>,
    shutdown: &CancellationToken,
) -> Result<Option<(Transport, Option<tokio::task::JoinHandle<()>>)>, RunError> {
    if !controllers.is_tls() {
        warn!(%controllers, "--insecure: plaintext to the controller, no authentication");
        return Ok(Some((Transport::Plaintext(controllers), None)));
    }
    let store = credentials::CredentialStore::new(&config.state_dir);
    let join = enroll::Join::new(config.join_method, config.join_token.clone(), &config.imds_endpoint);
    if config.join_method == JoinMethod::InstanceIdentity && config.join_token.is_some() {
        warn!("--join-token is not used: --join-method instance-identity enrolls with the instance identity");
    }
    let enrollment = enroll::Enrollment {
        urls: controllers.clone(),
        host_id: host_id.clone(),
        store: store.clone(),
        ca_pin: config.ca_pin,
        join: join.clone(),
        backoff: backoff::Backoff::default(),
    };
    let established =
        enrollment.establish(shutdown).await.map_err(|source| RunError::Tls { controller: controllers, source })?;
    let Some((controller, creds)) = established else { return Ok(None) };
    let (publish, identity) = tokio::sync::watch::channel(creds);
    let renewal = enroll::Renewal {
        controller: controller.clone(),
        host_id: host_id.clone(),
        join,
        store,
        backoff: enroll::RENEWAL_BACKOFF,
    };
    let task = tokio::spawn(renewal.run(publish, agent.events(), shutdown.clone()));
    Ok(Some((Transport::Tls { controller, identity }, Some(task))))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn with_nothing_applied_the_agent_still_starts_at_the_deadline() {
        let status = Arc::new(status::Status::new(Duration::from_secs(5)));
        let by = tokio::time::Instant::now() + Duration::from_millis(200);
        let task = tokio::spawn(started_anyway(status.clone(), by, CancellationToken::new()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!status.is_started(), "not before the deadline");
        task.await.expect("task");
        assert!(status.is_started(), "at the deadline");
    }

    #[tokio::test]
    async fn shutdown_before_the_deadline_starts_nothing() {
        let status = Arc::new(status::Status::new(Duration::from_secs(5)));
        let shutdown = CancellationToken::new();
        let by = tokio::time::Instant::now() + Duration::from_secs(60);
        let task = tokio::spawn(started_anyway(status.clone(), by, shutdown.clone()));
        shutdown.cancel();
        task.await.expect("task");
        assert!(!status.is_started());
    }
}
