//! Child processes of the lab: the workspace's binaries (`fleet-controller`, `fleet-agent`
//! inside a namespace, `fleetctl`) and helpers such as moto and tcpdump. Each long-running
//! child writes stdout and stderr to its own log file and is killed on drop.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::LabError;
use crate::cmd;

/// The workspace binaries the lab runs.
pub const CONTROLLER_BIN: &str = "fleet-controller";
pub const AGENT_BIN: &str = "fleet-agent";
pub const FLEETCTL_BIN: &str = "fleetctl";

/// The directory holding the workspace's binaries: the test or lab executable lives in
/// `target/<profile>/` or `target/<profile>/deps/`, and the bins in `target/<profile>/`.
/// `TEEFLEET_BIN_DIR` overrides it.
pub fn bin_dir() -> Result<PathBuf, LabError> {
    if let Some(dir) = std::env::var_os("TEEFLEET_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().map_err(|e| LabError::io("locating the current executable", e))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| LabError::Invalid(format!("{} has no parent directory", exe.display())))?
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The path of a workspace binary, or a clear error telling how to build it.
pub fn binary(name: &str) -> Result<PathBuf, LabError> {
    let dir = bin_dir()?;
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(LabError::Missing(format!(
            "{} not found in {}: run `cargo build --workspace --bins` first",
            name,
            dir.display()
        )))
    }
}

/// `scripts/package --profile dev`: packages the workspace's debug binaries (built by
/// `cargo build --workspace --bins`) as an operator gets them, into the `package/`
/// directory beside them, which it returns.
pub fn package_dev() -> Result<PathBuf, LabError> {
    let bins = bin_dir()?;
    let target =
        bins.parent().ok_or_else(|| LabError::Invalid(format!("{} has no parent directory", bins.display())))?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/package");
    let out = std::process::Command::new(&script)
        .args(["--profile", "dev"])
        .env("CARGO_TARGET_DIR", target)
        .output()
        .map_err(|e| LabError::io("running scripts/package", e))?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: "scripts/package --profile dev".to_owned(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(target.join("package"))
}

/// A long-running child with its log file.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawns `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, command: Command, log: &Path) -> Result<Proc, LabError> {
        Proc::spawn_split(name, command, log, log)
    }

    /// Spawns `command` with stdout appended to `stdout` and stderr to `log` (which may be
    /// the same file).
    pub fn spawn_split(name: &str, mut command: Command, stdout: &Path, log: &Path) -> Result<Proc, LabError> {
        let open = |path: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| LabError::io(format!("opening {}", path.display()), e))
        };
        let out = open(stdout)?;
        let err = open(log)?;
        let line = cmd::describe(&command);
        command.stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err)).kill_on_drop(true);
        let child = command.spawn().map_err(|e| LabError::io(format!("spawning {name} (`{line}`)"), e))?;
        tracing::info!(name, pid = child.id(), log = %log.display(), command = %line, "spawned");
        Ok(Proc { name: name.to_owned(), child, log: log.to_path_buf() })
    }

    /// The name given at spawn, e.g. `agent source1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file holding the child's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The child's process id, for reading `/proc/PID/*`; `None` once it has been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The exit status if the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// An error if the child has exited, naming its log.
    pub fn check_running(&mut self) -> Result<(), LabError> {
        match self.exited() {
            Some(status) => Err(LabError::Exited { what: self.name.clone(), status, log: Some(self.log.clone()) }),
            None => Ok(()),
        }
    }

    /// Waits until `addr` accepts TCP connections, failing early if the child exits.
    pub async fn wait_for_tcp(&mut self, addr: &str, timeout: Duration) -> Result<(), LabError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.check_running()?;
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("{} to listen on {addr}", self.name),
                    seconds: timeout.as_secs(),
                    log: Some(self.log.clone()),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the child and waits for it.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM (via `kill`, to avoid a libc dependency) and waits up to `grace` for the
    /// child to exit, then kills it. Returns the exit status if it exited on its own.
    pub async fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let Some(pid) = self.child.id() else {
            return self.exited();
        };
        let _ = cmd::run(cmd::command("kill", ["-TERM", &pid.to_string()])).await;
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                self.stop().await;
                None
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // kill_on_drop sends SIGKILL too; doing it here makes the order explicit.
        let _ = self.child.start_kill();
    }
}

/// Options for `fleet-controller`.
#[derive(Debug, Clone)]
pub struct ControllerSpec {
    pub database_url: String,
    /// Where to listen, e.g. `10.213.7.1:7300`.
    pub listen: String,
    /// `AWS_*` variables pointing at moto.
    pub aws_env: Vec<(&'static str, String)>,
    pub rust_log: String,
    pub extra_args: Vec<String>,
    /// `--insecure --allow-insecure-remote`: plaintext, no authentication (the lab's
    /// controller listens on the bridge, not loopback).
    pub insecure: bool,
}

/// Spawns the controller in the root namespace; does not wait for it to listen.
pub fn spawn_controller(spec: &ControllerSpec, log: &Path) -> Result<Proc, LabError> {
    let mut command = cmd::command(
        binary(CONTROLLER_BIN)?,
        ["--database-url", spec.database_url.as_str(), "--listen", spec.listen.as_str()],
    );
    if spec.insecure {
        command.args(["--insecure", "--allow-insecure-remote"]);
    }
    command.args(&spec.extra_args);
    clean_env(&mut command);
    command.envs(spec.aws_env.iter().map(|(k, v)| (*k, v.as_str())));
    command.env("RUST_LOG", &spec.rust_log);
    // Several controllers share the machine; a test that reads /metrics passes
    // --metrics-listen, which the flag takes over this.
    command.env("FLEET_METRICS_LISTEN", "off");
    Proc::spawn("fleet-controller", command, log)
}

/// Options for one `fleet-agent`.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The network namespace to run in.
    pub netns: String,
    /// The lab host's name, for messages.
    pub host: String,
    pub controller_url: String,
    pub host_id: String,
    pub state_dir: PathBuf,
    pub rust_log: String,
    pub extra_args: Vec<String>,
}

