//! Verified delivery: what each source sent of a session, against what its collector
//! counted arriving, over a sliding window. Pure, so its arithmetic is a table of tests.
//!
//! Every agent reports cumulative counters with the time they were read. A source and its
//! collector read at different moments, so the two are compared over the same interval,
//! ending at the older of their latest readings, each counter interpolated between its
//! readings: the reporting skew between two hosts is then neither loss nor gain. A counter
//! that goes down was reset (the agent restarted) and counts again from zero; that is not
//! loss either.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use teefleet_model::{Encap, HostId, MaxLoss, SessionName};

/// One reading of a cumulative packet counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub at: DateTime<Utc>,
    pub packets: u64,
}

/// What one agent reported at one time: per session what it sent (a source), and per
/// session and source host what arrived (a collector).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub sent: BTreeMap<SessionName, u64>,
    pub arrived: BTreeMap<(SessionName, HostId), u64>,
}

/// Each host's samples, oldest first, with the time each was read.
pub type Samples = BTreeMap<HostId, Vec<(DateTime<Utc>, Sample)>>;

/// The figures of one source, or of a session in total, over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    pub sent: u64,
    pub delivered: u64,
    /// 0 to 1; `None` when nothing was sent, or when sent cannot be counted (raw TEE).
    pub loss_ratio: Option<f64>,
}

/// What the comparison knows of one source.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Known(Figures),
    /// Why not, for a person.
    Unknown(String),
}

/// How the controller judges delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// How far back the comparison looks.
    pub length: TimeDelta,
    /// A host whose latest reading is older than this has gone silent.
    pub silent_after: TimeDelta,
}

impl Window {
    /// Fewer packets than this sent over a window says nothing about loss: one clone of
    /// ten in flight at the window's edge would be 10 %.
    pub const MIN_JUDGED: u64 = 100;
    /// Nor do fewer lost than this: the readings' timing leaves a few packets of noise at
    /// the window's edges (up to 11 of 1 265 in the lab at 1 s reports), which must not
    /// degrade a session whose limit is well below 1 %.
    pub const MIN_LOST: u64 = 20;

    /// The readings a comparison at `now` needs: the window and one reading before it.
    pub fn lookback(&self) -> TimeDelta {
        self.length * 2 + self.silent_after
    }
}

/// A session's delivery: per source, in total, and whether it lost more than it may.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionDelivery {
    pub hosts: BTreeMap<HostId, Delivery>,
    /// Sums over the sources whose delivery is known; `None` when none is.
    pub total: Option<Figures>,
    /// Why the total is unknown or covers only some sources.
    pub unknown: Option<String>,
    /// "N % of the clones from HOST were lost over the last W s", for each source losing
    /// more than the session's limit.
    pub losses: Vec<String>,
}

/// The collector's agent as the session's delivery needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectorAgent {
    /// No agent ever said Hello for the collector: nothing counts what arrives.
    Absent,
    Present,
}

/// What a session is, as delivery needs to know it.
#[derive(Debug, Clone)]
pub struct SessionFacts<'a> {
    pub name: &'a SessionName,
    pub collector: &'a HostId,
    pub encap: Encap,
    pub sources: &'a [HostId],
    pub max_loss: MaxLoss,
    pub collector_agent: CollectorAgent,
}

