//! The lab's network, shaped like a VPC: two subnets, each a Linux bridge, joined by a
//! router namespace; one network namespace per lab host, each with a veth to its subnet's
//! bridge whose inner end is `eth0`. The first subnet's bridge carries the `.1` address in
//! the root namespace, so processes there (the controller) are reachable from every host;
//! the router is `.254` in both subnets, and every host reaches the other subnet (and the
//! root namespace from the second) through its own subnet's router, as in a VPC.
//!
//! The bridges enforce what EC2 enforces per instance (see [`crate::vpc`]): with its
//! Source/Dest Check on, an instance sends only its own address and receives only its own.
//!
//! The network is dual-stack: every host and the bridge also get an IPv6 ULA address in a
//! /64 that mirrors the /24 (`10.213.7.11` ↔ `fd00:213:7::11`), so a reader of a capture
//! sees at once which host an address belongs to.
//!
//! Every subnet is a unique /24, claimed with a file under the temp dir so concurrent test
//! processes never share one, and names derive from the first (`tf213-7-source1`, bridges
//! `tfb213-7` and `tfb213-9`, router `tf213-7-router`).
//! Creation first removes leftovers with the same names; drop deletes everything it made.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::LabError;
use crate::cmd::{self, run_quiet_blocking, run_text};
pub use crate::host::Host;
use crate::vpc::{self, Checks};

/// Which /16 the lab's /24s come from (and which /48 their IPv6 /64s come from): tests and
/// the demo never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// 10.213.0.0/16 and fd00:213::/48.
    Tests,
    /// 10.214.0.0/16 and fd00:214::/48.
    Demo,
}

impl Range {
    fn second_octet(self) -> u8 {
        match self {
            Range::Tests => 213,
            Range::Demo => 214,
        }
    }
}

/// The lab hosts: `(name, subnet, last octet, short name for links)`. The last octet is
/// also the last group of the IPv6 address, written with the same digits. Short names keep
/// veth names within the kernel's 15 bytes (`tf213-250-col2`).
pub const HOSTS: [(&str, usize, u8, &str); 6] = [
    ("source1", 0, 11, "s1"),
    ("source2", 0, 12, "s2"),
    ("collector", 0, 20, "col"),
    ("collector2", 0, 21, "col2"),
    ("client", 0, 30, "cli"),
    ("collector-b", 1, 20, "colb"),
];

/// The router's last octet in both subnets.
const ROUTER: u8 = 254;

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// One subnet: its bridge, its /24, and the claim on it.
#[derive(Debug)]
struct Subnet {
    bridge: String,
    prefix: [u8; 3],
    /// Held for its `Drop`, which releases the subnet.
    _claim: SubnetClaim,
}

impl Subnet {
    fn ip(&self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, last)
    }

    fn ip6(&self, last: u8) -> Ipv6Addr {
        ipv6_of(self.prefix, last)
    }

    fn cidr(&self) -> String {
        format!("{}/24", self.ip(0))
    }

    fn cidr6(&self) -> String {
        format!("{}/64", self.ip6(0))
    }
}

/// The bridges, the router, the namespaces, and what the bridges enforce.
#[derive(Debug)]
pub struct Network {
    subnets: [Subnet; 2],
    /// The router's namespace.
    router: String,
    /// The router's bridge ports, one per subnet.
    router_veths: [String; 2],
    hosts: Vec<Host>,
    checks: Checks,
}

