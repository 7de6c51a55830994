//! fleet-controller's entry point: configuration, logging, signals; everything else is
//! `teefleet_controller::run`.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context;
use clap::Parser;
use teefleet_controller::{CaCommand, Command, Config, cloud::Ec2, load_or_create_ca, run, store::Store};
use tokio_util::sync::CancellationToken;

/// EX_USAGE from sysexits.h: the flags or settings are wrong, retrying will not help (the
/// unit's RestartPreventExitStatus=64).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help and --version are not errors.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(e) = config.check() {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let work = async {
        match &config.command {
            Some(Command::Ca { what }) => ca(&config, what).await,
            None => serve(config.clone()).await,
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fleet-controller failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    let cloud = Arc::new(Ec2::from_env().await);
    run(&config, listener, cloud, shutdown).await.context("controller stopped with an error")
}

/// `fleet-controller ca print|pin`: the CA from the database, created if this is the
/// first use, so an operator can take the pin before the first start.
#[allow(clippy::print_stdout)] // The certificate or pin is the command's output.
async fn ca(config: &Config, what: &CaCommand) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url).await.context("cannot open the database (--database-url)")?;
    let ca = load_or_create_ca(&store, config.ca_key_secret.as_deref()).await?;
    match what {
        CaCommand::Print => print!("{}", ca.cert_pem()),
        CaCommand::Pin => println!("{}", ca.pin()),
    }
    Ok(())
}

async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the controller with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Stopping]) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
    shutdown.cancel();
}
