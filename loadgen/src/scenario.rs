//! Changes made through the admin API and what the fleet saw of them: for every agent a
//! change covers, the time to the agent's Ack of the new version from the return of the
//! call that made it, from that call's start, and from the start of the first call of the
//! burst (what an operator waits for); for every other agent, that nothing arrived; and
//! after convergence, that a resync period passes without a push.

use std::ops::Range;
use std::time::Duration;

use serde::Serialize;
use teefleet_model::limits::MAX_SOURCES;
use teefleet_proto::v1::{self as pb, session_service_client::SessionServiceClient};
use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::agents::{Fleet, host_id};
use crate::error::LoadgenError;
use crate::latency::{Summary, signed_ms};

/// How often convergence is checked: small against the latencies measured, and cheap (one
/// atomic load per agent still waiting), since the controller shares the CPUs.
const POLL: Duration = Duration::from_millis(5);

/// The admin calls a run makes.
#[derive(Debug, Clone)]
pub struct Admin {
    sessions: SessionServiceClient<Channel>,
    collector: String,
}

/// One admin change: a session created, updated or deleted, and the agents it covers.
#[derive(Debug, Clone)]
enum Change {
    Create {
        name: String,
        agents: Range<usize>,
    },
    /// The session's port moved from 443 to 8443: every source's rules change, so each
    /// covered agent gets exactly one new version, as with a create.
    Update {
        name: String,
        agents: Range<usize>,
    },
    Delete {
        name: String,
        agents: Range<usize>,
    },
}

impl Change {
    fn agents(&self) -> Range<usize> {
        match self {
            Change::Create { agents, .. } | Change::Update { agents, .. } | Change::Delete { agents, .. } => {
                agents.clone()
            }
        }
    }
}

/// The port a scenario's sessions mirror, and the one an update moves them to.
const PORT: u32 = 443;
const UPDATED_PORT: u32 = 8443;

/// What one phase (the creates, or the deletes) of a scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Admin calls made, all at once.
    pub calls: usize,
    pub call_ms_total: f64,
    pub call_ms_max: f64,
    /// Covered agents that acknowledged a new version, and those that did not in time.
    pub acked: usize,
    pub missing: usize,
    /// From the return of the agent's call to its Ack; negative if the Ack came first.
    pub latency: Option<Summary>,
    /// From the start of the agent's call to its Ack: never negative, and it includes
    /// the call's own time.
    pub latency_from_call_start: Option<Summary>,
    /// From the start of the phase's first call to the agent's Ack: what an operator who
    /// makes the changes at once waits for, including the time the calls queue behind
    /// each other. The same as `latency_from_call_start` for one call.
    pub latency_from_first_start: Option<Summary>,
    /// Agents that acknowledged before their call returned: the controller wakes the
    /// streams before it builds the reply.
    pub acked_before_return: usize,
    /// From the start of the first call to the last Ack.
    pub converged_ms: Option<f64>,
    /// Pushes to agents the change did not cover (must be 0).
    pub uncovered_pushes: usize,
    /// Pushes beyond the one new version each covered agent needs (must be 0).
    pub extra_pushes: usize,
    /// Pushes in the quiet window after convergence, one resync period or more (must be 0).
    pub quiet_pushes: usize,
}

impl Phase {
    /// Every push the phase should not have caused.
    pub fn unexpected(&self) -> usize {
        self.uncovered_pushes + self.extra_pushes + self.quiet_pushes
    }
}

/// A session (or, past 1 000 agents, several) covering some agents, created, updated
/// if asked, then deleted.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub covered: usize,
    pub sessions: usize,
    pub create: Phase,
    /// Every session's port changed by `UpdateSession`, all at once.
    pub update: Option<Phase>,
    pub delete: Phase,
}

/// Sessions created to fill the database before the restart.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Seeded {
    pub sessions: usize,
    pub sources_per_session: usize,
    pub secs: f64,
}

/// Timing knobs.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    pub quiet: Duration,
    pub converge_timeout: Duration,
}

impl Admin {
    pub fn new(channel: Channel, collector: &str) -> Admin {
        Admin { sessions: SessionServiceClient::new(channel), collector: collector.to_owned() }
    }

    /// Plain TCP to the service port, mirrored both ways, like a typical session.
    /// `allow_routed` skips the on-link check: it asks EC2 about every source one by one,
    /// which here would measure moto (the simulated hosts are not instances there) and
    /// happens before anything is stored, outside the latency measured.
    fn create_request(&self, name: &str, sources: Vec<String>) -> pb::CreateSessionRequest {
        pb::CreateSessionRequest {
            name: name.to_owned(),
            sources,
            collector: self.collector.clone(),
            filter: Some(pb::Filter {
                direction: pb::Direction::Both.into(),
                protocol: pb::Protocol::Tcp.into(),
                ports: Some(pb::PortRange { first: PORT, last: PORT }),
                ..Default::default()
            }),
            allow_routed: true,
            // Fields added to the API later keep their defaults.
            ..Default::default()
        }
    }

