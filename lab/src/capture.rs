//! Capturing what reaches a lab host: `tcpdump -nn -l -e -i eth0` inside its namespace,
//! written as text to a file, and parsed into [`Packet`]s that tests count. With `-e`
//! every line carries the Ethernet addresses, which is how a TEE clone is told apart from
//! ordinary traffic: it arrives addressed to the collector's MAC while its IP header still
//! names the original endpoints. IPv4 and IPv6 packets are both parsed, and so are VXLAN
//! packets on port 4789, which tcpdump decodes: the outer packet's line ends with
//! `VXLAN, flags [I] (0x08), vni N`, and the next line is the inner frame.
//!
//! [`Pcap`] writes the same traffic as a pcap file for tshark, whose dissection (VXLAN
//! reassembled from outer fragments) is how the lab judges what a collector gets.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::LabError;
use crate::cmd;
use crate::procs::Proc;

/// One IPv4 or IPv6 packet line of tcpdump's output. `src` and `dst` compare directly
/// with an `Ipv4Addr` or `Ipv6Addr` (`p.src == client`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub src_mac: String,
    pub dst_mac: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The part after the addresses, e.g. `ICMP echo request, id 7, seq 1, length 64` or
    /// `ICMP6, echo request, id 7, seq 1, length 64`.
    pub info: String,
    /// For a frame that arrived inside VXLAN (every other field is the inner frame's):
    /// the VNI and the outer packet's addresses.
    pub vxlan: Option<Vxlan>,
}

/// The VXLAN header and outer addresses around a [`Packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vxlan {
    pub vni: u32,
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
}

impl Packet {
    /// Parses one line of `tcpdump -nn -e` output; `None` for lines that are not IP
    /// packets (ARP) and anything unexpected.
    pub fn parse(line: &str) -> Option<Packet> {
        let (time, rest) = line.split_once(' ')?;
        if !time.contains(':') {
            return None;
        }
        Packet::parse_frame(rest)
    }

    /// Parses a frame without the leading timestamp (as tcpdump prints an inner frame).
    fn parse_frame(line: &str) -> Option<Packet> {
        // "<src mac> > <dst mac>, ethertype IPv4 (0x0800), length 98: <ip part>"
        // "<time> <src mac> > <dst mac>, ethertype IPv6 (0x86dd), length 118: <ip part>"
        // IPv6 addresses never contain ": ", so the first one still ends the link header.
        let (head, rest) = line.split_once(": ")?;
        let ipv6 = head.contains("ethertype IPv6");
        if !ipv6 && !head.contains("ethertype IPv4") {
            return None;
        }
        let mut words = head.split_whitespace();
        let src_mac = words.next()?.to_owned();
        if words.next()? != ">" {
            return None;
        }
        let dst_mac = words.next()?.trim_end_matches(',').to_owned();
        // Split at " > " first: a source of `::` would end in ": " itself. The destination
        // then ends at the first ": " (an address ending in `::` shows as `ff02::: `).
        let (src, rest) = rest.split_once(" > ")?;
        let (dst, info) = rest.split_once(": ").unwrap_or((rest, ""));
        let (src, dst) = (parse_endpoint(src)?, parse_endpoint(dst)?);
        // The ethertype and the addresses must agree; anything else is a line we misread.
        if src.is_ipv6() != ipv6 || dst.is_ipv6() != ipv6 {
            return None;
        }
        Some(Packet { src_mac, dst_mac, src, dst, info: info.to_owned(), vxlan: None })
    }

    /// The VNI, when this is the outer line of a VXLAN packet.
    fn vni(&self) -> Option<u32> {
        let (_, vni) = self.info.strip_prefix("VXLAN, ")?.rsplit_once(", vni ")?;
        vni.trim().parse().ok()
    }

    /// Whether this is an IPv6 packet.
    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }

    /// Whether this is the ICMP (or ICMPv6) echo request of a ping.
    pub fn is_echo_request(&self) -> bool {
        self.info.starts_with("ICMP echo request") || self.info.starts_with("ICMP6, echo request")
    }

    /// Whether this is the ICMP (or ICMPv6) echo reply of a ping.
    pub fn is_echo_reply(&self) -> bool {
        self.info.starts_with("ICMP echo reply") || self.info.starts_with("ICMP6, echo reply")
    }
}

/// `10.0.0.1`, `fd00::1` or, for TCP and UDP, `10.0.0.1.443` and `fd00::1.443` (tcpdump
/// appends the port with a dot in both families).
fn parse_endpoint(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    let (ip, port) = text.rsplit_once('.')?;
    port.parse::<u16>().ok()?;
    ip.parse().ok()
}

