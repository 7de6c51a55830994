//! The teefleet lab: everything the end-to-end tests and the demo need to run the real
//! binaries against real peers — a throwaway Postgres, moto's EC2 server with a fixture, a
//! Linux bridge with network namespaces for source, collector and client hosts, the
//! workspace's processes, and a tcpdump capture on the collector.

mod cmd;
mod error;
pub mod postgres;

pub use cmd::is_root;
pub use error::LabError;
pub use postgres::TempPostgres;
