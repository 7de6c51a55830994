//! The `fleet-agent` binary: parse the configuration, set up logging and signals, run.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser as _;
use teefleet_agent::{Config, RunError};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// How long the stream may take to stop after a signal before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(e) if e.use_stderr() => {
            // clap's message names the flag; 64 (EX_USAGE) tells systemd it is a config error.
            let _ = e.print();
            return ExitCode::from(64);
        }
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    info!(version = env!("CARGO_PKG_VERSION"), controller = %config.controller, "fleet-agent starting");

    let shutdown = CancellationToken::new();
    match watch_signals(shutdown.clone()) {
        Ok(()) => {}
        Err(e) => {
            error!(error = format!("{e:#}"), "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    }
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = teefleet_agent::run(config, shutdown.clone()) => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!(error = format!("{:#}", anyhow::Error::new(e)), "fleet-agent cannot start");
                ExitCode::from(RunError::EXIT_CODE as u8)
            }
        },
        () = grace => {
            warn!(grace_secs = SHUTDOWN_GRACE.as_secs(), "shutdown took too long; exiting");
            ExitCode::SUCCESS
        }
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
fn watch_signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutting down; applied rules stay in place");
        shutdown.cancel();
    });
    Ok(())
}
