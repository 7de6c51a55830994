//! The stream client: one `fleet.v1.AgentService/Sync` stream to the controller,
//! reconnected forever.
//!
//! The controller may run as several replicas, all given to the agent. It streams with one
//! at a time; when a connect fails or an open stream ends, it moves to the next at once, so
//! agents of a replica that died reach a live one within seconds. The backoff applies only
//! after a whole round of replicas failed.
//!
//! Per stream: Hello first, then for each pushed RuleSet convert → apply → persist →
//! Ack (or Nack with the reason), Health at a fixed interval, and the events the agent
//! queued (drift repairs, an ignored state file). Shutdown stops the stream and leaves the
//! applied rules in place: mirroring fails open.
//!
//! With TLS the stream presents the agent's client certificate; when it is renewed the
//! stream reconnects with the new one. A controller that refuses the certificate (the host
//! was revoked) is retried only at a long interval, and the rules stay applied.

use std::{
    sync::Arc,
    time::{Duration, Instant, UNIX_EPOCH},
};

use futures::StreamExt;
use teefleet_model::{
    HostId, RuleSet,
    report::{self, ArrivalCounters, Arrived, SessionCounters, Traffic},
};
use teefleet_proto::v1::{
    self as pb, agent_message::Msg, agent_service_client::AgentServiceClient, controller_message,
};
use tokio::{
    sync::{mpsc, watch},
    time::MissedTickBehavior,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::{error, info, warn};

use crate::{
    backoff::{Backoff, Rotation},
    config::{ControllerUrl, ControllerUrls},
    enroll::Controller,
    error_chain,
    events::{self, Event, EventKind, EventReceiver, EventSender},
    firewall::{Dataplane, DataplaneInfo},
    host, notify,
    pki::Credentials,
    state::StateStore,
    status::Status,
};

/// A replica in the same network answers a TCP connect in milliseconds; one that does not
/// within this is taken for gone, and the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// From connect to the controller accepting the stream, TLS handshake included: a replica
/// that accepts connections but never answers (stopped, wedged) must not hold the agent.
/// The controller records the Hello before it answers, so this leaves room for a slow
/// database.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// HTTP/2 pings notice a controller that vanished without closing the connection (its
/// host died, or the network dropped it), within interval + timeout. A replica killed on a
/// live host is noticed at once: its kernel resets the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A stream open this long had a working controller even if nothing was pushed (nothing is,
/// while the agent has the current set); shorter ones count as failed attempts, so a
/// controller that accepts and at once drops streams is retried with backoff, not in a loop.
const STABLE: Duration = Duration::from_secs(10);

/// How long to wait after the controller refused the agent's certificate: it will not
/// change its mind quickly (a revoked host must enroll again), so retrying at the usual
/// pace would only load it.
pub const REFUSED_RETRY: Duration = Duration::from_secs(60);

/// How to reach the controller and what to tell it.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub transport: Transport,
    pub host_id: HostId,
    pub health_interval: Duration,
    /// The addresses reported in Hello; `None` asks `ip` at every connect.
    pub addresses: Option<Vec<String>>,
    pub backoff: Backoff,
    /// The wait after a refusal, [`REFUSED_RETRY`] but in tests.
    pub refused_retry: Duration,
}

/// Plaintext or mutual TLS.
#[derive(Debug, Clone)]
pub enum Transport {
    /// `--insecure`: `http://` replicas, no authentication.
    Plaintext(ControllerUrls),
    /// The controller's replicas verified against its CA; the agent presents the current
    /// client certificate, which the renewal loop replaces.
    Tls { controller: Controller, identity: watch::Receiver<Credentials> },
}

impl Transport {
    pub fn urls(&self) -> &ControllerUrls {
        match self {
            Transport::Plaintext(urls) => urls,
            Transport::Tls { controller, .. } => controller.urls(),
        }
    }

    fn endpoint(
        &self,
        url: &ControllerUrl,
        identity: Option<&Credentials>,
    ) -> Result<Endpoint, tonic::transport::Error> {
        match self {
            Transport::Plaintext(_) => Endpoint::from_shared(url.to_string()),
            Transport::Tls { controller, .. } => controller.endpoint(url, identity),
        }
    }
}