/// Spawns an agent inside its namespace with `ip netns exec`, which execs the agent so the
/// child's pid is the agent's own.
pub fn spawn_agent(spec: &AgentSpec, log: &Path) -> Result<Proc, LabError> {
    let agent = binary(AGENT_BIN)?;
    std::fs::create_dir_all(&spec.state_dir)
        .map_err(|e| LabError::io(format!("creating {}", spec.state_dir.display()), e))?;
    let mut command = cmd::command("ip", ["netns", "exec", spec.netns.as_str()]);
    command.arg(agent);
    command.args(["--controller", spec.controller_url.as_str(), "--host-id", spec.host_id.as_str()]);
    command.arg("--state-dir").arg(&spec.state_dir);
    command.args(&spec.extra_args);
    clean_env(&mut command);
    command.env("RUST_LOG", &spec.rust_log);
    Proc::spawn(&format!("fleet-agent {}", spec.host), command, log)
}

/// Runs `fleet-agent args…` in `netns` to completion with `env` set, killed after `timeout`
/// (then the code is `None`).
pub async fn agent_once(
    netns: &str,
    args: &[&str],
    env: &[(&str, String)],
    rust_log: &str,
    timeout: Duration,
) -> Result<CliOutput, LabError> {
    let mut command = cmd::command("ip", ["netns", "exec", netns]);
    command.arg(binary(AGENT_BIN)?);
    command.args(args);
    clean_env(&mut command);
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    command.env("RUST_LOG", rust_log);
    command.kill_on_drop(true);
    let line = cmd::describe(&command);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::io(format!("running `{line}`"), e))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.map_err(|e| LabError::io(format!("running `{line}`"), e))?;
            Ok(CliOutput {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
        // Dropping the future killed the child (kill_on_drop).
        Err(_) => Ok(CliOutput { code: None, stdout: String::new(), stderr: format!("killed after {timeout:?}") }),
    }
}

/// Removes variables of the operator's own environment that would change what the lab's
/// children do, so that command-line flags alone decide.
fn clean_env(command: &mut Command) {
    for var in [
        "FLEET_CONTROLLER",
        "FLEET_HOST_ID",
        "FLEET_STATE_DIR",
        "FLEET_HEALTH_INTERVAL",
        "FLEET_DRIFT_INTERVAL",
        "FLEET_METRICS_LISTEN",
        "FLEET_IPTABLES_BACKEND",
        "FLEET_IMDS_ENDPOINT",
        "FLEET_DATABASE_URL",
        "FLEET_LISTEN",
        "FLEET_TOKEN",
        "FLEET_CA_CERT",
        "FLEET_INSECURE",
        "FLEET_JOIN_TOKEN",
        "FLEET_JOIN_METHOD",
        "FLEET_JOIN_ACCOUNTS",
        "FLEET_JOIN_TAGS",
        "FLEET_IID_CERTS",
        "FLEET_CA_PIN",
        "FLEET_BOOTSTRAP_TOKEN",
        "FLEET_TLS_SAN",
        "FLEET_CA_KEY_SECRET",
        "FLEET_CONFIG",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
    ] {
        command.env_remove(var);
    }
}

/// What a `fleetctl` run printed and how it exited.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The exit code; `None` if a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Whether fleetctl exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout parsed as JSON (for `-o json`).
    pub fn json(&self) -> Result<serde_json::Value, LabError> {
        serde_json::from_str(&self.stdout)
            .map_err(|e| LabError::Invalid(format!("fleetctl printed invalid JSON ({e}): {}", self.stdout)))
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `fleetctl --controller URL connection… args…` to completion. A non-zero exit is
/// not an error here: tests look at the code and the message.
pub async fn fleetctl(controller_url: &str, connection: &[String], args: &[&str]) -> Result<CliOutput, LabError> {
    let mut command = cmd::command(binary(FLEETCTL_BIN)?, ["--controller", controller_url]);
    command.args(connection);
    command.args(args);
    clean_env(&mut command);
    // The lab's fleetctl must not read the operator's own ~/.config/fleetctl.
    command.env("XDG_CONFIG_HOME", "/nonexistent/teefleet-lab");
    let line = cmd::describe(&command);
    let out = tokio::time::timeout(Duration::from_secs(180), command.stdin(Stdio::null()).output())
        .await
        .map_err(|_| LabError::Timeout { what: line.clone(), seconds: 180, log: None })?
        .map_err(|e| LabError::io(format!("running `{line}`"), e))?;
    let result = CliOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    tracing::debug!(command = %line, code = ?result.code, "fleetctl finished");
    Ok(result)
}