/// Parses a whole capture, skipping lines that are not IP packets. A VXLAN packet becomes
/// one [`Packet`]: its inner frame, with the VNI and outer addresses.
pub fn parse_all(text: &str) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(packet) = Packet::parse(line) else { continue };
        let Some(vni) = packet.vni() else {
            out.push(packet);
            continue;
        };
        // The inner frame is on the next line, without a timestamp.
        if let Some(inner) = lines.peek().and_then(|l| Packet::parse_frame(l)) {
            lines.next();
            out.push(Packet { vxlan: Some(Vxlan { vni, outer_src: packet.src, outer_dst: packet.dst }), ..inner });
        }
    }
    out
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
        Capture::start_on(netns, "eth0", label, dir, filter).await
    }

    /// The same on another interface of the namespace (`teefleet0` on a collector).
    pub async fn start_on(
        netns: &str,
        interface: &str,
        label: &str,
        dir: &Path,
        filter: Option<&str>,
    ) -> Result<Capture, LabError> {
        let output = dir.join(format!("capture-{label}.txt"));
        let log = dir.join(format!("tcpdump-{label}.log"));
        // Two captures writing one file would each see the other's packets.
        if output.exists() {
            return Err(LabError::Invalid(format!("a capture labelled {label:?} already ran in this lab")));
        }
        let mut args = vec!["netns", "exec", netns, "tcpdump", "-nn", "-l", "-e", "-i", interface];
        if let Some(filter) = filter {
            args.push(filter);
        }
        let command = cmd::command("ip", args);
        let mut proc = Proc::spawn_split(&format!("tcpdump {label}"), command, &output, &log)?;
        wait_listening(&mut proc, &log, netns).await?;
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

    /// Every IP packet captured so far.
    pub fn packets(&self) -> Vec<Packet> {
        parse_all(&self.text())
    }

    /// How many captured packets satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&Packet) -> bool) -> usize {
        self.packets().iter().filter(|p| pred(p)).count()
    }

    /// How many captured packets went from `src` to `dst` (either family).
    pub fn count_between(&self, src: impl Into<IpAddr>, dst: impl Into<IpAddr>) -> usize {
        let (src, dst) = (src.into(), dst.into());
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

    /// Stops tcpdump gracefully (SIGTERM, so it flushes and prints its counters) and
    /// returns the packets it wrote and its own statistics. A test that counts clones of
    /// a flood checks `dropped_by_kernel == 0` to know that the count is the whole truth.
    pub async fn finish(mut self) -> Result<Finished, LabError> {
        self.proc.terminate(Duration::from_secs(5)).await;
        let log = std::fs::read_to_string(self.proc.log_path()).unwrap_or_default();
        let stat =
            |what: &str| log.lines().find_map(|l| l.strip_suffix(what).and_then(|n| n.trim().parse::<u64>().ok()));
        let missing =
            || LabError::Invalid(format!("tcpdump printed no statistics in {}", self.proc.log_path().display()));
        Ok(Finished {
            packets: self.packets(),
            captured: stat(" packets captured").ok_or_else(missing)?,
            dropped_by_kernel: stat(" packets dropped by kernel").ok_or_else(missing)?,
            path: self.output.clone(),
        })
    }
}

/// A capture written as pcap (`tcpdump -U -w`) for tshark to dissect.
#[derive(Debug)]
pub struct Pcap {
    proc: Proc,
    path: PathBuf,
}

impl Pcap {
    /// Starts `tcpdump -U -w dir/capture-<label>.pcap -i eth0 [filter]` in `netns`.
    pub async fn start(netns: &str, label: &str, dir: &Path, filter: Option<&str>) -> Result<Pcap, LabError> {
        let path = dir.join(format!("capture-{label}.pcap"));
        let log = dir.join(format!("tcpdump-{label}-pcap.log"));
        let file = path.display().to_string();
        let mut args = vec!["netns", "exec", netns, "tcpdump", "-U", "-w", &file, "-i", "eth0"];
        if let Some(filter) = filter {
            args.push(filter);
        }
        let mut proc = Proc::spawn(&format!("tcpdump {label} (pcap)"), cmd::command("ip", args), &log)?;
        wait_listening(&mut proc, &log, netns).await?;
        Ok(Pcap { proc, path })
    }

