//! Running helper commands (ip, iptables, initdb…) asynchronously with their arguments as
//! data, never through a shell, and turning a non-zero exit into a [`LabError`] that carries
//! the command line and its stderr.

use std::ffi::OsStr;
use std::process::Output;

use tokio::process::Command;

use crate::LabError;

/// Builds a command from a program and its arguments.
pub(crate) fn command<I, S>(program: impl AsRef<OsStr>, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd.kill_on_drop(true);
    cmd
}

/// The command line as a person would type it, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let std = cmd.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the command to completion and returns its output, failing on a non-zero exit.
pub(crate) async fn run(mut cmd: Command) -> Result<Output, LabError> {
    let line = describe(&cmd);
    tracing::debug!(command = %line, "running");
    let output = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| LabError::io(format!("spawning `{line}`"), e))?;
    if !output.status.success() {
        return Err(LabError::Command {
            command: line,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}

/// Runs `program args…` and returns its stdout as text.
pub(crate) async fn run_text<I, S>(program: &str, args: I) -> Result<String, LabError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = run(command(program, args)).await?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a command from a synchronous `Drop`, ignoring failures: cleanup is best effort and
/// must never panic while the lab is already unwinding.
pub(crate) fn run_quiet_blocking(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether the current process runs with effective uid 0, read from `/proc/self/status`
/// (its `Uid:` line lists real, effective, saved and filesystem uids).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 or the given address, found by binding port 0. The port is
/// released before the caller binds it again, so callers retry if they lose the race.
pub(crate) fn free_port(ip: std::net::Ipv4Addr) -> Result<u16, LabError> {
    let listener = std::net::TcpListener::bind((ip, 0))
        .map_err(|e| LabError::io(format!("binding {ip}:0 to find a free port"), e))?;
    let port = listener.local_addr().map_err(|e| LabError::io("reading a bound port", e))?.port();
    Ok(port)
}
