//! fleet-loadgen: many simulated agents against one `fleet-controller`, to see how the
//! controller grows with the fleet. For each fleet size it starts a fresh controller on a
//! fresh database (or uses one given with `--controller`), connects the agents, each on
//! its own connection, and measures idle memory and CPU, how fast a session reaches the
//! agents it covers and that it reaches no other, and how long the controller takes to
//! start with the fleet in its database. BENCHMARKS.md ("Fleet scale") explains the
//! figures; `scripts/loadgen` runs it on release binaries.

pub mod agents;
pub mod config;
mod dbstat;
mod error;
pub mod latency;
pub mod procstat;
pub mod report;
mod rig;
pub mod scenario;
pub mod siege;
mod size;
pub mod storm;

use tracing::info;

pub use config::Config;
pub use error::LoadgenError;
pub use report::Report;
pub use size::{Idle, SizeReport};

/// Logs to stderr, at `RUST_LOG` or else info without the HTTP/2 chatter: the results go
/// to stdout.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,h2=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Runs every fleet size in `config.agents`, one after another, and returns the figures.
/// Child processes (Postgres, moto, controllers) end when this returns or is dropped.
pub async fn run(config: &Config) -> Result<Report, LoadgenError> {
    config.check().map_err(LoadgenError::Invalid)?;
    let largest = config.agents.iter().copied().max().unwrap_or(0);
    size::check_file_limit(largest)?;
    let ticks = procstat::clock_ticks();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let mut report = Report {
        cpus,
        clock_ticks: ticks,
        controller: String::new(),
        connect_concurrency: config.connect_concurrency,
        health_secs: config.health_secs,
        work_dir: None,
        sizes: Vec::new(),
    };
    match (&config.controller, &config.collector) {
        (Some(url), Some(collector)) => {
            report.controller = url.clone();
            for &agents in &config.agents {
                let against = size::Against::External { url, pid: config.controller_pid, collector };
                report.sizes.push(size::measure(against, agents, config, ticks).await?);
            }
        }
        (Some(_), None) => return Err(LoadgenError::Invalid("--controller needs --collector".into())),
        (None, _) => {
            report.controller = teefleet_lab::procs::binary(teefleet_lab::procs::CONTROLLER_BIN)?.display().to_string();
            let mut lab = rig::Lab::start(&config.controller_log).await?;
            let result = run_sizes(&mut lab, config, ticks, &mut report).await;
            if result.is_err() || config.keep_logs {
                lab.keep_dir();
                report.work_dir = Some(lab.dir().display().to_string());
                info!(dir = %lab.dir().display(), "kept the work directory");
            }
            if let Err(e) = result {
                tracing::error!(dir = %lab.dir().display(), "the run failed; the controller and moto logs are kept");
                return Err(e);
            }
        }
    }
    Ok(report)
}

async fn run_sizes(lab: &mut rig::Lab, config: &Config, ticks: u64, report: &mut Report) -> Result<(), LoadgenError> {
    for &agents in &config.agents {
        let sized = size::measure(size::Against::Lab(lab), agents, config, ticks).await?;
        report.sizes.push(sized);
    }
    Ok(())
}
