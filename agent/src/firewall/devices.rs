//! Runs what [`tunnel`] plans: reads the host's tunnel devices with `ip -j` and creates,
//! repairs and removes them with `ip` (and `sysctl` for the device's own IPv6 switch),
//! arguments as data.

use teefleet_model::{RuleSet, Tunnel};
use tracing::info;

use super::ApplyError;
use super::layout::ByFamily;
use super::tools::Iptables;
use super::tunnel::{self, ObservedDevice};

/// The devices of ours on the host, as the kernel shows them.
pub async fn observe(tools: &Iptables) -> Result<Vec<ObservedDevice>, ApplyError> {
    let links = tools.ip(&["-d", "-j", "link", "show"]).await?;
    let neighbours = tools.ip(&["-j", "neigh", "show"]).await?;
    let routes = tools.ip(&["-j", "route", "show", "table", "main"]).await?;
    let routes6 = tools.ip(&["-6", "-j", "route", "show", "table", "main"]).await?;
    tunnel::parse(&links, &neighbours, ByFamily::new(&routes, &routes6))
        .map_err(|e| ApplyError::Unreadable(format!("ip -j output: {e}")))
}

/// The devices a rule set needs: a tunnel per VNI, and on a VXLAN collector the
/// decapsulating device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    pub tunnels: Vec<Tunnel>,
    pub decap: bool,
}

impl Wanted {
    pub fn of(set: &RuleSet) -> Wanted {
        Wanted { tunnels: set.tunnels(), decap: set.collector() }
    }

    pub fn is_empty(&self) -> bool {
        self.tunnels.is_empty() && !self.decap
    }

    fn wants(&self, device: &str) -> bool {
        (self.decap && device == tunnel::DECAP_DEVICE) || self.tunnels.iter().any(|t| tunnel::device(t.vni()) == device)
    }
}

/// Makes the host hold a right device for everything in `wanted` (and, with
/// `remove_others`, no other device of ours); `ipv6` says whether the host mirrors IPv6.
/// Returns what was wrong with devices that existed; a missing device is created without a
/// word unless `missing_is_drift`.
pub async fn converge(
    tools: &Iptables,
    ipv6: bool,
    wanted: &Wanted,
    remove_others: bool,
    missing_is_drift: bool,
) -> Result<Vec<String>, ApplyError> {
    let mut observed = observe(tools).await?;
    let mut problems = Vec::new();
    // A device of ours renamed behind the agent's back holds its VNI: it goes first, or
    // the real one cannot be made again.
    let renamed: Vec<String> = observed
        .iter()
        .filter(|d| tunnel::vni_of(&d.name).is_none() && d.name != tunnel::DECAP_DEVICE)
        .map(|d| d.name.clone())
        .collect();
    // The kernel gives UDP 4789 to tunnel devices or to an external one, not both: the
    // kind that is going goes first (a host turns from collector to source or back).
    let conflicting: Vec<String> = observed
        .iter()
        .filter(|d| !wanted.wants(&d.name))
        .filter(|d| if d.name == tunnel::DECAP_DEVICE { !wanted.tunnels.is_empty() } else { wanted.decap })
        .map(|d| d.name.clone())
        .collect();
    for name in renamed.iter().chain(&conflicting) {
        tools.ip(&["link", "del", "dev", name]).await?;
        info!(device = %name, "device of ours removed first");
    }
    problems.extend(renamed.iter().map(|name| format!("a device of ours was renamed to {name}")));
    observed.retain(|d| !renamed.contains(&d.name) && !conflicting.contains(&d.name));
    if wanted.decap {
        let name = tunnel::DECAP_DEVICE;
        let create = match observed.iter().find(|d| d.name == name) {
            Some(device) => match device.decap_problem() {
                None => false,
                Some(problem) => {
                    tools.ip(&["link", "del", "dev", name]).await?;
                    problems.push(problem);
                    true
                }
            },
            None => {
                if missing_is_drift {
                    problems.push(format!("{name} was deleted"));
                }
                true
            }
        };
        if create {
            run_all(tools, tunnel::decap_commands()).await?;
            info!(device = name, "decapsulating device created: clones arrive there");
        }
    }
    for &t in &wanted.tunnels {
        let name = tunnel::device(t.vni());
        match observed.iter().find(|d| d.name == name) {
            Some(device) => match device.problem(t, ipv6) {
                None => continue,
                Some(problem) => {
                    // Recreated whole: a device is cheap, and half-repairs have more states.
                    tools.ip(&["link", "del", "dev", &name]).await?;
                    problems.push(problem);
                }
            },
            None if missing_is_drift => problems.push(format!("{name} was deleted")),
            None => {}
        }
        run_all(tools, tunnel::create_commands(t, ipv6)).await?;
        info!(device = %name, vni = %t.vni(), remote = %t.remote(), "tunnel device created");
    }
    if remove_others {
        for device in observed.iter().filter(|d| !wanted.wants(&d.name)) {
            tools.ip(&["link", "del", "dev", &device.name]).await?;
            info!(device = %device.name, "tunnel device removed");
        }
    }
    Ok(problems)
}

async fn run_all(tools: &Iptables, commands: Vec<(&'static str, Vec<String>)>) -> Result<(), ApplyError> {
    for (program, args) in commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tools.tool(program, &args).await?;
    }
    Ok(())
}
