//! The real fleet-agent with only what its unit gives it: `setpriv` drops every capability
//! but CAP_NET_ADMIN and CAP_NET_RAW from the bounding set (the unit's
//! CapabilityBoundingSet=), leaves the inheritable and ambient sets empty (its
//! AmbientCapabilities=) and sets no_new_privs (NoNewPrivileges=). So confined, in a lab
//! source host, it applies a VXLAN session, repairs a deleted rule and a deleted device,
//! tells systemd READY=1 and STOPPING=1 over NOTIFY_SOCKET, and `fleet-agent cleanup`
//! under the same confinement leaves the host's mangle table and links as they were.
//!
//! The rest of the unit's sandbox (ProtectSystem=, SystemCallFilter=, …) needs systemd as
//! PID 1 to apply, which this machine does not run; `systemd-analyze` checks those
//! settings in `units.rs`.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use teefleet_lab::procs::{self, Proc};
use teefleet_lab::{COLLECTOR, Lab, require_root_or_skip};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(60);
const HOST: &str = "source1";
/// CAP_NET_ADMIN (12) and CAP_NET_RAW (13), as /proc/PID/status shows a capability set.
const NET_CAPS: &str = "0000000000003000";

/// `setpriv` with the unit's capabilities and no_new_privs, then `program args…`.
fn confined(netns: &str, program: &Path, args: &[String]) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns, "setpriv"]);
    command.args(["--bounding-set=-all,+net_admin,+net_raw", "--inh-caps=-all", "--ambient-caps=-all"]);
    command.args(["--no-new-privs", "--"]);
    command.arg(program).args(args);
    command.kill_on_drop(true);
    command
}

/// The mangle table of both families without counters, and the links, of a lab host.
async fn host_state(lab: &Lab) -> Result<String> {
    let strip = |text: String| {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" [").next().unwrap_or(l).to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let v4 = strip(lab.network.mangle_rules(HOST).await?);
    let v6 = strip(lab.network.mangle_rules6(HOST).await?);
    let links = lab.network.exec(HOST, "ip", &["-o", "link", "show"]).await?;
    let links: Vec<&str> = links.lines().filter_map(|l| l.split(':').nth(1)).map(str::trim).collect();
    Ok(format!("{v4}\n--- ipv6\n{v6}\n--- links {links:?}"))
}

/// What the agent told systemd, one datagram at a time.
struct Notifications(UnixDatagram);

impl Notifications {
    fn bind(path: &Path) -> Result<Self> {
        let socket = UnixDatagram::bind(path).context("binding the notify socket")?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(Self(socket))
    }

    /// Waits for a datagram containing `line`, failing early if the agent exits.
    async fn wait_for(&self, line: &str, agent: &mut Proc) -> Result<String> {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.0.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.lines().any(|l| l == line) {
                    return Ok(text);
                }
            }
            if let Some(status) = agent.exited() {
                bail!("the agent exited ({status}) before sending {line}; see {}", agent.log_path().display());
            }
            tokio::task::yield_now().await;
        }
        bail!("no {line} from the agent within {WAIT:?}; see {}", agent.log_path().display())
    }
}

/// The agent's capability sets and no_new_privs from /proc.
fn confinement(pid: u32) -> Result<Vec<(String, String)>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .filter(|l| ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"].iter().any(|k| l.starts_with(k)))
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.to_owned(), v.trim().to_owned())))
        .collect())
}

