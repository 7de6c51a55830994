//! [`Lab`]: the whole rig for one end-to-end test or the demo — Postgres, moto with the
//! EC2 fixture, the namespace network, the controller in the root namespace, and an agent
//! in each source host — plus the operations tests perform on it.
//!
//! Drop tears everything down in reverse order. When dropped during a panic it prints the
//! log paths and their tails to stderr and keeps the lab's directory, so a failed test
//! leaves its evidence behind; `TEEFLEET_LAB_KEEP=1` keeps the directory always.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tempfile::TempDir;

pub use crate::builder::{JOIN_TAG, LAB_ADMIN_TOKEN, LabBuilder};
use crate::builder::{Security, agent_args, client_args};
use crate::capture::Capture;
use crate::ec2::{self, Ec2Fixture};
use crate::iid::{self, IidSigner};
use crate::imds::{Identity, Imds, LAB_ACCOUNT};
use crate::moto::Moto;
use crate::netns::Network;
use crate::postgres::TempPostgres;
use crate::procs::{self, AgentSpec, CliOutput, ControllerSpec, Proc};
use crate::sync::lock;
use crate::vpc::Follower;
use crate::{LabError, cmd};

/// The lab hosts that run an agent and can be mirrored.
pub const SOURCES: [&str; 2] = ["source1", "source2"];
/// The lab host that receives the clones.
pub const COLLECTOR: &str = "collector";
/// A second collector, for sessions that mirror to different places.
pub const COLLECTOR2: &str = "collector2";
/// The collector in the second subnet, behind the router.
pub const COLLECTOR_B: &str = "collector-b";
/// Both collectors of the first subnet.
pub const COLLECTORS: [&str; 2] = [COLLECTOR, COLLECTOR2];
/// Every lab host that runs an agent: the sources and the collectors, as on a fleet.
pub const AGENT_HOSTS: [&str; 5] = ["source1", "source2", COLLECTOR, COLLECTOR2, COLLECTOR_B];
/// The lab host that talks to the sources.
pub const CLIENT: &str = "client";