/// Why one stream ended (other than shutdown).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("invalid controller URL")]
    Endpoint(#[source] tonic::transport::Error),
    #[error("cannot connect to the controller")]
    Connect(#[source] tonic::transport::Error),
    #[error("the controller did not accept the stream within {} s", OPEN_TIMEOUT.as_secs())]
    OpenTimeout,
    #[error("the controller refused the stream")]
    Open(#[source] tonic::Status),
    #[error("the stream failed")]
    Receive(#[source] tonic::Status),
    #[error("the controller closed the stream")]
    Closed,
    #[error("the outgoing half of the stream closed")]
    Send,
}

impl StreamError {
    /// The controller's refusal of the agent's certificate (revoked, expired, unknown, or
    /// another host's), which reconnecting at once cannot cure.
    pub fn refusal(&self) -> Option<&tonic::Status> {
        match self {
            StreamError::Open(status) | StreamError::Receive(status)
                if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) =>
            {
                Some(status)
            }
            _ => None,
        }
    }
}

/// How a stream ended, other than by an error.
enum Ended {
    Shutdown,
    /// A renewed certificate is to be presented.
    Renewed,
}

/// How far one stream got before it ended.
#[derive(Default)]
struct Progress {
    /// When the controller accepted the stream.
    opened: Option<Instant>,
    got_message: bool,
}

impl Progress {
    /// Whether the controller worked: it pushed something, or kept the stream for [`STABLE`].
    fn worked(&self) -> bool {
        self.got_message || self.opened.is_some_and(|at| at.elapsed() >= STABLE)
    }
}

/// The agent proper: the dataplane, the state file, what it has applied, and what it
/// shares with the drift loop and the HTTP endpoints.
pub struct Agent<D> {
    dataplane: Arc<D>,
    state: StateStore,
    /// The set the kernel holds as far as the agent knows (None before the first apply).
    applied: Option<RuleSet>,
    status: Arc<Status>,
    events: EventSender,
    pending_events: EventReceiver,
}

impl<D: Dataplane> Agent<D> {
    /// `drift_interval` is how often the drift loop checks; readiness needs a recent check.
    pub fn new(dataplane: D, state: StateStore, drift_interval: Duration) -> Self {
        let (events, pending_events) = events::channel();
        Self {
            dataplane: Arc::new(dataplane),
            state,
            applied: None,
            status: Arc::new(Status::new(drift_interval)),
            events,
            pending_events,
        }
    }

    pub fn dataplane(&self) -> Arc<D> {
        self.dataplane.clone()
    }

    pub fn status(&self) -> Arc<Status> {
        self.status.clone()
    }

    /// Where the drift loop queues events for the controller.
    pub fn events(&self) -> EventSender {
        self.events.clone()
    }

    pub fn applied(&self) -> Option<&RuleSet> {
        self.applied.as_ref()
    }

    pub fn applied_version(&self) -> u64 {
        self.applied.as_ref().map_or(0, RuleSet::version)
    }

    /// Applies the saved set, if there is one, so mirroring resumes after a reboot even
    /// while the controller is unreachable. Called before the first connect.
    pub async fn restore(&mut self) {
        let set = match self.state.load().await {
            Ok(Some(set)) => set,
            Ok(None) => return,
            Err(e) => {
                let message = error_chain(&e);
                warn!(error = %message, "ignoring the saved rule set; the controller will send the current one");
                self.events.send(EventKind::StateIgnored, message);
                return;
            }
        };
        match self.apply(&set).await {
            Ok(()) => {
                info!(version = set.version(), rules = set.rules().len(), "re-applied the saved rule set");
                self.status.started(&format!("re-applied the saved rule set, version {}", set.version()));
                self.applied = Some(set);
            }
            Err(e) => {
                let message = format!("cannot re-apply the saved rule set (version {}): {e}", set.version());
                error!(version = set.version(), error = %e, "cannot re-apply the saved rule set");
                self.events.send(EventKind::ApplyFailed, message);
            }
        }
    }

    /// Applies through the dataplane and records the attempt; the error is one line.
    async fn apply(&self, set: &RuleSet) -> Result<(), String> {
        let started = Instant::now();
        let result = self.dataplane.apply(set).await.map_err(|e| error_chain(&e));
        self.status.record_apply(set, started.elapsed(), result.is_ok());
        result
    }

    /// Keeps a stream to the controller until `shutdown`: with the replica that last
    /// worked, else the next one, waiting with backoff after each round that all failed.
    pub async fn run(&mut self, options: &StreamOptions, shutdown: &CancellationToken) {
        let mut backoff = options.backoff.clone();
        let mut identity = match &options.transport {
            Transport::Tls { identity, .. } => Some(identity.clone()),
            Transport::Plaintext(_) => None,
        };
        let urls = options.transport.urls();
        let mut rotation = Rotation::new(urls.count());
        loop {
            let controller = urls.get(rotation.current());
            let mut progress = Progress::default();
            let result = self.stream_once(options, controller, &mut identity, shutdown, &mut progress).await;
            self.status.record_disconnected();
            let e = match result {
                Ok(Ended::Shutdown) => {
                    info!(%controller, "stream stopped for shutdown; applied rules stay in place");
                    return;
                }
                Ok(Ended::Renewed) => {
                    info!(%controller, "reconnecting with the renewed client certificate");
                    continue;
                }
                Err(e) => e,
            };
            let worked = progress.worked();
            if worked {
                backoff.reset();
            }
            let round_failed = rotation.failed(worked);
            let next = urls.get(rotation.current());
            let delay = if let Some(status) = e.refusal() {
                // Every replica shares the revocations, so the next one is asked as slowly.
                self.status.record_refused(status.message().to_owned());
                error!(
                    %controller, %next, code = ?status.code(), error = %status.message(), retry_secs = options.refused_retry.as_secs(),
                    "the controller refuses this agent's certificate; the applied rules stay in place. \
                     If the host was revoked, delete agent.crt and agent.key in the state directory and \
                     restart the agent with a new --join-token"
                );
                options.refused_retry
            } else if round_failed {
                let delay = backoff.next_delay();
                warn!(%controller, %next, error = %error_chain(&e), delay_ms = delay.as_millis() as u64, "disconnected from the controller; reconnecting");
                delay
            } else {
                warn!(%controller, %next, error = %error_chain(&e), "disconnected from the controller; trying the next replica");
                continue;
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
                () = renewed(&mut identity) => info!("reconnecting with the renewed client certificate"),
            }
        }
    }

    /// One stream to the replica at `controller`, from connect to its end: shutdown, a
    /// renewed certificate, or an error.
    async fn stream_once(
        &mut self,
        options: &StreamOptions,
        controller: &ControllerUrl,
        identity: &mut Option<watch::Receiver<Credentials>>,
        shutdown: &CancellationToken,
        progress: &mut Progress,
    ) -> Result<Ended, StreamError> {
        let creds = identity.as_mut().map(|rx| rx.borrow_and_update().clone());
        let endpoint = options
            .transport
            .endpoint(controller, creds.as_ref())
            .map_err(StreamError::Endpoint)?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let (tx, rx) = mpsc::channel(16);
        let open = async {
            let channel = endpoint.connect().await.map_err(StreamError::Connect)?;
            let addresses = match &options.addresses {
                Some(a) => a.clone(),
                None => host::global_addresses().await,
            };
            let hello = Msg::Hello(pb::Hello {
                host_id: options.host_id.to_string(),
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                addresses,
                applied_version: self.applied_version(),
                dataplane: Some(dataplane_to_proto(self.dataplane.info())),
            });
            // Queued before the stream opens, so Hello is always the first message.
            send(&tx, hello).await?;
            // A collector's set with the most arrivals is larger than tonic's 4 MiB default.
            let mut client =
                AgentServiceClient::new(channel).max_decoding_message_size(teefleet_proto::MAX_AGENT_MESSAGE);
            let response = client.sync(ReceiverStream::new(rx)).await.map_err(StreamError::Open)?;
            Ok::<_, StreamError>(response.into_inner())
        };
        let mut inbound = tokio::select! {
            () = shutdown.cancelled() => return Ok(Ended::Shutdown),
            opened = tokio::time::timeout(OPEN_TIMEOUT, open) => opened.map_err(|_| StreamError::OpenTimeout)??,
        };
        progress.opened = Some(Instant::now());
        info!(%controller, host_id = %options.host_id, applied_version = self.applied_version(), "connected to the controller");
        self.status.record_synced(controller);

        // A controller that has something for the agent sends it at once; silence means the
        // agent holds the current set (on a first boot: that there is nothing to apply).
        let settle = tokio::time::sleep(notify::SETTLE);
        tokio::pin!(settle);
        let mut settled = self.status.is_started();
        let period = options.health_interval;
        let mut health = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(Ended::Shutdown),
                () = renewed(identity) => return Ok(Ended::Renewed),
                () = &mut settle, if !settled => {
                    settled = true;
                    self.status.started(&format!(
                        "in touch with the controller, which has nothing to push: version {} is current",
                        self.applied_version()
                    ));
                }
                _ = health.tick() => send(&tx, Msg::Health(self.health())).await?,
                Some(event) = self.pending_events.recv() => {
                    if let Some(event) = event_to_proto(event) {
                        send(&tx, Msg::Event(event)).await?;
                    }
                }
                message = inbound.next() => {
                    let message = match message {
                        Some(Ok(m)) => m,
                        Some(Err(status)) => return Err(StreamError::Receive(status)),
                        None => return Err(StreamError::Closed),
                    };
                    progress.got_message = true;
                    // Whatever the controller says, it was not silence.
                    settled = true;
                    match message.msg {
                        Some(controller_message::Msg::RuleSet(set)) => {
                            let reply = self.handle(set).await;
                            send(&tx, reply).await?;
                        }
                        // A newer controller may send message kinds this agent does not know.
                        None => warn!("ignoring an empty or unknown controller message"),
                    }
                }
            }
        }
    }

    /// Convert, apply, persist; the answer is Ack only when all three succeeded.
    async fn handle(&mut self, set: pb::RuleSet) -> Msg {
        let version = set.version;
        let nack = |error: String| Msg::Nack(pb::Nack { version, error });
        let set = match RuleSet::try_from(set) {
            Ok(set) => set,
            Err(e) => {
                warn!(version, error = %e, "rejected an invalid rule set");
                return nack(format!("invalid rule set: {e}"));
            }
        };
        if let Err(error) = self.apply(&set).await {
            error!(version, %error, "cannot apply the rule set; the previous one stays in place");
            self.status.record_push(version, Some(error.clone()));
            return nack(error);
        }
        let rules = set.rules().len();
        let saved = self.state.save(&set).await;
        self.applied = Some(set);
        if let Err(e) = saved {
            // The kernel has the new set but a reboot would bring back the old one: the
            // controller must not count this host as done.
            let error = format!("applied, but cannot save the state: {}", error_chain(&e));
            error!(version, %error, "rule set applied but not persisted");
            self.status.record_push(version, Some(error.clone()));
            return nack(error);
        }
        info!(version, rules, "applied rule set");
        self.status.record_push(version, None);
        self.status.started(&format!("applied version {version} from the controller"));
        Msg::Ack(pb::Ack { version })
    }

    /// The Health report of this moment: the applied version, the counters of the last
    /// drift check and what the dataplane found. Public for the collector_cost bench.
    pub fn health(&self) -> pb::Health {
        let rule_count = self.applied.as_ref().map_or(0, |s| u32::try_from(s.rules().len()).unwrap_or(u32::MAX));
        let counters = self
            .status
            .counters()
            .into_iter()
            .map(|(session, rated)| {
                let (traffic, _) = Traffic::reported(
                    rated.counter.packets,
                    rated.counter.bytes,
                    rated.packets_per_second,
                    rated.bytes_per_second,
                );
                pb::SessionCounters::from(&SessionCounters { session, traffic })
            })
            .collect();
        let arrivals = self
            .status
            .arrivals()
            .into_iter()
            .map(|((session, source), counter)| {
                let arrived = Arrived { packets: counter.packets, bytes: counter.bytes };
                pb::ArrivalCounters::from(&ArrivalCounters { session, source, arrived })
            })
            .collect();
        let age = self.status.counters_age().unwrap_or_default();
        pb::Health {
            applied_version: self.applied_version(),
            rule_count,
            counters,
            drift_repairs: self.status.drift_repairs(),
            dataplane: Some(dataplane_to_proto(self.dataplane.info())),
            arrivals,
            counters_age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// What the agent found, as the controller will keep it: the same bounds apply.
fn dataplane_to_proto(info: DataplaneInfo) -> pb::Dataplane {
    let (dataplane, _) = report::Dataplane::reported(&info.backend, &info.iptables_version, info.ipv6, &info.problems);
    pb::Dataplane::from(&dataplane)
}

/// An event as the controller keeps it. Every kind the agent names is a valid one (a test
/// in `events.rs` checks), so none is dropped in practice.
fn event_to_proto(event: Event) -> Option<pb::HostEvent> {
    let at_unix_ms =
        event.at.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let kind = event.kind.as_str().parse().ok()?;
    Some(pb::HostEvent::from(&report::HostEvent::new(kind, &event.message, at_unix_ms, at_unix_ms)))
}

/// Resolves when the renewal loop publishes a new certificate; never without TLS, nor once
/// the loop has stopped.
async fn renewed(identity: &mut Option<watch::Receiver<Credentials>>) {
    if let Some(rx) = identity
        && rx.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

async fn send(tx: &mpsc::Sender<pb::AgentMessage>, msg: Msg) -> Result<(), StreamError> {
    tx.send(pb::AgentMessage { msg: Some(msg) }).await.map_err(|_| StreamError::Send)
}
