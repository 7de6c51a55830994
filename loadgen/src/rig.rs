//! What the agents run against: either the lab's pieces (a throwaway Postgres cluster, moto
//! with one collector instance, and `fleet-controller` children from the same target
//! directory, plaintext on loopback) or a controller someone else runs.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use teefleet_lab::procs::{self, ControllerSpec, Proc};
use teefleet_lab::{Ec2Fixture, Moto, TempPostgres, ec2};
use teefleet_proto::v1 as pb;
use teefleet_proto::v1::collector_service_client::CollectorServiceClient;
use tempfile::TempDir;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tracing::{info, warn};

use crate::error::LoadgenError;

/// The moto subnet; nothing routes to it, the controller only reads it.
const SUBNET: &str = "10.250.0.0/24";
const COLLECTOR: &str = "collector";
/// An instance without an agent: a session on it changes no simulated agent's rule set.
const OFFLINE: &str = "offline";
/// How long a controller may take from spawn to answering its health check.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The service whose health says the controller serves agents.
const AGENT_SERVICE: &str = "fleet.v1.AgentService";
/// A controller on an empty database gets this long for a clean shutdown before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// The lab pieces for a whole run; each fleet size gets its own database in the cluster.
#[derive(Debug)]
pub struct Lab {
    // Dropped in order: moto, then Postgres, then the directory with their logs.
    moto: Moto,
    postgres: TempPostgres,
    dir: Option<TempDir>,
    path: PathBuf,
    ec2: Ec2Fixture,
    controller_log: String,
    databases: usize,
}

impl Lab {
    pub async fn start(controller_log: &str) -> Result<Lab, LoadgenError> {
        // Fail before starting anything if the controller is not built.
        let binary = procs::binary(procs::CONTROLLER_BIN)?;
        let dir = tempfile::Builder::new()
            .prefix("teefleet-loadgen-")
            .tempdir()
            .map_err(|source| LoadgenError::Io { context: "creating the work directory".into(), source })?;
        let path = dir.path().to_path_buf();
        let postgres = TempPostgres::start().await?;
        let moto = Moto::start(&path).await?;
        let hosts = [
            (COLLECTOR.to_owned(), Ipv4Addr::new(10, 250, 0, 10)),
            (OFFLINE.to_owned(), Ipv4Addr::new(10, 250, 0, 11)),
        ];
        let ec2 = Ec2Fixture::create(ec2::client(&moto.endpoint()), SUBNET, &hosts).await?;
        info!(dir = %path.display(), controller = %binary.display(), "lab ready: Postgres, moto with a collector");
        Ok(Lab { moto, postgres, dir: Some(dir), path, ec2, controller_log: controller_log.to_owned(), databases: 0 })
    }

    /// The work directory: controller and moto logs.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// Keeps the work directory after the run, with a copy of the Postgres log (whose own
    /// directory goes with the cluster).
    pub fn keep_dir(&mut self) {
        let _ = std::fs::copy(self.postgres.log_path(), self.path.join("postgres.log"));
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
    }

    pub fn collector(&self) -> Result<&str, LoadgenError> {
        Ok(self.ec2.instance_id(COLLECTOR)?)
    }

    pub fn offline_host(&self) -> Result<&str, LoadgenError> {
        Ok(self.ec2.instance_id(OFFLINE)?)
    }

    pub fn postgres(&self) -> &TempPostgres {
        &self.postgres
    }

    /// A new, empty database for one fleet size.
    pub async fn database(&mut self, agents: usize) -> Result<String, LoadgenError> {
        self.databases += 1;
        Ok(self.postgres.create_database(&format!("loadgen_{}_{agents}", self.databases)).await?)
    }

    /// Starts a controller on `database_url` and returns once its health check answers.
    pub async fn controller(&self, database_url: &str, label: &str) -> Result<Controller, LoadgenError> {
        self.controller_on(database_url, label, None).await
    }

