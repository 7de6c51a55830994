//! The `fleet.v1` wire format: the generated gRPC and protobuf types, and the one place
//! that converts between them and `teefleet-model`'s domain types, in both directions.
//!
//! Decoding is validation: `TryFrom<v1::X> for model::X` checks every field with the
//! model's own constructors and names the offending field by its wire path
//! (`rules[2].peer_cidr`), so the controller refusing a request and the agent refusing a
//! pushed set say the same thing. Encoding (`From<&model::X> for v1::X`) cannot fail.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("fleet.v1");
}

/// The encoded `FileDescriptorSet` of `fleet/v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fleet_descriptor.bin"));

/// The crate version and the commit it was built from, for every binary's `--version`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("TEEFLEET_COMMIT"), ")");

/// The largest message on an agent stream, either way: a collector's Health with the most
/// arrival counters the controller accepts, and its rule set with the most arrivals, both
/// with the longest names the model admits, fit (tested in `tests/limits.rs`).
pub const MAX_AGENT_MESSAGE: usize = 8 * 1024 * 1024;

mod enroll;
mod enums;
mod report;
mod request;
mod rules;

pub use enroll::{enroll_request, join_proof};
pub use enums::{direction, family, protocol, rule_direction};
pub use report::{arrivals, counters, dataplane, host_event};
pub use request::{
    collector_ip, collector_ipv6, create_session_problems, encap, field, session_ttl, update_session_problems,
};