    async fn create(&mut self, name: &str, sources: Vec<String>) -> Result<(), LoadgenError> {
        let request = self.create_request(name, sources);
        self.sessions
            .create_session(request)
            .await
            .map_err(|s| LoadgenError::call(format!("creating session {name}"), &s))?;
        Ok(())
    }

    async fn update(&mut self, name: &str) -> Result<(), LoadgenError> {
        let request = pb::UpdateSessionRequest {
            name: name.to_owned(),
            port: Some(pb::PortsUpdate { ports: Some(pb::PortRange { first: UPDATED_PORT, last: UPDATED_PORT }) }),
            ..Default::default()
        };
        let reply = self
            .sessions
            .update_session(request)
            .await
            .map_err(|s| LoadgenError::call(format!("updating session {name}"), &s))?;
        if !reply.get_ref().changed {
            warn!(session = name, "the update changed nothing; the phase will see no pushes");
        }
        Ok(())
    }

    async fn delete(&mut self, name: &str) -> Result<(), LoadgenError> {
        self.sessions
            .delete_session(pb::DeleteSessionRequest { name: name.to_owned() })
            .await
            .map_err(|s| LoadgenError::call(format!("deleting session {name}"), &s))?;
        Ok(())
    }

    async fn apply(&mut self, change: &Change) -> Result<(), LoadgenError> {
        match change {
            Change::Create { name, agents } => self.create(name, agents.clone().map(host_id).collect()).await,
            Change::Update { name, .. } => self.update(name).await,
            Change::Delete { name, .. } => self.delete(name).await,
        }
    }

    /// Covers `agents` with as few sessions as the per-session source limit allows,
    /// created at once, then (with `update`) changes every session's port at once, then
    /// deletes them at once; measures each phase.
    pub async fn scenario(
        &mut self,
        fleet: &Fleet,
        label: &str,
        agents: Range<usize>,
        update: bool,
        windows: Windows,
    ) -> Result<Scenario, LoadgenError> {
        let chunks: Vec<Range<usize>> =
            agents.clone().step_by(MAX_SOURCES).map(|start| start..(start + MAX_SOURCES).min(agents.end)).collect();
        let names: Vec<String> = (0..chunks.len()).map(|i| format!("lg-{label}-{i}")).collect();
        info!(
            scenario = label,
            agents = agents.len(),
            sessions = chunks.len(),
            "covering {} agents takes {} session(s) of at most {MAX_SOURCES} sources, created at once",
            agents.len(),
            chunks.len()
        );
        // The same sessions in each phase, each change covering its chunk of agents.
        let changes = |make: fn(String, Range<usize>) -> Change| -> Vec<Change> {
            names.iter().zip(&chunks).map(|(name, a)| make(name.clone(), a.clone())).collect()
        };
        let create =
            self.phase(fleet, &agents, &changes(|name, agents| Change::Create { name, agents }), windows).await?;
        log_phase(label, "create", &create);
        let update = if update {
            let updates = changes(|name, agents| Change::Update { name, agents });
            let update = self.phase(fleet, &agents, &updates, windows).await?;
            log_phase(label, "update", &update);
            Some(update)
        } else {
            None
        };
        let delete =
            self.phase(fleet, &agents, &changes(|name, agents| Change::Delete { name, agents }), windows).await?;
        log_phase(label, "delete", &delete);
        Ok(Scenario { name: label.to_owned(), covered: agents.len(), sessions: chunks.len(), create, update, delete })
    }

