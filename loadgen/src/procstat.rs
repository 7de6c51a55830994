//! What `/proc` says about a process: resident memory, CPU time, children and the
//! open-file limit. Linux only, which is where the controller runs.

use std::collections::HashMap;
use std::time::Instant;

/// Clock ticks per second when `getconf` cannot say; Linux has used 100 on every common
/// architecture for a long time.
const DEFAULT_CLOCK_TICKS: u64 = 100;

/// `/proc/PID/stat`'s unit for CPU time, from `getconf CLK_TCK` (no libc here).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(DEFAULT_CLOCK_TICKS)
}

/// A `kB` line of `/proc/PID/status`, such as `VmRSS` (resident now) or `VmHWM` (the
/// most it was resident), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = text.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    let kib: u64 = value.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// [`status_bytes`] in MiB, for a process that may not be ours to read.
pub fn status_mb(pid: Option<u32>, field: &str) -> Option<f64> {
    pid.and_then(|p| status_bytes(p, field)).map(|b| b as f64 / (1024.0 * 1024.0))
}

/// The fields of `/proc/PID/stat` after the command name, which is in parentheses and may
/// itself contain spaces and parentheses.
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// User plus system CPU time of one process, in clock ticks (children not included).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let fields = stat_fields(&pid.to_string())?;
    // After the name: state, ppid, pgrp, session, tty, tpgid, flags, minflt, cminflt,
    // majflt, cmajflt, utime, stime.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The processes whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            stat_fields(&child.to_string()).and_then(|f| f.get(1)?.parse::<u32>().ok()).is_some_and(|p| p == pid)
        })
        .collect()
}

/// The soft limit on open files of this process (children inherit it).
pub fn open_file_limit() -> Option<u64> {
    open_file_limits("self").map(|(soft, _)| soft)
}

/// The soft and hard limits on open files of a process (`self` or a pid); "unlimited"
/// reads as `u64::MAX`.
pub fn open_file_limits(pid: &str) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut values = line.trim_start_matches("Max open files").split_whitespace().map(|v| match v {
        "unlimited" => Some(u64::MAX),
        v => v.parse().ok(),
    });
    Some((values.next()??, values.next()??))
}

/// Whose CPU time a [`CpuWindow`] adds up.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// One process.
    Process(u32),
    /// A process and its children, e.g. the postmaster and its backends.
    Tree(u32),
}

impl Target {
    fn pids(self) -> Vec<u32> {
        match self {
            Target::Process(pid) => vec![pid],
            Target::Tree(pid) => std::iter::once(pid).chain(children(pid)).collect(),
        }
    }

    fn ticks(self) -> HashMap<u32, u64> {
        self.pids().into_iter().filter_map(|pid| Some((pid, cpu_ticks(pid)?))).collect()
    }
}

/// CPU time used between [`CpuWindow::start`] and [`CpuWindow::percent`].
#[derive(Debug)]
pub struct CpuWindow {
    target: Target,
    start: HashMap<u32, u64>,
    at: Instant,
}

impl CpuWindow {
    pub fn start(target: Target) -> CpuWindow {
        CpuWindow { target, start: target.ticks(), at: Instant::now() }
    }

    /// Percent of one core since the start. A process that appeared meanwhile counts with
    /// all its time (it started inside the window); one that exited is lost, which a
    /// pooled backend or a long-lived server does not do.
    pub fn percent(&self, clock_ticks: u64) -> f64 {
        let end = self.target.ticks();
        let used: u64 = end.iter().map(|(pid, t)| t.saturating_sub(self.start.get(pid).copied().unwrap_or(0))).sum();
        let secs = self.at.elapsed().as_secs_f64();
        if secs <= 0.0 || clock_ticks == 0 {
            return 0.0;
        }
        used as f64 / clock_ticks as f64 / secs * 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(status_bytes(me, "VmRSS").is_some_and(|b| b > 0));
        assert!(cpu_ticks(me).is_some());
        assert!(open_file_limit().is_some_and(|l| l > 0));
        assert!(clock_ticks() > 0);
        let window = CpuWindow::start(Target::Tree(me));
        assert!(window.percent(100) >= 0.0);
    }
}
