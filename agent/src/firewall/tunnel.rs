//! The VXLAN devices clones travel through: one per session's VNI (`tfvx<VNI>`), owned like
//! the chains. A TEE rule sends its clone to a fixed next hop on the device (`--gateway`
//! with `--oif`); a permanent neighbour entry gives that next hop a MAC, so nothing is
//! ever resolved over the tunnel, and the device wraps the frame in UDP 4789 from the
//! host's own address to the collector's.
//!
//! Why each setting:
//! - `addrgenmode none`: no link-local address, so the device sends nothing of its own
//!   (no MLD or router solicitations) to the collector.
//! - MTU [`MTU`]: a clone is never larger than the device, so the kernel never answers
//!   a mirrored peer with "fragmentation needed" or lowers a path MTU; the outer packet is
//!   fragmented instead (VXLAN's outer header does not set DF).
//! - Each next hop needs a route through the device (a device without a link-local
//!   address has no `fe80::/64` route either); one per device, told apart by the metric
//!   (the VNI), since `--oif` makes the lookup skip routes through other devices.
//! - IPv6 is enabled on the device itself (a host may disable it for new devices), so
//!   IPv6 clones can leave through it; nothing else of the host's IPv6 settings changes.
//! - The inner destination MAC is a locally administered address no device has, so a
//!   collector's stack drops the decapsulated frames as "for another host" at once.
//!
//! Everything here is a pure function of the rule set or of `ip -j` output; running the
//! commands is [`super::devices`]' job.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;
use teefleet_model::{Tunnel, Vni};

use super::layout::{ByFamily, Family};

/// Every device the agent creates for tunnels starts with this.
pub const PREFIX: &str = "tfvx";
/// On a collector: the device that takes every VNI on port 4789 and offers the inner
/// frames to local tools (`tcpdump -i teefleet0`, Suricata, Zeek).
pub const DECAP_DEVICE: &str = "teefleet0";
/// The alias every device of ours carries: it survives a rename, so a device renamed
/// behind the agent's back is still known as ours (and its VNI freed for the real one).
pub const ALIAS: &str = "teefleet";
/// VXLAN's IANA port, the one AWS Traffic Mirroring uses.
pub const PORT: u16 = 4789;
/// The IPv4 next hop of every tunnel device (link-local: never routed off the host).
pub const NEXT_HOP_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 77, 77);
/// The IPv6 next hop of every tunnel device.
pub const NEXT_HOP_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x77);

/// The next hop of every tunnel device in `family`.
pub fn next_hop(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(NEXT_HOP_V4),
        Family::V6 => IpAddr::V6(NEXT_HOP_V6),
    }
}
/// The inner frames' destination MAC (locally administered, unicast).
pub const INNER_MAC: &str = "02:74:66:00:00:01";
/// The device MTU: measured in BENCHMARKS.md ("What mirroring costs a source").
pub const MTU: u32 = 65000;

/// The device of a VNI: `tfvx42`. At most 12 bytes, inside the kernel's 15.
pub fn device(vni: Vni) -> String {
    format!("{PREFIX}{vni}")
}

/// The VNI a device name stands for, if it is one of ours.
pub fn vni_of(device: &str) -> Option<Vni> {
    let digits = device.strip_prefix(PREFIX)?;
    if digits.starts_with('0') {
        return None;
    }
    digits.parse::<u32>().ok().and_then(|n| Vni::new(n).ok())
}

/// One tunnel device as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedDevice {
    pub name: String,
    /// It carries our alias.
    pub alias: bool,
    /// A VXLAN device in external (metadata) mode: it takes every VNI.
    pub external: bool,
    pub vni: Option<u32>,
    pub remote: Option<IpAddr>,
    pub port: Option<u16>,
    pub mtu: Option<u32>,
    pub up: bool,
    /// The permanent neighbours on it: next hop → MAC.
    pub neighbours: BTreeMap<IpAddr, String>,
    /// Whether each family's next hop has its route through it (metric = VNI).
    pub routes: ByFamily<bool>,
}

