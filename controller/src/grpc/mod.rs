//! The gRPC edge: admin services for fleetctl and the agent stream. Handlers convert
//! requests into domain types (`convert`), call the store and the cloud, and map errors
//! in one place (`error`).

mod access;
mod admin;
mod agent;
mod convert;
mod error;
mod preflight;
mod session_changes;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{
    acks::Acks, cloud::Cloud, heartbeat::Heartbeats, metrics::Metrics, push::Hub, refusals::Refusals, store::Store,
};

pub use access::Access;
pub use error::ApiError;

/// Everything a handler needs; cheap to clone, one per service.
#[derive(Clone)]
pub struct Api {
    pub(crate) store: Store,
    pub(crate) access: Arc<Access>,
    pub(crate) cloud: Arc<dyn Cloud>,
    pub(crate) hub: Hub,
    pub(crate) heartbeats: Heartbeats,
    pub(crate) acks: Acks,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) refusals: Refusals,
    pub(crate) shutdown: CancellationToken,
    /// How sessions' delivery is judged.
    pub(crate) delivery: crate::delivery::Window,
    /// Asks for what collectors count to follow their sources' addresses.
    pub(crate) recount: crate::recount::Recount,
}