    /// The pcap file, complete up to the last packet tcpdump wrote (`-U`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// tshark's rows (see [`tshark_fields`]) once `enough` holds for them, else the last
    /// rows read when `timeout` runs out: the tcpdump writing the file reads the kernel's
    /// buffer on its own schedule, and on a busy machine lags what was already captured.
    pub async fn rows_when(
        &self,
        filter: &str,
        fields: &[&str],
        timeout: Duration,
        enough: impl Fn(&[Vec<String>]) -> bool,
    ) -> Result<Vec<Vec<String>>, LabError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let rows = tshark_fields(&self.path, filter, fields).await?;
            if enough(&rows) || tokio::time::Instant::now() >= deadline {
                return Ok(rows);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops tcpdump (SIGTERM, so the file is complete) and returns the file.
    pub async fn finish(mut self) -> PathBuf {
        self.proc.terminate(Duration::from_secs(5)).await;
        self.path.clone()
    }
}

/// Waits until tcpdump's log says it listens, so nothing sent afterwards is missed.
async fn wait_listening(proc: &mut Proc, log: &Path, netns: &str) -> Result<(), LabError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(log).unwrap_or_default().contains("listening on") {
        proc.check_running()?;
        if tokio::time::Instant::now() >= deadline {
            let what = format!("tcpdump in {netns} to start listening");
            return Err(LabError::Timeout { what, seconds: 20, log: Some(log.to_path_buf()) });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `tshark -r FILE -Y FILTER -T fields -e F…`: one row per packet, one column per field;
/// a field that occurs more than once in a packet (outer and inner `ip.src`) is the
/// occurrences joined by `,`, as tshark prints them.
pub async fn tshark_fields(file: &Path, filter: &str, fields: &[&str]) -> Result<Vec<Vec<String>>, LabError> {
    let file = file.display().to_string();
    let mut args = vec!["-n", "-r", &file, "-Y", filter, "-T", "fields", "-E", "separator=/t"];
    for field in fields {
        args.extend(["-e", field]);
    }
    let text = cmd::run_text("tshark", args).await?;
    Ok(text.lines().map(|l| l.split('\t').map(str::to_owned).collect()).collect())
}

/// A stopped capture: what tcpdump wrote and what it says it saw.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Every IP packet in the capture file.
    pub packets: Vec<Packet>,
    /// tcpdump's "packets captured" (every frame it printed, ARP included).
    pub captured: u64,
    /// tcpdump's "packets dropped by kernel": frames the capture buffer had no room for.
    pub dropped_by_kernel: u64,
    /// The capture file.
    pub path: PathBuf,
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

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
        assert!(!packets[1].is_ipv6());
    }

    #[test]
    fn parses_ipv6_icmp6_udp_and_tcp() {
        // The shapes `tcpdump -nn -l -e` (4.99) prints for ICMPv6, UDP, TCP and NDP/MLD.
        let text = "\
15:02:11.204815 0e:4f:8b:1c:2a:90 > 5a:10:dd:3e:71:02, ethertype IPv6 (0x86dd), length 118: fd00:213:7::30 > fd00:213:7::11: ICMP6, echo request, id 4711, seq 1, length 64
15:02:11.204851 5a:10:dd:3e:71:02 > 0e:4f:8b:1c:2a:90, ethertype IPv6 (0x86dd), length 118: fd00:213:7::11 > fd00:213:7::30: ICMP6, echo reply, id 4711, seq 1, length 64
15:02:11.300000 0e:4f:8b:1c:2a:90 > 5a:10:dd:3e:71:02, ethertype IPv6 (0x86dd), length 66: fd00:213:7::30.40000 > fd00:213:7::11.9999: UDP, length 4
15:02:11.400000 0e:4f:8b:1c:2a:90 > 5a:10:dd:3e:71:02, ethertype IPv6 (0x86dd), length 94: fd00:213:7::30.48456 > fd00:213:7::11.443: Flags [S], seq 42519841, win 64800, options [mss 1440,sackOK,TS val 4185857906 ecr 0,nop,wscale 10], length 0
15:02:11.500000 0e:4f:8b:1c:2a:90 > 33:33:ff:00:00:11, ethertype IPv6 (0x86dd), length 86: fd00:213:7::30 > ff02::1:ff00:11: ICMP6, neighbor solicitation, who has fd00:213:7::11, length 32
15:02:11.600000 6a:f6:f0:e2:85:c7 > 33:33:00:00:00:16, ethertype IPv6 (0x86dd), length 110: :: > ff02::16: HBH ICMP6, multicast listener report v2, 2 group record(s), length 48
";
        let packets = parse_all(text);
        assert_eq!(packets.len(), 6);
        let client: Ipv6Addr = "fd00:213:7::30".parse().expect("ip");
        let source: Ipv6Addr = "fd00:213:7::11".parse().expect("ip");
        assert!(packets.iter().all(Packet::is_ipv6));
        assert_eq!((packets[0].src, packets[0].dst), (IpAddr::V6(client), IpAddr::V6(source)));
        assert_eq!(packets[0].src_mac, "0e:4f:8b:1c:2a:90");
        assert_eq!(packets[0].dst_mac, "5a:10:dd:3e:71:02");
        assert!(packets[0].is_echo_request() && !packets[0].is_echo_reply());
        assert!(packets[1].is_echo_reply() && !packets[1].is_echo_request());
        assert_eq!(packets[1].src, source);
        assert_eq!((packets[2].src, packets[2].dst), (IpAddr::V6(client), IpAddr::V6(source)));
        assert_eq!(packets[2].info, "UDP, length 4");
        assert_eq!(packets[3].dst, source);
        assert!(packets[3].info.starts_with("Flags [S]"));
        assert_eq!(packets[4].dst, "ff02::1:ff00:11".parse::<Ipv6Addr>().expect("ip"));
        assert!(!packets[4].is_echo_request());
        assert_eq!(packets[5].src, Ipv6Addr::UNSPECIFIED);
    }

    #[test]
    fn vxlan_packets_become_their_inner_frame_with_the_vni() {
        // What `tcpdump -nn -l -e` (4.99) prints for VXLAN on port 4789, a second fragment,
        // and a UDP datagram to 4789 that is not VXLAN.
        let text = "\
03:00:36.653652 f6:05:1f:a6:b9:c2 > 8a:b6:42:72:7e:a9, ethertype IPv4 (0x0800), length 148: 10.98.0.1.48484 > 10.98.0.2.4789: VXLAN, flags [I] (0x08), vni 43
be:9e:51:84:fd:27 > 02:74:66:00:00:01, ethertype IPv4 (0x0800), length 98: 10.97.0.2 > 10.97.0.1: ICMP echo request, id 15190, seq 1, length 64
03:00:36.700000 f6:05:1f:a6:b9:c2 > 8a:b6:42:72:7e:a9, ethertype IPv4 (0x0800), length 84: 10.98.0.1 > 10.98.0.2: ip-proto-17
03:00:37.659421 f6:05:1f:a6:b9:c2 > 8a:b6:42:72:7e:a9, ethertype IPv4 (0x0800), length 148: 10.98.0.1.48484 > 10.98.0.2.4789: VXLAN, flags [I] (0x08), vni 16777215
be:9e:51:84:fd:27 > 02:74:66:00:00:01, ethertype IPv6 (0x86dd), length 118: fd97::1 > fd97::2: ICMP6, echo reply, id 4711, seq 1, length 64
";
        let packets = parse_all(text);
        assert_eq!(packets.len(), 3, "{packets:?}");
        let outer = (IpAddr::from(Ipv4Addr::new(10, 98, 0, 1)), IpAddr::from(Ipv4Addr::new(10, 98, 0, 2)));
        let vx = packets[0].vxlan.expect("vxlan");
        assert_eq!((vx.vni, vx.outer_src, vx.outer_dst), (43, outer.0, outer.1));
        assert_eq!(
            (packets[0].src, packets[0].dst_mac.as_str()),
            (IpAddr::from(Ipv4Addr::new(10, 97, 0, 2)), "02:74:66:00:00:01")
        );
        assert!(packets[0].is_echo_request());
        assert_eq!(packets[1].vxlan, None, "a later fragment is only the outer packet");
        assert_eq!(packets[2].vxlan.map(|v| v.vni), Some(16_777_215));
        assert!(packets[2].is_ipv6() && packets[2].is_echo_reply());
    }

    #[test]
    fn mixed_capture_and_family_mismatch() {
        let text = "\
10:00:00.000001 aa:aa:aa:aa:aa:aa > bb:bb:bb:bb:bb:bb, ethertype IPv4 (0x0800), length 98: 10.213.7.30 > 10.213.7.11: ICMP echo request, id 1, seq 1, length 64
10:00:00.000002 aa:aa:aa:aa:aa:aa > bb:bb:bb:bb:bb:bb, ethertype IPv6 (0x86dd), length 118: fd00:213:7::30 > fd00:213:7::11: ICMP6, echo request, id 1, seq 1, length 64
10:00:00.000003 aa:aa:aa:aa:aa:aa > bb:bb:bb:bb:bb:bb, ethertype IPv6 (0x86dd), length 98: 10.213.7.30 > 10.213.7.11: ICMP echo request, id 1, seq 1, length 64
10:00:00.000004 aa:aa:aa:aa:aa:aa > bb:bb:bb:bb:bb:bb, ethertype IPv4 (0x0800), length 98: fd00::1 > fd00::2: ICMP6, echo request, id 1, seq 1, length 64
garbage
10:00:00.000005 aa:aa:aa:aa:aa:aa > bb:bb:bb:bb:bb:bb, ethertype IPv6 (0x86dd), length 70: fd00::1.5000 > fd00::: UDP, length 8
";
        let packets = parse_all(text);
        assert_eq!(packets.len(), 3, "{packets:?}");
        assert_eq!(packets[2].dst, "fd00::".parse::<Ipv6Addr>().expect("ip"));
        assert_eq!(packets[2].info, "UDP, length 8");
        assert!(!packets[0].is_ipv6() && packets[1].is_ipv6());
        assert!(packets[..2].iter().all(Packet::is_echo_request));
        assert_eq!(packets[0].src, Ipv4Addr::new(10, 213, 7, 30));
    }
}
