//! Refused calls (no token, a bad token or certificate, too small a role, a refused
//! enrollment) are counted, logged and audited without letting their callers flood the
//! log or Postgres. In each interval the first refusal from an address for a reason is
//! logged (a few at most, whoever calls), and refusals are audited one by one within
//! budgets per address and overall; the rest are summed up at the end of the interval in
//! a few log lines and one audit row per address and status.
//!
//! `Tally` is the pure bookkeeping, with time passed in; `Refusals` runs it and writes.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    budget::{Budget, Take},
    metrics::Metrics,
    store::{AuditEntry, Store},
};

/// What was refused: an admin call, an agent's stream or renewal, or an enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Admin,
    Agent,
    Enroll,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Admin => "admin",
            Kind::Agent => "agent",
            Kind::Enroll => "enroll",
        }
    }
}

/// One refused call.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub kind: Kind,
    /// A short snake_case word for metrics and summaries, e.g. `unknown_token`.
    pub reason: &'static str,
    /// Where the call came from, if known.
    pub peer: Option<SocketAddr>,
    /// Who tried what, as the audit log records it.
    pub audit: AuditEntry,
    /// What the caller was told.
    pub status: tonic::Status,
}

/// How many refusals of an interval are logged one by one, the first from each address
/// for each reason, whatever the number of addresses: the rest are summed up.
const LOGGED_EACH: usize = 5;
/// How many addresses the summary names one by one, in the log and in the audit log;
/// the rest are summed up as "other addresses".
const NAMED_ADDRESSES: usize = 10;
/// Addresses tracked within an interval before further ones count as "other".
const MAX_TRACKED: usize = 4096;
/// Audit rows of single refusals: per address, and from everyone together.
const ADDRESS_BURST: u32 = 5;
const ADDRESS_EVERY: Duration = Duration::from_secs(10);
const GLOBAL_BURST: u32 = 50;
const GLOBAL_EVERY: Duration = Duration::from_millis(200);
/// Audit rows waiting to be written before further ones are summed up instead.
const AUDIT_QUEUE: usize = 256;

/// What `Tally::record` decided about one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub log: bool,
    pub audit: bool,
}

/// Refusals summed up over an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `None` for the addresses past `NAMED_ADDRESSES` or `MAX_TRACKED`, together.
    pub address: Option<IpAddr>,
    /// How many addresses this stands for (1 unless `address` is `None`).
    pub addresses: usize,
    /// The gRPC status code the callers got, e.g. `Unauthenticated`.
    pub code: String,
    pub calls: u64,
    /// Calls per kind and reason, e.g. `admin unknown_token`.
    pub reasons: BTreeMap<String, u64>,
}

/// What an interval's end reports: lines for the log (refusals not logged one by one) and
/// audit rows (refusals not audited one by one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub log: Vec<Summary>,
    pub audit: Vec<Summary>,
}

type Key = (Option<IpAddr>, String);

#[derive(Default)]
struct Counts {
    calls: u64,
    reasons: BTreeMap<String, u64>,
}

impl Counts {
    fn add(&mut self, kind: Kind, reason: &str) {
        self.calls += 1;
        *self.reasons.entry(format!("{} {reason}", kind.as_str())).or_default() += 1;
    }
}

/// The bookkeeping of one interval, and the audit budgets that outlive it.
pub struct Tally {
    /// The address and reason of each refusal logged one by one in this interval.
    logged: HashSet<(Option<IpAddr>, &'static str)>,
    unlogged: HashMap<Key, Counts>,
    unaudited: HashMap<Key, Counts>,
    budgets: HashMap<IpAddr, Budget>,
    global: Budget,
}

impl Tally {
    pub fn new(now: Instant) -> Self {
        Self {
            logged: HashSet::new(),
            unlogged: HashMap::new(),
            unaudited: HashMap::new(),
            budgets: HashMap::new(),
            global: Budget::new(GLOBAL_BURST, GLOBAL_EVERY, now),
        }
    }

    /// Decides whether a refusal from `address` with status `code` is logged and audited
    /// now; what is not is counted for the interval's report.
    pub fn record(
        &mut self,
        address: Option<IpAddr>,
        code: &str,
        kind: Kind,
        reason: &'static str,
        now: Instant,
    ) -> Decision {
        let log = self.logged.len() < LOGGED_EACH && self.logged.insert((address, reason));
        if !log {
            count(&mut self.unlogged, address, code, kind, reason);
        }
        let audit = self.audit_budget(address, now);
        if !audit {
            count(&mut self.unaudited, address, code, kind, reason);
        }
        Decision { log, audit }
    }

    /// Takes a token from the address's budget, and the global one, if both have one.
    fn audit_budget(&mut self, address: Option<IpAddr>, now: Instant) -> bool {
        let own = match address {
            Some(ip) if self.budgets.len() < MAX_TRACKED || self.budgets.contains_key(&ip) => {
                self.budgets.entry(ip).or_insert_with(|| Budget::new(ADDRESS_BURST, ADDRESS_EVERY, now)).take(now)
            }
            // Past the tracked addresses, or unknown: only the global budget applies.
            _ => Take::Allowed { after_refusing: 0 },
        };
        matches!(own, Take::Allowed { .. }) && matches!(self.global.take(now), Take::Allowed { .. })
    }