    /// The same, listening on `listen` (where a killed controller listened, so its agents
    /// find the new one) or else on a free port.
    pub async fn controller_on(
        &self,
        database_url: &str,
        label: &str,
        listen: Option<&str>,
    ) -> Result<Controller, LoadgenError> {
        let mut last = None;
        // A free port may be taken before the controller binds it: try another. A given
        // one is tried once.
        let attempts = if listen.is_some() { 1 } else { 3 };
        for attempt in 0..attempts {
            let listen = match listen {
                Some(l) => l.to_owned(),
                None => format!("127.0.0.1:{}", free_port()?),
            };
            let log = self.path.join(format!("controller-{label}-{attempt}.log"));
            let spec = ControllerSpec {
                database_url: database_url.to_owned(),
                listen: listen.clone(),
                aws_env: self.moto.env(),
                rust_log: self.controller_log.clone(),
                // Every simulated agent connects from loopback, where a fleet's would each
                // have an address of their own.
                extra_args: ["--max-connections-per-address", "50000"].map(str::to_owned).to_vec(),
                insecure: true,
            };
            let started = Instant::now();
            let mut proc = procs::spawn_controller(&spec, &log)?;
            let url = format!("http://{listen}");
            match wait_serving(&mut proc, &url, &log).await {
                Ok(()) => {
                    let start = started.elapsed();
                    info!(url, start_ms = start.as_millis(), log = %log.display(), "controller serving");
                    return Ok(Controller { pid: proc.pid(), proc: Some(proc), url, listen, start: Some(start), log });
                }
                Err(LoadgenError::Lab(e)) => {
                    warn!(error = %e, "the controller exited at start; trying another port");
                    last = Some(LoadgenError::Lab(e));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| LoadgenError::Invalid("the controller did not start".into())))
    }
}

/// A controller under load: a child of ours, or one named with --controller.
#[derive(Debug)]
pub struct Controller {
    proc: Option<Proc>,
    pub url: String,
    /// The address it listens on (`host:port`).
    pub listen: String,
    /// Its process id, if /proc can be read for it.
    pub pid: Option<u32>,
    /// Spawn to a SERVING health answer, for a child of ours.
    pub start: Option<Duration>,
    pub log: PathBuf,
}

impl Controller {
    pub fn external(url: &str, pid: Option<u32>) -> Controller {
        let listen = url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        Controller { proc: None, url: url.to_owned(), listen, pid, start: None, log: PathBuf::new() }
    }

    /// Fails if our child has exited.
    pub fn check_running(&mut self) -> Result<(), LoadgenError> {
        if let Some(proc) = self.proc.as_mut() {
            proc.check_running()?;
        }
        Ok(())
    }

    /// SIGTERM and a grace period for a child of ours; nothing for an external controller.
    pub async fn stop(mut self) {
        if let Some(mut proc) = self.proc.take()
            && proc.terminate(STOP_GRACE).await.is_none()
        {
            warn!(log = %self.log.display(), "the controller did not stop within the grace period; killed it");
        }
    }

    /// SIGKILL, as a crash or a lost host would end it: no stream is closed cleanly.
    pub async fn kill(mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.stop().await;
        }
    }

    /// A channel for admin calls.
    pub async fn admin_channel(&self) -> Result<Channel, LoadgenError> {
        Endpoint::from_shared(self.url.clone())
            .map_err(|e| LoadgenError::connect(format!("controller URL {:?}", self.url), &e))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| LoadgenError::connect(format!("connecting to {}", self.url), &e))
    }
}

/// Registers the collector; one already registered is fine (an external controller).
pub async fn register_collector(channel: &Channel, instance_id: &str) -> Result<(), LoadgenError> {
    let request = pb::AddCollectorRequest { instance_id: instance_id.to_owned(), ..Default::default() };
    match CollectorServiceClient::new(channel.clone()).add_collector(request).await {
        Ok(reply) => {
            let c = reply.into_inner();
            info!(instance_id = %c.instance_id, ip = %c.ip, subnet = %c.subnet_id, "collector registered");
            Ok(())
        }
        Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(status) => Err(LoadgenError::call(format!("registering collector {instance_id}"), &status)),
    }
}

/// Polls the health check until the agent service is SERVING, failing early if the
/// child exits (a `LoadgenError::Lab`, which the caller may retry on another port).
async fn wait_serving(proc: &mut Proc, url: &str, log: &Path) -> Result<(), LoadgenError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| LoadgenError::connect(format!("controller URL {url:?}"), &e))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2));
    loop {
        proc.check_running()?;
        if serving(&endpoint).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LoadgenError::NotServing { seconds: START_TIMEOUT.as_secs(), log: log.display().to_string() });
        }
        // Short, since this wait is the start time being measured.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn serving(endpoint: &Endpoint) -> bool {
    let Ok(channel) = endpoint.connect().await else { return false };
    let request = HealthCheckRequest { service: AGENT_SERVICE.to_owned() };
    HealthClient::new(channel)
        .check(request)
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

/// A free port on loopback, found by binding port 0.
fn free_port() -> Result<u16, LoadgenError> {
    let io = |source| LoadgenError::Io { context: "finding a free port on 127.0.0.1".into(), source };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io)?;
    Ok(listener.local_addr().map_err(io)?.port())
}
