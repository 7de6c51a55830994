//! Shared by the controller's integration tests: a real Postgres cluster, the controller
//! served in-process on 127.0.0.1:0, and an in-memory cloud that records what was asked
//! of EC2.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::Parser;
use futures::future::BoxFuture;
use teefleet_controller::{
    Config,
    cloud::{Cloud, CloudError, InstanceInfo},
};
use teefleet_lab::postgres::TempPostgres;
use teefleet_model::InstanceId;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A throwaway cluster per test: a static one would never be dropped, and would outlive
/// the test binary.
pub async fn database() -> (TempPostgres, String) {
    let pg = TempPostgres::start().await.expect("start a throwaway Postgres cluster");
    let url = pg.create_database("teefleet").await.expect("create database");
    (pg, url)
}

/// EC2 as a map of instances; `fail` makes every call answer Unavailable.
#[derive(Default)]
pub struct FakeCloud {
    pub instances: Mutex<HashMap<String, InstanceInfo>>,
    pub fail: Mutex<bool>,
}

impl FakeCloud {
    pub fn with(instances: &[(&str, &str)]) -> Arc<Self> {
        let cloud = FakeCloud::default();
        {
            let mut map = cloud.instances.lock().expect("lock");
            for (id, ip) in instances {
                map.insert(
                    (*id).to_owned(),
                    InstanceInfo {
                        private_ip: Some(ip.parse().expect("ip")),
                        ipv6: None,
                        subnet_id: Some("subnet-1".into()),
                        source_dest_check: Some(true),
                    },
                );
            }
        }
        Arc::new(cloud)
    }

    pub fn source_dest_check(&self, id: &str) -> Option<bool> {
        self.instances.lock().expect("lock").get(id).and_then(|i| i.source_dest_check)
    }
}

impl Cloud for FakeCloud {
    fn describe_instance<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<InstanceInfo, CloudError>> {
        Box::pin(async move {
            if *self.fail.lock().expect("lock") {
                return Err(CloudError::Unavailable("injected failure".into()));
            }
            self.instances
                .lock()
                .expect("lock")
                .get(id.as_str())
                .cloned()
                .ok_or_else(|| CloudError::NotFound(id.to_string()))
        })
    }

    fn set_source_dest_check<'a>(&'a self, id: &'a InstanceId, enabled: bool) -> BoxFuture<'a, Result<(), CloudError>> {
        Box::pin(async move {
            if *self.fail.lock().expect("lock") {
                return Err(CloudError::Unavailable("injected failure".into()));
            }
            let mut map = self.instances.lock().expect("lock");
            let instance = map.get_mut(id.as_str()).ok_or_else(|| CloudError::NotFound(id.to_string()))?;
            instance.source_dest_check = Some(enabled);
            Ok(())
        })
    }
}

pub struct Controller {
    pub addr: SocketAddr,
    pub channel: Channel,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Controller {
    /// The controller with --insecure: plaintext, no authentication.
    pub async fn start(database_url: String, cloud: Arc<FakeCloud>) -> Self {
        let (ctl, _) = Self::launch(&database_url, cloud, &["--insecure"]).await;
        ctl
    }

    /// The controller serving TLS with `bootstrap` as its admin token. Returns it with the
    /// CA certificate (PEM); its channel is TLS without a client certificate.
    pub async fn start_secure(database_url: String, cloud: Arc<FakeCloud>, bootstrap: &str) -> (Self, String) {
        let (ctl, addr) = Self::launch(&database_url, cloud, &["--bootstrap-token", bootstrap]).await;
        let store = teefleet_controller::store::Store::connect(&database_url).await.expect("store");
        let ca = eventually(30, "the controller to create its CA", || async {
            store.stored_ca().await.expect("read CA").map(|ca| ca.cert_pem)
        })
        .await;
        let channel = tls_channel(addr, &ca, None).await;
        (Self { channel, ..ctl }, ca)
    }

    async fn launch(database_url: &str, cloud: Arc<FakeCloud>, args: &[&str]) -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = Config::try_parse_from([&["fleet-controller", "--database-url", database_url], args].concat())
            .expect("config");
        let config = Config { listen: addr, ..config };
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            teefleet_controller::run(&config, listener, cloud, token).await.expect("controller runs");
        });
        let secure = !args.contains(&"--insecure");
        let channel = if secure { lazy_channel(addr) } else { connect(addr).await };
        (Self { addr, channel, shutdown, task }, addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task).await.expect("stops in time").expect("no panic");
    }
}

/// A channel that connects on first use (the TLS one replaces it once the CA is known).
fn lazy_channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint").connect_lazy()
}

/// A TLS channel to `localhost` (a default name in the server certificate) trusting `ca`,
/// with a client certificate when `identity` is (cert PEM, key PEM).
pub async fn tls_channel(addr: SocketAddr, ca: &str, identity: Option<(&str, &str)>) -> Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config");
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not connect with TLS to {addr}");
}

async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("controller did not start listening on {addr}");
}

/// Polls `check` until it returns Some, or panics after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
