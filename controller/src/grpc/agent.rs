//! The agent stream: Hello, then RuleSet pushes down and Ack/Nack/Health/events up, one
//! stream per agent. The stream reads its desired set once at Hello; later sets arrive
//! from the hub (see `fanout`), and it sends only what the agent does not already have.

use std::{
    collections::VecDeque,
    net::IpAddr,
    pin::Pin,
    time::{Duration, Instant},
};

use futures::Stream;
use teefleet_model::{HostId, RuleSet, text::printable};
use teefleet_proto::{
    field,
    v1::{self as pb, agent_message::Msg, agent_service_server::AgentService, controller_message},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Api, ApiError};
use crate::{
    budget::{Budget, Take},
    refusals::Kind,
    report::{CounterSample, Dataplane, Health},
    store::{AckRecord, AuditEntry, HelloOutcome, HelloRecord, StoreError},
};

/// How long an agent may take to say Hello after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ADDRESSES: usize = 64;
/// The longest Nack error kept, in bytes: an iptables-restore error with its input line.
const MAX_NACK_ERROR: usize = 4096;
/// Pushes on one stream whose answers are still accepted: a push is answered at once, so
/// only a burst of changes leaves several unanswered.
const PUSHES_KEPT: usize = 8;
/// Events an agent may have stored at once (a whole host's history), and then one per this
/// interval: far more than a drift check every few seconds produces.
const EVENT_BURST: u32 = 60;
const EVENT_EVERY: Duration = Duration::from_secs(1);

type PushStream = Pin<Box<dyn Stream<Item = Result<pb::ControllerMessage, Status>> + Send>>;

struct Hello {
    host: HostId,
    agent_version: String,
    addresses: Vec<String>,
    applied_version: u64,
    dataplane: Option<Dataplane>,
}

/// The agent's dataplane report, with what does not fit dropped and logged: a report never
/// refuses the stream, so the host stays managed.
fn dataplane(host: &HostId, d: &pb::Dataplane) -> Dataplane {
    let (dataplane, dropped) = teefleet_proto::dataplane(d);
    for e in dropped {
        warn!(host_id = %host, error = %e, "dropped part of the agent's dataplane report");
    }
    dataplane
}

fn hello(msg: Option<pb::AgentMessage>) -> Result<Hello, Status> {
    let Some(pb::AgentMessage { msg: Some(Msg::Hello(h)) }) = msg else {
        return Err(Status::invalid_argument("the first message on the stream must be Hello"));
    };
    let host = field::<HostId>("host_id", &h.host_id).map_err(ApiError::from)?;
    if h.addresses.len() > MAX_ADDRESSES {
        return Err(Status::invalid_argument(format!("addresses: at most {MAX_ADDRESSES}")));
    }
    let addresses = h
        .addresses
        .iter()
        .map(|a| {
            a.parse::<IpAddr>()
                .map(|ip| ip.to_string())
                .map_err(|_| Status::invalid_argument(format!("addresses: {a:?} is not an IP address")))
        })
        .collect::<Result<_, _>>()?;
    let agent_version = printable(&h.agent_version, 64);
    let dataplane = h.dataplane.as_ref().map(|d| dataplane(&host, d));
    Ok(Hello { host, agent_version, addresses, applied_version: h.applied_version, dataplane })
}

/// What the agent gets when its message cannot be read: too large, or not decodable (tonic
/// reports these as OUT_OF_RANGE and INTERNAL, which would blame the controller), with a
/// word for metrics. `None` when the connection itself failed.
fn bad_message(status: &Status) -> Option<(&'static str, Status)> {
    match status.code() {
        tonic::Code::OutOfRange => Some((
            "too_large",
            Status::resource_exhausted(format!(
                "an agent message is larger than the controller's limit of {} MiB ({}); the stream is closed",
                crate::MAX_AGENT_MESSAGE / (1024 * 1024),
                status.message()
            )),
        )),
        tonic::Code::Internal => Some((
            "malformed",
            Status::invalid_argument(format!(
                "an agent message could not be decoded ({}); the stream is closed",
                printable(status.message(), 256)
            )),
        )),
        _ => None,
    }
}

#[tonic::async_trait]
impl AgentService for Api {
    type SyncStream = PushStream;