/// Compares what each source of `session` sent with what its collector counted.
pub fn session_delivery(
    session: &SessionFacts<'_>,
    samples: &Samples,
    window: Window,
    now: DateTime<Utc>,
) -> SessionDelivery {
    let empty = Vec::new();
    let arrived_at = samples.get(session.collector).unwrap_or(&empty);
    // A collector's silence is every source's unknown, said once.
    let collector_gap = match (session.collector_agent, arrived_at.last()) {
        (CollectorAgent::Absent, _) => {
            Some(format!("collector {} has no agent: nothing counts what arrives there", session.collector))
        }
        (CollectorAgent::Present, Some((at, _))) if now - *at <= window.silent_after => None,
        (CollectorAgent::Present, Some((at, _))) => Some(format!(
            "collector {}'s agent has not reported for {} s",
            session.collector,
            (now - *at).num_seconds()
        )),
        // Its first report of what arrives comes with the Health after it applied the set
        // that tells it what to count.
        (CollectorAgent::Present, None) => {
            Some(format!("collector {}'s agent has not reported what arrives yet", session.collector))
        }
    };
    let mut hosts = BTreeMap::new();
    for source in session.sources {
        let delivery = match &collector_gap {
            Some(why) => Delivery::Unknown(why.clone()),
            None => {
                let sent: Vec<Reading> =
                    readings(samples.get(source).unwrap_or(&empty), |s| s.sent.get(session.name).copied());
                // The collector reports every arrival it counts, zero or not: one it does
                // not report, it has not been told to count yet (its set is on its way).
                let key = (session.name.clone(), source.clone());
                let delivered: Vec<Reading> = readings(arrived_at, |s| s.arrived.get(&key).copied());
                match compare(&sent, &delivered, window, now) {
                    Ok(figures) if session.encap == Encap::None => {
                        Delivery::Known(Figures { loss_ratio: None, ..figures })
                    }
                    Ok(figures) => Delivery::Known(figures),
                    Err(gap) => Delivery::Unknown(gap.describe(source, session.collector)),
                }
            }
        };
        hosts.insert(source.clone(), delivery);
    }
    let known: Vec<&Figures> =
        hosts.values().filter_map(|d| if let Delivery::Known(f) = d { Some(f) } else { None }).collect();
    let total = (!known.is_empty()).then(|| {
        let sent = known.iter().map(|f| f.sent).sum::<u64>();
        let delivered = known.iter().map(|f| f.delivered).sum::<u64>();
        let loss_ratio = if session.encap == Encap::None { None } else { loss(sent as f64, delivered as f64) };
        Figures { sent, delivered, loss_ratio }
    });
    let unknown = if let Some(why) = collector_gap {
        Some(why)
    } else if session.encap == Encap::None {
        Some(
            "raw TEE (encap none) is not verified: a source's outbound raw clones pass its own rules again, so it \
             cannot count what it sent; VXLAN delivery is"
                .to_owned(),
        )
    } else {
        let missing = hosts.values().filter(|d| matches!(d, Delivery::Unknown(_))).count();
        match (missing, hosts.len()) {
            (0, _) => None,
            (m, n) if m == n => {
                hosts.values().find_map(|d| if let Delivery::Unknown(w) = d { Some(w.clone()) } else { None })
            }
            (m, n) => Some(format!("the total covers {} of {n} sources; the others' delivery is unknown", n - m)),
        }
    };
    let seconds = window.length.num_seconds();
    let losses = hosts
        .iter()
        .filter_map(|(host, d)| match d {
            Delivery::Known(Figures { sent, delivered, loss_ratio: Some(ratio) })
                if *sent >= Window::MIN_JUDGED
                    && sent.saturating_sub(*delivered) >= Window::MIN_LOST
                    && *ratio > session.max_loss.get() =>
            {
                Some(format!("{} % of the clones from {host} were lost over the last {seconds} s", percent(*ratio)))
            }
            _ => None,
        })
        .collect();
    SessionDelivery { hosts, total, unknown, losses }
}

/// Why one source's delivery cannot be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// No reading of the source's counter for the session in the window.
    NoSource,
    /// No reading of the collector in the window.
    NoCollector,
    SilentSource(i64),
    SilentCollector(i64),
    /// The readings overlap for less than a quarter of the window.
    TooShort,
}

impl Gap {
    fn describe(self, source: &HostId, collector: &HostId) -> String {
        match self {
            Gap::NoSource => format!("{source} has not reported counters for the session yet"),
            Gap::NoCollector => format!("collector {collector}'s agent does not count clones from {source} yet"),
            Gap::SilentSource(secs) => format!("{source} has not reported for {secs} s"),
            Gap::SilentCollector(secs) => format!("collector {collector}'s agent has not reported for {secs} s"),
            Gap::TooShort => "not enough reports yet to compare".to_owned(),
        }
    }
}

/// What one source sent and its collector counted over the window ending at the older of
/// their latest readings.
pub fn compare(sent: &[Reading], delivered: &[Reading], window: Window, now: DateTime<Utc>) -> Result<Figures, Gap> {
    let (Some(first_s), Some(last_s)) = (sent.first(), sent.last()) else { return Err(Gap::NoSource) };
    if now - last_s.at > window.silent_after {
        return Err(Gap::SilentSource((now - last_s.at).num_seconds()));
    }
    let (Some(first_c), Some(last_c)) = (delivered.first(), delivered.last()) else { return Err(Gap::NoCollector) };
    if now - last_c.at > window.silent_after {
        return Err(Gap::SilentCollector((now - last_c.at).num_seconds()));
    }
    let to = last_s.at.min(last_c.at);
    let from = (to - window.length).max(first_s.at).max(first_c.at);
    if to - from < window.length / 4 {
        return Err(Gap::TooShort);
    }
    let (Some(s), Some(d)) = (increase(sent, from, to), increase(delivered, from, to)) else {
        return Err(Gap::TooShort);
    };
    Ok(Figures { sent: s.round() as u64, delivered: d.round() as u64, loss_ratio: loss(s, d) })
}

fn loss(sent: f64, delivered: f64) -> Option<f64> {
    // More delivered than sent is a clone counted at the window's edge, not a gain.
    (sent >= 1.0).then(|| (1.0 - delivered / sent).clamp(0.0, 1.0))
}