impl ObservedDevice {
    /// What is wrong with it as the device of `tunnel`, or `None` if it is right. Without
    /// `ipv6` (the host has no usable IPv6) only the IPv4 next hop is required.
    pub fn problem(&self, tunnel: Tunnel, ipv6: bool) -> Option<String> {
        let vni = tunnel.vni().get();
        let wrong = |what: &str| Some(format!("{} {what}", self.name));
        if !self.alias {
            return wrong(&format!("has not the alias {ALIAS}"));
        }
        if self.vni != Some(vni) || self.remote != Some(tunnel.remote()) || self.port != Some(PORT) {
            return wrong(&format!(
                "is VNI {:?} to {:?} port {:?}, not VNI {vni} to {} port {PORT}",
                self.vni,
                self.remote,
                self.port,
                tunnel.remote()
            ));
        }
        if self.mtu != Some(MTU) {
            return wrong(&format!("has MTU {:?}, not {MTU}", self.mtu));
        }
        if !self.up {
            return wrong("is down");
        }
        for family in Family::ALL.into_iter().filter(|f| *f == Family::V4 || ipv6) {
            let hop = next_hop(family);
            if self.neighbours.get(&hop).map(String::as_str) != Some(INNER_MAC) {
                return wrong(&format!("has no permanent neighbour {hop} at {INNER_MAC}"));
            }
            if !self.routes[family] {
                return wrong(&format!("has no route to {hop} with metric {vni}"));
            }
        }
        None
    }
}

impl ObservedDevice {
    /// What is wrong with it as the collector's decapsulating device, if anything.
    pub fn decap_problem(&self) -> Option<String> {
        if !self.alias || !self.external || self.port != Some(PORT) {
            return Some(format!("{} is not an external VXLAN device on port {PORT}", self.name));
        }
        (!self.up).then(|| format!("{} is down", self.name))
    }
}

/// The commands that create the collector's decapsulating device: every VNI on port 4789,
/// no address of its own (it sends nothing), up.
pub fn decap_commands() -> Vec<(&'static str, Vec<String>)> {
    let strings = |args: &[&str]| args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let port = PORT.to_string();
    vec![
        ("ip", strings(&["link", "add", DECAP_DEVICE, "type", "vxlan", "dstport", &port, "external"])),
        ("ip", strings(&["link", "set", "dev", DECAP_DEVICE, "alias", ALIAS])),
        ("ip", strings(&["link", "set", "dev", DECAP_DEVICE, "addrgenmode", "none"])),
        ("ip", strings(&["link", "set", "dev", DECAP_DEVICE, "up"])),
    ]
}

/// The commands (program and arguments) that create the device of `tunnel` from nothing;
/// with `ipv6`, also its IPv6 next hop.
pub fn create_commands(tunnel: Tunnel, ipv6: bool) -> Vec<(&'static str, Vec<String>)> {
    let dev = device(tunnel.vni());
    let vni = tunnel.vni().to_string();
    let strings = |args: &[&str]| args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let remote = tunnel.remote().to_string();
    let (port, mtu) = (PORT.to_string(), MTU.to_string());
    let (hop4, hop6) = (NEXT_HOP_V4.to_string(), NEXT_HOP_V6.to_string());
    let mut commands = vec![
        ("ip", strings(&["link", "add", &dev, "type", "vxlan", "id", &vni, "remote", &remote, "dstport", &port])),
        ("ip", strings(&["link", "set", "dev", &dev, "alias", ALIAS])),
        ("ip", strings(&["link", "set", "dev", &dev, "addrgenmode", "none"])),
    ];
    if ipv6 {
        commands.push(("sysctl", strings(&["-q", "-w", &format!("net.ipv6.conf.{dev}.disable_ipv6=0")])));
    }
    commands.extend([
        ("ip", strings(&["link", "set", "dev", &dev, "mtu", &mtu, "up"])),
        ("ip", strings(&["route", "replace", &format!("{hop4}/32"), "dev", &dev, "metric", &vni])),
        ("ip", strings(&["neigh", "replace", &hop4, "lladdr", INNER_MAC, "dev", &dev, "nud", "permanent"])),
    ]);
    if ipv6 {
        commands.extend([
            ("ip", strings(&["-6", "route", "replace", &format!("{hop6}/128"), "dev", &dev, "metric", &vni])),
            ("ip", strings(&["-6", "neigh", "replace", &hop6, "lladdr", INNER_MAC, "dev", &dev, "nud", "permanent"])),
        ]);
    }
    commands
}

/// `ip -d -j link show` output, the part we read.
#[derive(Debug, Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    ifalias: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    linkinfo: Option<LinkInfo>,
}

#[derive(Debug, Deserialize)]
struct LinkInfo {
    #[serde(default)]
    info_kind: Option<String>,
    #[serde(default)]
    info_data: Option<VxlanData>,
}