impl LabBuilder {
    /// Brings the lab up; returns once the controller listens and the agents are running.
    pub async fn start(mut self) -> Result<Lab, LabError> {
        if !cmd::is_root() {
            return Err(LabError::NotRoot);
        }
        if self.start_controller || self.start_agents {
            // Fail before building anything if the binaries are missing.
            procs::binary(procs::CONTROLLER_BIN)?;
            procs::binary(procs::AGENT_BIN)?;
            procs::binary(procs::FLEETCTL_BIN)?;
        }
        let dir = tempfile::Builder::new()
            .prefix("teefleet-lab-")
            .tempdir()
            .map_err(|e| LabError::io("creating the lab directory", e))?;
        let logs = dir.path().to_path_buf();
        let postgres = TempPostgres::start().await?;
        let database_url = postgres.create_database("teefleet").await?;
        let moto = Moto::start(&logs).await?;
        let network = Network::create(self.range).await?;
        let hosts: Vec<_> = network.hosts().iter().map(|h| (h.name.clone(), h.subnet, h.ip)).collect();
        let subnets = [network.cidr_of(0), network.cidr_of(1)];
        let ec2 = Ec2Fixture::create_vpc(ec2::client(&moto.endpoint()), &network.vpc_cidr(), &subnets, &hosts).await?;
        if self.ec2_ipv6 {
            for host in network.hosts() {
                ec2.assign_ipv6(&host.name, host.ip6).await?;
            }
        }

        let follower = if self.enforce_checks {
            // The bridges enforce what EC2 says from now on, as the controller changes it.
            network.checks().follow_once(ec2.client(), &ec2.instances).await?;
            Some(Follower::start(network.checks().clone(), ec2.client().clone(), ec2.instances.clone()))
        } else {
            for host in network.hosts() {
                network.set_source_dest_check(&host.name, false).await?;
            }
            None
        };
        let mut identity = None;
        if self.join_by_identity {
            if !self.secure {
                return Err(LabError::Invalid(
                    "join_by_identity needs secure(true): --insecure agents do not enroll".into(),
                ));
            }
            let signer = IidSigner::create(&logs, "lab-iid").await?;
            for host in AGENT_HOSTS {
                ec2.tag(host, JOIN_TAG.0, JOIN_TAG.1).await?;
            }
            self.controller_args.extend([
                "--join-account".to_owned(),
                LAB_ACCOUNT.to_owned(),
                "--join-tag".to_owned(),
                format!("{}={}", JOIN_TAG.0, JOIN_TAG.1),
                "--iid-certs".to_owned(),
                signer.cert_path().display().to_string(),
            ]);
            let mut servers = std::collections::BTreeMap::new();
            for host in network.hosts() {
                let id = ec2.instance_id(&host.name)?.to_owned();
                let document =
                    iid::document(LAB_ACCOUNT, &id, crate::moto::REGION, &host.ip.to_string(), &launched_now());
                let signature = signer.sign(&document).await?;
                let imds = Imds::start(&host.netns, Identity { instance_id: id, document, signature }).await?;
                servers.insert(host.name.clone(), imds);
            }
            identity = Some((signer, servers));
        }
        let mut lab = Lab {
            identity,
            _follower: follower,
            agents: Mutex::new(Vec::new()),
            controller: Mutex::new(None),
            controller_url: String::new(),
            replicas: Mutex::new(Vec::new()),
            replica_urls: Vec::new(),
            database_url,
            ec2,
            network,
            moto,
            postgres,
            dir: Some(dir),
            logs,
            rust_log: self.rust_log.clone(),
            agent_args: self.agent_args.clone(),
            controller_args: self.controller_args.clone(),
            security: Security::Insecure,
        };
        if self.start_controller {
            lab.start_controller(self.secure).await?;
            for n in 2..=self.replicas {
                lab.start_replica(n, self.secure).await?;
            }
            if self.start_agents {
                for host in AGENT_HOSTS {
                    lab.start_agent(host)?;
                }
            }
        }
        tracing::info!(dir = %lab.logs.display(), subnet = %lab.network.cidr(), subnet6 = %lab.network.cidr6(), "lab ready");
        Ok(lab)
    }
}

/// A running lab. Fields drop in declaration order: processes first, then the network,
/// moto and Postgres, then the directory.
#[derive(Debug)]
pub struct Lab {
    /// With `join_by_identity`: the signer of the lab's identity documents and each host's
    /// IMDS stand-in.
    identity: Option<(IidSigner, std::collections::BTreeMap<String, Imds>)>,
    /// Keeps the bridges' Source/Dest Checks equal to EC2's (when enforced); stops first.
    _follower: Option<Follower>,
    // Behind locks so that every operation, `wait_until` included, needs only `&Lab`;
    // no lock is held across an await.
    agents: Mutex<Vec<Proc>>,
    controller: Mutex<Option<Proc>>,
    controller_url: String,
    /// Further controller replicas on the same database, and their URLs.
    replicas: Mutex<Vec<Proc>>,
    replica_urls: Vec<String>,
    database_url: String,
    /// The EC2 fixture: instance ids of the lab hosts, and a client to check attributes.
    pub ec2: Ec2Fixture,
    /// The bridge and namespaces.
    pub network: Network,
    pub moto: Moto,
    pub postgres: TempPostgres,
    dir: Option<TempDir>,
    logs: PathBuf,
    rust_log: String,
    agent_args: Vec<String>,
    controller_args: Vec<String>,
    security: Security,
}

impl Lab {
    /// A builder with the defaults (test range, controller and agents on).
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// Brings up the default lab.
    pub async fn start() -> Result<Lab, LabError> {
        LabBuilder::default().start().await
    }

