//! Implements [`Dataplane`] with the iptables tools of each family ([`super::tools`]): converge each family's chains to the
//! rule set in one transaction, read them back, and repair them when they drift. With the
//! nft backend a drift check skips the read while the nf_tables generation shows that
//! nothing changed and the counters it last read are recent enough.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use teefleet_model::RuleSet;
use tokio::sync::Mutex;
use tracing::{debug, error, info, instrument, warn};

pub use super::tools::{Iptables, Variant};
use super::{
    ApplyError, Check, Counter, Dataplane, DataplaneInfo, Repair, Scope,
    devices::{self, Wanted},
    generation::Generation,
    layout::{ByFamily, Expected, Family, Owner},
    observe::{Observed, Shape},
    plan::{expected_with_control, plan},
    render::{Control, render_with_control, rules_of},
};
use crate::error_chain;

/// The production dataplane: agent-owned chains in the `mangle` table of each family.
#[derive(Debug)]
pub struct IptablesDataplane {
    iptables: Iptables,
    info: DataplaneInfo,
    /// Serialises every read-plan-write cycle (applies and drift checks), so two cannot
    /// plan from the same observation and both insert a jump.
    state: Mutex<State>,
    /// The nf_tables generation of the namespace the tools act on. `None` unless the tools
    /// of every family in use are nft: legacy tables are not in nf_tables, so no
    /// generation tells of their changes. Only locked while `state` is held.
    generation: Option<Mutex<GenerationReader>>,
    /// See [`Self::with_counter_max_age`].
    counter_max_age: Duration,
    /// The controllers, whose traffic with this host is never mirrored.
    control: Control,
    writes: AtomicU64,
    reads: AtomicU64,
}

/// The generation and whether reading it failed last time, so a failure that persists is
/// logged once.
#[derive(Debug)]
struct GenerationReader {
    generation: Generation,
    failing: bool,
}

#[derive(Debug, Default)]
struct State {
    /// The set the kernel holds (None before the first apply); drift is repaired to it.
    set: Option<RuleSet>,
    families: ByFamily<FamilyState>,
    /// Counters of rules since replaced, so the totals reported never go down.
    base: BTreeMap<Owner, Counter>,
    /// The host holds exactly the devices `set` needs, as last converged. Until it is
    /// known (at start, after a failed removal) devices are looked at even for a set that
    /// needs none; after, a set without tunnels costs no `ip` call.
    devices_settled: bool,
}

#[derive(Debug, Default)]
struct FamilyState {
    /// The rendered rule lines the kernel holds.
    rules: Vec<String>,
    /// What reading back showed after the last write; `None` until the first.
    shape: Option<Shape>,
    /// The nf_tables generation read just before the read that showed `shape`. While the
    /// kernel's generation is still this one, nothing was committed since that read began,
    /// ours or anyone's, so the kernel still holds `shape`.
    generation: Option<u32>,
    /// The kernel's counters at the last read.
    live: BTreeMap<Owner, Counter>,
    /// When the read that gave `live` began.
    read_at: Option<Instant>,
}

impl FamilyState {
    /// Whether a check can do without reading this family: the kernel's generation `now`
    /// is the one remembered with the baseline, and the counters are younger than
    /// `max_age` at `at`.
    fn unchanged(&self, now: Option<u32>, max_age: Duration, at: Instant) -> bool {
        now.is_some()
            && self.generation == now
            && self.shape.is_some()
            && self.read_at.is_some_and(|read| at.saturating_duration_since(read) < max_age)
    }

    /// Takes the counters of `read` and its generation; the shape is the caller's to
    /// judge.
    fn saw(&mut self, read: &Read) {
        self.live = read.observed.tallies();
        self.read_at = Some(read.at);
        self.generation = read.generation;
    }
}

/// One `iptables-save` of a family, and what the next check needs to know about it.
struct Read {
    observed: Observed,
    /// The nf_tables generation just before the save; see [`FamilyState::generation`].
    generation: Option<u32>,
    at: Instant,
}

