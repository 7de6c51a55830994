//! Why a load run could not be set up or carried out. Each variant says what was being done,
//! so the message alone tells the operator where to look.

use teefleet_lab::LabError;

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// Postgres, moto or the controller child could not be brought up.
    #[error("setting up the lab: {0}")]
    Lab(#[from] LabError),
    /// An admin call the run depends on failed.
    #[error("{what}: {code:?}: {message}")]
    Call { what: String, code: tonic::Code, message: String },
    /// A connection could not be opened.
    #[error("{what}: {message}")]
    Connect { what: String, message: String },
    /// The controller did not answer its health check in time.
    #[error("the controller did not start serving within {seconds} s; see {log}")]
    NotServing { seconds: u64, log: String },
    /// Some simulated agents could not open their stream.
    #[error("{failed} of {total} agents could not open their stream; first error: {first}")]
    Agents { failed: usize, total: usize, first: String },
    /// The process may not open enough sockets for the fleet.
    #[error(
        "the open-file limit is {have}, but {agents} agents need about {need} descriptors in this process and in the \
         controller; raise it (ulimit -n {need}) or run fewer agents"
    )]
    FileLimit { have: u64, need: u64, agents: usize },
    /// The fleet did not converge on what the database wants.
    #[error("{behind} agents still lacked their desired version {seconds} s after the last change")]
    NotSettled { behind: usize, seconds: u64 },
    /// Reading Postgres' statistics failed.
    #[error("reading Postgres statistics: {0}")]
    Database(#[from] sqlx::Error),
    /// A local file could not be made.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An option combination or value the run cannot use.
    #[error("{0}")]
    Invalid(String),
}

impl LoadgenError {
    pub(crate) fn call(what: impl Into<String>, status: &tonic::Status) -> Self {
        LoadgenError::Call { what: what.into(), code: status.code(), message: status.message().to_owned() }
    }

    pub(crate) fn connect(what: impl Into<String>, error: &(dyn std::error::Error + 'static)) -> Self {
        LoadgenError::Connect { what: what.into(), message: chain(error) }
    }
}

/// An error with its sources: tonic's transport error alone says only "transport error".
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