async fn wait_rules(lab: &Lab, what: &str, vni: &str, present: bool) -> Result<()> {
    lab.wait_until(what, WAIT, || async {
        let rules = lab.network.mangle_rules(HOST).await?;
        let links = lab.network.exec(HOST, "ip", &["-o", "link", "show"]).await?;
        let applied = rules.contains("-A TEEFLEET-PRE") && links.contains(&format!("tfvx{vni}"));
        Ok((applied == present).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_applies_repairs_and_cleans_up_with_only_the_units_capabilities() {
    if !require_root_or_skip() {
        return;
    }
    if which("setpriv").is_none() {
        eprintln!("SKIPPED agent_applies_repairs...: setpriv (util-linux) is missing");
        return;
    }
    let lab = Lab::start().await.unwrap_or_else(|e| panic!("the lab did not start: {e}"));
    if let Err(e) = body(&lab).await {
        panic!("{e:#}");
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

async fn body(lab: &Lab) -> Result<()> {
    // The lab's own agent on the host makes way for the confined one.
    lab.stop_agent(HOST).await;
    let before = host_state(lab).await?;
    let netns = lab.network.host(HOST)?.netns.clone();
    let agent_bin = procs::binary(procs::AGENT_BIN)?;
    let state_dir = lab.dir().join("confined-state");
    let socket_path = lab.dir().join("notify.sock");
    let notifications = Notifications::bind(&socket_path)?;
    let run_args: Vec<String> = [
        "--controller",
        lab.controller_url(),
        "--insecure",
        "--host-id",
        lab.instance_id(HOST)?,
        "--state-dir",
        &state_dir.display().to_string(),
        "--drift-interval",
        "1s",
        "--metrics-listen",
        "off",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let spawn = |log: &str| {
        let mut command = confined(&netns, &agent_bin, &run_args);
        command.env("NOTIFY_SOCKET", &socket_path).env("RUST_LOG", "info,teefleet_agent=debug");
        Proc::spawn("confined fleet-agent", command, &lab.dir().join(log))
    };

    // First boot: nothing saved, nothing to push yet.
    let mut agent = spawn("confined-agent.log")?;
    let ready = notifications.wait_for("READY=1", &mut agent).await?;
    ensure!(ready.contains("nothing to push"), "first READY=1 says why: {ready}");
    let pid = agent.pid().context("agent pid")?;
    let sets = confinement(pid)?;
    for (key, want) in
        [("CapBnd", NET_CAPS), ("CapEff", NET_CAPS), ("CapInh", "0000000000000000"), ("CapAmb", "0000000000000000")]
    {
        ensure!(sets.iter().any(|(k, v)| k == key && v == want), "{key} should be {want}: {sets:?}");
    }
    ensure!(sets.iter().any(|(k, v)| k == "NoNewPrivs" && v == "1"), "no_new_privs: {sets:?}");

    // Applies a VXLAN session: chains, rules and the tunnel device (ip, sysctl).
    let collector_id = lab.instance_id(COLLECTOR)?.to_owned();
    lab.fleetctl_ok(&["collector", "add", &collector_id]).await?;
    let source_id = lab.instance_id(HOST)?.to_owned();
    let created = lab
        .fleetctl_ok(&[
            "session",
            "create",
            "confined",
            "--source",
            &source_id,
            "--collector",
            &collector_id,
            "--protocol",
            "icmp",
            "--vni",
            "4321",
            "--wait",
            "-o",
            "json",
        ])
        .await?;
    ensure!(created.json()?["state"] == "active", "session: {created}");
    wait_rules(lab, "the confined agent's rules and tunnel", "4321", true).await?;

    // Drift: a deleted rule and a deleted device come back.
    lab.network.iptables(HOST, &["-t", "mangle", "-F", "TEEFLEET-PRE"]).await?;
    lab.network.exec(HOST, "ip", &["link", "del", "tfvx4321"]).await?;
    wait_rules(lab, "the confined agent's repair", "4321", true).await?;

    // SIGTERM: STOPPING=1, a clean exit, the rules stay.
    let stopped = agent.terminate(Duration::from_secs(30)).await;
    ensure!(stopped.is_some_and(|s| s.success()), "the agent exits 0 on SIGTERM: {stopped:?}");
    let mut buf = [0u8; 4096];
    let mut said = String::new();
    while let Ok(n) = notifications.0.recv(&mut buf) {
        said.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    ensure!(said.lines().any(|l| l == "STOPPING=1"), "STOPPING=1 on SIGTERM, got: {said:?}");
    wait_rules(lab, "rules left in place after stop", "4321", true).await?;

    // A restart re-applies the saved set and says so at once, controller or not.
    lab.stop_controller().await;
    let mut agent = spawn("confined-agent-restarted.log")?;
    let ready = notifications.wait_for("READY=1", &mut agent).await?;
    ensure!(ready.contains("re-applied the saved rule set"), "READY=1 after restart says why: {ready}");
    agent.stop().await;

    // Cleanup, confined the same way, leaves the host as it was.
    let args = ["cleanup".to_owned(), "--state-dir".to_owned(), state_dir.display().to_string()];
    let out = confined(&netns, &agent_bin, &args).output().await.context("fleet-agent cleanup")?;
    ensure!(out.status.success(), "cleanup: {}", String::from_utf8_lossy(&out.stderr));
    let after = host_state(lab).await?;
    ensure!(after == before, "the host after cleanup:\n{after}\nbefore:\n{before}");
    ensure!(!state_dir.join("ruleset.json").exists(), "cleanup deletes the saved set");
    Ok(())
}
