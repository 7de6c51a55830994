//! fleet-controller: stores mirroring sessions, collectors and hosts in Postgres, compiles
//! sessions into one versioned rule set per host, pushes the sets to agents over one
//! stream each, records what every agent applied, and keeps EC2 Source/Dest Check off on
//! collectors in use.
//!
//! `run` is the whole server; `main.rs` only parses config and wires signals, so tests
//! can run the server on `127.0.0.1:0`.

mod acks;
pub mod auth;
mod budget;
pub mod cloud;
mod config;
mod connections;
pub mod delivery;
pub mod ec2_errors;
mod expiry;
mod fanout;
pub mod grpc;
mod heartbeat;
pub mod iid;
mod leader;
pub mod metrics;
pub mod pki;
pub mod preflight;
mod push;
pub mod reconcile;
mod recount;
pub mod refusals;
pub mod report;
pub mod selectors;
pub mod sessions;
pub mod status;
pub mod store;

use std::{sync::Arc, time::Duration};

use teefleet_model::Listen;
use teefleet_proto::v1::{
    agent_service_server::AgentServiceServer, audit_service_server::AuditServiceServer,
    collector_service_server::CollectorServiceServer, host_service_server::HostServiceServer,
    session_service_server::SessionServiceServer, token_service_server::TokenServiceServer,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{CaCommand, Command, Config};

use crate::{
    cloud::Cloud,
    grpc::{Access, Api},
    metrics::Metrics,
    pki::{Ca, PkiError},
    push::Hub,
    store::{AuditEntry, Store},
};

/// The largest request an admin call may send: a session with the most sources fits many
/// times over.
const MAX_ADMIN_MESSAGE: usize = 256 * 1024;
/// The largest message on an agent stream (a collector's Health with every arrival).
pub(crate) const MAX_AGENT_MESSAGE: usize = teefleet_proto::MAX_AGENT_MESSAGE;

/// How long in-flight calls and streams get to finish after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("could not open the database")]
    Store(#[source] store::StoreError),
    #[error("gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
    #[error("the certificate authority is unusable")]
    Pki(#[source] PkiError),
    #[error("could not set up access control")]
    Access(#[source] store::StoreError),
    #[error("cannot serve /metrics (--metrics-listen)")]
    Metrics(#[source] std::io::Error),
    #[error("the built-in fleet.v1 descriptors are unusable for reflection")]
    Reflection(#[source] tonic_reflection::server::Error),
}

/// The fleet's CA: the one in the database, or a new one stored there if there is none
/// (the first replica to store one wins; the others load it).
pub async fn load_or_create_ca(store: &Store, secret: Option<&str>) -> Result<Ca, Error> {
    let stored = match store.stored_ca().await.map_err(Error::Store)? {
        Some(stored) => stored,
        None => {
            let (_, stored) = Ca::generate(secret).map_err(Error::Pki)?;
            let kept = store.store_ca_once(&stored).await.map_err(Error::Store)?;
            if kept.cert_pem == stored.cert_pem {
                info!(sealed = stored.sealed, "created the fleet CA");
            }
            kept
        }
    };
    if !stored.sealed && secret.is_some() {
        warn!("the CA key in the database is not sealed; --ca-key-secret does not apply to a CA created without it");
    }
    Ca::load(&stored, secret).map_err(Error::Pki)
}

/// The bootstrap admin token: the configured one, or a new one logged once when no admin
/// token is usable (a first start, or every admin token expired or revoked).
async fn bootstrap_token(store: &Store, configured: Option<&str>) -> Result<(), Error> {
    let entry = |action| AuditEntry::new("controller", "local", action, "bootstrap");
    if let Some(secret) = configured {
        return store
            .upsert_bootstrap_token(&auth::hash_secret(secret), &entry("token.bootstrap"))
            .await
            .map_err(Error::Access);
    }
    if store.usable_admin_token_exists().await.map_err(Error::Access)? {
        return Ok(());
    }
    let (_, secret) = auth::new_token().map_err(|_| Error::Pki(PkiError::Random))?;
    store
        .upsert_bootstrap_token(&auth::hash_secret(&secret), &entry("token.bootstrap"))
        .await
        .map_err(Error::Access)?;
    // Logged once, as the only way to get the first admin token without FLEET_BOOTSTRAP_TOKEN.
    warn!(
        token = %secret,
        "no admin token existed: created the bootstrap admin token (shown only now; store it, e.g. \
         fleetctl --token ..., or set FLEET_BOOTSTRAP_TOKEN)"
    );
    Ok(())
}

/// Serves until `shutdown` is cancelled.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    cloud: Arc<dyn Cloud>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let join = config.join_policy().map_err(Error::Config)?;
    if let Some(policy) = &join {
        info!(
            accounts = ?policy.accounts, tags = ?policy.tags.iter().map(ToString::to_string).collect::<Vec<_>>(),
            certificates = policy.signers.len(), "agents may enroll by EC2 instance identity"
        );
    }
    let store = Store::connect(&config.database_url).await.map_err(Error::Store)?;
    let (ca, tls) = if config.insecure {
        warn!(
            listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "--insecure: plaintext and no authentication; anyone who can connect controls mirroring"
        );
        (None, None)
    } else {
        // aws-sdk-ec2 enables rustls' aws-lc-rs provider and tonic its ring one; with both
        // compiled in, rustls needs to be told. The error means one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = load_or_create_ca(&store, config.ca_key_secret.as_deref()).await?;
        bootstrap_token(&store, config.bootstrap_token.as_deref()).await?;
        let sans = config.sans();
        let tls = ca.server_tls(&sans).map_err(Error::Pki)?;
        info!(pin = %ca.pin(), ?sans, "serving TLS");
        (Some(ca), Some(tls))
    };
    let open_files = connections::raise_open_files();
    let configured = config.connection_limits();
    let limits = configured.within(open_files);
    info!(open_files = ?open_files, max_connections = limits.max, "open-file limit");
    if limits.max < configured.max {
        warn!(
            open_files = ?open_files, max_connections = limits.max,
            "the open-file limit caps the connections below --max-connections; raise LimitNOFILE"
        );
    }
    let hub = Hub::default();
    let metrics = Arc::new(Metrics::default());
    metrics.limits(limits.max, open_files.unwrap_or(u64::MAX));
    let cloud: Arc<dyn Cloud> = Arc::new(cloud::Metered::new(cloud, metrics.clone()));
    let metrics_task = match config.metrics_listen {
        Listen::On(addr) => {
            let scrape = metrics::Scrape {
                metrics: metrics.clone(),
                store: store.clone(),
                hub: hub.clone(),
                delivery: config.delivery_window(),
            };
            Some(metrics::serve(addr, scrape, shutdown.clone()).await.map_err(Error::Metrics)?)
        }
        Listen::Off => None,
    };
    let (heartbeats, health_writer) = heartbeat::Heartbeats::start(store.clone(), shutdown.clone());
    let (recount, recount_task) = recount::Recount::start(store.clone(), shutdown.clone());
    let (acks, ack_writer) = acks::Acks::start(store.clone(), shutdown.clone());
    let (refusals, refusal_task) =
        refusals::Refusals::start(store.clone(), metrics.clone(), config.refusal_report_interval, shutdown.clone());
    let api = Api {
        heartbeats,
        acks,
        refusals,
        metrics: metrics.clone(),
        access: Arc::new(Access { ca, agent_cert_lifetime: config.agent_cert_ttl, join }),
        store: store.clone(),
        cloud: cloud.clone(),
        hub: hub.clone(),
        shutdown: shutdown.clone(),
        delivery: config.delivery_window(),
        recount,
    };
    let ec2_wake = Arc::new(tokio::sync::Notify::new());
    let fanout =
        tokio::spawn(fanout::run(store.clone(), hub, ec2_wake.clone(), config.resync_interval, shutdown.clone()));
    let leader = {
        let lead_store = store.clone();
        let (selector_interval, expiry_interval) = (config.selector_interval, config.expiry_interval);
        let work = move |lost: CancellationToken| -> futures::future::BoxFuture<'static, ()> {
            let (store, cloud, wake) = (lead_store.clone(), cloud.clone(), ec2_wake.clone());
            Box::pin(async move {
                tokio::join!(
                    reconcile::run(store.clone(), cloud.clone(), wake, lost.clone()),
                    selectors::run(store.clone(), cloud, selector_interval, lost.clone()),
                    expiry::run(store, expiry_interval, lost),
                );
            })
        };
        tokio::spawn(leader::run(store, work, shutdown.clone()))
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SessionServiceServer<Api>>().await;
    health.set_serving::<AgentServiceServer<Api>>().await;

    // The schema is public (it is in every agent and fleetctl), so reflection needs no
    // token: grpcurl can list and describe without a copy of the .proto.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(teefleet_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(Error::Reflection)?;

    info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving");
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(SessionServiceServer::new(api.clone()).max_decoding_message_size(MAX_ADMIN_MESSAGE))
        .add_service(CollectorServiceServer::new(api.clone()).max_decoding_message_size(MAX_ADMIN_MESSAGE))
        .add_service(HostServiceServer::new(api.clone()).max_decoding_message_size(MAX_ADMIN_MESSAGE))
        .add_service(TokenServiceServer::new(api.clone()).max_decoding_message_size(MAX_ADMIN_MESSAGE))
        .add_service(AuditServiceServer::new(api.clone()).max_decoding_message_size(MAX_ADMIN_MESSAGE))
        .add_service(AgentServiceServer::new(api).max_decoding_message_size(MAX_AGENT_MESSAGE));
    let stop = shutdown.clone().cancelled_owned();
    let server: futures::future::BoxFuture<'_, Result<(), tonic::transport::Error>> = match tls {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
            let incoming = connections::tls(listener, acceptor, limits, metrics.clone(), shutdown.clone());
            Box::pin(router.serve_with_incoming_shutdown(incoming, stop))
        }
        None => {
            let incoming = connections::plain(listener, limits, metrics.clone(), shutdown.clone());
            Box::pin(router.serve_with_incoming_shutdown(incoming, stop))
        }
    };

    let mut server = std::pin::pin!(server);
    // The listener is bound and the server accepts from the first poll below; what
    // connects before then waits in the listen backlog.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("serving")]) {
        warn!(error = %e, "cannot notify systemd");
    }
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
    fanout.abort();
    recount_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    if tokio::time::timeout(Duration::from_secs(5), refusal_task).await.is_err() {
        warn!("the refusal report did not stop in time");
    }
    if tokio::time::timeout(Duration::from_secs(5), health_writer).await.is_err() {
        warn!("the health writer did not stop in time");
    }
    if tokio::time::timeout(Duration::from_secs(5), ack_writer).await.is_err() {
        warn!("the ack writer did not stop in time");
    }
    // Hands the lead over at once rather than when the lock's connection times out.
    if tokio::time::timeout(Duration::from_secs(5), leader).await.is_err() {
        warn!("the leader task did not stop in time");
    }
    info!("stopped");
    result.map_err(Error::Serve)
}
