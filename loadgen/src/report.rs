//! The results: one table with a column per fleet size, so growth is visible, and the
//! issue's targets next to the figures they apply to. Printed, never asserted.

use std::fmt::Write as _;

use serde::Serialize;

use crate::latency::Summary;
use crate::scenario::{Phase, Scenario};
use crate::size::SizeReport;
use crate::storm::Storm;

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cpus: usize,
    pub clock_ticks: u64,
    /// The controller measured: the binary we started, or the URL given.
    pub controller: String,
    pub connect_concurrency: usize,
    pub health_secs: u64,
    /// Where the controller and moto logs are, if kept.
    pub work_dir: Option<String>,
    pub sizes: Vec<SizeReport>,
}

/// A goal from the issue, judged at the sizes it speaks of.
struct Goal {
    text: &'static str,
    /// `None` where the goal does not apply to that size; else whether it is met.
    met: fn(&SizeReport) -> Option<bool>,
}

const FULL_FLEET: usize = 10_000;

fn at_full<T>(s: &SizeReport, v: Option<T>, ok: impl Fn(T) -> bool) -> Option<bool> {
    if s.agents == FULL_FLEET { v.map(ok) } else { None }
}

const RSS: Goal = Goal { text: "< 600 MB at 10 000", met: |s| at_full(s, s.idle.controller_rss_mb, |v| v < 600.0) };
const CPU: Goal = Goal { text: "< 10 % at 10 000", met: |s| at_full(s, s.idle.controller_cpu_pct, |v| v < 10.0) };
const SOME: Goal = Goal {
    text: "p99 < 250 ms covering 1 000",
    met: |s| {
        let sc = s.scenarios.first()?;
        (sc.covered == 1000).then(|| sc.create.latency.is_some_and(|l| l.p99_ms < 250.0) && sc.create.missing == 0)
    },
};
const ALL: Goal = Goal {
    text: "p99 < 2 s covering 10 000",
    met: |s| {
        let sc = s.scenarios.get(1)?;
        (sc.covered == FULL_FLEET)
            .then(|| sc.create.latency.is_some_and(|l| l.p99_ms < 2000.0) && sc.create.missing == 0)
    },
};
/// A call naming 1 000 sources, on its own.
const ONE_CALL_MS: f64 = 300.0;

fn one_call(s: &SizeReport, phase: impl Fn(&Scenario) -> Option<&Phase>) -> Option<bool> {
    let sc = s.scenarios.first()?;
    let p = phase(sc)?;
    (sc.covered == 1000 && p.calls == 1).then_some(p.call_ms_max <= ONE_CALL_MS && p.missing == 0)
}

const CREATE_CALL: Goal = Goal { text: "≤ 300 ms naming 1 000 sources", met: |s| one_call(s, |sc| Some(&sc.create)) };
const UPDATE_CALL: Goal = Goal { text: "≤ 300 ms over 1 000 sources", met: |s| one_call(s, |sc| sc.update.as_ref()) };
const BURST: Goal = Goal {
    text: "p99 ≤ 1 s, ten 1 000-source creates at once at 10 000",
    met: |s| {
        let sc = s.scenarios.get(1)?;
        (sc.covered == FULL_FLEET && sc.sessions == 10)
            .then(|| sc.create.latency_from_first_start.is_some_and(|l| l.p99_ms <= 1000.0) && sc.create.missing == 0)
    },
};
const START: Goal = Goal {
    text: "< 3 s with 10 000 hosts, 1 000 sessions",
    met: |s| {
        let loaded = s.loaded_hosts? >= FULL_FLEET && s.loaded_sessions? >= 1000;
        loaded.then_some(s.start_loaded_ms?).map(|ms| ms < 3000.0)
    },
};
const ZERO: Goal = Goal { text: "0", met: |_| None };