#[derive(Debug, Deserialize)]
struct VxlanData {
    #[serde(default)]
    external: bool,
    #[serde(default)]
    id: Option<u32>,
    #[serde(default)]
    remote: Option<IpAddr>,
    #[serde(default)]
    remote6: Option<IpAddr>,
    #[serde(default)]
    port: Option<u16>,
}

/// `ip -j neigh show` output.
#[derive(Debug, Deserialize)]
struct Neighbour {
    dst: IpAddr,
    dev: String,
    #[serde(default)]
    lladdr: Option<String>,
    #[serde(default)]
    state: Vec<String>,
}

/// `ip -j route show` output.
#[derive(Debug, Deserialize)]
struct Route {
    dst: String,
    #[serde(default)]
    dev: Option<String>,
    #[serde(default)]
    metric: Option<u32>,
}

/// Our devices from `ip -d -j link show`, `ip -j neigh show` (both families) and
/// `ip -j route show` output of each family: those named as ours (`tfvx<VNI>`,
/// `teefleet0`) whatever they are, so the caller replaces a wrong one, and those that
/// carry our alias under another name (renamed).
pub fn parse(links: &str, neighbours: &str, routes: ByFamily<&str>) -> Result<Vec<ObservedDevice>, serde_json::Error> {
    let links: Vec<Link> = serde_json::from_str(non_empty(links))?;
    let neighbours: Vec<Neighbour> = serde_json::from_str(non_empty(neighbours))?;
    let routes: ByFamily<Vec<Route>> = ByFamily::new(
        serde_json::from_str(non_empty(routes[Family::V4]))?,
        serde_json::from_str(non_empty(routes[Family::V6]))?,
    );
    let hops = ByFamily::from_fn(|family| next_hop(family).to_string());
    Ok(links
        .into_iter()
        .filter(|l| vni_of(&l.ifname).is_some() || l.ifname == DECAP_DEVICE || l.ifalias.as_deref() == Some(ALIAS))
        .map(|link| {
            let data = link
                .linkinfo
                .as_ref()
                .filter(|i| i.info_kind.as_deref() == Some("vxlan"))
                .and_then(|i| i.info_data.as_ref());
            let name = link.ifname.clone();
            let vni = vni_of(&name).map(Vni::get);
            ObservedDevice {
                alias: link.ifalias.as_deref() == Some(ALIAS),
                external: data.is_some_and(|d| d.external),
                vni: data.and_then(|d| d.id),
                remote: data.and_then(|d| d.remote.or(d.remote6)),
                port: data.and_then(|d| d.port),
                mtu: link.mtu,
                up: link.flags.iter().any(|f| f == "UP"),
                neighbours: neighbours
                    .iter()
                    .filter(|n| n.dev == name && n.state.iter().any(|s| s == "PERMANENT"))
                    .filter_map(|n| Some((n.dst, n.lladdr.clone()?)))
                    .collect(),
                routes: ByFamily::from_fn(|family| {
                    routes[family].iter().any(|r| {
                        r.dst.split('/').next() == Some(hops[family].as_str())
                            && r.dev.as_deref() == Some(name.as_str())
                            && vni.is_some()
                            && r.metric == vni
                    })
                }),
                name,
            }
        })
        .collect())
}