    async fn start_controller(&mut self, secure: bool) -> Result<(), LabError> {
        let gateway = self.network.gateway();
        let scheme = if secure { "https" } else { "http" };
        if secure {
            // The agents reach the controller by the bridge address, so it must be a SAN.
            self.controller_args.extend(["--tls-san".to_owned(), gateway.to_string()]);
        }
        let mut last = None;
        // The port is free when picked but may be taken before the controller binds it.
        for _ in 0..3 {
            let listen = format!("{gateway}:{}", cmd::free_port(gateway)?);
            match self.launch_controller(&listen, "controller.log", secure).await {
                Ok(()) => {
                    self.controller_url = format!("{scheme}://{listen}");
                    if secure {
                        self.security = self.secure_access().await?;
                    }
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| LabError::Missing("the controller did not start".into())))
    }

    /// The CA (as a file for fleetctl), its pin (for agents), and a join token for the
    /// lab's agents, from the running secure controller.
    async fn secure_access(&self) -> Result<Security, LabError> {
        let controller = procs::binary(procs::CONTROLLER_BIN)?.display().to_string();
        let ca = |sub: &'static str| cmd::run_text(&controller, ["ca", sub, "--database-url", &self.database_url]);
        let pem = ca("print").await?;
        let pin = ca("pin").await?.trim().to_owned();
        let ca_cert = self.logs.join("ca.pem");
        std::fs::write(&ca_cert, pem).map_err(|e| LabError::io("writing ca.pem", e))?;
        // The admin's flags need only the CA; the join token is what this call makes.
        let admin = Security::Secure { ca_cert: ca_cert.clone(), pin: pin.clone(), join_token: String::new() };
        let out = procs::fleetctl(
            &self.controller_url,
            &client_args(&admin),
            &["-o", "json", "token", "create", "--role", "agent", "--ttl", "2h", "--uses", "50"],
        )
        .await?;
        if !out.success() {
            return Err(LabError::Invalid(format!("creating the lab's join token failed: {out}")));
        }
        let json: serde_json::Value = serde_json::from_str(&out.stdout)
            .map_err(|e| LabError::Invalid(format!("token create printed no JSON ({e}): {out}")))?;
        let join_token = json["token"].as_str().unwrap_or_default().to_owned();
        if join_token.is_empty() {
            return Err(LabError::Invalid(format!("token create printed no token: {out}")));
        }
        Ok(Security::Secure { ca_cert, pin, join_token })
    }

    /// Starts replica number `n` (2, 3, …) beside the first controller.
    async fn start_replica(&mut self, n: usize, secure: bool) -> Result<(), LabError> {
        let gateway = self.network.gateway();
        let scheme = if secure { "https" } else { "http" };
        let mut last = None;
        for _ in 0..3 {
            let listen = format!("{gateway}:{}", cmd::free_port(gateway)?);
            match self.spawn_controller(&listen, &format!("controller-{n}.log"), secure).await {
                Ok(proc) => {
                    lock(&self.replicas).push(proc);
                    self.replica_urls.push(format!("{scheme}://{listen}"));
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| LabError::Missing(format!("controller replica {n} did not start"))))
    }

    /// Spawns the controller on `listen` and waits until it accepts connections.
    async fn launch_controller(&self, listen: &str, log: &str, secure: bool) -> Result<(), LabError> {
        let proc = self.spawn_controller(listen, log, secure).await?;
        *lock(&self.controller) = Some(proc);
        Ok(())
    }

    async fn spawn_controller(&self, listen: &str, log: &str, secure: bool) -> Result<Proc, LabError> {
        let mut aws_env = self.moto.env();
        if secure {
            aws_env.push(("FLEET_BOOTSTRAP_TOKEN", LAB_ADMIN_TOKEN.to_owned()));
        }
        let spec = ControllerSpec {
            database_url: self.database_url.clone(),
            listen: listen.to_owned(),
            aws_env,
            rust_log: self.rust_log.clone(),
            extra_args: self.controller_args.clone(),
            insecure: !secure,
        };
        let mut proc = procs::spawn_controller(&spec, &self.logs.join(log))?;
        proc.wait_for_tcp(listen, Duration::from_secs(60)).await?;
        Ok(proc)
    }

    /// Kills the (first) controller with SIGKILL, to test agents without it.
    pub async fn stop_controller(&self) {
        let proc = lock(&self.controller).take();
        if let Some(mut proc) = proc {
            proc.stop().await;
        }
    }

    /// Starts the controller again on the address it had, so running agents reconnect.
    pub async fn restart_controller(&self) -> Result<(), LabError> {
        let secure = matches!(self.security, Security::Secure { .. });
        let listen = self.controller_url.split_once("://").map_or("", |(_, l)| l).to_owned();
        self.launch_controller(&listen, "controller-restarted.log", secure).await
    }

    /// The state directory of `host`'s agent.
    pub fn agent_state_dir(&self, host: &str) -> PathBuf {
        self.logs.join(format!("agent-{host}-state"))
    }

    /// Starts an agent in `host` with the host's instance id as its host id.
    pub fn start_agent(&self, host: &str) -> Result<(), LabError> {
        let spec = AgentSpec {
            netns: self.network.host(host)?.netns.clone(),
            host: host.to_owned(),
            controller_url: self.controller_urls(),
            host_id: self.ec2.instance_id(host)?.to_owned(),
            state_dir: self.agent_state_dir(host),
            rust_log: self.rust_log.clone(),
            extra_args: agent_args(&self.security, self.identity.is_some())
                .into_iter()
                .chain(self.agent_args.iter().cloned())
                .collect(),
        };
        let proc = procs::spawn_agent(&spec, &self.logs.join(format!("agent-{host}.log")))?;
        lock(&self.agents).push(proc);
        Ok(())
    }

    /// Runs `fleet-agent ARGS…` once in `host`'s namespace with the lab's controller URLs
    /// in FLEET_CONTROLLER and the CA's pin in FLEET_CA_PIN, as a host's own scripts would
    /// (`leave`, or an agent expected to stop on its own); killed after `timeout`.
    pub async fn agent_once(&self, host: &str, args: &[&str], timeout: Duration) -> Result<CliOutput, LabError> {
        let mut env = vec![("FLEET_CONTROLLER", self.controller_urls())];
        if let Security::Secure { pin, .. } = &self.security {
            env.push(("FLEET_CA_PIN", pin.clone()));
        }
        procs::agent_once(&self.network.host(host)?.netns, args, &env, &self.rust_log, timeout).await
    }

    /// The IMDS stand-in of `host` (with `join_by_identity`).
    pub fn imds(&self, host: &str) -> Result<&Imds, LabError> {
        let servers = &self
            .identity
            .as_ref()
            .ok_or_else(|| LabError::Invalid("the lab was built without join_by_identity".into()))?
            .1;
        servers.get(host).ok_or_else(|| LabError::Invalid(format!("no IMDS stand-in in {host}")))
    }

    /// The lab's signature of `document`, as IMDS would serve it (with `join_by_identity`).
    pub async fn sign_identity(&self, document: &str) -> Result<String, LabError> {
        let signer = &self
            .identity
            .as_ref()
            .ok_or_else(|| LabError::Invalid("the lab was built without join_by_identity".into()))?
            .0;
        signer.sign(document).await
    }

    /// Every controller URL, the first one first, comma-separated.
    fn controller_urls(&self) -> String {
        std::iter::once(&self.controller_url)
            .chain(&self.replica_urls)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills the agent of `host`, if one runs (to test disconnection and restarts).
    pub async fn stop_agent(&self, host: &str) {
        let name = format!("{} {host}", procs::AGENT_BIN);
        let proc = {
            let mut agents = lock(&self.agents);
            agents.iter().position(|p| p.name() == name).map(|i| agents.remove(i))
        };
        if let Some(mut proc) = proc {
            proc.stop().await;
        }
    }

    /// The controller's admin and agent endpoint, `http://10.213.X.1:PORT`.
    pub fn controller_url(&self) -> &str {
        &self.controller_url
    }

    /// The pin of the controller's CA (`sha256:HEX`, what agents are given), in a secure lab.
    pub fn ca_pin(&self) -> Option<&str> {
        match &self.security {
            Security::Secure { pin, .. } => Some(pin),
            Security::Insecure => None,
        }
    }

    /// The database the controller uses.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The lab directory: logs, captures, agent state.
    pub fn dir(&self) -> &Path {
        &self.logs
    }

    /// A lab host's IPv4 address.
    pub fn ip(&self, host: &str) -> Result<Ipv4Addr, LabError> {
        Ok(self.network.host(host)?.ip)
    }

    /// A lab host's IPv6 address.
    pub fn ip6(&self, host: &str) -> Result<Ipv6Addr, LabError> {
        self.network.ip6(host)
    }

    /// A lab host's EC2 instance id.
    pub fn instance_id(&self, host: &str) -> Result<&str, LabError> {
        self.ec2.instance_id(host)
    }

    /// The URLs of the replicas started beside the first controller.
    pub fn replica_urls(&self) -> &[String] {
        &self.replica_urls
    }

    /// Runs fleetctl against the controller at `url` (a replica), as the lab's admin.
    pub async fn fleetctl_via(&self, url: &str, args: &[&str]) -> Result<CliOutput, LabError> {
        procs::fleetctl(url, &client_args(&self.security), args).await
    }

    /// Runs `fleetctl --controller <lab> args…`, authenticated as the lab's admin.
    pub async fn fleetctl(&self, args: &[&str]) -> Result<CliOutput, LabError> {
        procs::fleetctl(&self.controller_url, &client_args(&self.security), args).await
    }

    /// The environment that points an operator's own `fleetctl` at this lab.
    pub fn fleetctl_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("FLEET_CONTROLLER", self.controller_url.clone())];
        match &self.security {
            Security::Insecure => env.push(("FLEET_INSECURE", "true".to_owned())),
            Security::Secure { ca_cert, .. } => {
                env.push(("FLEET_TOKEN", LAB_ADMIN_TOKEN.to_owned()));
                env.push(("FLEET_CA_CERT", ca_cert.display().to_string()));
            }
        }
        env
    }

    /// Runs fleetctl against the lab without credentials (only `--ca-cert` when secure).
    pub async fn fleetctl_anonymous(&self, args: &[&str]) -> Result<CliOutput, LabError> {
        let trust = match &self.security {
            Security::Insecure => vec!["--insecure".to_owned()],
            Security::Secure { ca_cert, .. } => vec!["--ca-cert".to_owned(), ca_cert.display().to_string()],
        };
        procs::fleetctl(&self.controller_url, &trust, args).await
    }

    /// Runs fleetctl and fails unless it exits 0.
    pub async fn fleetctl_ok(&self, args: &[&str]) -> Result<CliOutput, LabError> {
        let out = self.fleetctl(args).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(LabError::Invalid(format!("fleetctl {} failed: {out}", args.join(" "))))
        }
    }