impl Network {
    /// Creates both subnets, the router and the standard hosts (see [`HOSTS`]), every
    /// instance's Source/Dest Check on.
    pub async fn create(range: Range) -> Result<Network, LabError> {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let seed = std::process::id() % 1000 + n * 37;
        let first = SubnetClaim::acquire(range, seed).await?;
        let second = SubnetClaim::acquire(range, seed + 1).await?;
        let subnet = |claim: SubnetClaim| {
            let prefix = [10, range.second_octet(), claim.third_octet];
            Subnet { bridge: format!("tfb{}-{}", prefix[1], prefix[2]), prefix, _claim: claim }
        };
        let subnets = [subnet(first), subnet(second)];
        // Names derive from the claimed subnet, so they are as exclusive as the claim: a
        // leftover with the same name can only belong to a lab that died.
        let [_, b, c] = subnets[0].prefix;
        let tag = format!("tf{b}-{c}");
        let hosts: Vec<Host> = HOSTS
            .iter()
            .map(|(name, subnet, last, short)| Host {
                name: (*name).to_owned(),
                netns: format!("{tag}-{name}"),
                subnet: *subnet,
                ip: subnets[*subnet].ip(*last),
                ip6: subnets[*subnet].ip6(*last),
                veth: format!("{tag}-{short}"),
            })
            .collect();
        let table = format!("teefleet-lab-{tag}");
        vpc::remove_table(&table);
        let router = format!("{tag}-router");
        let router_veths = [format!("{tag}-rta"), format!("{tag}-rtb")];
        let leftovers = Leftovers::of(&subnets, &router, &router_veths, &hosts, &table);
        leftovers.remove();
        let built = build(&subnets, &router, &router_veths, &hosts).await;
        let checks = match built {
            Ok(()) => Checks::create(table, &hosts).await,
            Err(e) => Err(e),
        };
        let checks = match checks {
            Ok(checks) => checks,
            Err(e) => {
                leftovers.remove();
                return Err(e);
            }
        };
        let network = Network { subnets, router, router_veths, hosts, checks };
        tracing::info!(
            bridges = ?network.subnets.iter().map(|s| s.bridge.as_str()).collect::<Vec<_>>(),
            subnet = %network.cidr(), subnet_b = %network.subnets[1].cidr(),
            "lab network up"
        );
        Ok(network)
    }

    /// What the bridges enforce: every instance's Source/Dest Check.
    pub fn checks(&self) -> &Checks {
        &self.checks
    }

    /// Turns a host's Source/Dest Check on or off on the bridge (a lab without EC2; a
    /// [`crate::Lab`] follows moto instead).
    pub async fn set_source_dest_check(&self, host: &str, on: bool) -> Result<(), LabError> {
        self.checks.set(host, on).await
    }

    /// Everything this network's names refer to.
    fn leftovers(&self) -> Leftovers {
        Leftovers::of(&self.subnets, &self.router, &self.router_veths, &self.hosts, self.checks.table())
    }
    /// The first subnet's bridge.
    pub fn bridge(&self) -> &str {
        &self.subnets[0].bridge
    }

    /// The bridge of subnet `n` (0 or 1).
    pub fn bridge_of(&self, n: usize) -> &str {
        &self.subnets[n.min(1)].bridge
    }

    /// The first subnet, e.g. `10.213.7.0/24`.
    pub fn cidr(&self) -> String {
        self.subnets[0].cidr()
    }

    /// Subnet `n` (0 or 1), e.g. `10.213.9.0/24`.
    pub fn cidr_of(&self, n: usize) -> String {
        self.subnets[n.min(1)].cidr()
    }

    /// The VPC around both subnets: the lab's /16.
    pub fn vpc_cidr(&self) -> String {
        let [a, b, _] = self.subnets[0].prefix;
        format!("{a}.{b}.0.0/16")
    }

    /// The first bridge's address, `.1`, where root-namespace services listen.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnets[0].ip(1)
    }

    /// The router's address in subnet `n`.
    pub fn router_ip(&self, n: usize) -> Ipv4Addr {
        self.subnets[n.min(1)].ip(ROUTER)
    }

    /// The first IPv6 subnet, e.g. `fd00:213:7::/64`.
    pub fn cidr6(&self) -> String {
        self.subnets[0].cidr6()
    }

    /// The first bridge's IPv6 address, `fd00:213:7::1`.
    pub fn gateway6(&self) -> Ipv6Addr {
        self.subnets[0].ip6(1)
    }

    /// A host's IPv6 address.
    pub fn ip6(&self, host: &str) -> Result<Ipv6Addr, LabError> {
        Ok(self.host(host)?.ip6)
    }

    /// All hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// A host by its lab name (`source1`, `source2`, `collector`, `collector2`, `client`).
    pub fn host(&self, name: &str) -> Result<&Host, LabError> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| LabError::Invalid(format!("no lab host named {name:?}")))
    }

    /// Runs `program args…` inside a host's namespace and returns stdout; fails on a
    /// non-zero exit.
    pub async fn exec(&self, host: &str, program: &str, args: &[&str]) -> Result<String, LabError> {
        let host = self.host(host)?;
        let mut full = vec!["netns", "exec", host.netns.as_str(), program];
        full.extend_from_slice(args);
        run_text("ip", full).await
    }

    /// `iptables-save -t mangle` inside a host.
    pub async fn mangle_rules(&self, host: &str) -> Result<String, LabError> {
        self.exec(host, "iptables-save", &["-t", "mangle"]).await
    }

    /// `ip6tables-save -t mangle` inside a host.
    pub async fn mangle_rules6(&self, host: &str) -> Result<String, LabError> {
        self.exec(host, "ip6tables-save", &["-t", "mangle"]).await
    }

    /// Runs `iptables -w args…` inside a host.
    pub async fn iptables(&self, host: &str, args: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["-w"];
        full.extend_from_slice(args);
        self.exec(host, "iptables", &full).await
    }

    /// Runs `ip6tables -w args…` inside a host.
    pub async fn ip6tables(&self, host: &str, args: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["-w"];
        full.extend_from_slice(args);
        self.exec(host, "ip6tables", &full).await
    }

    /// The MAC address of a host's `eth0`.
    pub async fn mac(&self, host: &str) -> Result<String, LabError> {
        let text = self.exec(host, "cat", &["/sys/class/net/eth0/address"]).await?;
        Ok(text.trim().to_owned())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting the root end of a veth removes both ends at once; deleting a namespace
        // alone frees its devices only asynchronously.
        self.leftovers().remove();
        tracing::info!(bridge = %self.bridge(), "lab network removed");
        // The subnet claim is released when its field drops, after the devices are gone.
    }
}