    /// A refusal `Decision` said to audit, but which could not be queued: it is summed up
    /// instead.
    pub fn unqueued(&mut self, address: Option<IpAddr>, code: &str, kind: Kind, reason: &str) {
        count(&mut self.unaudited, address, code, kind, reason);
    }

    /// Ends the interval: what to log and audit in summary, most calls first.
    pub fn report(&mut self, now: Instant) -> Report {
        self.logged.clear();
        self.budgets.retain(|_, b| !b.is_full(now));
        Report {
            log: summaries(std::mem::take(&mut self.unlogged)),
            audit: summaries(std::mem::take(&mut self.unaudited)),
        }
    }
}

fn count(map: &mut HashMap<Key, Counts>, address: Option<IpAddr>, code: &str, kind: Kind, reason: &str) {
    let address = address.filter(|ip| map.len() < MAX_TRACKED || map.contains_key(&(Some(*ip), code.to_owned())));
    map.entry((address, code.to_owned())).or_default().add(kind, reason);
}

/// The busiest `NAMED_ADDRESSES` with their address, the rest together per status code.
fn summaries(counts: HashMap<Key, Counts>) -> Vec<Summary> {
    let mut all: Vec<(Key, Counts)> = counts.into_iter().collect();
    all.sort_by(|(ka, a), (kb, b)| b.calls.cmp(&a.calls).then_with(|| ka.cmp(kb)));
    let mut out = Vec::new();
    let mut others: BTreeMap<String, Summary> = BTreeMap::new();
    for ((address, code), counts) in all {
        if address.is_some() && out.len() < NAMED_ADDRESSES {
            out.push(Summary { address, addresses: 1, code, calls: counts.calls, reasons: counts.reasons });
            continue;
        }
        let other = others.entry(code.clone()).or_insert_with(|| Summary {
            address: None,
            addresses: 0,
            code,
            calls: 0,
            reasons: BTreeMap::new(),
        });
        other.addresses += 1;
        other.calls += counts.calls;
        for (reason, n) in counts.reasons {
            *other.reasons.entry(reason).or_default() += n;
        }
    }
    out.extend(others.into_values());
    out
}

impl Summary {
    fn origin(&self) -> String {
        match (self.address, self.addresses) {
            (Some(ip), _) => ip.to_string(),
            (None, 1) => "1 other address".to_owned(),
            (None, n) => format!("{n} other addresses"),
        }
    }

    fn reasons_text(&self) -> String {
        self.reasons.iter().map(|(reason, n)| format!("{reason} ×{n}")).collect::<Vec<_>>().join(", ")
    }
}

/// Where handlers report refusals; cheap to clone.
#[derive(Clone)]
pub struct Refusals {
    tally: Arc<Mutex<Tally>>,
    audit: mpsc::Sender<(AuditEntry, String)>,
    metrics: Arc<Metrics>,
}

impl Refusals {
    /// Starts the audit writer and the interval's report, which run until `shutdown`.
    pub fn start(
        store: Store,
        metrics: Arc<Metrics>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (audit, rx) = mpsc::channel(AUDIT_QUEUE);
        let refusals = Self { tally: Arc::new(Mutex::new(Tally::new(Instant::now()))), audit, metrics };
        let task = tokio::spawn(refusals.clone().run(store, rx, interval, shutdown));
        (refusals, task)
    }

    fn tally(&self) -> MutexGuard<'_, Tally> {
        // Every update leaves the tally consistent, so a panicked holder changes nothing.
        self.tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts, logs and audits a refusal as the budgets allow; returns its status, so a
    /// handler can `return Err(refusals.refuse(...))`.
    pub fn refuse(&self, r: Refusal) -> tonic::Status {
        self.metrics.refused_call(r.kind.as_str(), r.reason);
        let address = r.peer.map(|p| p.ip());
        let code = format!("{:?}", r.status.code());
        let decision = self.tally().record(address, &code, r.kind, r.reason, Instant::now());
        if decision.log {
            warn!(
                peer = %r.audit.peer(), kind = r.kind.as_str(), reason = r.reason, action = r.audit.action(),
                target = %r.audit.target(), error = %r.status.message(), "refused a call"
            );
        }
        if decision.audit {
            let result = format!("{code}: {}", r.status.message());
            if self.audit.try_send((r.audit, result)).is_err() {
                self.tally().unqueued(address, &code, r.kind, r.reason);
            }
        }
        r.status
    }

