//! Runs `iptables-save` and `iptables-restore` (asynchronously, with a timeout, never
//! through a shell) and implements [`Dataplane`] with them.

use std::{process::Stdio, time::Duration};

use teefleet_model::RuleSet;
use tokio::{io::AsyncWriteExt, process::Command, sync::Mutex};
use tracing::{debug, instrument};

use super::{
    ApplyError, Dataplane,
    render::{self, Family, Observed},
};

/// How long one iptables command may take; `-w` waits for the xtables lock within it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Seconds `iptables-restore -w` waits for the xtables lock held by another program.
const LOCK_WAIT_SECS: &str = "5";

/// The iptables tools, optionally run inside a network namespace (`ip netns exec NS`),
/// which is how the tests give the agent a throwaway kernel state.
#[derive(Debug, Clone, Default)]
pub struct Iptables {
    netns: Option<String>,
}

impl Iptables {
    /// The tools acting on the agent's own network namespace.
    pub fn host() -> Self {
        Self { netns: None }
    }

    /// The tools acting on the named namespace (as created by `ip netns add`).
    pub fn in_netns(name: impl Into<String>) -> Self {
        Self { netns: Some(name.into()) }
    }

    fn command(&self, program: &'static str, args: &[&str]) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        cmd
    }

    /// Runs a command to completion, feeding `input` on stdin, and returns its stdout.
    async fn run(&self, program: &'static str, args: &[&str], input: Option<&str>) -> Result<String, ApplyError> {
        let mut cmd = self.command(program, args);
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().map_err(|source| ApplyError::Spawn { program, source })?;
        let stdin = child.stdin.take();
        let feed = async move {
            if let (Some(mut stdin), Some(input)) = (stdin, input) {
                // A write error means the process exited early; its status and stderr
                // say why, so the error is reported from there instead.
                let _ = stdin.write_all(input.as_bytes()).await;
                let _ = stdin.shutdown().await;
            }
        };
        // Feeding stdin while collecting output avoids a pipe deadlock on large inputs.
        let exchange = async { tokio::join!(feed, child.wait_with_output()).1 };
        let output = tokio::time::timeout(COMMAND_TIMEOUT, exchange)
            .await
            .map_err(|_| ApplyError::Timeout { program, secs: COMMAND_TIMEOUT.as_secs() })?
            .map_err(|source| ApplyError::Spawn { program, source })?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        let input_line = input.and_then(|text| failing_line(&stderr, text));
        Err(ApplyError::Failed { program, status: output.status.to_string(), stderr, input_line })
    }

    /// The current `mangle` table in `iptables-save` syntax.
    pub async fn save_mangle(&self) -> Result<String, ApplyError> {
        self.run("iptables-save", &["-t", render::TABLE], None).await
    }

    /// Applies `input` as one `iptables-restore --noflush` transaction: all of it or none.
    pub async fn restore(&self, input: &str) -> Result<(), ApplyError> {
        self.run("iptables-restore", &["-w", LOCK_WAIT_SECS, "--noflush"], Some(input)).await.map(drop)
    }
}

/// The input line `iptables-restore` names in its error: the nft backend says
/// "Error occurred at line: N", the legacy one "line N failed".
fn failing_line(stderr: &str, input: &str) -> Option<(usize, String)> {
    let number = stderr.lines().find_map(|l| {
        let rest = l.split_once("line: ").map(|(_, r)| r).or_else(|| l.split_once("line ").map(|(_, r)| r))?;
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok()
    })?;
    let line = input.lines().nth(number.checked_sub(1)?)?;
    Some((number, line.to_owned()))
}

/// The production dataplane: agent-owned chains in the IPv4 `mangle` table.
#[derive(Debug, Default)]
pub struct IptablesDataplane {
    iptables: Iptables,
    /// Serialises read-plan-write cycles, so two applies cannot plan from the same
    /// observation and both insert a jump.
    lock: Mutex<()>,
}

impl IptablesDataplane {
    pub fn new(iptables: Iptables) -> Self {
        Self { iptables, lock: Mutex::new(()) }
    }
}

impl Dataplane for IptablesDataplane {
    #[instrument(skip_all, fields(version = set.version(), rules = set.rules().len()), err(Display))]
    async fn apply(&self, set: &RuleSet) -> Result<(), ApplyError> {
        render::check_supported(set)?;
        let _guard = self.lock.lock().await;
        let observed = Observed::parse(&self.iptables.save_mangle().await?)?;
        match render::plan(set, Family::V4, &observed) {
            Some(input) => {
                debug!(%input, "iptables-restore input");
                self.iptables.restore(&input).await
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_failing_input_line() {
        let input = "*mangle\n:TEEFLEET-PRE - [0:0]\n-A TEEFLEET-PRE --bogus\nCOMMIT\n";
        let nft = "iptables-restore v1.8.9 (nf_tables): unknown option \"--bogus\"\nError occurred at line: 3\nTry `iptables-restore -h'";
        assert_eq!(failing_line(nft, input), Some((3, "-A TEEFLEET-PRE --bogus".to_owned())));
        let legacy = "iptables-restore: line 3 failed";
        assert_eq!(failing_line(legacy, input), Some((3, "-A TEEFLEET-PRE --bogus".to_owned())));
        assert_eq!(failing_line("no such thing", input), None);
        assert_eq!(failing_line("line: 99", input), None);
    }
}
