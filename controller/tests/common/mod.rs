//! Shared by the controller's integration tests: a real Postgres cluster, the controller
//! served in-process on 127.0.0.1:0, and an in-memory cloud that records what was asked
//! of EC2.

#![allow(dead_code)]

pub mod secure;

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
    cloud::{Cloud, CloudError, InstanceInfo, Standing, TaggedInstance},
};
use teefleet_lab::postgres::TempPostgres;
use teefleet_model::{InstanceId, TagSelector, carries_all};
use teefleet_proto::v1::{
    self as pb, agent_message::Msg, agent_service_client::AgentServiceClient, controller_message,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A throwaway cluster per test: a static one would never be dropped, and would outlive
/// the test binary.
pub async fn database() -> (TempPostgres, String) {
    let pg = TempPostgres::start().await.expect("start a throwaway Postgres cluster");
    let url = pg.create_database("teefleet").await.expect("create database");
    (pg, url)
}

/// EC2 as a map of instances, all running, with their tags; `fail` makes every call
/// answer Unavailable. Counts the describe calls, one by one and in batches.
#[derive(Default)]
pub struct FakeCloud {
    pub instances: Mutex<HashMap<String, InstanceInfo>>,
    pub tags: Mutex<HashMap<String, Vec<(String, String)>>>,
    pub fail: Mutex<bool>,
    pub describes: Mutex<Describes>,
}

/// Describe calls asked of a `FakeCloud`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Describes {
    pub single: usize,
    pub batches: usize,
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

    /// The describe calls asked so far.
    pub fn describes(&self) -> Describes {
        *self.describes.lock().expect("lock")
    }

    /// Adds an instance in `subnet`, with its check on.
    pub fn add(&self, id: &str, ip: &str, subnet: &str) {
        let info = InstanceInfo {
            private_ip: Some(ip.parse().expect("ip")),
            ipv6: None,
            subnet_id: Some(subnet.into()),
            source_dest_check: Some(true),
        };
        self.instances.lock().expect("lock").insert(id.to_owned(), info);
    }

    /// Gives an instance these tags, replacing any it had.
    pub fn tag(&self, id: &str, tags: &[(&str, &str)]) {
        let tags = tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.tags.lock().expect("lock").insert(id.to_owned(), tags);
    }
}

