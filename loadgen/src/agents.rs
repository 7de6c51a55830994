//! Simulated agents: each is a real `AgentService/Sync` stream on a connection of its own,
//! as on a real fleet, that says Hello, acknowledges every pushed rule set at once (no
//! dataplane: nothing is applied) and reports Health on the agent's period. A stream that
//! ends is opened again with the real agent's backoff, its Hello naming the version it
//! holds. What each one received is recorded so the scenarios can measure propagation and
//! spot stray pushes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use teefleet_agent::backoff::Backoff;
use teefleet_proto::v1::{
    self as pb, agent_message::Msg, agent_service_client::AgentServiceClient, controller_message,
};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info};

use crate::error::{LoadgenError, chain};

/// As the real agent: a connect that takes longer is a failure, and HTTP/2 pings notice a
/// controller that vanished.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The controller answers the stream only after it stored the Hello, which queues behind
/// every other agent's Hello when hundreds connect at once.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts per agent before the run gives up on it, as a real agent would retry.
const OPEN_ATTEMPTS: u32 = 3;

/// The host id of agent `index`: an EC2-shaped id (`i-` and 17 hex digits) that is the
/// same in every run, with `0ad` in front so the hosts are easy to spot in a database.
pub fn host_id(index: usize) -> String {
    format!("i-0ad{index:014x}")
}

/// A private address for agent `index`, unique below 2^24 agents.
fn address(index: usize) -> String {
    format!("10.{}.{}.{}", (index >> 16) & 0xff, (index >> 8) & 0xff, index & 0xff)
}

/// What every simulated agent reports as its dataplane: the same each time, so the
/// controller stores it at Hello and never again, as with a real, healthy host.
fn dataplane() -> pb::Dataplane {
    pb::Dataplane {
        backend: "nft".to_owned(),
        iptables_version: "iptables v1.8.9 (nf_tables)".to_owned(),
        ipv6: true,
        problems: Vec::new(),
    }
}

/// A rule set's arrival and the Ack sent for it.
#[derive(Debug, Clone, Copy)]
pub struct Acked {
    pub version: u64,
    /// When the Ack was handed to the stream.
    pub at: Instant,
}

/// One simulated agent's record, shared between its task and the scenarios.
#[derive(Debug)]
pub struct Agent {
    pub host_id: String,
    acks: Mutex<Vec<Acked>>,
    /// `acks.len()`, readable without the lock: the scenarios poll every agent's count
    /// every few milliseconds while the controller is pushing.
    received: AtomicUsize,
    /// Why the stream last ended, if it has.
    ended: Mutex<Option<String>>,
    /// Streams opened, the first included.
    opens: AtomicUsize,
    /// Streams that ended while the run still wanted them.
    drops: AtomicUsize,
    /// Opens that failed after the first stream (each one waited its backoff).
    failed_reopens: AtomicUsize,
}

impl Agent {
    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        // Every update is one push or one assignment: a panic cannot leave it half done.
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Rule sets received so far (each was acknowledged at once).
    pub fn pushes(&self) -> usize {
        self.received.load(Ordering::Acquire)
    }

    fn received(&self, version: u64) {
        let mut acks = Agent::lock(&self.acks);
        acks.push(Acked { version, at: Instant::now() });
        self.received.store(acks.len(), Ordering::Release);
    }

    /// The version of the last rule set received: what the agent holds.
    pub fn held(&self) -> Option<u64> {
        Agent::lock(&self.acks).last().map(|a| a.version)
    }

    /// The `n`-th rule set received (0-based), if it has arrived.
    pub fn ack(&self, n: usize) -> Option<Acked> {
        Agent::lock(&self.acks).get(n).copied()
    }

    pub fn ended(&self) -> Option<String> {
        Agent::lock(&self.ended).clone()
    }

    fn end(&self, why: String) {
        *Agent::lock(&self.ended) = Some(why);
        self.drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Streams opened so far, the first included.
    pub fn opens(&self) -> usize {
        self.opens.load(Ordering::Acquire)
    }

    /// Streams that ended under the agent so far.
    pub fn drops(&self) -> usize {
        self.drops.load(Ordering::Relaxed)
    }
}

/// How the fleet behaves.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub concurrency: usize,
    pub health: Duration,
    /// Seeds each agent's Health phase, so runs are reproducible.
    pub seed: u64,
}

/// How connecting went.
#[derive(Debug, Clone, Copy)]
pub struct Connected {
    pub elapsed: Duration,
    /// Opens that failed and were tried again.
    pub retries: u64,
}

