//! Traffic between the lab's hosts: pings that check a path, and floods that measure one.

use std::net::{IpAddr, Ipv6Addr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::LabError;
use crate::cmd;
use crate::netns::Network;

impl Network {
    /// Pings `to` (either family) from inside `from`'s namespace; succeeds if any reply
    /// came back.
    pub async fn ping(&self, from: &str, to: impl Into<IpAddr>, count: u32) -> Result<String, LabError> {
        let to = to.into();
        let family = if to.is_ipv4() { "-4" } else { "-6" };
        let count = count.to_string();
        let to = to.to_string();
        self.exec(from, "ping", &[family, "-n", "-c", &count, "-i", "0.2", "-W", "2", &to]).await
    }

    /// Pings an IPv6 address from inside `from`'s namespace (`ping -6`).
    pub async fn ping6(&self, from: &str, to: Ipv6Addr, count: u32) -> Result<String, LabError> {
        self.ping(from, to, count).await
    }

    /// Floods `to` with `count` ICMP echo requests from inside `from`'s namespace, as fast
    /// as the replies come back (`ping -f -q`, root only), and reports what ping counted.
    /// Exactly `count` requests are sent even when replies are lost: no deadline (`-w`) is
    /// passed, since with one ping keeps sending past the count until the deadline.
    pub async fn flood(&self, from: &str, to: impl Into<IpAddr>, count: u32) -> Result<Flood, LabError> {
        let to = to.into();
        let netns = self.host(from)?.netns.clone();
        let family = if to.is_ipv4() { "-4" } else { "-6" };
        let (count_arg, to_arg) = (count.to_string(), to.to_string());
        // `-W 1`: once all requests are out, wait at most a second for stragglers.
        let args = ["netns", "exec", &netns, "ping", family, "-n", "-q", "-f", "-W", "1", "-c", &count_arg, &to_arg];
        let mut command = cmd::command("ip", args);
        let line = cmd::describe(&command);
        // Generous: even at ping's slowest flood rate (100/s) the count is reached.
        let limit = Duration::from_secs(30 + u64::from(count) / 100);
        let started = Instant::now();
        let output = tokio::time::timeout(limit, command.stdin(Stdio::null()).output())
            .await
            .map_err(|_| LabError::Timeout { what: line.clone(), seconds: limit.as_secs(), log: None })?
            .map_err(|e| LabError::io(format!("running `{line}`"), e))?;
        let elapsed = started.elapsed();
        let stdout = String::from_utf8_lossy(&output.stdout);
        // ping exits 1 when replies were missing; the summary still says what was sent.
        let (sent, received) = parse_ping_summary(&stdout).ok_or_else(|| LabError::Command {
            command: line.clone(),
            status: output.status,
            stderr: format!("{}{}", String::from_utf8_lossy(&output.stderr).trim(), stdout.trim()),
        })?;
        tracing::info!(from, %to, sent, received, ms = elapsed.as_millis(), "flood done");
        Ok(Flood { sent, received, elapsed })
    }
}

/// Echo requests sent at a steady rate until dropped (the ping process is killed then).
#[derive(Debug)]
pub struct Steady {
    _ping: tokio::process::Child,
}

impl Network {
    /// Pings `to` from inside `from`'s namespace `per_second` times a second (root may
    /// ping faster than 5/s) until the returned [`Steady`] is dropped: traffic that goes on
    /// while a test watches what the fleet makes of it.
    pub fn steady(&self, from: &str, to: impl Into<IpAddr>, per_second: u32) -> Result<Steady, LabError> {
        let to = to.into();
        let netns = self.host(from)?.netns.clone();
        let family = if to.is_ipv4() { "-4" } else { "-6" };
        let interval = format!("{:.3}", 1.0 / f64::from(per_second.max(1)));
        let to = to.to_string();
        let args = ["netns", "exec", &netns, "ping", family, "-n", "-q", "-i", &interval, &to];
        let mut command = cmd::command("ip", args);
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
        let line = cmd::describe(&command);
        let ping = command.spawn().map_err(|e| LabError::io(format!("spawning `{line}`"), e))?;
        Ok(Steady { _ping: ping })
    }
}

/// What a [`Network::flood`] did, as ping counted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    /// Echo requests sent ("packets transmitted").
    pub sent: u64,
    /// Echo replies received.
    pub received: u64,
    /// Wall time of the whole ping run.
    pub elapsed: Duration,
}

/// `(transmitted, received)` from ping's summary line,
/// `20000 packets transmitted, 19998 received, +2 errors, 0.01% packet loss, time 812ms`.
fn parse_ping_summary(stdout: &str) -> Option<(u64, u64)> {
    let line = stdout.lines().find(|l| l.contains("packets transmitted"))?;
    let mut sent = None;
    let mut received = None;
    for part in line.split(',') {
        let mut words = part.split_whitespace();
        let (Some(number), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        match (number.parse::<u64>(), what) {
            (Ok(n), "packets") if part.contains("transmitted") => sent = Some(n),
            (Ok(n), "received" | "packets") => received = Some(n),
            _ => {}
        }
    }
    Some((sent?, received?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ping_summaries() {
        let flood = "\
PING 10.213.7.11 (10.213.7.11) 56(84) bytes of data.

--- 10.213.7.11 ping statistics ---
20000 packets transmitted, 19998 received, 0.01% packet loss, time 1712ms
rtt min/avg/max/mdev = 0.012/0.030/0.402/0.011 ms, ipg/ewma 0.085/0.029 ms
";
        assert_eq!(parse_ping_summary(flood), Some((20_000, 19_998)));
        let errors = "5 packets transmitted, 0 received, +5 errors, 100% packet loss, time 4005ms\n";
        assert_eq!(parse_ping_summary(errors), Some((5, 0)));
        assert_eq!(parse_ping_summary("ping: connect: Network is unreachable\n"), None);
    }
}