impl Cloud for FakeCloud {
    fn describe_instance<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<InstanceInfo, CloudError>> {
        Box::pin(async move {
            self.describes.lock().expect("lock").single += 1;
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

    fn describe_instances<'a>(
        &'a self,
        ids: &'a [InstanceId],
    ) -> BoxFuture<'a, Result<std::collections::BTreeMap<InstanceId, InstanceInfo>, CloudError>> {
        Box::pin(async move {
            self.describes.lock().expect("lock").batches += 1;
            if *self.fail.lock().expect("lock") {
                return Err(CloudError::Unavailable("injected failure".into()));
            }
            let instances = self.instances.lock().expect("lock");
            Ok(ids.iter().filter_map(|id| Some((id.clone(), instances.get(id.as_str())?.clone()))).collect())
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

    /// Every known instance runs, in the test account, with the tags `tag` gave it.
    fn standing<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<Option<Standing>, CloudError>> {
        Box::pin(async move {
            if *self.fail.lock().expect("lock") {
                return Err(CloudError::Unavailable("injected failure".into()));
            }
            if !self.instances.lock().expect("lock").contains_key(id.as_str()) {
                return Ok(None);
            }
            let tags = self.tags.lock().expect("lock").get(id.as_str()).cloned().unwrap_or_default();
            Ok(Some(Standing { state: "running".into(), owner_id: Some("123456789012".into()), tags }))
        })
    }

    fn instances_with_tags<'a>(
        &'a self,
        tags: &'a [TagSelector],
        _limit: usize,
    ) -> BoxFuture<'a, Result<Vec<TaggedInstance>, CloudError>> {
        Box::pin(async move {
            if *self.fail.lock().expect("lock") {
                return Err(CloudError::Unavailable("injected failure".into()));
            }
            let instances = self.instances.lock().expect("lock");
            let mut found: Vec<TaggedInstance> = self
                .tags
                .lock()
                .expect("lock")
                .iter()
                .filter(|(_, carried)| carries_all(tags, carried.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
                .filter_map(|(id, _)| {
                    let info = instances.get(id)?;
                    Some(TaggedInstance { id: id.parse().expect("instance id"), subnet_id: info.subnet_id.clone() })
                })
                .collect();
            found.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(found)
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
        Self::start_with(database_url, cloud, &[]).await
    }

    /// The controller with --insecure and `flags`.
    pub async fn start_with(database_url: String, cloud: Arc<FakeCloud>, flags: &[&str]) -> Self {
        let (ctl, _) = Self::launch(&database_url, cloud, &[&["--insecure"], flags].concat()).await;
        ctl
    }

    /// The controller with --insecure, `flags` and any cloud, such as EC2 in moto.
    pub async fn start_cloud(database_url: String, cloud: Arc<dyn Cloud>, flags: &[&str]) -> Self {
        let (ctl, _) = Self::launch(&database_url, cloud, &[&["--insecure"], flags].concat()).await;
        ctl
    }

    /// The controller serving TLS with `bootstrap` as its admin token. Returns it with the
    /// CA certificate (PEM); its channel is TLS without a client certificate.
    pub async fn start_secure(database_url: String, cloud: Arc<FakeCloud>, bootstrap: &str) -> (Self, String) {
        Self::start_secure_with(database_url, cloud, bootstrap, &[]).await
    }

    /// `start_secure` with `flags`.
    pub async fn start_secure_with(
        database_url: String,
        cloud: Arc<FakeCloud>,
        bootstrap: &str,
        flags: &[&str],
    ) -> (Self, String) {
        let (ctl, addr) =
            Self::launch(&database_url, cloud, &[&["--bootstrap-token", bootstrap], flags].concat()).await;
        let store = teefleet_controller::store::Store::connect(&database_url).await.expect("store");
        let ca = eventually(30, "the controller to create its CA", || async {
            store.stored_ca().await.expect("read CA").map(|ca| ca.cert_pem)
        })
        .await;
        let channel = tls_channel(addr, &ca, None).await;
        (Self { channel, ..ctl }, ca)
    }

    async fn launch(database_url: &str, cloud: Arc<dyn Cloud>, args: &[&str]) -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Tests run side by side; one that reads /metrics gives its own address.
        let metrics: &[&str] = if args.contains(&"--metrics-listen") { &[] } else { &["--metrics-listen", "off"] };
        let config =
            Config::try_parse_from([&["fleet-controller", "--database-url", database_url], metrics, args].concat())
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

/// A loopback address with a port nothing listens on right now.
pub fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// The body of a plain HTTP GET.
pub async fn get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.expect("request");
    let mut response = String::new();
    conn.read_to_string(&mut response).await.expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
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

/// A scripted agent: one stream, messages sent by hand.
pub struct Agent {
    tx: tokio::sync::mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::ControllerMessage>,
}

impl Agent {
    pub async fn connect(channel: &Channel, host: &str, applied_version: u64) -> Agent {
        let hello = pb::Hello {
            host_id: host.into(),
            agent_version: "test".into(),
            addresses: vec!["10.9.0.10".into()],
            applied_version,
            ..Default::default()
        };
        Agent::hello(channel, hello).await
    }

    pub async fn hello(channel: &Channel, hello: pb::Hello) -> Agent {
        // Room for a burst of events without waiting for the controller to read them.
        let (tx, rx) = tokio::sync::mpsc::channel(128);
        tx.send(pb::AgentMessage { msg: Some(Msg::Hello(hello)) }).await.expect("queue hello");
        let inbound = AgentServiceClient::new(channel.clone())
            .sync(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("stream opened")
            .into_inner();
        Agent { tx, inbound }
    }

    /// The next pushed rule set, within `secs` seconds.
    pub async fn rule_set_within(&mut self, secs: u64) -> pb::RuleSet {
        let msg = tokio::time::timeout(Duration::from_secs(secs), self.inbound.message())
            .await
            .unwrap_or_else(|_| panic!("a rule set within {secs} s"))
            .expect("stream healthy")
            .expect("stream open");
        match msg.msg {
            Some(controller_message::Msg::RuleSet(set)) => set,
            None => panic!("empty controller message"),
        }
    }

    pub async fn next_rule_set(&mut self) -> pb::RuleSet {
        self.rule_set_within(5).await
    }

    pub async fn nothing_within(&mut self, wait: Duration) {
        if let Ok(msg) = tokio::time::timeout(wait, self.inbound.message()).await {
            panic!("expected no push, got {msg:?}");
        }
    }

    /// The stream's end: the status it ended with, or `None` for a clean close.
    pub async fn ended_within(&mut self, secs: u64) -> Option<tonic::Status> {
        loop {
            match tokio::time::timeout(Duration::from_secs(secs), self.inbound.message()).await {
                Err(_) => panic!("the stream did not end within {secs} s"),
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return None,
                Ok(Err(status)) => return Some(status),
            }
        }
    }

    pub async fn send(&self, msg: Msg) {
        self.tx.send(pb::AgentMessage { msg: Some(msg) }).await.expect("send");
    }
}

/// Registers a raw-TEE collector (`--encap none`): the delivery whose Source/Dest Check and
/// subnet rules most of these tests are about.
pub async fn add_collector(channel: &Channel, id: &str) {
    add_collector_with(channel, id, "none").await;
}

pub async fn add_collector_with(channel: &Channel, id: &str, encap: &str) {
    pb::collector_service_client::CollectorServiceClient::new(channel.clone())
        .add_collector(pb::AddCollectorRequest { instance_id: id.into(), encap: encap.into(), ..Default::default() })
        .await
        .expect("collector added");
}

pub async fn session(channel: &Channel, name: &str) -> pb::Session {
    pb::session_service_client::SessionServiceClient::new(channel.clone())
        .get_session(pb::GetSessionRequest { name: name.into() })
        .await
        .expect("get session")
        .into_inner()
}