/// The readings of one counter in `samples`, oldest first.
fn readings(samples: &[(DateTime<Utc>, Sample)], counter: impl Fn(&Sample) -> Option<u64>) -> Vec<Reading> {
    samples.iter().filter_map(|(at, s)| counter(s).map(|packets| Reading { at: *at, packets })).collect()
}

/// How much a cumulative counter grew from `from` to `to`, counting evenly between
/// readings. A reading below the one before is a reset: counting began again from zero
/// after the earlier reading, so the whole of the later value is growth. `None` unless the
/// readings cover the interval.
pub fn increase(readings: &[Reading], from: DateTime<Utc>, to: DateTime<Utc>) -> Option<f64> {
    // The counter made monotonic: each reading's growth since the first.
    let mut total = 0.0;
    let mut points = Vec::with_capacity(readings.len());
    for (i, r) in readings.iter().enumerate() {
        if i > 0 {
            let before = readings[i - 1].packets;
            total += if r.packets >= before { (r.packets - before) as f64 } else { r.packets as f64 };
        }
        points.push((r.at, total));
    }
    Some(at(&points, to)? - at(&points, from)?)
}

/// The monotonic counter at `t`, interpolated between the readings around it.
fn at(points: &[(DateTime<Utc>, f64)], t: DateTime<Utc>) -> Option<f64> {
    let after = points.iter().position(|(at, _)| *at >= t)?;
    let (t1, v1) = points[after];
    if t1 == t {
        return Some(v1);
    }
    let (t0, v0) = *points.get(after.checked_sub(1)?)?;
    let span = (t1 - t0).num_milliseconds() as f64;
    let into = (t - t0).num_milliseconds() as f64;
    Some(v0 + (v1 - v0) * into / span)
}

