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
    pub async fn start(database_url: String, cloud: Arc<FakeCloud>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = Config::try_parse_from(["fleet-controller", "--insecure", "--database-url", &database_url])
            .expect("config");
        let config = Config { listen: addr, ..config };
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            teefleet_controller::run(&config, listener, cloud, token).await.expect("controller runs");
        });
        let channel = connect(addr).await;
        Self { addr, channel, shutdown, task }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task).await.expect("stops in time").expect("no panic");
    }
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
