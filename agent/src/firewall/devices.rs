//! Runs what [`tunnel`] plans: reads the host's tunnel devices with `ip -j` and creates,
//! repairs and removes them with `ip` (and `sysctl` for the device's own IPv6 switch),
//! arguments as data.

use teefleet_model::Tunnel;
use tracing::info;

use super::ApplyError;
use super::iptables::Iptables;
use super::tunnel::{self, ObservedDevice};

/// The devices of ours on the host, as the kernel shows them.
pub async fn observe(tools: &Iptables) -> Result<Vec<ObservedDevice>, ApplyError> {
    let links = tools.ip(&["-d", "-j", "link", "show"]).await?;
    let neighbours = tools.ip(&["-j", "neigh", "show"]).await?;
    let routes = tools.ip(&["-j", "route", "show", "table", "main"]).await?;
    let routes6 = tools.ip(&["-6", "-j", "route", "show", "table", "main"]).await?;
    tunnel::parse(&links, &neighbours, [&routes, &routes6])
        .map_err(|e| ApplyError::Unreadable(format!("ip -j output: {e}")))
}

/// Makes the host hold exactly a right device per tunnel in `wanted` (and, with
/// `remove_others`, no other device of ours); `ipv6` says whether the host mirrors IPv6.
/// Returns what was wrong with devices that existed; a missing device is created without a
/// word unless `missing_is_drift`.
pub async fn converge(
    tools: &Iptables,
    ipv6: bool,
    wanted: &[Tunnel],
    remove_others: bool,
    missing_is_drift: bool,
) -> Result<Vec<String>, ApplyError> {
    let observed = observe(tools).await?;
    let mut problems = Vec::new();
    for &t in wanted {
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
        for (program, args) in tunnel::create_commands(t, ipv6) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tools.tool(program, &args).await?;
        }
        info!(device = %name, vni = %t.vni(), remote = %t.remote(), "tunnel device created");
    }
    if remove_others {
        for device in observed.iter().filter(|d| !wanted.iter().any(|t| tunnel::device(t.vni()) == d.name)) {
            tools.ip(&["link", "del", "dev", &device.name]).await?;
            info!(device = %device.name, "tunnel device removed");
        }
    }
    Ok(problems)
}