/// The running simulated agents. Dropping it aborts their tasks, which closes every stream.
#[derive(Debug)]
pub struct Fleet {
    agents: Vec<Arc<Agent>>,
    healths: Arc<AtomicU64>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Fleet {
    /// Connects `count` agents to `url`, at most `options.concurrency` opening at a time,
    /// and returns once every stream is open (the controller stored every Hello).
    pub async fn connect(url: &str, count: usize, options: &FleetOptions) -> Result<(Fleet, Connected), LoadgenError> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| LoadgenError::connect(format!("controller URL {url:?}"), &e))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let permits = Arc::new(Semaphore::new(options.concurrency));
        let stop = CancellationToken::new();
        let healths = Arc::new(AtomicU64::new(0));
        let (ready_tx, mut ready) = mpsc::channel(options.concurrency.max(1));
        let mut fleet = Fleet {
            agents: Vec::with_capacity(count),
            healths: healths.clone(),
            stop: stop.clone(),
            tasks: JoinSet::new(),
        };
        let started = Instant::now();
        for index in 0..count {
            let agent = Arc::new(Agent {
                host_id: host_id(index),
                acks: Mutex::new(Vec::new()),
                received: AtomicUsize::new(0),
                ended: Mutex::new(None),
                opens: AtomicUsize::new(0),
                drops: AtomicUsize::new(0),
                failed_reopens: AtomicUsize::new(0),
            });
            fleet.agents.push(agent.clone());
            let mut rng = fastrand::Rng::with_seed(options.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index as u64);
            let period = options.health;
            // Spread over a whole period so the fleet's reports arrive at an even rate.
            let phase = period.mul_f64(rng.f64());
            let sim = Sim {
                agent,
                index,
                endpoint: endpoint.clone(),
                health: period,
                phase,
                healths: healths.clone(),
                stop: stop.clone(),
            };
            let (permits, ready_tx) = (permits.clone(), ready_tx.clone());
            fleet.tasks.spawn(sim.run(permits, ready_tx));
        }
        drop(ready_tx);
        let (mut opened, mut retries, mut failed, mut first_error) = (0_usize, 0, 0, None);
        while let Some(result) = ready.recv().await {
            match result {
                Ok(r) => {
                    opened += 1;
                    retries += r;
                    if opened.is_multiple_of(1000) {
                        info!(opened, of = count, elapsed_ms = started.elapsed().as_millis(), "agents connected");
                    }
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        let elapsed = started.elapsed();
        if failed > 0 {
            return Err(LoadgenError::Agents { failed, total: count, first: first_error.unwrap_or_default() });
        }
        info!(agents = count, elapsed_ms = elapsed.as_millis(), retries, "every agent has its stream open");
        Ok((fleet, Connected { elapsed, retries }))
    }

    pub fn agents(&self) -> &[Arc<Agent>] {
        &self.agents
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Rule sets received so far, per agent.
    pub fn pushes(&self) -> Vec<usize> {
        self.agents.iter().map(|a| a.pushes()).collect()
    }

    /// Health reports sent so far by the whole fleet.
    pub fn healths(&self) -> u64 {
        self.healths.load(Ordering::Relaxed)
    }

    /// Streams that have ended under their agent so far, with one agent's last reason.
    pub fn ended(&self) -> (usize, Option<String>) {
        let count = self.agents.iter().map(|a| a.drops()).sum();
        (count, self.agents.iter().find_map(|a| a.ended()))
    }

    /// Streams opened so far, per agent.
    pub fn opens(&self) -> Vec<usize> {
        self.agents.iter().map(|a| a.opens()).collect()
    }

    /// Opens that failed after the agents' first streams, over the whole fleet.
    pub fn failed_reopens(&self) -> usize {
        self.agents.iter().map(|a| a.failed_reopens.load(Ordering::Relaxed)).sum()
    }

    /// Closes every stream and waits for the tasks to finish.
    pub async fn disconnect(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// One simulated agent's task.
struct Sim {
    agent: Arc<Agent>,
    index: usize,
    endpoint: Endpoint,
    health: Duration,
    phase: Duration,
    healths: Arc<AtomicU64>,
    stop: CancellationToken,
}

type Opened = (mpsc::Sender<pb::AgentMessage>, Streaming<pb::ControllerMessage>);

impl Sim {
    async fn run(self, permits: Arc<Semaphore>, ready: mpsc::Sender<Result<u64, String>>) {
        let Ok(permit) = permits.acquire_owned().await else { return };
        let mut retries = 0;
        let opened = loop {
            match self.open(0).await {
                Ok(opened) => break Ok(opened),
                Err(e) if retries + 1 < u64::from(OPEN_ATTEMPTS) => {
                    debug!(host_id = %self.agent.host_id, error = %e, "opening the stream failed; retrying");
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(200 * retries)).await;
                }
                Err(e) => break Err(format!("{}: {e}", self.agent.host_id)),
            }
        };
        drop(permit);
        let (tx, inbound) = match opened {
            Ok(opened) => {
                let _ = ready.send(Ok(retries)).await;
                opened
            }
            Err(e) => {
                let _ = ready.send(Err(e)).await;
                return;
            }
        };
        drop(ready);
        self.agent.opens.fetch_add(1, Ordering::Release);
        let mut applied = None;
        let (mut tx, mut inbound) = (tx, inbound);
        let mut backoff = Backoff::default();
        loop {
            applied = self.serve(tx, inbound, applied).await;
            // Reopened as the real agent does with one controller URL: a random wait
            // below a ceiling that doubles with every failure, so a fleet that lost its
            // controller at once does not come back in lockstep.
            (tx, inbound) = loop {
                let wait = backoff.next_delay();
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                match self.open(applied.as_ref().map_or(0, |s| s.version)).await {
                    Ok(opened) => break opened,
                    Err(e) => {
                        debug!(host_id = %self.agent.host_id, error = %e, "reopening the stream failed");
                        self.agent.failed_reopens.fetch_add(1, Ordering::Relaxed);
                    }
                }
            };
            backoff.reset();
            self.agent.opens.fetch_add(1, Ordering::Release);
        }
    }

    /// A connection of its own, Hello queued first, and the stream opened. `applied` is
    /// the version the agent holds, so the controller pushes only if it has a newer one.
    async fn open(&self, applied: u64) -> Result<Opened, String> {
        let channel: Channel = self.endpoint.connect().await.map_err(|e| chain(&e))?;
        let (tx, rx) = mpsc::channel(16);
        let hello = pb::Hello {
            host_id: self.agent.host_id.clone(),
            agent_version: concat!("loadgen-", env!("CARGO_PKG_VERSION")).to_owned(),
            addresses: vec![address(self.index)],
            applied_version: applied,
            dataplane: Some(dataplane()),
        };
        tx.send(pb::AgentMessage { msg: Some(Msg::Hello(hello)) }).await.map_err(|_| "queueing Hello".to_owned())?;
        let mut client = AgentServiceClient::new(channel);
        let inbound = tokio::time::timeout(OPEN_TIMEOUT, client.sync(ReceiverStream::new(rx)))
            .await
            .map_err(|_| format!("no answer to the stream within {} s", OPEN_TIMEOUT.as_secs()))?
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        Ok((tx, inbound))
    }

    /// Acknowledges pushes and reports Health until the run stops or the stream ends;
    /// returns the rule set held then.
    async fn serve(
        &self,
        tx: mpsc::Sender<pb::AgentMessage>,
        mut inbound: Streaming<pb::ControllerMessage>,
        mut applied: Option<pb::RuleSet>,
    ) -> Option<pb::RuleSet> {
        let mut health = tokio::time::interval_at(Instant::now() + self.phase, self.health);
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let out = tokio::select! {
                () = self.stop.cancelled() => return applied,
                msg = inbound.message() => match msg {
                    Ok(Some(pb::ControllerMessage { msg: Some(controller_message::Msg::RuleSet(set)) })) => {
                        let version = set.version;
                        self.agent.received(version);
                        applied = Some(set);
                        Msg::Ack(pb::Ack { version })
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => {
                        self.agent.end("the controller closed the stream".to_owned());
                        return applied;
                    }
                    Err(status) => {
                        debug!(host_id = %self.agent.host_id, code = ?status.code(), error = %status.message(), "stream failed");
                        self.agent.end(format!("stream failed: {:?}: {}", status.code(), status.message()));
                        return applied;
                    }
                },
                _ = health.tick() => {
                    self.healths.fetch_add(1, Ordering::Relaxed);
                    Msg::Health(health_report(applied.as_ref()))
                }
            };
            if tx.send(pb::AgentMessage { msg: Some(out) }).await.is_err() {
                self.agent.end("the outbound stream closed".to_owned());
                return applied;
            }
        }
    }
}

/// A Health as a real agent sends it: the applied version and rule count, zero counters
/// for each session in the set, and the unchanged dataplane.
fn health_report(applied: Option<&pb::RuleSet>) -> pb::Health {
    let mut sessions: Vec<&str> = applied.iter().flat_map(|s| &s.rules).map(|r| r.session.as_str()).collect();
    sessions.sort_unstable();
    sessions.dedup();
    pb::Health {
        applied_version: applied.map_or(0, |s| s.version),
        rule_count: applied.map_or(0, |s| u32::try_from(s.rules.len()).unwrap_or(u32::MAX)),
        counters: sessions
            .into_iter()
            .map(|session| pb::SessionCounters { session: session.to_owned(), ..Default::default() })
            .collect(),
        drift_repairs: 0,
        dataplane: Some(dataplane()),
        arrivals: Vec::new(),
        counters_age_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids_are_instance_ids_and_stable() {
        assert_eq!(host_id(0), "i-0ad00000000000000");
        assert_eq!(host_id(9_999), "i-0ad0000000000270f");
        assert_eq!(host_id(0).len(), 2 + 17);
        assert_eq!(address(70_000), "10.1.17.112");
    }

    #[test]
    fn health_counts_each_session_once() {
        let rule = |s: &str| pb::MirrorRule { session: s.to_owned(), ..Default::default() };
        let set = pb::RuleSet {
            version: 7,
            rules: vec![rule("b"), rule("a"), rule("b")],
            collector: false,
            arrivals: vec![],
        };
        let h = health_report(Some(&set));
        assert_eq!((h.applied_version, h.rule_count), (7, 3));
        assert_eq!(h.counters.iter().map(|c| c.session.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(health_report(None).applied_version, 0);
    }
}
