//! The teefleet lab: everything the end-to-end tests and the demo need to run the real
//! binaries against real peers — a throwaway Postgres, moto's EC2 server with a fixture, a
//! dual-stack Linux bridge with network namespaces for source, collector and client hosts, the
//! workspace's processes, and a tcpdump capture on the collector.
//!
//! [`Lab::start`] brings all of it up; the modules can also be used one by one (the
//! controller's store tests use only [`TempPostgres`]).

mod builder;
pub mod capture;
mod cmd;
pub mod ec2;
mod error;
mod faults;
mod host;
pub mod iid;
pub mod imds;
pub mod lab;
pub mod moto;
pub mod netns;
pub mod postgres;
pub mod procs;
mod sync;
pub mod systemd;
mod traffic;
pub mod vpc;

pub use capture::{Capture, Finished, Packet, Pcap, Vxlan, tshark_fields};
pub use cmd::is_root;
pub use ec2::Ec2Fixture;
pub use error::LabError;
pub use faults::Loss;
pub use iid::IidSigner;
pub use imds::{Identity, Imds, LAB_ACCOUNT};
pub use lab::{
    AGENT_HOSTS, CLIENT, COLLECTOR, COLLECTOR_B, COLLECTOR2, COLLECTORS, JOIN_TAG, Lab, LabBuilder, SOURCES,
    launched_now, require_root_or_skip,
};
pub use moto::Moto;
pub use netns::{Network, Range};
pub use postgres::TempPostgres;
pub use procs::CliOutput;
pub use traffic::{Flood, Steady};