impl Report {
    /// A Markdown table (readable as it is in a terminal) and the notes it needs.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, Vec<String>, Option<&Goal>)> = Vec::new();
        let mut row = |label: &str, goal: Option<&'static Goal>, cell: &dyn Fn(&SizeReport) -> String| {
            rows.push((label.to_owned(), self.sizes.iter().map(cell).collect(), goal));
        };
        row("connect every agent", None, &|s| {
            let retries =
                if s.connect_retries > 0 { format!(" ({} retries)", s.connect_retries) } else { String::new() };
            format!("{:.1} s{retries}", s.connect_secs)
        });
        row("controller RSS, connected and idle", Some(&RSS), &|s| mb(s.idle.controller_rss_mb));
        row("controller CPU idle, % of one core", Some(&CPU), &|s| pct(s.idle.controller_cpu_pct));
        row("Postgres CPU idle, % of one core", None, &|s| pct(s.idle.postgres_cpu_pct));
        row("fleet-loadgen CPU idle, % of one core", None, &|s| pct(Some(s.idle.loadgen_cpu_pct)));
        row("Health reports / s", None, &|s| format!("{:.0}", s.idle.health_reports_per_sec));
        row("database transactions / s, idle", None, &|s| {
            s.idle.db_transactions_per_sec.map_or("–".to_owned(), |t| format!("{t:.0}"))
        });
        row("pushes while idle", Some(&ZERO), &|s| s.idle.pushes.to_string());
        for (i, name) in ["cover ≤ 1 000", "cover all"].into_iter().enumerate() {
            let label = |what: &str| format!("{name}: {what}");
            row(&label("agents / sessions"), None, &|s| {
                s.scenarios.get(i).map_or("–".to_owned(), |sc| format!("{} / {}", count(sc.covered), sc.sessions))
            });
            for kind in [PhaseKind::Create, PhaseKind::Update, PhaseKind::Delete] {
                // The update is measured in the first scenario only.
                if kind == PhaseKind::Update && i > 0 {
                    continue;
                }
                let what = kind.name();
                let (call_goal, from_return_goal, from_start_goal) = match (i, kind) {
                    (0, PhaseKind::Create) => (Some(&CREATE_CALL), Some(&SOME), None),
                    (0, PhaseKind::Update) => (Some(&UPDATE_CALL), None, None),
                    (_, PhaseKind::Create) => (None, Some(&ALL), Some(&BURST)),
                    _ => (None, None, None),
                };
                row(&label(&format!("{what} call(s), ms")), call_goal, &|s| {
                    kind.at(s, i).map_or("–".to_owned(), calls)
                });
                row(&label(&format!("{what} return → Ack p50 / p99 / max ms")), from_return_goal, &|s| {
                    kind.at(s, i).map_or("–".to_owned(), |p| latency(p, p.latency))
                });
                // From the start of the first call: for one call, that call's start.
                let start = if i == 0 { "call start" } else { "first call's start" };
                row(&label(&format!("{what} {start} → Ack p50 / p99 / max ms")), from_start_goal, &|s| {
                    kind.at(s, i).map_or("–".to_owned(), |p| latency(p, p.latency_from_first_start))
                });
            }
        }
        row("unexpected pushes (uncovered + extra + after convergence)", Some(&ZERO), &|s| {
            let phases =
                s.scenarios.iter().flat_map(|sc| [Some(&sc.create), sc.update.as_ref(), Some(&sc.delete)]).flatten();
            let (u, e, q) =
                phases.fold((0, 0, 0), |(u, e, q), p| (u + p.uncovered_pushes, e + p.extra_pushes, q + p.quiet_pushes));
            format!("{u} + {e} + {q}")
        });
        row("pushes for a session on a host without agent", Some(&ZERO), &|s| {
            s.unrelated_pushes.map_or("–".to_owned(), |p| p.to_string())
        });
        row("seed sessions through the API", None, &|s| {
            s.seeded.map_or("–".to_owned(), |d| {
                format!("{} × {} sources: {:.1} s", count(d.sessions), d.sources_per_session, d.secs)
            })
        });
        row("controller RSS at the end / peak", None, &|s| {
            format!("{} / {}", mb(s.controller_rss_end_mb), mb(s.controller_rss_peak_mb))
        });
        row("controller start → serving, empty database", None, &|s| ms(s.start_empty_ms));
        row("controller start → serving, hosts + sessions stored", Some(&START), &|s| match s.start_loaded_ms {
            Some(t) => format!(
                "{} ({} hosts, {} sessions)",
                ms(Some(t)),
                s.loaded_hosts.map_or("?".to_owned(), count),
                s.loaded_sessions.map_or("?".to_owned(), count)
            ),
            None => "–".to_owned(),
        });
        row("streams the controller ended", Some(&ZERO), &|s| s.streams_ended.to_string());
        let storm = |s: &SizeReport, f: &dyn Fn(&Storm) -> String| s.storm.as_ref().map_or("–".to_owned(), f);
        row("restart under the fleet: start → serving", None, &|s| storm(s, &|t| ms(t.start_ms)));
        row("restart: kill → stream open again p50 / p99 / max ms", None, &|s| {
            storm(s, &|t| match t.back {
                Some(b) if t.missing == 0 => format!("{} / {} / {}", fine(b.p50_ms), fine(b.p99_ms), fine(b.max_ms)),
                Some(b) => {
                    format!("{} / {} / {} (**{} missing**)", fine(b.p50_ms), fine(b.p99_ms), fine(b.max_ms), t.missing)
                }
                None => "none back".to_owned(),
            })
        });
        row("restart: opens that failed and waited", None, &|s| storm(s, &|t| t.failed_opens.to_string()));
        row("restart: pushes on the new streams", Some(&ZERO), &|s| storm(s, &|t| t.pushes.to_string()));
        row("restart: new controller CPU until all back / RSS", None, &|s| {
            storm(s, &|t| {
                let cpu = t.controller_cpu_secs.map_or("–".to_owned(), |c| format!("{c:.1} s"));
                format!("{cpu} / {}", mb(t.controller_rss_mb))
            })
        });

        let mut out = String::new();
        let sizes: Vec<String> = self.sizes.iter().map(|s| format!("{} agents", count(s.agents))).collect();
        let _ = writeln!(out, "| | {} | target |", sizes.join(" | "));
        let _ = writeln!(out, "| --- |{} --- |", " ---: |".repeat(sizes.len()));
        for (label, cells, goal) in rows {
            let _ = writeln!(
                out,
                "| {label} | {} | {} |",
                cells.join(" | "),
                goal.map_or(String::new(), |g| self.judge(g))
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{} CPUs; controller {}; {} agents connect at a time; Health every {} s per agent.",
            self.cpus, self.controller, self.connect_concurrency, self.health_secs
        );
        if self.sizes.iter().any(|s| s.agents > 1000) {
            let _ = writeln!(
                out,
                "Covering more than 1 000 agents takes ceil(N / 1 000) sessions (a session names at most 1 000 sources), \
                 created with concurrent calls; \"return → Ack\" counts from the return of the call for the agent's \
                 session, \"first call's start → Ack\" from the start of the first of them."
            );
        }
        if let Some(dir) = &self.work_dir {
            let _ = writeln!(out, "Logs: {dir}");
        }
        out
    }

    /// The goal's text and, for each size it applies to, whether the figure meets it.
    fn judge(&self, goal: &Goal) -> String {
        let verdicts: Vec<String> = self
            .sizes
            .iter()
            .filter_map(|s| {
                (goal.met)(s).map(|ok| format!("{}: {}", count(s.agents), if ok { "met" } else { "**not met**" }))
            })
            .collect();
        if verdicts.is_empty() { goal.text.to_owned() } else { format!("{} ({})", goal.text, verdicts.join(", ")) }
    }
}

