//! What EC2 enforces on an instance's network interface, done by the lab's bridges: with
//! Source/Dest Check on, an instance sends only frames whose IP source is its own address
//! and receives only frames whose IP destination is its own address; ARP and IPv6
//! neighbour discovery pass (EC2 answers them itself). With the check off, anything passes.
//!
//! One nftables table of the bridge family holds a few rules per instance port, active
//! while the port is in the set `checked`. Changing a check rewrites that set in one `nft`
//! transaction; [`Follower`] keeps it equal to moto's `SourceDestCheck` attributes, so what
//! the controller changes through the EC2 API changes what the lab forwards.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::LabError;
use crate::cmd::{self, run_quiet_blocking, run_text};
use crate::host::Host;
use crate::sync::lock;

/// ICMPv6 types that pass a checked port whatever their addresses: neighbour discovery
/// and the multicast listener reports the bridge's snooping relies on.
const LINK_ICMPV6: &str = "{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert, \
                           mld-listener-report, mld2-listener-report, mld-listener-done }";

/// The Source/Dest Checks of the lab's instance ports, as an nftables table.
#[derive(Debug, Clone)]
pub struct Checks {
    table: String,
    /// Host name → the root-namespace end of its veth (the bridge port).
    ports: BTreeMap<String, String>,
    /// Host names whose check is on, as last written.
    on: Arc<Mutex<BTreeMap<String, bool>>>,
}

/// Frames one port's check dropped, as the table's counters show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Frames the instance sent with a source address not its own.
    pub sent: u64,
    /// Frames for the instance addressed to someone else.
    pub received: u64,
}

impl Checks {
    /// Creates the table for `hosts`, every check on (EC2's default).
    pub(crate) async fn create(table: String, hosts: &[Host]) -> Result<Checks, LabError> {
        let ports: BTreeMap<String, String> = hosts.iter().map(|h| (h.name.clone(), h.veth().to_owned())).collect();
        // What an instance sends leaves it through its port: the bridge's prerouting. What
        // it receives: postrouting.
        let text = format!(
            "table bridge {table} {{\n  set checked {{ type ifname; }}\n{}{}}}\n",
            chain("sent", "prerouting", "iifname", "saddr", hosts),
            chain("received", "postrouting", "oifname", "daddr", hosts)
        );
        remove_table(&table);
        nft(&text).await?;
        let checks = Checks { table, ports, on: Arc::new(Mutex::new(BTreeMap::new())) };
        let all_on = checks.ports.keys().map(|h| (h.clone(), true)).collect();
        checks.write(&all_on).await?;
        Ok(checks)
    }

    /// Turns one host's check on or off.
    pub async fn set(&self, host: &str, on: bool) -> Result<(), LabError> {
        let mut wanted = lock(&self.on).clone();
        if !self.ports.contains_key(host) {
            return Err(LabError::Invalid(format!("no lab instance named {host:?}")));
        }
        wanted.insert(host.to_owned(), on);
        self.write(&wanted).await
    }

    /// Whether a host's check is on, as the bridge enforces it now.
    pub fn is_on(&self, host: &str) -> bool {
        lock(&self.on).get(host).copied().unwrap_or(true)
    }

    /// Sets every check to `wanted` (hosts it omits keep theirs) in one transaction, if
    /// anything changes.
    async fn write(&self, wanted: &BTreeMap<String, bool>) -> Result<(), LabError> {
        let mut merged = lock(&self.on).clone();
        merged.extend(wanted.iter().map(|(h, on)| (h.clone(), *on)));
        if merged == *lock(&self.on) {
            return Ok(());
        }
        let elements: Vec<String> = merged
            .iter()
            .filter(|(_, on)| **on)
            .filter_map(|(h, _)| self.ports.get(h))
            .map(|p| format!("\"{p}\""))
            .collect();
        let mut text = format!("flush set bridge {} checked\n", self.table);
        if !elements.is_empty() {
            text.push_str(&format!("add element bridge {} checked {{ {} }}\n", self.table, elements.join(", ")));
        }
        nft(&text).await?;
        let before = std::mem::replace(&mut *lock(&self.on), merged.clone());
        for (host, on) in &merged {
            if before.get(host) != Some(on) {
                tracing::info!(host, source_dest_check = on, "lab VPC: Source/Dest Check now enforced as EC2 says");
            }
        }
        Ok(())
    }

