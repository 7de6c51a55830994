//! Helpers shared by the integration tests: the root check and throwaway network
//! namespaces, so tests run against real iptables without touching the host's rules, and
//! a recording fake dataplane for tests of the stream.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::{
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use teefleet_agent::{ApplyError, Dataplane, firewall::Check};
use teefleet_model::RuleSet;

/// True when the test may run. Without root it fails loudly, unless the environment says
/// root tests are to be skipped (developer machines; CI runs as root).
pub fn root_or_skip(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("Uid line");
    if uid == "0" {
        return true;
    }
    if std::env::var("TEEFLEET_SKIP_ROOT_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("skipping {test}: needs root (TEEFLEET_SKIP_ROOT_TESTS=1)");
        return false;
    }
    panic!(
        "{test} needs root to create network namespaces and run iptables; run as root or set TEEFLEET_SKIP_ROOT_TESTS=1"
    );
}

/// A network namespace that is deleted when dropped.
pub struct Netns {
    pub name: String,
    /// Use the `iptables-legacy` tools instead of the system's `iptables`.
    pub legacy: bool,
}

impl Netns {
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("tfa-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        run(Command::new("ip").args(["netns", "add", &name]));
        Netns { name, legacy: false }
    }

    /// Runs a command inside the namespace and returns its stdout; panics on failure.
    pub fn exec(&self, args: &[&str]) -> String {
        run(Command::new("ip").args(["netns", "exec", &self.name]).args(args))
    }

    pub fn iptables(&self, args: &str) {
        self.tool("iptables", args);
    }

    pub fn ip6tables(&self, args: &str) {
        self.tool("ip6tables", args);
    }

    /// `iptables-save` → `iptables-legacy-save` when the namespace is tested with legacy.
    fn program(&self, base: &str) -> String {
        if self.legacy { base.replacen("tables", "tables-legacy", 1) } else { base.to_owned() }
    }

    fn tool(&self, program: &str, args: &str) {
        let program = self.program(program);
        let mut full = vec![program.as_str(), "-w", "5", "-t", "mangle"];
        full.extend(args.split_whitespace());
        self.exec(&full);
    }

    /// `iptables-save -t mangle` without the comment lines that carry timestamps.
    pub fn save(&self) -> String {
        self.save_with("iptables-save")
    }

    /// The same for IPv6.
    pub fn save6(&self) -> String {
        self.save_with("ip6tables-save")
    }

    fn save_with(&self, program: &str) -> String {
        self.exec(&[&self.program(program), "-t", "mangle"])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// Everything in both families' `mangle` that is not the agent's, with counters
    /// zeroed: what must stay byte-identical whatever the agent does.
    pub fn foreign(&self) -> String {
        let both = self.save() + "--- ipv6\n" + &self.save6();
        both.lines()
            .filter(|l| !l.contains("TEEFLEET"))
            .map(|l| match l.find(" [") {
                Some(i) if l.starts_with(':') => format!("{} [0:0]\n", &l[..i]),
                _ => format!("{l}\n"),
            })
            .collect()
    }

    /// The rules of one chain as `iptables-save` prints them.
    pub fn chain(&self, chain: &str) -> Vec<String> {
        chain_of(&self.save(), chain)
    }

    pub fn chain6(&self, chain: &str) -> Vec<String> {
        chain_of(&self.save6(), chain)
    }
}

fn chain_of(save: &str, chain: &str) -> Vec<String> {
    let prefix = format!("-A {chain} ");
    save.lines().filter(|l| l.starts_with(&prefix)).map(str::to_owned).collect()
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Records every applied set; fails with `fail` when it is set; every drift check returns
/// `check`.
#[derive(Clone, Default)]
pub struct FakeDataplane {
    pub applied: Arc<Mutex<Vec<RuleSet>>>,
    pub fail: Arc<Mutex<Option<String>>>,
    pub check: Arc<Mutex<Check>>,
}

impl Dataplane for FakeDataplane {
    async fn apply(&self, set: &RuleSet) -> Result<(), ApplyError> {
        if let Some(stderr) = self.fail.lock().expect("lock").clone() {
            return Err(ApplyError::Failed {
                program: "fake",
                status: "exit status: 1".into(),
                stderr,
                input_line: None,
            });
        }
        self.applied.lock().expect("lock").push(set.clone());
        Ok(())
    }

    async fn check(&self) -> Result<Check, ApplyError> {
        Ok(self.check.lock().expect("lock").clone())
    }
}

impl FakeDataplane {
    pub fn versions(&self) -> Vec<u64> {
        self.applied.lock().expect("lock").iter().map(RuleSet::version).collect()
    }
}
