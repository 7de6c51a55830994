//! Capturing what reaches a lab host: `tcpdump -nn -l -e -i eth0` inside its namespace,
//! written as text to a file, and parsed into [`Packet`]s that tests count. With `-e`
//! every line carries the Ethernet addresses, which is how a TEE clone is told apart from
//! ordinary traffic: it arrives addressed to the collector's MAC while its IP header still
//! names the original endpoints.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::LabError;
use crate::cmd;
use crate::procs::Proc;

/// One IPv4 packet line of tcpdump's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub src_mac: String,
    pub dst_mac: String,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// The part after the addresses, e.g. `ICMP echo request, id 7, seq 1, length 64`.
    pub info: String,
}

impl Packet {
    /// Parses one line of `tcpdump -nn -e` output; `None` for non-IPv4 lines (ARP, IPv6)
    /// and anything unexpected.
    pub fn parse(line: &str) -> Option<Packet> {
        // "<time> <src mac> > <dst mac>, ethertype IPv4 (0x0800), length 98: <ip part>"
        let (head, rest) = line.split_once(": ")?;
        if !head.contains("ethertype IPv4") {
            return None;
        }
        let mut words = head.split_whitespace();
        let _time = words.next()?;
        let src_mac = words.next()?.to_owned();
        if words.next()? != ">" {
            return None;
        }
        let dst_mac = words.next()?.trim_end_matches(',').to_owned();
        let (addrs, info) = rest.split_once(": ").unwrap_or((rest, ""));
        let (src, dst) = addrs.split_once(" > ")?;
        Some(Packet { src_mac, dst_mac, src: parse_endpoint(src)?, dst: parse_endpoint(dst)?, info: info.to_owned() })
    }

    /// Whether this is the ICMP echo request of a ping.
    pub fn is_echo_request(&self) -> bool {
        self.info.starts_with("ICMP echo request")
    }

    /// Whether this is the ICMP echo reply of a ping.
    pub fn is_echo_reply(&self) -> bool {
        self.info.starts_with("ICMP echo reply")
    }
}

/// `10.0.0.1` or, for TCP and UDP, `10.0.0.1.443`.
fn parse_endpoint(text: &str) -> Option<Ipv4Addr> {
    let text = text.trim();
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    let (ip, port) = text.rsplit_once('.')?;
    port.parse::<u16>().ok()?;
    ip.parse().ok()
}

/// Parses a whole capture, skipping lines that are not IPv4 packets.
pub fn parse_all(text: &str) -> Vec<Packet> {
    text.lines().filter_map(Packet::parse).collect()
}

/// A running tcpdump in one namespace.
#[derive(Debug)]
pub struct Capture {
    proc: Proc,
    output: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -nn -l -e -i eth0 [filter]` in `netns`, writing to
    /// `dir/capture-<label>.txt`, and returns once tcpdump is listening.
    pub async fn start(netns: &str, label: &str, dir: &Path, filter: Option<&str>) -> Result<Capture, LabError> {
        let output = dir.join(format!("capture-{label}.txt"));
        let log = dir.join(format!("tcpdump-{label}.log"));
        let mut args = vec!["netns", "exec", netns, "tcpdump", "-nn", "-l", "-e", "-i", "eth0"];
        if let Some(filter) = filter {
            args.push(filter);
        }
        let command = cmd::command("ip", args);
        let mut proc = Proc::spawn_split(&format!("tcpdump {label}"), command, &output, &log)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            proc.check_running()?;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("listening on") {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("tcpdump in {netns} to start listening"),
                    seconds: 20,
                    log: Some(log),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Capture { proc, output })
    }

    /// The text file tcpdump writes.
    pub fn path(&self) -> &Path {
        &self.output
    }

    /// The raw capture text so far.
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Every IPv4 packet captured so far.
    pub fn packets(&self) -> Vec<Packet> {
        parse_all(&self.text())
    }

    /// How many captured packets satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&Packet) -> bool) -> usize {
        self.packets().iter().filter(|p| pred(p)).count()
    }

    /// How many captured packets went from `src` to `dst`.
    pub fn count_between(&self, src: Ipv4Addr, dst: Ipv4Addr) -> usize {
        self.count(|p| p.src == src && p.dst == dst)
    }

    /// Polls until at least `min` packets satisfy `pred`; returns the count reached.
    pub async fn wait_for(
        &self,
        what: &str,
        min: usize,
        timeout: Duration,
        pred: impl Fn(&Packet) -> bool,
    ) -> Result<usize, LabError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.count(&pred);
            if n >= min {
                return Ok(n);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("{what} (saw {n} of {min} packets)"),
                    seconds: timeout.as_secs(),
                    log: Some(self.output.clone()),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops tcpdump; the capture file stays readable.
    pub async fn stop(mut self) -> PathBuf {
        self.proc.stop().await;
        self.output.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_icmp_tcp_and_skips_arp() {
        let text = "\
10:21:34.960979 c2:00:79:33:20:e8 > 1a:87:cd:76:f4:b4, ethertype IPv4 (0x0800), length 98: 10.213.250.30 > 10.213.250.11: ICMP echo request, id 24474, seq 1, length 64
10:21:34.960990 c2:00:79:33:20:e8 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 10.213.250.1 tell 10.213.250.30, length 28
10:21:35.000001 aa:aa:aa:aa:aa:aa > bb:bb:bb:bb:bb:bb, ethertype IPv4 (0x0800), length 74: 10.0.0.1.40000 > 10.0.0.2.443: Flags [S], seq 1, length 0
";
        let packets = parse_all(text);
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].src, Ipv4Addr::new(10, 213, 250, 30));
        assert_eq!(packets[0].dst, Ipv4Addr::new(10, 213, 250, 11));
        assert_eq!(packets[0].src_mac, "c2:00:79:33:20:e8");
        assert_eq!(packets[0].dst_mac, "1a:87:cd:76:f4:b4");
        assert!(packets[0].is_echo_request());
        assert!(!packets[0].is_echo_reply());
        assert_eq!(packets[1].src, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(packets[1].dst, Ipv4Addr::new(10, 0, 0, 2));
        assert!(packets[1].info.starts_with("Flags [S]"));
    }
}
