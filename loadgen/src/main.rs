//! fleet-loadgen's entry point: options, logging to stderr, Ctrl-C; results to stdout.
//! Everything else is `teefleet_loadgen::run`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use teefleet_loadgen::{Config, Report};

fn main() -> ExitCode {
    let config = Config::parse();
    teefleet_loadgen::init_logging();
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fleet-loadgen failed");
            eprintln!("fleet-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Config) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(async {
        // Dropping the run on a signal drops the lab with it, which stops every child.
        tokio::select! {
            result = teefleet_loadgen::run(config) => result.context("the load run failed"),
            signal = signalled() => bail!("stopped by {signal}; child processes were stopped"),
        }
    })?;
    print(config, &report)
}

/// The first SIGINT or SIGTERM.
async fn signalled() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::warn!("cannot install signal handlers; Ctrl-C will not clean up");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

fn print(config: &Config, report: &Report) -> Result<()> {
    let text = if config.json {
        let mut json = serde_json::to_string_pretty(report).context("rendering the results as JSON")?;
        json.push('\n');
        json
    } else {
        report.table()
    };
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing the results")?;
    Ok(())
}