    async fn sync(&self, req: Request<Streaming<pb::AgentMessage>>) -> Result<Response<PushStream>, Status> {
        let identity = match self.access.ca {
            Some(_) => Some(self.agent_identity(&req, "agent.sync").await?),
            None => None,
        };
        let peer = super::access::peer(&req);
        let remote = req.remote_addr();
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 10 s of opening the stream"))?
            .map_err(|status| match bad_message(&status) {
                Some((reason, status)) => {
                    warn!(%peer, reason, error = %status.message(), "ended an agent stream before its Hello");
                    self.metrics.ended_stream(reason);
                    status
                }
                None => status,
            })?;
        let hello = hello(first)?;
        if let Some((_, host)) = identity.as_ref().filter(|(_, host)| *host != hello.host) {
            let audit = AuditEntry::new(&format!("host:{host}"), &peer, "agent.sync", hello.host.as_str());
            let status = Status::permission_denied(format!(
                "this client certificate belongs to host {host}; it cannot speak for host {}",
                hello.host
            ));
            return Err(self.refuse(remote, Kind::Agent, "wrong_host", audit, status));
        }
        if let Some((print, host)) = &identity {
            self.in_use(host, print).await;
        }
        let connection_id = fastrand::i64(..);
        let registration = self.hub.register(&hello.host, connection_id, identity.map(|(print, _)| print));
        let record = HelloRecord {
            agent_version: &hello.agent_version,
            addresses: &hello.addresses,
            applied_version: hello.applied_version,
            connection_id,
            dataplane: hello.dataplane.as_ref(),
        };
        let HelloOutcome { desired, stale, recount } = match self.store.host_hello(&hello.host, &record).await {
            Ok(outcome) => outcome,
            Err(e) => {
                self.hub.unregister(&hello.host, connection_id);
                return Err(ApiError::from(e).into());
            }
        };
        if recount {
            self.recount.request(hello.host.clone());
        }
        if stale {
            // A database restored from a backup does this too, so it is not an error; the
            // agent gets the current set whatever it holds.
            warn!(
                host_id = %hello.host, claimed = hello.applied_version, desired_version = desired.version(),
                "the agent claims a version never pushed to this host; pushing the current set"
            );
            self.metrics.ignored_report("stale_hello");
        }
        self.hub.read_at_hello(&hello.host, connection_id, desired.version());
        info!(
            host_id = %hello.host,
            agent_version = %hello.agent_version,
            applied_version = hello.applied_version,
            desired_version = desired.version(),
            backend = hello.dataplane.as_ref().map_or("", |d| d.backend()),
            "agent connected"
        );
        if let Some(d) = hello.dataplane.as_ref().filter(|d| !d.problems().is_empty()) {
            warn!(host_id = %hello.host, problems = ?d.problems(), "agent reports dataplane problems");
        }
        let (tx, rx) = mpsc::channel(4);
        let conn = Connection {
            api: self.clone(),
            host: hello.host,
            connection_id,
            applied: (!stale).then_some(hello.applied_version),
            pushed: VecDeque::with_capacity(PUSHES_KEPT),
            ignored: 0,
            dataplane: hello.dataplane,
            events: Budget::new(EVENT_BURST, EVENT_EVERY, Instant::now()),
            tx,
        };
        // Every line the stream logs names its host, however deep it was logged.
        let span = info_span!("agent_stream", host_id = %conn.host, connection_id);
        tokio::spawn(conn.run(inbound, registration, desired).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn enroll(&self, req: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        Ok(Response::new(Api::enroll(self, req).await?))
    }

    async fn renew(&self, req: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        Ok(Response::new(Api::renew(self, req).await?))
    }

    async fn leave(&self, req: Request<pb::LeaveRequest>) -> Result<Response<pb::LeaveResponse>, Status> {
        Ok(Response::new(Api::leave(self, req).await?))
    }
}

/// A rule set sent on the stream.
#[derive(Debug, Clone, Copy)]
struct Pushed {
    version: u64,
    rules: u32,
    /// When it was sent, for the push-to-ack latency.
    at: Instant,
}

struct Connection {
    api: Api,
    host: HostId,
    connection_id: i64,
    /// The version the agent last reported applied; `None` when it claimed one this
    /// host was never pushed, so what it holds is unknown.
    applied: Option<u64>,
    /// The versions pushed on this stream, newest last: only these are acknowledged.
    pushed: VecDeque<Pushed>,
    /// Acks and Nacks ignored on this stream, for logging only the first.
    ignored: u64,
    /// The dataplane as last stored, so an unchanged report is not written again.
    dataplane: Option<Dataplane>,
    events: Budget,
    tx: mpsc::Sender<Result<pb::ControllerMessage, Status>>,
}

impl Connection {
    async fn run(
        mut self,
        mut inbound: Streaming<pb::AgentMessage>,
        registration: crate::push::Registration,
        desired: RuleSet,
    ) {
        let crate::push::Registration { desired: mut updates, cut } = registration;
        let mut open = self.push(&desired).await;
        while open {
            tokio::select! {
                biased;
                () = self.api.shutdown.cancelled() => break,
                () = cut.cancelled() => {
                    self.revoked().await;
                    break;
                }
                changed = updates.changed() => {
                    if changed.is_err() {
                        info!(host_id = %self.host, "a newer stream from the same host replaced this one");
                        break;
                    }
                    let latest = updates.borrow_and_update().clone();
                    if let Some(set) = latest {
                        open = self.push(&set).await;
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(msg)) => self.handle(msg).await,
                    Ok(None) => open = false,
                    Err(status) => {
                        self.failed(&status).await;
                        open = false;
                    }
                },
            }
        }
        self.api.hub.unregister(&self.host, self.connection_id);
        if let Err(e) = self.api.store.host_disconnected(&self.host, self.connection_id).await {
            warn!(host_id = %self.host, error = %e, "could not record disconnect");
        }
        info!(host_id = %self.host, "agent disconnected");
    }

    /// The stream could not be read: the agent sent what cannot be decoded (told why,
    /// logged and counted), or the connection failed.
    async fn failed(&self, status: &Status) {
        let Some((reason, status)) = bad_message(status) else {
            debug!(host_id = %self.host, error = %status, "agent stream failed");
            return;
        };
        warn!(host_id = %self.host, reason, error = %status.message(), "ended the agent's stream");
        self.api.metrics.ended_stream(reason);
        let _ = self.tx.send(Err(status)).await;
    }

    /// Tells the agent why its stream ends.
    async fn revoked(&self) {
        warn!(host_id = %self.host, "host revoked; closing its stream");
        let status = Status::unauthenticated(format!(
            "host {}'s certificate was revoked; enroll again with a new join token",
            self.host
        ));
        let _ = self.tx.send(Err(status)).await;
    }

    /// Sends the set unless the agent has it or it was already sent; false if the stream
    /// is gone.
    async fn push(&mut self, desired: &RuleSet) -> bool {
        let version = desired.version();
        if self.applied == Some(version) || self.pushed.back().is_some_and(|p| p.version == version) {
            return true;
        }
        let msg = pb::ControllerMessage { msg: Some(controller_message::Msg::RuleSet(pb::RuleSet::from(desired))) };
        if self.tx.send(Ok(msg)).await.is_err() {
            return false;
        }
        let rules = u32::try_from(desired.rules().len()).unwrap_or(u32::MAX);
        if self.pushed.len() == PUSHES_KEPT {
            self.pushed.pop_front();
        }
        self.pushed.push_back(Pushed { version, rules, at: Instant::now() });
        self.api.metrics.pushed();
        info!(host_id = %self.host, version, rules, "pushed rule set");
        true
    }

    async fn handle(&mut self, msg: pb::AgentMessage) {
        let result = match msg.msg {
            Some(Msg::Ack(ack)) => {
                let Some(pushed) = self.pushed(ack.version, "unpushed_ack") else { return };
                info!(host_id = %self.host, version = ack.version, "agent applied rule set");
                // A repeated Ack is not a second delivery.
                if self.applied != Some(ack.version) {
                    self.api.metrics.acked(pushed.at.elapsed());
                }
                self.applied = Some(ack.version);
                // Stored in a batch with other streams' Acks, retried there if it fails.
                let record = AckRecord { version: ack.version, rule_count: pushed.rules };
                self.api.acks.submit(self.host.clone(), record).await;
                Ok(())
            }
            Some(Msg::Nack(nack)) => {
                if self.pushed(nack.version, "unpushed_nack").is_none() {
                    return;
                }
                let error = printable(&nack.error, MAX_NACK_ERROR);
                warn!(host_id = %self.host, version = nack.version, error = %error, "agent rejected rule set");
                self.api.store.host_nack(&self.host, nack.version, &error).await.map(|_| ())
            }
            Some(Msg::Health(h)) => {
                self.health(&h).await;
                Ok(())
            }
            Some(Msg::Event(e)) => self.event(&e).await,
            Some(Msg::Hello(_)) | None => {
                warn!(host_id = %self.host, "ignoring unexpected message on agent stream");
                Ok(())
            }
        };
        if let Err(e) = result {
            warn!(host_id = %self.host, error = %e, "could not record agent report");
        }
    }

    /// The push of `version`, if it was pushed on this stream. An Ack or Nack of any
    /// other version is ignored (logged once per stream, and counted as `reason`): it is
    /// a lie, or a very late answer from a set long replaced.
    fn pushed(&mut self, version: u64, reason: &'static str) -> Option<Pushed> {
        if let Some(pushed) = self.pushed.iter().find(|p| p.version == version) {
            return Some(*pushed);
        }
        self.api.metrics.ignored_report(reason);
        self.ignored += 1;
        if self.ignored == 1 {
            warn!(
                host_id = %self.host, version, pushed = ?self.pushed.iter().map(|p| p.version).collect::<Vec<_>>(), reason,
                "ignoring an answer for a version not pushed on this stream"
            );
        }
        None
    }

    async fn health(&mut self, h: &pb::Health) {
        debug!(host_id = %self.host, applied_version = h.applied_version, rules = h.rule_count, "health");
        let (counters, dropped) = teefleet_proto::counters(&h.counters);
        for e in dropped {
            warn!(host_id = %self.host, error = %e, "dropped part of the agent's counters");
        }
        let dataplane = h.dataplane.as_ref().map(|d| dataplane(&self.host, d));
        let changed = dataplane.filter(|d| self.dataplane.as_ref() != Some(d));
        if let Some(d) = changed.as_ref().filter(|d| !d.problems().is_empty()) {
            warn!(host_id = %self.host, problems = ?d.problems(), "agent reports dataplane problems");
        }
        if changed.is_some() {
            self.dataplane.clone_from(&changed);
        }
        let (arrivals, dropped) = teefleet_proto::arrivals(&h.arrivals);
        for e in dropped {
            warn!(host_id = %self.host, error = %e, "dropped part of the collector's arrival counters");
        }
        // The agent's clock is not ours: it says how long ago it read, not when. An age
        // beyond any window makes an old sample, never an overflow.
        let age = chrono::TimeDelta::milliseconds(i64::try_from(h.counters_age_ms.min(3_600_000)).unwrap_or(0));
        // Only hosts that count something leave a sample: a source, or a collector.
        let sample = (!counters.is_empty() || !arrivals.is_empty()).then(|| CounterSample {
            read_at: chrono::Utc::now() - age,
            sent: counters.clone(),
            arrived: arrivals,
        });
        let health =
            Health { rule_count: h.rule_count, drift_repairs: h.drift_repairs, counters, dataplane: changed, sample };
        // Stored in a batch within a second; a failed write is retried there.
        self.api.heartbeats.submit(self.host.clone(), health).await;
    }

    async fn event(&mut self, e: &pb::HostEvent) -> Result<(), StoreError> {
        let received = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let event = match teefleet_proto::host_event(e, received) {
            Ok(event) => event,
            Err(err) => {
                warn!(host_id = %self.host, error = %err, "dropped an invalid event from the agent");
                return Ok(());
            }
        };
        match self.events.take(Instant::now()) {
            Take::Allowed { after_refusing } => {
                if after_refusing > 0 {
                    warn!(host_id = %self.host, dropped = after_refusing, "dropped events over the agent's budget");
                }
            }
            Take::Refused { first } => {
                if first {
                    warn!(host_id = %self.host, "agent sends events faster than they are stored; dropping some");
                }
                return Ok(());
            }
        }
        info!(host_id = %self.host, kind = %event.kind(), message = %event.message(), "agent event");
        self.api.store.add_host_event(&self.host, &event).await
    }
}