/// `ip -j` prints nothing at all when there is nothing to show, on some versions.
fn non_empty(text: &str) -> &str {
    if text.trim().is_empty() { "[]" } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel(vni: u32, remote: &str) -> Tunnel {
        Tunnel::new(Vni::new(vni).expect("vni"), remote.parse().expect("ip")).expect("tunnel")
    }

    #[test]
    fn device_names_round_trip_and_fit_the_kernel() {
        let max = Vni::new(Vni::MAX).expect("vni");
        assert_eq!(device(max), "tfvx16777215");
        assert!(device(max).len() <= 15);
        assert_eq!(vni_of("tfvx42").map(Vni::get), Some(42));
        for not_ours in ["tfvx", "tfvx0", "tfvx042", "tfvx16777216", "eth0", "tfvx4x"] {
            assert_eq!(vni_of(not_ours), None, "{not_ours}");
        }
    }

    #[test]
    fn reads_what_ip_prints_and_says_what_is_wrong() {
        let links = r#"[{"ifindex":5,"ifname":"tfvx42","ifalias":"teefleet","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":65000,
            "linkinfo":{"info_kind":"vxlan","info_data":{"id":42,"remote":"10.0.0.9","port":4789}}},
            {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"mtu":65536},
            {"ifindex":6,"ifname":"tfvx7","ifalias":"teefleet","flags":["BROADCAST"],"mtu":1450,
            "linkinfo":{"info_kind":"vxlan","info_data":{"id":7,"remote6":"fd00::9","port":4789}}}]"#;
        let neigh = r#"[{"dst":"169.254.77.77","dev":"tfvx42","lladdr":"02:74:66:00:00:01","state":["PERMANENT"]},
            {"dst":"fe80::77","dev":"tfvx42","lladdr":"02:74:66:00:00:01","state":["PERMANENT"]},
            {"dst":"10.0.0.1","dev":"eth0","lladdr":"aa:bb:cc:dd:ee:ff","state":["REACHABLE"]}]"#;
        let routes = r#"[{"dst":"169.254.77.77","dev":"tfvx42","metric":42,"scope":"link","flags":[]},
            {"dst":"default","gateway":"10.0.0.1","dev":"eth0","flags":[]}]"#;
        let routes6 = r#"[{"dst":"fe80::77","dev":"tfvx42","metric":42,"pref":"medium","flags":[]}]"#;
        let devices = parse(links, neigh, ByFamily::new(routes, routes6)).expect("parses");
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].problem(tunnel(42, "10.0.0.9"), true), None);
        let wrong_remote = devices[0].problem(tunnel(42, "10.0.0.8"), true).expect("a problem");
        assert!(wrong_remote.contains("not VNI 42 to 10.0.0.8"), "{wrong_remote}");
        assert_eq!(devices[1].remote, Some("fd00::9".parse().expect("ip")));
        let down = devices[1].problem(tunnel(7, "fd00::9"), false).expect("a problem");
        assert!(down.contains("MTU"), "{down}");
        // Without the IPv6 route, only a host without IPv6 is content.
        let v4_only = parse(links, neigh, ByFamily::new(routes, "[]")).expect("parses");
        assert!(v4_only[0].problem(tunnel(42, "10.0.0.9"), true).is_some_and(|p| p.contains("fe80::77")));
        assert_eq!(v4_only[0].problem(tunnel(42, "10.0.0.9"), false), None);
        assert!(parse("", "", ByFamily::new("", "")).expect("empty").is_empty());
        // Renamed, it is still ours by its alias; without the alias, not quite ours.
        let renamed = links.replace("\"ifname\":\"tfvx42\"", "\"ifname\":\"eth9\"");
        assert!(
            parse(&renamed, neigh, ByFamily::new(routes, routes6)).expect("parses").iter().any(|d| d.name == "eth9")
        );
        let unaliased = links.replace("\"ifalias\":\"teefleet\",", "");
        let devices = parse(&unaliased, neigh, ByFamily::new(routes, routes6)).expect("parses");
        assert!(devices[0].problem(tunnel(42, "10.0.0.9"), true).is_some_and(|p| p.contains("alias")));

        let decap = r#"[{"ifindex":7,"ifname":"teefleet0","ifalias":"teefleet","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,
            "linkinfo":{"info_kind":"vxlan","info_data":{"external":true,"id":0,"port":4789}}}]"#;
        let devices = parse(decap, "[]", ByFamily::new("[]", "[]")).expect("parses");
        assert_eq!(devices[0].decap_problem(), None);
        assert!(devices[0].problem(tunnel(1, "10.0.0.9"), false).is_some(), "not a tunnel device");
        let not_external = decap.replace("\"external\":true,", "");
        let devices = parse(&not_external, "[]", ByFamily::new("[]", "[]")).expect("parses");
        assert!(devices[0].decap_problem().is_some_and(|p| p.contains("external")));
    }

    #[test]
    fn create_commands_are_arguments_not_shell_text() {
        let commands = create_commands(tunnel(42, "10.0.0.9"), true);
        let lines: Vec<String> = commands.iter().map(|(p, args)| format!("{p} {}", args.join(" "))).collect();
        assert_eq!(lines[0], "ip link add tfvx42 type vxlan id 42 remote 10.0.0.9 dstport 4789");
        assert!(lines.contains(&"sysctl -q -w net.ipv6.conf.tfvx42.disable_ipv6=0".to_owned()), "{lines:?}");
        assert!(lines.contains(&"ip -6 route replace fe80::77/128 dev tfvx42 metric 42".to_owned()), "{lines:?}");
        assert!(commands.iter().flat_map(|(_, a)| a).all(|a| !a.contains(' ')));
        let v4_only = create_commands(tunnel(42, "10.0.0.9"), false);
        assert!(v4_only.iter().all(|(p, a)| *p == "ip" && a[0] != "-6"), "{v4_only:?}");
    }
}
