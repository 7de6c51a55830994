//! The `fleet-agent` binary: parse the configuration, set up logging and signals, run.

use std::process::ExitCode;

use anyhow::Context as _;
use teefleet_agent::{CleanupConfig, Config, Invocation, LeaveConfig, RunError, SHUTDOWN_GRACE};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// One thread: the agent's work is a few child processes and one stream, and a small
/// footprint on every host of the fleet matters more than parallelism.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let invocation = match parse::<Invocation>(std::env::args_os()) {
        Ok(invocation) => invocation,
        Err(code) => return code,
    };
    init_logging();
    match invocation {
        Invocation::Run(config) => run(*config).await,
        Invocation::Cleanup(config) => cleanup(config).await,
        Invocation::Leave(config) => leave(config).await,
    }
}

/// The agent, until a signal stops it.
async fn run(config: Config) -> ExitCode {
    info!(version = env!("CARGO_PKG_VERSION"), "fleet-agent starting");

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

/// Parses flags; `--help` and `--version` exit 0 here. On invalid flags clap's message
/// names the flag and the code is 64 (EX_USAGE), which tells systemd it is a config error.
fn parse<T: clap::Parser>(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<T, ExitCode> {
    T::try_parse_from(args).map_err(|e| {
        if !e.use_stderr() {
            e.exit();
        }
        let _ = e.print();
        ExitCode::from(64)
    })
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
}

/// `fleet-agent cleanup [--state-dir DIR]`.
async fn cleanup(config: CleanupConfig) -> ExitCode {
    match teefleet_agent::cleanup(config).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{:#}", anyhow::Error::new(e)), "cleanup failed");
            ExitCode::FAILURE
        }
    }
}

/// `fleet-agent leave`: 0 when revoked, 69 when the controller cannot be reached, 1
/// otherwise.
async fn leave(config: LeaveConfig) -> ExitCode {
    match teefleet_agent::leave::leave(config).await {
        Ok(revoked) => {
            info!(revoked, "left the fleet");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = e.exit_code();
            error!(error = format!("{:#}", anyhow::Error::new(e)), "leave failed");
            ExitCode::from(code)
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
        teefleet_agent::notify::stopping();
        shutdown.cancel();
    });
    Ok(())
}