/// A loss ratio as a person reads it: whole percent, or one decimal below 10 %.
pub fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if p >= 10.0 { format!("{p:.0}") } else { format!("{p:.1}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    fn series(points: &[(i64, u64)]) -> Vec<Reading> {
        points.iter().map(|&(s, packets)| Reading { at: t(s), packets }).collect()
    }

    const W: Window = Window { length: TimeDelta::seconds(60), silent_after: TimeDelta::seconds(30) };

    #[test]
    fn a_steady_counter_grows_evenly_between_readings() {
        let s = series(&[(0, 0), (10, 1000), (20, 2000)]);
        assert_eq!(increase(&s, t(5), t(15)), Some(1000.0));
        assert_eq!(increase(&s, t(0), t(20)), Some(2000.0));
        assert_eq!(increase(&s, t(-1), t(20)), None, "before the first reading is not covered");
        assert_eq!(increase(&s, t(0), t(21)), None, "after the last is not either");
    }

    #[test]
    fn a_reset_is_not_loss() {
        // The agent restarted between 20 s and 30 s and has counted 400 since.
        let s = series(&[(0, 0), (10, 1000), (20, 2000), (30, 400), (40, 1400)]);
        assert_eq!(increase(&s, t(0), t(40)), Some(3400.0));
        let c = series(&[(0, 0), (10, 1000), (20, 2000), (30, 2400), (40, 3400)]);
        let f = compare(&s, &c, W, t(41)).expect("known");
        assert_eq!((f.sent, f.delivered, f.loss_ratio), (3400, 3400, Some(0.0)));
    }

    #[test]
    fn skewed_readings_are_neither_loss_nor_gain() {
        // 100 packets a second everywhere; the collector reads 7 s after each source read.
        let sent = series(&[(0, 0), (10, 1000), (20, 2000), (30, 3000)]);
        let delivered = series(&[(7, 700), (17, 1700), (27, 2700), (37, 3700)]);
        let f = compare(&sent, &delivered, W, t(38)).expect("known");
        assert_eq!((f.sent, f.delivered, f.loss_ratio), (2300, 2300, Some(0.0)));
    }

    #[test]
    fn loss_is_what_did_not_arrive() {
        let sent = series(&[(0, 0), (30, 3000), (60, 6000)]);
        let delivered = series(&[(0, 0), (30, 2100), (60, 4200)]);
        let f = compare(&sent, &delivered, W, t(61)).expect("known");
        assert_eq!((f.sent, f.delivered), (6000, 4200));
        assert!((f.loss_ratio.expect("ratio") - 0.3).abs() < 1e-9);
        // Only the last minute counts: an outage two minutes ago has left the window.
        let sent = series(&[(0, 0), (60, 6000), (120, 12000), (180, 18000)]);
        let delivered = series(&[(0, 0), (60, 0), (120, 6000), (180, 12000)]);
        assert_eq!(compare(&sent, &delivered, W, t(181)).map(|f| f.loss_ratio), Ok(Some(0.0)));
    }

    #[test]
    fn missing_or_silent_reports_make_delivery_unknown() {
        let sent = series(&[(0, 0), (30, 3000)]);
        assert_eq!(compare(&sent, &[], W, t(31)), Err(Gap::NoCollector));
        assert_eq!(compare(&[], &[], W, t(31)), Err(Gap::NoSource), "the source first");
        let fresh = series(&[(0, 0), (80, 3000)]);
        assert_eq!(compare(&fresh, &sent, W, t(90)), Err(Gap::SilentCollector(60)));
        assert_eq!(compare(&sent, &fresh, W, t(90)), Err(Gap::SilentSource(60)));
        // One reading each: no interval to compare over.
        let one = series(&[(30, 3000)]);
        assert_eq!(compare(&one, &one, W, t(31)), Err(Gap::TooShort));
        // More delivered than sent at the window's edge is no gain.
        let more = series(&[(0, 0), (30, 3100)]);
        assert_eq!(compare(&sent, &more, W, t(31)).map(|f| f.loss_ratio), Ok(Some(0.0)));
        // Nothing sent: no ratio at all.
        let idle = series(&[(0, 0), (30, 0)]);
        assert_eq!(compare(&idle, &idle, W, t(31)).map(|f| f.loss_ratio), Ok(None));
    }

    fn sample(sent: &[(&str, u64)], arrived: &[(&str, &str, u64)]) -> Sample {
        Sample {
            sent: sent.iter().map(|(s, p)| (s.parse().expect("name"), *p)).collect(),
            arrived: arrived
                .iter()
                .map(|(s, h, p)| ((s.parse().expect("name"), h.parse().expect("host")), *p))
                .collect(),
        }
    }

    #[test]
    fn a_session_names_the_sources_that_lose_and_sums_the_rest() {
        let (web, c1): (SessionName, HostId) = ("web".parse().expect("name"), "c1".parse().expect("host"));
        let sources: Vec<HostId> = ["h1", "h2", "h3"].iter().map(|h| h.parse().expect("host")).collect();
        let mut samples = Samples::new();
        for (secs, k) in [(0, 0), (30, 1), (60, 2)] {
            let at = t(secs);
            samples.entry("h1".parse().expect("host")).or_default().push((at, sample(&[("web", 1000 * k)], &[])));
            samples.entry("h2".parse().expect("host")).or_default().push((at, sample(&[("web", 1000 * k)], &[])));
            let arrived = sample(&[], &[("web", "h1", 1000 * k), ("web", "h2", 500 * k)]);
            samples.entry(c1.clone()).or_default().push((at, arrived));
        }
        let facts = SessionFacts {
            name: &web,
            collector: &c1,
            encap: Encap::Vxlan,
            sources: &sources,
            max_loss: MaxLoss::DEFAULT,
            collector_agent: CollectorAgent::Present,
        };
        let d = session_delivery(&facts, &samples, W, t(61));
        assert_eq!(d.losses, ["50 % of the clones from h2 were lost over the last 60 s"]);
        let total = d.total.expect("total");
        assert_eq!((total.sent, total.delivered, total.loss_ratio), (4000, 3000, Some(0.25)));
        assert_eq!(d.hosts[&sources[2]], Delivery::Unknown("h3 has not reported counters for the session yet".into()));
        assert_eq!(d.unknown.as_deref(), Some("the total covers 2 of 3 sources; the others' delivery is unknown"));

        // Without the collector's agent nothing is known, and nothing is called lost.
        let absent = SessionFacts { collector_agent: CollectorAgent::Absent, ..facts.clone() };
        let d = session_delivery(&absent, &samples, W, t(61));
        assert!(d.total.is_none() && d.losses.is_empty());
        assert_eq!(d.unknown.as_deref(), Some("collector c1 has no agent: nothing counts what arrives there"));
        // A collector gone silent: unknown too, never 100 % lost.
        let d = session_delivery(&facts, &samples, W, t(100));
        assert!(d.total.is_none() && d.losses.is_empty());
        assert_eq!(d.unknown.as_deref(), Some("collector c1's agent has not reported for 40 s"));
        // Raw TEE: what arrived is shown, loss is not judged.
        let raw = SessionFacts { encap: Encap::None, ..facts };
        let d = session_delivery(&raw, &samples, W, t(61));
        assert!(d.losses.is_empty() && d.total.is_some_and(|t| t.loss_ratio.is_none() && t.delivered == 3000));
    }

    #[test]
    fn percents_read_well() {
        assert_eq!((percent(0.3), percent(0.0234), percent(1.0)), ("30".into(), "2.3".into(), "100".into()));
    }
}