/// `10 000`, as the rest of BENCHMARKS.md writes counts.
fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn mb(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.1} MB"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.1} %"))
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 10_000.0 => format!("{:.1} s", v / 1000.0),
        Some(v) => format!("{v:.0} ms"),
        None => "–".to_owned(),
    }
}

fn calls(p: &Phase) -> String {
    if p.calls == 1 {
        format!("{:.0}", p.call_ms_total)
    } else {
        format!("{} × max {:.0}, total {:.0}", p.calls, p.call_ms_max, p.call_ms_total)
    }
}

/// The phases of a scenario, as the table names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PhaseKind {
    Create,
    Update,
    Delete,
}

impl PhaseKind {
    fn name(self) -> &'static str {
        match self {
            PhaseKind::Create => "create",
            PhaseKind::Update => "update",
            PhaseKind::Delete => "delete",
        }
    }

    /// This phase of the size's `i`-th scenario.
    fn at(self, s: &SizeReport, i: usize) -> Option<&Phase> {
        let sc = s.scenarios.get(i)?;
        match self {
            PhaseKind::Create => Some(&sc.create),
            PhaseKind::Update => sc.update.as_ref(),
            PhaseKind::Delete => Some(&sc.delete),
        }
    }
}

fn latency(p: &Phase, summary: Option<Summary>) -> String {
    let Some(Summary { p50_ms, p99_ms, max_ms, .. }) = summary else { return "none acked".to_owned() };
    let mut text = format!("{} / {} / {}", fine(p50_ms), fine(p99_ms), fine(max_ms));
    if p.missing > 0 {
        let _ = write!(text, " (**{} missing**)", p.missing);
    }
    text
}

/// Milliseconds with a decimal where it matters.
fn fine(v: f64) -> String {
    if v.abs() < 10.0 { format!("{v:.1}") } else { format!("{v:.0}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped() {
        assert_eq!(count(7), "7");
        assert_eq!(count(1000), "1 000");
        assert_eq!(count(10_000), "10 000");
        assert_eq!(count(1_234_567), "1 234 567");
    }
}
