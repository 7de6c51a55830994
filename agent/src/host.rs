//! Facts about the host reported in Hello: its global-scope addresses, so the controller
//! can show operators which host is which, and tell collectors whose clones to count.

use std::{net::IpAddr, time::Duration};

use tokio::process::Command;
use tracing::warn;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The host's global-scope addresses from `ip -o addr show scope global`. Failures are
/// logged and give an empty list: the agent must not stop for them (its clones are then
/// not counted at the collector, and its session's delivery shows as unknown).
pub async fn global_addresses() -> Vec<String> {
    let run = Command::new("ip").args(["-o", "addr", "show", "scope", "global"]).kill_on_drop(true).output();
    match tokio::time::timeout(TIMEOUT, run).await {
        Ok(Ok(out)) if out.status.success() => parse_addresses(&String::from_utf8_lossy(&out.stdout)),
        Ok(Ok(out)) => {
            warn!(status = %out.status, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "ip addr failed; reporting no addresses");
            Vec::new()
        }
        Ok(Err(e)) => {
            warn!(error = %e, "cannot run ip; reporting no addresses");
            Vec::new()
        }
        Err(_) => {
            warn!("ip addr timed out; reporting no addresses");
            Vec::new()
        }
    }
}

/// Each line looks like `2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0 ...`.
pub(crate) fn parse_addresses(output: &str) -> Vec<String> {
    let mut addrs: Vec<String> = output
        .lines()
        .filter_map(|line| {
            let mut tokens = line.split_whitespace();
            tokens.find(|t| matches!(*t, "inet" | "inet6"))?;
            let addr = tokens.next()?.split('/').next()?;
            addr.parse::<IpAddr>().ok().map(|ip| ip.to_string())
        })
        .collect();
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_o_addr() {
        let out = "2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global dynamic eth0\\       valid_lft 3000sec preferred_lft 3000sec
2: eth0    inet6 2001:db8::5/64 scope global dynamic mngtmpaddr \\       valid_lft forever preferred_lft forever
3: br0    inet 192.168.1.1/24 scope global br0\\       valid_lft forever preferred_lft forever
garbage line
";
        assert_eq!(parse_addresses(out), ["10.0.0.5", "2001:db8::5", "192.168.1.1"]);
    }
}