    /// Starts a capture on a host's `eth0`; `label` names its file in the lab directory.
    pub async fn capture(&self, host: &str, label: &str, filter: Option<&str>) -> Result<Capture, LabError> {
        let netns = &self.network.host(host)?.netns;
        Capture::start(netns, label, &self.logs, filter).await
    }

    /// Whether `host`'s agent shows as connected in `fleetctl host list`; `None` when
    /// fleetctl fails.
    pub async fn connected(&self, host: &str) -> Result<Option<bool>, LabError> {
        self.host_id_connected(self.instance_id(host)?).await
    }

    /// Whether the agent of host id `id` (a lab host's, or any instance's) shows as
    /// connected in `fleetctl host list`; `None` when fleetctl fails.
    pub async fn host_id_connected(&self, id: &str) -> Result<Option<bool>, LabError> {
        let out = self.fleetctl(&["host", "list", "-o", "json"]).await?;
        if !out.success() {
            return Ok(None);
        }
        let hosts = out.json()?;
        Ok(Some(hosts.as_array().is_some_and(|a| a.iter().any(|h| h["host_id"] == id && h["connected"] == true))))
    }

    /// Pings `source` from the client and waits until a VXLAN clone of the request reaches
    /// [`COLLECTOR`]: a session from `source` to it mirrors. `label` names the capture.
    pub async fn ping_is_mirrored(&self, source: &str, label: &str, timeout: Duration) -> Result<(), LabError> {
        let capture = self.capture(COLLECTOR, label, Some("icmp or udp port 4789")).await?;
        let (client, source) = (std::net::IpAddr::from(self.ip(CLIENT)?), std::net::IpAddr::from(self.ip(source)?));
        let is_clone =
            move |p: &crate::Packet| p.vxlan.is_some() && p.src == client && p.dst == source && p.is_echo_request();
        self.network.ping(CLIENT, source, 3).await?;
        capture.wait_for("a clone of the client's ping at the collector", 1, timeout, is_clone).await?;
        Ok(())
    }

