//! The iptables and `ip` tools of each family, run asynchronously, with a timeout and
//! never through a shell, optionally inside a network namespace.

use std::{process::Stdio, time::Duration};

use tokio::{io::AsyncWriteExt, process::Command};

use super::{
    ApplyError,
    layout::{Family, TABLE},
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
    variant: Variant,
}

/// Which iptables binaries to run. Both backends' rules are live in the kernel at once, so
/// the agent uses the one the host's other tools use: by default whatever `iptables` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Variant {
    /// `iptables`, `iptables-save`, ... as the host's alternatives choose them.
    #[default]
    System,
    /// `iptables-nft`, `iptables-nft-save`, ...
    Nft,
    /// `iptables-legacy`, `iptables-legacy-save`, ...
    Legacy,
}

impl Iptables {
    /// The tools acting on the agent's own network namespace.
    pub fn host() -> Self {
        Self::default()
    }

    /// The tools acting on the named namespace (as created by `ip netns add`).
    pub fn in_netns(name: impl Into<String>) -> Self {
        Self { netns: Some(name.into()), variant: Variant::System }
    }

    /// The same, running the binaries of `variant`.
    pub fn with_variant(self, variant: Variant) -> Self {
        Self { variant, ..self }
    }

    /// The namespace the tools act on, when it is not the agent's own.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
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

    /// Runs `ip args…` (iproute2) in the same namespace, for the tunnel devices.
    pub async fn ip(&self, args: &[&str]) -> Result<String, ApplyError> {
        self.run("ip", args, None).await
    }

    /// Runs `ip` or `sysctl` in the same namespace.
    pub async fn tool(&self, program: &'static str, args: &[&str]) -> Result<String, ApplyError> {
        self.run(program, args, None).await
    }

    /// The main tool of `family`, e.g. `ip6tables-legacy`, for messages.
    pub fn program(&self, family: Family) -> &'static str {
        tools(family, self.variant).main
    }

    /// `iptables --version` (or ip6tables'), trimmed.
    pub async fn version(&self, family: Family) -> Result<String, ApplyError> {
        Ok(self.run(tools(family, self.variant).main, &["--version"], None).await?.trim().to_owned())
    }

    /// The `mangle` table with counters, in `iptables-save -c` syntax.
    pub async fn save(&self, family: Family) -> Result<String, ApplyError> {
        self.run(tools(family, self.variant).save, &["-c", "-t", TABLE], None).await
    }

    /// Applies `input` as one `iptables-restore --noflush` transaction: all of it or none.
    pub async fn restore(&self, family: Family, input: &str) -> Result<(), ApplyError> {
        self.run(tools(family, self.variant).restore, &["-w", LOCK_WAIT_SECS, "--noflush"], Some(input)).await.map(drop)
    }

    /// Parses and checks `input` without committing it (`iptables-restore --test`).
    pub async fn test_restore(&self, family: Family, input: &str) -> Result<(), ApplyError> {
        self.run(tools(family, self.variant).restore, &["-w", LOCK_WAIT_SECS, "--noflush", "--test"], Some(input))
            .await
            .map(drop)
    }
}

struct Tools {
    main: &'static str,
    save: &'static str,
    restore: &'static str,
}

fn tools(family: Family, variant: Variant) -> Tools {
    use {Family::*, Variant::*};
    let (main, save, restore) = match (family, variant) {
        (V4, System) => ("iptables", "iptables-save", "iptables-restore"),
        (V6, System) => ("ip6tables", "ip6tables-save", "ip6tables-restore"),
        (V4, Nft) => ("iptables-nft", "iptables-nft-save", "iptables-nft-restore"),
        (V6, Nft) => ("ip6tables-nft", "ip6tables-nft-save", "ip6tables-nft-restore"),
        (V4, Legacy) => ("iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore"),
        (V6, Legacy) => ("ip6tables-legacy", "ip6tables-legacy-save", "ip6tables-legacy-restore"),
    };
    Tools { main, save, restore }
}

/// The input line `iptables-restore` names in its error: the nft backend says
/// "Error occurred at line: N", the legacy one "line N failed".
pub(crate) fn failing_line(stderr: &str, input: &str) -> Option<(usize, String)> {
    let number = stderr.lines().find_map(|l| {
        let rest = l.split_once("line: ").map(|(_, r)| r).or_else(|| l.split_once("line ").map(|(_, r)| r))?;
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok()
    })?;
    let line = input.lines().nth(number.checked_sub(1)?)?;
    Some((number, line.to_owned()))
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
