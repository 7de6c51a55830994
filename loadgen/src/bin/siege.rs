//! fleet-siege's entry point: options, logging to stderr, results to stdout. Everything
//! else is `teefleet_loadgen::siege`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use teefleet_loadgen::siege::{self, SiegeConfig};

fn main() -> ExitCode {
    let config = SiegeConfig::parse();
    teefleet_loadgen::init_logging();
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet-siege: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &SiegeConfig) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(siege::run(config)).context("the siege failed")?;
    let text = if config.json {
        serde_json::to_string_pretty(&report).context("rendering the results as JSON")? + "\n"
    } else {
        report.table()
    };
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing the results")
}
