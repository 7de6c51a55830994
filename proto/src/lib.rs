//! Generated types for the `fleet.v1` gRPC API. Nothing but generated code lives here:
//! conversion into validated domain types happens at the gRPC edges of the controller and
//! the agent.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("fleet.v1");
}
