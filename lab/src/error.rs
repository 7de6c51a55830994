//! The lab's one error type: every failure names the command or resource that failed and,
//! where there is one, the log file to read.

use std::path::PathBuf;
use std::process::ExitStatus;

/// Why a piece of the lab could not be brought up or checked.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A filesystem or process-spawning call failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A helper command ran and exited non-zero.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command { command: String, status: ExitStatus, stderr: String },
    /// A program the lab needs is not installed or not built.
    #[error("{0}")]
    Missing(String),
    /// The lab needs root (network namespaces, iptables, running Postgres as `postgres`).
    #[error("the lab needs root (network namespaces, iptables); run as root or set TEEFLEET_SKIP_ROOT_TESTS=1 to skip")]
    NotRoot,
    /// Something did not become ready in time.
    #[error("timed out after {seconds}s waiting for {what}{}", log_hint(.log))]
    Timeout { what: String, seconds: u64, log: Option<PathBuf> },
    /// A child process exited while the lab still needed it.
    #[error("{what} exited early ({status}){}", log_hint(.log))]
    Exited { what: String, status: ExitStatus, log: Option<PathBuf> },
    /// An EC2 call against moto failed.
    #[error("EC2 {operation} failed: {message}")]
    Ec2 { operation: String, message: String },
    /// The caller passed something the lab cannot use.
    #[error("invalid lab input: {0}")]
    Invalid(String),
}

fn log_hint(log: &Option<PathBuf>) -> String {
    match log {
        Some(path) => format!("; see {}", path.display()),
        None => String::new(),
    }
}

impl LabError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LabError::Io { context: context.into(), source }
    }
}
