//! The agent stream: Hello, then RuleSet pushes down and Ack/Nack/Health/events up, one
//! stream per agent. The stream reads the desired set from the store whenever it is woken
//! and at a fixed period, and sends only when the agent does not already have that version.

use std::{
    net::IpAddr,
    pin::Pin,
    time::{Duration, Instant},
};

use futures::Stream;
use teefleet_model::{HostId, RuleSet};
use teefleet_proto::v1::{self as pb, agent_message::Msg, agent_service_server::AgentService, controller_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::{
    Api, ApiError,
    budget::{Budget, Take},
    convert,
};
use crate::{
    report::{Dataplane, Health, clean_text},
    store::{HelloRecord, StoreError},
};

/// How long an agent may take to say Hello after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Re-read the desired set this often even without a wake-up, so a lost wake-up (or a
/// change made by another replica) reaches the agent anyway.
const RESYNC: Duration = Duration::from_secs(5);
const MAX_ADDRESSES: usize = 64;
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
    let (dataplane, dropped) = convert::dataplane(d);
    for e in dropped {
        warn!(host_id = %host, error = %e, "dropped part of the agent's dataplane report");
    }
    dataplane
}

fn hello(msg: Option<pb::AgentMessage>) -> Result<Hello, Status> {
    let Some(pb::AgentMessage { msg: Some(Msg::Hello(h)) }) = msg else {
        return Err(Status::invalid_argument("the first message on the stream must be Hello"));
    };
    let host = convert::host_id("host_id", &h.host_id).map_err(ApiError::from)?;
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
    let agent_version = clean_text(&h.agent_version, 64);
    let dataplane = h.dataplane.as_ref().map(|d| dataplane(&host, d));
    Ok(Hello { host, agent_version, addresses, applied_version: h.applied_version, dataplane })
}

#[tonic::async_trait]
impl AgentService for Api {
    type SyncStream = PushStream;