    /// Makes the changes, all at once, and measures how the fleet took them.
    async fn phase(
        &mut self,
        fleet: &Fleet,
        covered: &Range<usize>,
        changes: &[Change],
        windows: Windows,
    ) -> Result<Phase, LoadgenError> {
        let before = fleet.pushes();
        // Every call at once, so a change covering the whole fleet reaches it in one
        // burst however many sessions it takes.
        let first_start = Instant::now();
        let timed = futures::future::try_join_all(changes.iter().map(|change| {
            let mut admin = self.clone();
            async move {
                let start = Instant::now();
                admin.apply(change).await?;
                Ok::<_, LoadgenError>((start, Instant::now()))
            }
        }))
        .await?;
        // Per agent: when the call that changed its set started and returned.
        let mut calls: Vec<Option<(Instant, Instant)>> = vec![None; fleet.len()];
        let (mut call_ms_total, mut call_ms_max) = (0.0_f64, 0.0_f64);
        for (change, &(start, end)) in changes.iter().zip(&timed) {
            let ms = signed_ms(end, start);
            call_ms_total += ms;
            call_ms_max = call_ms_max.max(ms);
            for i in change.agents() {
                calls[i] = Some((start, end));
            }
        }

        let deadline = Instant::now() + windows.converge_timeout;
        let mut pending: Vec<usize> = covered.clone().collect();
        let agents = fleet.agents();
        loop {
            pending.retain(|&i| agents[i].pushes() <= before[i]);
            if pending.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        if !pending.is_empty() {
            warn!(missing = pending.len(), first = %agents[pending[0]].host_id, "agents did not acknowledge in time");
        }

        let (mut samples, mut from_start, mut from_first, mut before_return, mut last_ack) =
            (Vec::new(), Vec::new(), Vec::new(), 0, None::<Instant>);
        for i in covered.clone() {
            let (Some(ack), Some((start, ret))) = (agents[i].ack(before[i]), calls[i]) else { continue };
            let ms = signed_ms(ack.at, ret);
            if ms < 0.0 {
                before_return += 1;
            }
            samples.push(ms);
            from_start.push(signed_ms(ack.at, start));
            from_first.push(signed_ms(ack.at, first_start));
            last_ack = Some(last_ack.map_or(ack.at, |l| l.max(ack.at)));
        }

        let converged = fleet.pushes();
        tokio::time::sleep(windows.quiet).await;
        let after = fleet.pushes();
        let quiet_pushes = after.iter().zip(&converged).map(|(a, c)| a - c).sum();
        let (mut uncovered_pushes, mut extra_pushes) = (0, 0);
        for (i, (c, b)) in converged.iter().zip(&before).enumerate() {
            let new = c - b;
            if covered.contains(&i) {
                extra_pushes += new.saturating_sub(1);
            } else {
                uncovered_pushes += new;
            }
        }
        Ok(Phase {
            calls: changes.len(),
            call_ms_total,
            call_ms_max,
            acked: samples.len(),
            missing: pending.len(),
            latency: Summary::of(samples),
            latency_from_call_start: Summary::of(from_start),
            latency_from_first_start: Summary::of(from_first),
            acked_before_return: before_return,
            converged_ms: last_ack.map(|l| signed_ms(l, first_start)),
            uncovered_pushes,
            extra_pushes,
            quiet_pushes,
        })
    }

    /// A session on a host without an agent, created and deleted: no simulated agent's
    /// set changes, so none may receive anything. Returns the pushes seen.
    pub async fn unrelated(&mut self, fleet: &Fleet, host: &str, quiet: Duration) -> Result<usize, LoadgenError> {
        let before = fleet.pushes();
        let name = "lg-unrelated";
        self.create(name, vec![host.to_owned()]).await?;
        self.delete(name).await?;
        tokio::time::sleep(quiet).await;
        let pushes = fleet.pushes().iter().zip(&before).map(|(a, b)| a - b).sum();
        info!(pushes, "a session on a host without an agent, created and deleted");
        Ok(pushes)
    }

    /// Fills the database with `count` sessions spread over the fleet's hosts (each host in
    /// about the same number), one call after another, and leaves them there.
    pub async fn seed(&mut self, agents: usize, count: usize) -> Result<Seeded, LoadgenError> {
        let per = agents.div_ceil(count.max(1)).clamp(1, MAX_SOURCES);
        let start = Instant::now();
        for j in 0..count {
            let sources = (0..per).map(|t| host_id((j * per + t) % agents)).collect();
            self.create(&format!("lg-seed-{j}"), sources).await?;
            if (j + 1) % 250 == 0 {
                info!(created = j + 1, of = count, elapsed_ms = start.elapsed().as_millis(), "seeding sessions");
            }
        }
        let secs = start.elapsed().as_secs_f64();
        info!(sessions = count, sources_per_session = per, secs, "seeded");
        Ok(Seeded { sessions: count, sources_per_session: per, secs })
    }
}

fn log_phase(scenario: &str, phase: &str, p: &Phase) {
    info!(
        scenario,
        phase,
        calls = p.calls,
        call_ms_total = p.call_ms_total,
        call_ms_max = p.call_ms_max,
        acked = p.acked,
        missing = p.missing,
        p50_ms = p.latency.map(|l| l.p50_ms),
        p99_ms = p.latency.map(|l| l.p99_ms),
        max_ms = p.latency.map(|l| l.max_ms),
        from_first_start_p99_ms = p.latency_from_first_start.map(|l| l.p99_ms),
        from_first_start_max_ms = p.latency_from_first_start.map(|l| l.max_ms),
        unexpected = p.unexpected(),
        "phase measured"
    );
}