    /// Source/Dest Check of a lab host's instance, through the EC2 API.
    pub async fn source_dest_check(&self, host: &str) -> Result<bool, LabError> {
        self.ec2.source_dest_check(self.ec2.instance_id(host)?).await
    }

    /// Sets Source/Dest Check of a lab host's instance through the EC2 API, as an operator
    /// would, and waits until the bridge enforces it.
    pub async fn set_source_dest_check(&self, host: &str, on: bool) -> Result<(), LabError> {
        self.ec2.set_source_dest_check(self.ec2.instance_id(host)?, on).await?;
        self.sync_source_dest_checks().await
    }

    /// Makes the bridges enforce EC2's Source/Dest Checks now, rather than within the
    /// follower's next 100 ms (no-op when the lab does not enforce them).
    pub async fn sync_source_dest_checks(&self) -> Result<(), LabError> {
        if self._follower.is_some() {
            self.network.checks().follow_once(self.ec2.client(), &self.ec2.instances).await?;
        }
        Ok(())
    }

    /// Fails if the controller or an agent has exited.
    pub fn check_processes(&self) -> Result<(), LabError> {
        if let Some(c) = lock(&self.controller).as_mut() {
            c.check_running()?;
        }
        for agent in lock(&self.agents).iter_mut() {
            agent.check_running()?;
        }
        Ok(())
    }