    /// What a host's check has dropped so far, both families together.
    pub async fn dropped(&self, host: &str) -> Result<Dropped, LabError> {
        let json = run_text("nft", ["-j", "list", "table", "bridge", &self.table]).await?;
        let value: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| LabError::Invalid(format!("nft -j printed no JSON ({e})")))?;
        let mut out = Dropped::default();
        let rules = value["nftables"].as_array().into_iter().flatten().filter_map(|o| o.get("rule"));
        for rule in rules {
            let comment = rule["comment"].as_str().unwrap_or_default();
            let Some((kind, name)) = comment.split_once(' ') else { continue };
            if name != host {
                continue;
            }
            let packets = rule["expr"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|e| e.get("counter")?.get("packets")?.as_u64())
                .unwrap_or(0);
            match kind {
                "sent" | "sent6" => out.sent += packets,
                "received" | "received6" => out.received += packets,
                _ => {}
            }
        }
        Ok(out)
    }

    /// Reads every instance's `SourceDestCheck` from EC2 and enforces it.
    pub async fn follow_once(&self, ec2: &aws_sdk_ec2::Client, ids: &BTreeMap<String, String>) -> Result<(), LabError> {
        let out = ec2
            .describe_instances()
            .set_instance_ids(Some(ids.values().cloned().collect()))
            .send()
            .await
            .map_err(|e| LabError::Ec2 { operation: "DescribeInstances".into(), message: format!("{e:?}") })?;
        let by_id: BTreeMap<&str, bool> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| Some((i.instance_id()?, i.source_dest_check().unwrap_or(true))))
            .collect();
        let wanted: BTreeMap<String, bool> = ids
            .iter()
            .filter(|(host, _)| self.ports.contains_key(*host))
            .filter_map(|(host, id)| Some((host.clone(), *by_id.get(id.as_str())?)))
            .collect();
        self.write(&wanted).await
    }

    /// The table's name (`teefleet-lab-tf213-7`).
    pub fn table(&self) -> &str {
        &self.table
    }
}

/// One chain of the table: at `hook`, a checked port drops IPv4 and IPv6 frames whose
/// `address` (`saddr` or `daddr`) is not the instance's own, counting them under a comment
/// `KIND HOST` (`KIND6` for IPv6).
fn chain(kind: &str, hook: &str, port: &str, address: &str, hosts: &[Host]) -> String {
    let mut text = format!("  chain {kind} {{\n    type filter hook {hook} priority 0; policy accept;\n");
    for h in hosts {
        let guard = format!("{port} \"{veth}\" {port} @checked", veth = h.veth());
        let name = &h.name;
        text.push_str(&format!(
            "    {guard} ether type ip ip {address} != {} counter drop comment \"{kind} {name}\"\n",
            h.ip
        ));
        text.push_str(&format!("    {guard} ether type ip6 icmpv6 type {LINK_ICMPV6} accept\n"));
        text.push_str(&format!(
            "    {guard} ether type ip6 ip6 {address} != {} counter drop comment \"{kind}6 {name}\"\n",
            h.ip6
        ));
    }
    text.push_str("  }\n");
    text
}

/// Keeps a lab's checks equal to moto's attributes, polling every 100 ms, until dropped.
#[derive(Debug)]
pub struct Follower {
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    pub fn start(checks: Checks, ec2: aws_sdk_ec2::Client, ids: BTreeMap<String, String>) -> Follower {
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = checks.follow_once(&ec2, &ids).await {
                    tracing::warn!(error = %e, "lab VPC: reading Source/Dest Checks from EC2 failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Follower { task }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Deletes the table, if it exists (best effort, for drop and leftovers).
pub(crate) fn remove_table(table: &str) {
    run_quiet_blocking("nft", &["delete", "table", "bridge", table]);
}

/// Runs `nft -f -` with `text` on stdin.
pub(crate) async fn nft(text: &str) -> Result<(), LabError> {
    let mut command = cmd::command("nft", ["-f", "-"]);
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| LabError::io("spawning nft", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).await.map_err(|e| LabError::io("writing to nft", e))?;
    }
    let output = child.wait_with_output().await.map_err(|e| LabError::io("running nft", e))?;
    if !output.status.success() {
        return Err(LabError::Command {
            command: format!("nft -f - <<<{text}"),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