    async fn sync(&self, req: Request<Streaming<pb::AgentMessage>>) -> Result<Response<PushStream>, Status> {
        let identity = match self.access.ca {
            Some(_) => Some(self.agent_identity(&req).await?),
            None => None,
        };
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 10 s of opening the stream"))??;
        let hello = hello(first)?;
        if let Some((_, host)) = identity.as_ref().filter(|(_, host)| *host != hello.host) {
            warn!(certificate_host = %host, hello_host = %hello.host, "refused an agent speaking for another host");
            return Err(Status::permission_denied(format!(
                "this client certificate belongs to host {host}; it cannot speak for host {}",
                hello.host
            )));
        }
        let connection_id = fastrand::i64(..);
        let record = HelloRecord {
            agent_version: &hello.agent_version,
            addresses: &hello.addresses,
            applied_version: hello.applied_version,
            connection_id,
            dataplane: hello.dataplane.as_ref(),
        };
        let desired = self.store.host_hello(&hello.host, &record).await.map_err(ApiError::from)?;
        info!(
            host_id = %hello.host,
            agent_version = %hello.agent_version,
            applied_version = hello.applied_version,
            desired_version = desired.version(),
            backend = hello.dataplane.as_ref().map_or("", |d| d.backend.as_str()),
            "agent connected"
        );
        if let Some(d) = hello.dataplane.as_ref().filter(|d| !d.problems.is_empty()) {
            warn!(host_id = %hello.host, problems = ?d.problems, "agent reports dataplane problems");
        }
        let registration = self.hub.register(&hello.host, connection_id);
        let (tx, rx) = mpsc::channel(4);
        let conn = Connection {
            api: self.clone(),
            host: hello.host,
            connection_id,
            applied: hello.applied_version,
            sent: None,
            dataplane: hello.dataplane,
            events: Budget::new(EVENT_BURST, EVENT_EVERY, Instant::now()),
            certificate: identity.map(|(print, _)| print),
            tx,
        };
        tokio::spawn(conn.run(inbound, registration, desired));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn enroll(&self, req: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        Ok(Response::new(Api::enroll(self, req).await?))
    }

    async fn renew(&self, req: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        Ok(Response::new(Api::renew(self, req).await?))
    }
}

struct Connection {
    api: Api,
    host: HostId,
    connection_id: i64,
    /// The version the agent last reported applied.
    applied: u64,
    /// The version and rule count last pushed on this stream.
    sent: Option<(u64, u32)>,
    /// The dataplane as last stored, so an unchanged report is not written again.
    dataplane: Option<Dataplane>,
    events: Budget,
    /// The fingerprint of the agent's client certificate (`None` with --insecure), checked
    /// again at every resync so a revocation on another replica ends this stream too.
    certificate: Option<[u8; 32]>,
    tx: mpsc::Sender<Result<pb::ControllerMessage, Status>>,
}

impl Connection {
    async fn run(
        mut self,
        mut inbound: Streaming<pb::AgentMessage>,
        registration: crate::push::Registration,
        desired: RuleSet,
    ) {
        let mut open = self.push(&desired).await;
        let mut resync = tokio::time::interval(RESYNC);
        resync.tick().await;
        while open {
            tokio::select! {
                () = self.api.shutdown.cancelled() => break,
                () = registration.cut.cancelled() => {
                    self.revoked().await;
                    break;
                }
                () = registration.wake.notified() => open = self.refresh().await,
                _ = resync.tick() => {
                    if !self.still_trusted().await {
                        self.revoked().await;
                        break;
                    }
                    open = self.refresh().await;
                }
                msg = inbound.message() => match msg {
                    Ok(Some(msg)) => self.handle(msg).await,
                    Ok(None) => open = false,
                    Err(status) => {
                        debug!(host_id = %self.host, error = %status, "agent stream failed");
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

    /// Tells the agent why its stream ends.
    async fn revoked(&self) {
        warn!(host_id = %self.host, "host revoked; closing its stream");
        let status = Status::unauthenticated(format!(
            "host {}'s certificate was revoked; enroll again with a new join token",
            self.host
        ));
        let _ = self.tx.send(Err(status)).await;
    }

    /// False once the certificate is revoked or expired. A database error keeps the stream:
    /// a brief outage must not cut every agent off.
    async fn still_trusted(&self) -> bool {
        let Some(print) = self.certificate else { return true };
        match self.api.store.agent_cert(&print).await {
            Ok(Some(cert)) => !cert.revoked && cert.not_after > chrono::Utc::now(),
            Ok(None) => false,
            Err(e) => {
                warn!(host_id = %self.host, error = %e, "could not re-check the agent's certificate");
                true
            }
        }
    }

    async fn refresh(&mut self) -> bool {
        match self.api.store.desired(&self.host).await {
            Ok(desired) => self.push(&desired).await,
            Err(e) => {
                // The database may be briefly away; the agent keeps its rules and the
                // next refresh tries again.
                warn!(host_id = %self.host, error = %e, "could not read desired rule set");
                true
            }
        }
    }

    /// Sends the set unless the agent has it or it was already sent; false if the stream
    /// is gone.
    async fn push(&mut self, desired: &RuleSet) -> bool {
        let version = desired.version();
        if version == self.applied || self.sent.is_some_and(|(v, _)| v == version) {
            return true;
        }
        let msg = pb::ControllerMessage { msg: Some(controller_message::Msg::RuleSet(convert::pb_rule_set(desired))) };
        if self.tx.send(Ok(msg)).await.is_err() {
            return false;
        }
        let rules = u32::try_from(desired.rules().len()).unwrap_or(u32::MAX);
        self.sent = Some((version, rules));
        info!(host_id = %self.host, version, rules, "pushed rule set");
        true
    }

    async fn handle(&mut self, msg: pb::AgentMessage) {
        let store = &self.api.store;
        let result = match msg.msg {
            Some(Msg::Ack(ack)) => {
                info!(host_id = %self.host, version = ack.version, "agent applied rule set");
                self.applied = ack.version;
                let rules = self.sent.filter(|(v, _)| *v == ack.version).map_or(0, |(_, n)| n);
                store.host_ack(&self.host, ack.version, rules).await
            }
            Some(Msg::Nack(nack)) => {
                let error: String = nack.error.chars().take(4096).collect();
                warn!(host_id = %self.host, version = nack.version, error = %error, "agent rejected rule set");
                store.host_nack(&self.host, nack.version, &error).await
            }
            Some(Msg::Health(h)) => self.health(&h).await,
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

    async fn health(&mut self, h: &pb::Health) -> Result<(), StoreError> {
        debug!(host_id = %self.host, applied_version = h.applied_version, rules = h.rule_count, "health");
        let (counters, dropped) = convert::counters(&h.counters);
        for e in dropped {
            warn!(host_id = %self.host, error = %e, "dropped part of the agent's counters");
        }
        let dataplane = h.dataplane.as_ref().map(|d| dataplane(&self.host, d));
        let changed = dataplane.filter(|d| self.dataplane.as_ref() != Some(d));
        if let Some(d) = changed.as_ref().filter(|d| !d.problems.is_empty()) {
            warn!(host_id = %self.host, problems = ?d.problems, "agent reports dataplane problems");
        }
        let health = Health { rule_count: h.rule_count, drift_repairs: h.drift_repairs, counters, dataplane: changed };
        self.api.store.host_health(&self.host, &health).await?;
        if health.dataplane.is_some() {
            self.dataplane = health.dataplane;
        }
        Ok(())
    }

    async fn event(&mut self, e: &pb::HostEvent) -> Result<(), StoreError> {
        let event = match convert::host_event(e, chrono::Utc::now()) {
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
        info!(host_id = %self.host, kind = %event.kind, message = %event.message, "agent event");
        self.api.store.add_host_event(&self.host, &event).await
    }
}