/// Builds the bridges, the router and the hosts.
async fn build(
    subnets: &[Subnet; 2],
    router: &str,
    router_veths: &[String; 2],
    hosts: &[Host],
) -> Result<(), LabError> {
    for subnet in subnets {
        ip(&["link", "add", &subnet.bridge, "type", "bridge"]).await?;
        // A host may have IPv6 disabled by default for new devices; the lab needs it.
        write_sysctl(&format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", subnet.bridge), "0")?;
        ip(&["link", "set", &subnet.bridge, "up"]).await?;
    }
    // Only the first bridge has an address in the root namespace: the services' `.1`.
    let first = &subnets[0];
    ip(&["addr", "add", &format!("{}/24", first.ip(1)), "dev", &first.bridge]).await?;
    // `nodad`: duplicate address detection would leave the address tentative (unusable)
    // for a second or more, and the lab's addresses are unique by construction.
    ip(&["-6", "addr", "add", &format!("{}/64", first.ip6(1)), "dev", &first.bridge, "nodad"]).await?;

    namespace(router).await?;
    sysctls(router, &["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]).await?;
    for (n, (subnet, veth)) in subnets.iter().zip(router_veths).enumerate() {
        let inner = format!("eth{n}");
        attach(router, veth, &inner, &subnet.bridge).await?;
        address(router, &inner, (subnet.ip(ROUTER), subnet.ip6(ROUTER))).await?;
    }
    // The root namespace reaches the second subnet through the router, as the first
    // subnet's hosts do; the routes go with the bridge.
    let (second, via, via6) = (&subnets[1], first.ip(ROUTER).to_string(), first.ip6(ROUTER).to_string());
    ip(&["route", "add", &second.cidr(), "via", &via, "dev", &first.bridge]).await?;
    ip(&["-6", "route", "add", &second.cidr6(), "via", &via6, "dev", &first.bridge]).await?;

    for host in hosts {
        let ns = host.netns.as_str();
        namespace(ns).await?;
        attach(ns, &host.veth, "eth0", &subnets[host.subnet].bridge).await?;
        address(ns, "eth0", (host.ip, host.ip6)).await?;
        // The other subnet, and from the second the root namespace's `.1` with it, is
        // behind the router.
        let (own, other) = (&subnets[host.subnet], &subnets[1 - host.subnet.min(1)]);
        let (via, via6) = (own.ip(ROUTER).to_string(), own.ip6(ROUTER).to_string());
        ip(&["-n", ns, "route", "add", &other.cidr(), "via", &via]).await?;
        ip(&["-n", ns, "-6", "route", "add", &other.cidr6(), "via", &via6]).await?;
    }
    for subnet in subnets {
        allow_bridged_forwarding(&subnet.bridge).await?;
    }
    Ok(())
}

/// A network namespace with IPv6 enabled, duplicate address detection off (the lab's
/// addresses are unique by construction) and `lo` up.
async fn namespace(ns: &str) -> Result<(), LabError> {
    ip(&["netns", "add", ns]).await?;
    sysctls(ns, &["net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.accept_dad=0"]).await?;
    ip(&["-n", ns, "link", "set", "lo", "up"]).await
}

/// Runs `sysctl -w` for each setting inside `ns`.
async fn sysctls(ns: &str, settings: &[&str]) -> Result<(), LabError> {
    let mut args = vec!["netns", "exec", ns, "sysctl", "-q", "-w"];
    args.extend_from_slice(settings);
    cmd::run(cmd::command("ip", args)).await.map(|_| ())
}

/// A veth from `bridge` (port `veth`) into `ns`, named `inner` there, both ends up.
async fn attach(ns: &str, veth: &str, inner: &str, bridge: &str) -> Result<(), LabError> {
    let tmp = format!("{veth}p");
    ip(&["link", "add", veth, "type", "veth", "peer", "name", &tmp]).await?;
    ip(&["link", "set", &tmp, "netns", ns]).await?;
    ip(&["-n", ns, "link", "set", &tmp, "name", inner]).await?;
    // Before the link comes up, so its link-local address skips DAD as well.
    let (v6, dad) = (format!("net.ipv6.conf.{inner}.disable_ipv6=0"), format!("net.ipv6.conf.{inner}.accept_dad=0"));
    sysctls(ns, &[&v6, &dad]).await?;
    ip(&["-n", ns, "link", "set", inner, "up"]).await?;
    ip(&["link", "set", veth, "master", bridge, "up"]).await
}

/// Both addresses of a host on `dev` in `ns`, in a /24 and a /64.
async fn address(ns: &str, dev: &str, (v4, v6): (Ipv4Addr, Ipv6Addr)) -> Result<(), LabError> {
    ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]).await?;
    ip(&["-n", ns, "-6", "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]).await
}

/// With `br_netfilter` loaded, frames crossing a bridge also traverse the root namespace's
/// FORWARD chains (iptables and ip6tables), where a restrictive host policy (Docker sets
/// FORWARD to DROP) would silently cut the lab's hosts off from each other. Only then is an
/// ACCEPT for bridge-internal traffic inserted, tagged with the bridge's name; drop removes
/// it. A host whose FORWARD chain accepts everything is left alone.
async fn allow_bridged_forwarding(bridge: &str) -> Result<(), LabError> {
    for tool in ["iptables", "ip6tables"] {
        let sysctl = format!("/proc/sys/net/bridge/bridge-nf-call-{tool}");
        if std::fs::read_to_string(&sysctl).map(|v| v.trim() != "1").unwrap_or(true) {
            continue;
        }
        let chain = run_text(tool, ["-w", "-S", "FORWARD"]).await?;
        if chain.lines().all(|l| l.trim() == "-P FORWARD ACCEPT" || l.trim().is_empty()) {
            continue;
        }
        let rule = forward_rule(bridge);
        let mut args = vec!["-w", "-I", "FORWARD"];
        args.extend(rule.iter().map(String::as_str));
        cmd::run(cmd::command(tool, args)).await?;
        tracing::info!(tool, bridge, "allowed bridged forwarding in the root namespace");
    }
    Ok(())
}

/// The root-namespace FORWARD rule that lets a bridge's own traffic through.
fn forward_rule(bridge: &str) -> Vec<String> {
    let comment = format!("teefleet-lab {bridge}");
    ["-i", bridge, "-o", bridge, "-m", "comment", "--comment", &comment, "-j", "ACCEPT"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// The names a network is made of, for best-effort removal (drop, and leftovers of a lab
/// that died).
struct Leftovers {
    veths: Vec<String>,
    namespaces: Vec<String>,
    bridges: Vec<String>,
    table: String,
}

impl Leftovers {
    fn of(subnets: &[Subnet; 2], router: &str, router_veths: &[String; 2], hosts: &[Host], table: &str) -> Leftovers {
        Leftovers {
            veths: hosts.iter().map(|h| h.veth.clone()).chain(router_veths.iter().cloned()).collect(),
            namespaces: hosts.iter().map(|h| h.netns.clone()).chain([router.to_owned()]).collect(),
            bridges: subnets.iter().map(|s| s.bridge.clone()).collect(),
            table: table.to_owned(),
        }
    }

    fn remove(&self) {
        for veth in &self.veths {
            run_quiet_blocking("ip", &["link", "del", veth]);
        }
        for ns in &self.namespaces {
            run_quiet_blocking("ip", &["netns", "del", ns]);
        }
        vpc::remove_table(&self.table);
        for bridge in &self.bridges {
            run_quiet_blocking("ip", &["link", "del", bridge]);
            let rule = forward_rule(bridge);
            for tool in ["iptables", "ip6tables"] {
                let mut args = vec!["-w", "-D", "FORWARD"];
                args.extend(rule.iter().map(String::as_str));
                // Deletes one copy per call; a lab that died repeatedly may have left several.
                for _ in 0..8 {
                    if !run_quiet_blocking(tool, &args) {
                        break;
                    }
                }
            }
        }
    }
}

/// The lab's IPv6 address for a host octet: the /24's digits reused as hex groups, so
/// `10.213.7.11` becomes `fd00:213:7::11`. Every octet is at most 255, whose digits are
/// valid hex, so the text always parses; the fallback is unreachable.
fn ipv6_of(prefix: [u8; 3], last: u8) -> Ipv6Addr {
    let group = |n: u8| u16::from_str_radix(&n.to_string(), 16).unwrap_or(0);
    Ipv6Addr::new(0xfd00, group(prefix[1]), group(prefix[2]), 0, 0, 0, 0, group(last))
}

/// Writes a sysctl of the root namespace through `/proc/sys`.
fn write_sysctl(path: &str, value: &str) -> Result<(), LabError> {
    std::fs::write(path, value).map_err(|e| LabError::io(format!("writing {value} to {path}"), e))
}

async fn ip(args: &[&str]) -> Result<(), LabError> {
    cmd::run(cmd::command("ip", args)).await.map(|_| ())
}

/// An exclusive claim on one /24: a file named after it, holding our pid, created with
/// `create_new` so two processes can never both win. Stale claims of dead processes are
/// taken over; subnets already on an interface are skipped.
#[derive(Debug)]
struct SubnetClaim {
    third_octet: u8,
    path: PathBuf,
}

impl SubnetClaim {
    async fn acquire(range: Range, seed: u32) -> Result<SubnetClaim, LabError> {
        let dir = std::env::temp_dir().join("teefleet-lab-subnets");
        std::fs::create_dir_all(&dir).map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
        let in_use = run_text("ip", ["-o", "addr", "show"]).await?;
        let second = range.second_octet();
        for i in 0..254u32 {
            // Spread labs over the range so that concurrent processes rarely contend.
            let third = u8::try_from((seed + i) % 254 + 1).unwrap_or(1);
            let subnet = format!(" 10.{second}.{third}.");
            let subnet6 = format!(" {}/", ipv6_of([10, second, third], 1));
            if in_use.contains(&subnet) || in_use.contains(&subnet6) {
                continue;
            }
            let path = dir.join(format!("10.{second}.{third}.0"));
            if try_claim(&path)? {
                return Ok(SubnetClaim { third_octet: third, path });
            }
        }
        Err(LabError::Invalid(format!("no free /24 left in 10.{second}.0.0/16 (see {})", dir.display())))
    }
}

/// Claims `path` for this process; takes it over if its owner is dead.
fn try_claim(path: &std::path::Path) -> Result<bool, LabError> {
    use std::io::Write;
    for _ in 0..2 {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(mut file) => {
                file.write_all(std::process::id().to_string().as_bytes())
                    .map_err(|e| LabError::io(format!("writing {}", path.display()), e))?;
                return Ok(true);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(path).unwrap_or_default();
                let alive =
                    owner.trim().parse::<u32>().is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
                if alive || owner.trim().is_empty() {
                    // An empty file may be a claim being written right now: leave it.
                    return Ok(false);
                }
                let _ = std::fs::remove_file(path);
            }
            Err(e) => return Err(LabError::io(format!("creating {}", path.display()), e)),
        }
    }
    Ok(false)
}

impl Drop for SubnetClaim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_mirror_the_ipv4_ones() {
        assert_eq!(ipv6_of([10, 213, 7], 11), "fd00:213:7::11".parse::<Ipv6Addr>().expect("ip"));
        assert_eq!(ipv6_of([10, 214, 250], 1), "fd00:214:250::1".parse::<Ipv6Addr>().expect("ip"));
        assert_eq!(ipv6_of([10, 213, 254], 0).to_string(), "fd00:213:254::");
    }
}