    /// Every log file of the lab's processes.
    pub fn log_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = lock(&self.controller)
            .iter()
            .chain(lock(&self.agents).iter())
            .map(|p| p.log_path().to_path_buf())
            .collect();
        paths.push(self.moto.log_path().to_path_buf());
        paths.push(self.postgres.log_path());
        paths
    }

    /// A report for a failing test: each log's path and its last `lines` lines.
    pub fn log_report(&self, lines: usize) -> String {
        let mut out = format!("lab directory: {}\n", self.logs.display());
        for path in self.log_paths() {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            out.push_str(&format!("==== {} (last {} lines)\n", path.display(), tail.len()));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Keeps the lab directory after drop.
    pub fn keep_dir(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
    }

    /// Polls `check` every 200 ms until it returns `Ok(Some(value))`, up to `timeout`;
    /// also fails early when a lab process dies. The last `Ok(None)` or error is reported
    /// on timeout.
    pub async fn wait_until<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> Result<T, LabError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, LabError>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.check_processes()?;
            let last = match check().await {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => String::new(),
                Err(e) => format!(" (last error: {e})"),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(LabError::Timeout { what: format!("{what}{last}"), seconds: timeout.as_secs(), log: None });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let keep = std::env::var("TEEFLEET_LAB_KEEP").is_ok_and(|v| v == "1");
        if std::thread::panicking() {
            // Tests report through stderr; tracing may not be initialised in them.
            eprintln!("teefleet-lab: test failed; logs kept\n{}", self.log_report(40));
            // Postgres's own directory goes with it; keep a copy of its log with the rest.
            let _ = std::fs::copy(self.postgres.log_path(), self.logs.join("postgres.log"));
            self.keep_dir();
        } else if keep {
            eprintln!("teefleet-lab: kept {}", self.logs.display());
            self.keep_dir();
        }
    }
}

/// Now as an identity document's `pendingTime`: `2026-12-05T11:34:08Z`.
pub fn launched_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The lab needs root. Returns `true` when running as root; `false` (skip the test) when
/// not root and `TEEFLEET_SKIP_ROOT_TESTS=1`; panics with a clear message otherwise.
pub fn require_root_or_skip() -> bool {
    if cmd::is_root() {
        return true;
    }
    if std::env::var("TEEFLEET_SKIP_ROOT_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("skipping: the lab needs root (TEEFLEET_SKIP_ROOT_TESTS=1)");
        return false;
    }
    panic!("{}", LabError::NotRoot);
}
