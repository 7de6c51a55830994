//! The tool's options: flags with `FLEET_LOADGEN_*` environment fallbacks.

use std::time::Duration;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fleet-loadgen",
    version,
    about = "Many simulated agents against one fleet-controller: propagation latency, memory, CPU and start time"
)]
pub struct Config {
    /// Fleet sizes, run one after another, each against a freshly started controller and
    /// database (a comma-separated list).
    #[arg(long, env = "FLEET_LOADGEN_AGENTS", value_delimiter = ',', default_value = "100,1000,10000")]
    pub agents: Vec<usize>,

    /// Load a controller that is already running (plaintext, e.g. `http://127.0.0.1:7300`)
    /// instead of starting Postgres, moto and a controller. Every size then runs against it;
    /// start time, seeding and the Postgres figures are skipped.
    #[arg(long, env = "FLEET_LOADGEN_CONTROLLER", requires = "collector")]
    pub controller: Option<String>,

    /// With --controller: a collector instance id that controller's EC2 knows; it is
    /// registered unless it already is.
    #[arg(long, env = "FLEET_LOADGEN_COLLECTOR")]
    pub collector: Option<String>,

    /// With --controller: its process id, so its RSS and CPU can be read from /proc.
    #[arg(long, env = "FLEET_LOADGEN_CONTROLLER_PID", requires = "controller")]
    pub controller_pid: Option<u32>,

    /// How many agents open their connection at the same time.
    #[arg(long, env = "FLEET_LOADGEN_CONNECT_CONCURRENCY", default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Seconds between one simulated agent's Health reports (the agent's default is 10).
    #[arg(long, env = "FLEET_LOADGEN_HEALTH_SECS", default_value_t = 10)]
    pub health_secs: u64,

    /// Seconds to wait after the last agent connected before measuring idle cost, so
    /// every agent has sent its first Health.
    #[arg(long, env = "FLEET_LOADGEN_SETTLE_SECS", default_value_t = 10)]
    pub settle_secs: u64,

    /// Seconds over which the controller's idle CPU is measured.
    #[arg(long, env = "FLEET_LOADGEN_IDLE_SECS", default_value_t = 20)]
    pub idle_secs: u64,

    /// Seconds to watch for pushes after a change converged; longer than the controller's
    /// periodic resync (5 s), so a resync that re-sends would be seen.
    #[arg(long, env = "FLEET_LOADGEN_QUIET_SECS", default_value_t = 6)]
    pub quiet_secs: u64,

    /// Seconds a change may take to reach every covered agent before the agents still
    /// missing are reported as such.
    #[arg(long, env = "FLEET_LOADGEN_CONVERGE_TIMEOUT_SECS", default_value_t = 120)]
    pub converge_timeout_secs: u64,

    /// Sessions created through the API before the controller is restarted to measure
    /// its start time with a populated database (0 skips seeding).
    #[arg(long, env = "FLEET_LOADGEN_SEED_SESSIONS", default_value_t = 1000)]
    pub seed_sessions: usize,

    /// RUST_LOG for the controller child (its log file is named in the output).
    #[arg(long, env = "FLEET_LOADGEN_CONTROLLER_LOG", default_value = "info")]
    pub controller_log: String,

    /// Seed of the Health phases, so two runs spread their reports the same way.
    #[arg(long, env = "FLEET_LOADGEN_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Keep the work directory (controller and moto logs) after a successful run; it is
    /// always kept after a failure.
    #[arg(long, env = "FLEET_LOADGEN_KEEP_LOGS")]
    pub keep_logs: bool,

    /// Print the results as JSON instead of a table.
    #[arg(long, env = "FLEET_LOADGEN_JSON")]
    pub json: bool,
}

impl Config {
    pub fn health(&self) -> Duration {
        Duration::from_secs(self.health_secs)
    }

    pub fn settle(&self) -> Duration {
        Duration::from_secs(self.settle_secs)
    }

    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_secs)
    }

    pub fn quiet(&self) -> Duration {
        Duration::from_secs(self.quiet_secs)
    }

    pub fn converge_timeout(&self) -> Duration {
        Duration::from_secs(self.converge_timeout_secs)
    }

    /// Flag values clap cannot check.
    pub fn check(&self) -> Result<(), String> {
        if self.agents.is_empty() || self.agents.contains(&0) {
            return Err("--agents: give one or more fleet sizes above 0, e.g. 100,1000".to_owned());
        }
        if self.connect_concurrency == 0 {
            return Err("--connect-concurrency must be at least 1".to_owned());
        }
        if self.health_secs == 0 {
            return Err("--health-secs must be at least 1".to_owned());
        }
        if self.idle_secs == 0 {
            return Err("--idle-secs must be at least 1".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn sizes_are_a_list_and_checked() {
        let c = Config::try_parse_from(["fleet-loadgen", "--agents", "20,300"]).expect("parse");
        assert_eq!(c.agents, [20, 300]);
        assert!(c.check().is_ok());
        let zero = Config::try_parse_from(["fleet-loadgen", "--agents", "0"]).expect("parse");
        assert!(zero.check().is_err());
        assert!(Config::try_parse_from(["fleet-loadgen", "--controller", "http://x:1"]).is_err(), "needs a collector");
    }
}