    async fn run(
        self,
        store: Store,
        mut rows: mpsc::Receiver<(AuditEntry, String)>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let last = tokio::select! {
                () = shutdown.cancelled() => true,
                _ = tick.tick() => false,
                row = rows.recv() => {
                    if let Some((entry, result)) = row {
                        write(&store, &entry, &result).await;
                    }
                    continue;
                }
            };
            while let Ok((entry, result)) = rows.try_recv() {
                write(&store, &entry, &result).await;
            }
            let report = self.tally().report(Instant::now());
            self.publish(&store, report, interval).await;
            if last {
                return;
            }
        }
    }

    async fn publish(&self, store: &Store, report: Report, interval: Duration) {
        for s in &report.log {
            warn!(
                from = %s.origin(), code = %s.code, calls = s.calls, reasons = %s.reasons_text(),
                interval_secs = interval.as_secs(), "refused calls, summed up over the interval"
            );
        }
        for s in &report.audit {
            self.metrics.unaudited(s.calls);
            let entry = AuditEntry::new("refused callers", &s.origin(), "calls.refused", &s.reasons_text());
            let result = format!("{}: refused over the audit rate limit, summed up ({} calls)", s.code, s.calls);
            write(store, &entry, &result).await;
        }
    }
}

async fn write(store: &Store, entry: &AuditEntry, result: &str) {
    if let Err(e) = store.audit_failure(entry, result).await {
        debug!(action = entry.action(), error = %e, "could not audit a refused call");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_few_are_logged_and_audited_one_by_one_and_the_rest_summed_up() {
        let t0 = Instant::now();
        let mut t = Tally::new(t0);
        let decisions: Vec<Decision> =
            (0..1000).map(|_| t.record(ip(1), "Unauthenticated", Kind::Admin, "unknown_token", t0)).collect();
        assert_eq!(decisions.iter().filter(|d| d.log).count(), 1, "one line per address and reason");
        let role = t.record(ip(1), "PermissionDenied", Kind::Admin, "role", t0);
        assert_eq!(role, Decision { log: true, audit: false }, "another reason; the address's budget is spent");
        let other = t.record(ip(2), "Unauthenticated", Kind::Admin, "unknown_token", t0);
        assert_eq!(other, Decision { log: true, audit: true }, "another address");
        let audited = decisions.iter().filter(|d| d.audit).count();
        assert_eq!(audited, ADDRESS_BURST as usize);
        let report = t.report(t0);
        assert_eq!(report.log.len(), 1);
        assert_eq!((report.log[0].address, report.log[0].calls), (ip(1), 999));
        let summed: u64 = report.audit.iter().map(|s| s.calls).sum();
        assert_eq!(summed, 1002 - audited as u64 - 1, "every refusal is audited, alone or summed up");
        assert_eq!(report.audit[0].reasons.get("admin unknown_token"), Some(&(1000 - audited as u64)));

        // The next interval logs again; the address's audit budget refills slowly.
        let later = t0 + ADDRESS_EVERY;
        let d = t.record(ip(1), "Unauthenticated", Kind::Admin, "unknown_token", later);
        assert_eq!(d, Decision { log: true, audit: true });
        let d = t.record(ip(1), "Unauthenticated", Kind::Admin, "unknown_token", later);
        assert_eq!(d, Decision { log: false, audit: false });
    }

    #[test]
    fn many_addresses_share_a_global_budget_and_a_bounded_report() {
        let t0 = Instant::now();
        let mut t = Tally::new(t0);
        let mut audited = 0;
        for i in 0..=255u8 {
            for _ in 0..3 {
                audited += usize::from(t.record(ip(i), "Unauthenticated", Kind::Enroll, "unknown", t0).audit);
            }
        }
        assert_eq!(audited, GLOBAL_BURST as usize);
        let report = t.report(t0);
        assert_eq!(report.audit.len(), NAMED_ADDRESSES + 1, "the busiest by name, the rest together");
        let others = report.audit.last().expect("others");
        assert_eq!(others.address, None);
        assert_eq!(report.audit.iter().map(|s| s.calls).sum::<u64>(), 256 * 3 - audited as u64);
        assert_eq!(others.origin(), format!("{} other addresses", others.addresses));
        assert!(report.log.len() <= NAMED_ADDRESSES + 1);
    }

    #[test]
    fn codes_are_summed_apart_and_full_budgets_are_forgotten() {
        let t0 = Instant::now();
        let mut t = Tally::new(t0);
        for _ in 0..10 {
            t.record(ip(1), "Unauthenticated", Kind::Agent, "revoked_certificate", t0);
            t.record(ip(1), "PermissionDenied", Kind::Admin, "role", t0);
        }
        let report = t.report(t0);
        let codes: Vec<&str> = report.audit.iter().map(|s| s.code.as_str()).collect();
        assert_eq!(codes.len(), 2, "{report:?}");
        assert!(codes.contains(&"Unauthenticated") && codes.contains(&"PermissionDenied"));
        assert_eq!(t.budgets.len(), 1);
        t.report(t0 + ADDRESS_EVERY * ADDRESS_BURST * 2);
        assert!(t.budgets.is_empty(), "a refilled budget is forgotten");
    }
}