impl IptablesDataplane {
    /// Finds out what the host's iptables can do (see [`DataplaneInfo::detect`]). Every
    /// drift check reads the table, unless [`Self::with_counter_max_age`] says otherwise.
    pub async fn new(iptables: Iptables) -> Self {
        let (info, ipv6_backend) = DataplaneInfo::detect_with_ipv6_backend(&iptables).await;
        let generation = if info.backend == "nft" && (!info.ipv6 || ipv6_backend == "nft") {
            let generation = Generation::new(iptables.netns().map(str::to_owned));
            Some(Mutex::new(GenerationReader { generation, failing: false }))
        } else {
            debug!(
                backend = %info.backend,
                ipv6_backend,
                "not nf_tables in every family: each drift check reads the table"
            );
            None
        };
        Self {
            iptables,
            info,
            state: Mutex::new(State::default()),
            generation,
            counter_max_age: Duration::ZERO,
            control: Control::default(),
            writes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }

    /// Lets a drift check skip `iptables-save` when the nf_tables generation shows that
    /// nothing changed since the last read and that read's counters are younger than
    /// `max_age`; otherwise it reads, repairs and refreshes the counters as always. The
    /// checks' counters are then up to `max_age` (plus one check interval) old. Drift
    /// detection does not wait for it: any nf_tables commit changes the generation, and
    /// the next check reads. No effect with the legacy backend. Zero, the default, reads
    /// at every check.
    pub fn with_counter_max_age(self, max_age: Duration) -> Self {
        Self { counter_max_age: max_age, ..self }
    }

    /// Keeps the agent's own traffic with `control` (its controllers) out of every
    /// session: RETURN rules first in each owned chain.
    pub fn with_control(self, control: Control) -> Self {
        Self { control, ..self }
    }

    /// How many `iptables-restore` transactions this dataplane has committed.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// How many times this dataplane has run `iptables-save` (either family).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Removes every chain and jump of ours in every family, whatever set was applied: for
    /// uninstalling. Returns how many families had something to remove; idempotent.
    pub async fn cleanup(&self) -> Result<usize, ApplyError> {
        let mut state = self.state.lock().await;
        // Whatever this dataplane believes, cleanup looks at the kernel.
        state.families = Default::default();
        let mut changed = 0;
        for family in self.families() {
            if self.converge(&mut state, family, &[], &Expected::default()).await? {
                changed += 1;
            }
        }
        // After the rules: none names a device any more.
        if !devices::observe(&self.iptables).await?.is_empty() {
            devices::converge(&self.iptables, self.info.ipv6, &Wanted::default(), true, false).await?;
            changed += 1;
        }
        *state = State::default();
        Ok(changed)
    }

    fn families(&self) -> impl Iterator<Item = Family> + use<> {
        let ipv6 = self.info.ipv6;
        Family::ALL.into_iter().filter(move |f| *f == Family::V4 || ipv6)
    }

    async fn observe(&self, family: Family) -> Result<Read, ApplyError> {
        // The generation is read before the table: a commit between the two then leaves a
        // generation older than what was read, which only costs a read at the next check;
        // the other order could remember a generation newer than what was read and miss
        // that commit.
        let generation = self.generation().await;
        let at = Instant::now();
        self.reads.fetch_add(1, Ordering::Relaxed);
        let observed = Observed::parse(&self.iptables.save(family).await?)?;
        Ok(Read { observed, generation, at })
    }

    /// The namespace's nf_tables generation, when a check may use it (nft backend, and
    /// counters may be reused at all). A failure is logged, once until it works again,
    /// and only means that the table is read.
    async fn generation(&self) -> Option<u32> {
        if self.counter_max_age.is_zero() {
            return None;
        }
        let mut reader = self.generation.as_ref()?.lock().await;
        match reader.generation.read().await {
            Ok(id) => {
                if std::mem::take(&mut reader.failing) {
                    info!("the nf_tables generation can be read again; drift checks skip unneeded reads");
                }
                Some(id)
            }
            Err(e) if reader.failing => {
                debug!(error = %error_chain(&e), "cannot read the nf_tables generation");
                None
            }
            Err(e) => {
                warn!(
                    error = %error_chain(&e),
                    "cannot read the nf_tables generation; every drift check reads the table until it can"
                );
                reader.failing = true;
                None
            }
        }
    }

    async fn write(&self, family: Family, input: &str) -> Result<(), ApplyError> {
        debug!(family = family.label(), %input, "iptables-restore input");
        self.iptables.restore(family, input).await?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Makes one family's kernel state hold `rules`. Writes nothing when the kernel already
    /// shows what the last write left and the rules are the same; returns whether it wrote.
    async fn converge(
        &self,
        state: &mut State,
        family: Family,
        rules: &[String],
        expected: &Expected,
    ) -> Result<bool, ApplyError> {
        let current = &state.families[family];
        // Nothing of ours is there and nothing is wanted: not even a read is needed (the
        // usual case for IPv6 on an IPv4-only host, at every push).
        if rules.is_empty() && current.rules.is_empty() && current.shape.as_ref() == Some(&Shape::default()) {
            return Ok(false);
        }
        let read = self.observe(family).await?;
        self.converge_from(state, family, rules, expected, read).await
    }

    /// [`Self::converge`] from an observation just made.
    async fn converge_from(
        &self,
        state: &mut State,
        family: Family,
        rules: &[String],
        expected: &Expected,
        read: Read,
    ) -> Result<bool, ApplyError> {
        let current = &mut state.families[family];
        current.saw(&read);
        let shape = read.observed.shape();
        if current.shape.as_ref() == Some(&shape) && current.rules == rules {
            return Ok(false);
        }
        let Some(input) = plan(rules, &read.observed) else {
            // No rules and nothing of ours: the kernel already is what was asked.
            current.rules = Vec::new();
            current.shape = Some(shape);
            return Ok(false);
        };
        // Whatever happens next, the remembered generation no longer describes the kernel.
        current.generation = None;
        self.write(family, &input).await?;
        // The replaced rules' kernel counters are gone; keep their sums.
        for (owner, counter) in std::mem::take(&mut current.live) {
            *state.base.entry(owner).or_default() += counter;
        }
        let back = self.observe(family).await?;
        back.observed.verify(expected).map_err(|detail| ApplyError::Verify { family, detail })?;
        let current = &mut state.families[family];
        current.rules = rules.to_vec();
        current.shape = Some(back.observed.shape());
        current.saw(&back);
        Ok(true)
    }

    /// Puts the families in `touched` back to `previous` after a failed apply, so the host
    /// keeps the old set rather than a mix. A failure here is left to the drift check.
    async fn roll_back(&self, state: &mut State, previous: Option<&RuleSet>, touched: &[Family]) {
        let empty = RuleSet::default();
        let previous = previous.unwrap_or(&empty);
        for &family in touched {
            let rules = render_with_control(previous, family, &self.control);
            let expected = expected_with_control(previous, family, &self.control);
            match self.converge(state, family, &rules, &expected).await {
                Ok(wrote) => debug!(family = family.label(), wrote, "rolled back to the previous set"),
                Err(e) => {
                    error!(family = family.label(), error = %error_chain(&e), "cannot roll back to the previous set; the drift check will retry")
                }
            }
        }
    }

    /// What the check reports: each session's mirrored traffic and each arrival's count.
    fn totals(state: &State) -> Check {
        let mut totals = state.base.clone();
        for (owner, counter) in state.families.values().flat_map(|f| &f.live) {
            *totals.entry(owner.clone()).or_default() += *counter;
        }
        let read = state.families.values().filter(|f| !f.rules.is_empty()).filter_map(|f| f.read_at);
        let mut check = Check { read_at: read.min(), ..Check::default() };
        for (owner, counter) in totals {
            match owner {
                Owner::Session(session) => {
                    check.counters.insert(session, counter);
                }
                Owner::Arrival(session, source) => {
                    check.arrivals.insert((session, source), counter);
                }
                Owner::None => {}
            }
        }
        check
    }
}

impl Dataplane for IptablesDataplane {
    #[instrument(skip_all, fields(version = set.version(), rules = set.rules().len()), err(Display))]
    async fn apply(&self, set: &RuleSet) -> Result<(), ApplyError> {
        if !self.info.ipv6
            && let Some(rule) = rules_of(set, Family::V6).first()
        {
            return Err(ApplyError::Ipv6Unavailable {
                session: rule.session().clone(),
                reason: self.info.ipv6_problem(),
            });
        }
        let mut state = self.state.lock().await;
        let wanted = Wanted::of(set);
        let had_devices = state.set.as_ref().is_some_and(|s| !Wanted::of(s).is_empty());
        let touch_devices = !wanted.is_empty() || had_devices || !state.devices_settled;
        // Devices first: a rule may name a device only once it exists.
        if !wanted.is_empty() {
            state.devices_settled = false;
            devices::converge(&self.iptables, self.info.ipv6, &wanted, false, false).await?;
        }
        let previous = state.set.take();
        let mut touched = Vec::new();
        for family in self.families() {
            let rules = render_with_control(set, family, &self.control);
            let expected = expected_with_control(set, family, &self.control);
            touched.push(family);
            if let Err(e) = self.converge(&mut state, family, &rules, &expected).await {
                self.roll_back(&mut state, previous.as_ref(), &touched).await;
                let before = previous.as_ref().map(Wanted::of).unwrap_or_default();
                let restored = devices::converge(&self.iptables, self.info.ipv6, &before, true, false).await;
                if let Err(cleanup) = &restored {
                    warn!(error = %cleanup, "removing the failed set's tunnel devices failed; the drift check retries");
                }
                state.devices_settled = restored.is_ok();
                state.set = previous;
                return Err(e);
            }
        }
        // No rule names a device the set does not need any more. The rules are applied
        // whatever happens here: a device left over is harmless, and the drift check
        // removes it.
        if touch_devices {
            let removed = devices::converge(&self.iptables, self.info.ipv6, &wanted, true, false).await;
            if let Err(e) = &removed {
                warn!(error = %e, "removing tunnel devices no rule needs failed; the drift check retries");
            }
            state.devices_settled = removed.is_ok();
        }
        // Sessions no longer applied stop being reported.
        let owners: BTreeSet<Owner> = (set.rules().iter().map(|r| Owner::Session(r.session().clone())))
            .chain(set.arrivals().iter().map(|a| Owner::Arrival(a.session().clone(), a.source().clone())))
            .collect();
        state.base.retain(|owner, _| owners.contains(owner));
        state.set = Some(set.clone());
        Ok(())
    }

    async fn check(&self) -> Result<Check, ApplyError> {
        let mut state = self.state.lock().await;
        let generation = self.generation().await;
        let now = Instant::now();
        let mut repairs = Vec::new();
        for family in self.families() {
            let current = &state.families[family];
            // Nothing of ours belongs in this family (or nothing was applied yet): no process
            // is spent looking.
            if current.rules.is_empty() {
                continue;
            }
            // Nothing was committed since the baseline was read, and its counters will do.
            if current.unchanged(generation, self.counter_max_age, now) {
                debug!(family = family.label(), generation, "nf_tables generation unchanged; not read");
                continue;
            }
            let baseline = current.shape.clone().unwrap_or_default();
            let read = self.observe(family).await?;
            let shape = read.observed.shape();
            if shape == baseline {
                state.families[family].saw(&read);
                continue;
            }
            // The caller logs and reports the repair; here it only has to happen.
            let drift = baseline.describe_change(&shape);
            // Rules are only recorded for an applied set, so the set is there.
            let Some(set) = state.set.clone() else { continue };
            let rules = state.families[family].rules.clone();
            let expected = expected_with_control(&set, family, &self.control);
            // Without a baseline, converge rewrites even though the rules are the same.
            state.families[family].shape = None;
            self.converge_from(&mut state, family, &rules, &expected, read).await?;
            repairs.push(Repair { scope: Scope::Rules(family), drift });
        }
        let wanted = state.set.as_ref().map(Wanted::of).unwrap_or_default();
        if state.set.is_some() && (!wanted.is_empty() || !state.devices_settled) {
            for drift in devices::converge(&self.iptables, self.info.ipv6, &wanted, true, true).await? {
                repairs.push(Repair { scope: Scope::Tunnels, drift });
            }
            state.devices_settled = true;
        }
        Ok(Check { repairs, ..Self::totals(&state) })
    }

    fn info(&self) -> DataplaneInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_is_read_unless_its_generation_is_unchanged_and_its_counters_recent() {
        let read = Instant::now();
        let max_age = Duration::from_secs(6);
        let family = FamilyState {
            shape: Some(Shape::default()),
            generation: Some(7),
            read_at: Some(read),
            ..FamilyState::default()
        };
        let later = |secs| read + Duration::from_secs(secs);
        assert!(family.unchanged(Some(7), max_age, later(5)));
        assert!(!family.unchanged(Some(8), max_age, later(5)), "something was committed");
        assert!(!family.unchanged(None, max_age, later(5)), "the generation could not be read");
        assert!(!family.unchanged(Some(7), max_age, later(6)), "the counters are too old");
        assert!(!family.unchanged(Some(7), Duration::ZERO, read), "counters are never reused");
        let unknown = FamilyState { shape: Some(Shape::default()), read_at: Some(read), ..FamilyState::default() };
        assert!(!unknown.unchanged(None, max_age, read), "no generation was remembered");
        let no_baseline =
            FamilyState { shape: None, generation: Some(7), read_at: Some(read), ..FamilyState::default() };
        assert!(!no_baseline.unchanged(Some(7), max_age, read), "a failed repair left no baseline");
    }
}
