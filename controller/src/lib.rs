//! fleet-controller: stores mirroring sessions, collectors and hosts in Postgres, compiles
//! sessions into one versioned rule set per host, pushes the sets to agents over one
//! stream each, records what every agent applied, and keeps EC2 Source/Dest Check off on
//! collectors in use.
//!
//! `run` is the whole server; `main.rs` only parses config and wires signals, so tests
//! can run the server on `127.0.0.1:0`.

pub mod cloud;
mod config;
pub mod grpc;
mod push;
pub mod reconcile;
pub mod report;
pub mod status;
pub mod store;

use std::{sync::Arc, time::Duration};

use teefleet_proto::v1::{
    agent_service_server::AgentServiceServer, collector_service_server::CollectorServiceServer,
    host_service_server::HostServiceServer, session_service_server::SessionServiceServer,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;

use crate::{cloud::Cloud, grpc::Api, push::Hub, store::Store};

/// How long in-flight calls and streams get to finish after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not open the database")]
    Store(#[source] store::StoreError),
    #[error("gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
}

/// Serves until `shutdown` is cancelled.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    cloud: Arc<dyn Cloud>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let store = Store::connect(&config.database_url).await.map_err(Error::Store)?;
    let api = Api {
        store: store.clone(),
        cloud: cloud.clone(),
        hub: Hub::default(),
        ec2_wake: Arc::new(tokio::sync::Notify::new()),
        shutdown: shutdown.clone(),
    };
    let reconciler = tokio::spawn(reconcile::run(store, cloud, api.ec2_wake.clone(), shutdown.clone()));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SessionServiceServer<Api>>().await;
    health.set_serving::<AgentServiceServer<Api>>().await;

    info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving");
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .add_service(health_service)
        .add_service(SessionServiceServer::new(api.clone()))
        .add_service(CollectorServiceServer::new(api.clone()))
        .add_service(HostServiceServer::new(api.clone()))
        .add_service(AgentServiceServer::new(api))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.clone().cancelled_owned());

    let mut server = std::pin::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            warn!("shutdown grace period over; dropping remaining connections");
            Ok(())
        }
    };
    reconciler.abort();
    info!("stopped");
    result.map_err(Error::Serve)
}
