//! The lab's network: a Linux bridge in the root namespace carrying the subnet's `.1`
//! address (so processes in the root namespace, such as the controller, are reachable from
//! the hosts), and one network namespace per lab host, each with a veth to the bridge whose
//! inner end is `eth0` — the shape of the manual recipe's EC2 subnet.
//!
//! Every lab gets a unique /24, claimed with a file under the temp dir so concurrent test
//! processes never share one, and names derived from it (`tf213-7-source1`, bridge
//! `tfb213-7`).
//! Creation first removes leftovers with the same names; drop deletes everything it made.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::LabError;
use crate::cmd::{self, run_quiet_blocking, run_text};

/// Which /16 the lab's /24 comes from: tests and the demo never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// 10.213.0.0/16.
    Tests,
    /// 10.214.0.0/16.
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

/// One host of the lab: a namespace with `eth0` on the bridge.
#[derive(Debug, Clone)]
pub struct Host {
    /// The lab's name for it, e.g. `source1`.
    pub name: String,
    /// The network namespace, e.g. `tf213-7-source1`.
    pub netns: String,
    /// The address on `eth0`.
    pub ip: Ipv4Addr,
    /// The root-namespace end of the veth.
    veth: String,
}

/// The lab hosts and their address in the /24: `(name, last octet, short name for links)`.
pub const HOSTS: [(&str, u8, &str); 4] =
    [("source1", 11, "s1"), ("source2", 12, "s2"), ("collector", 20, "col"), ("client", 30, "cli")];

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// The bridge, the namespaces, and the claim on the subnet.
#[derive(Debug)]
pub struct Network {
    bridge: String,
    prefix: [u8; 3],
    hosts: Vec<Host>,
    /// Held for its `Drop`, which releases the subnet.
    _claim: SubnetClaim,
}

impl Network {
    /// Creates the bridge and the four standard hosts (see [`HOSTS`]).
    pub async fn create(range: Range) -> Result<Network, LabError> {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let claim = SubnetClaim::acquire(range, std::process::id() % 1000 + n * 37).await?;
        let prefix = [10, range.second_octet(), claim.third_octet];
        // Names derive from the claimed subnet, so they are as exclusive as the claim: a
        // leftover with the same name can only belong to a lab that died.
        let tag = format!("tf{}-{}", prefix[1], prefix[2]);
        let bridge = format!("tfb{}-{}", prefix[1], prefix[2]);
        let hosts: Vec<Host> = HOSTS
            .iter()
            .map(|(name, last, short)| Host {
                name: (*name).to_owned(),
                netns: format!("{tag}-{name}"),
                ip: Ipv4Addr::new(prefix[0], prefix[1], prefix[2], *last),
                veth: format!("{tag}-{short}"),
            })
            .collect();
        let network = Network { bridge, prefix, hosts, _claim: claim };
        network.remove_leftovers();
        network.build().await?;
        tracing::info!(bridge = %network.bridge, subnet = %network.cidr(), "lab network up");
        Ok(network)
    }

    async fn build(&self) -> Result<(), LabError> {
        let gateway = format!("{}/24", self.gateway());
        ip(&["link", "add", &self.bridge, "type", "bridge"]).await?;
        ip(&["addr", "add", &gateway, "dev", &self.bridge]).await?;
        ip(&["link", "set", &self.bridge, "up"]).await?;
        for host in &self.hosts {
            let inner = format!("{}p", host.veth);
            let addr = format!("{}/24", host.ip);
            let ns = host.netns.as_str();
            ip(&["netns", "add", ns]).await?;
            ip(&["link", "add", &host.veth, "type", "veth", "peer", "name", &inner]).await?;
            ip(&["link", "set", &inner, "netns", ns]).await?;
            ip(&["-n", ns, "link", "set", &inner, "name", "eth0"]).await?;
            ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]).await?;
            ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
            ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
            ip(&["link", "set", &host.veth, "master", &self.bridge, "up"]).await?;
        }
        Ok(())
    }

    /// Best-effort removal of everything this network's names refer to.
    fn remove_leftovers(&self) {
        for host in &self.hosts {
            run_quiet_blocking("ip", &["link", "del", &host.veth]);
            run_quiet_blocking("ip", &["netns", "del", &host.netns]);
        }
        run_quiet_blocking("ip", &["link", "del", &self.bridge]);
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The subnet, e.g. `10.213.7.0/24`.
    pub fn cidr(&self) -> String {
        let [a, b, c] = self.prefix;
        format!("{a}.{b}.{c}.0/24")
    }

    /// The bridge's address, `.1`, where root-namespace services listen.
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// All hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// A host by its lab name (`source1`, `source2`, `collector`, `client`).
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

    /// Pings `to` from inside `from`'s namespace; succeeds if any reply came back.
    pub async fn ping(&self, from: &str, to: Ipv4Addr, count: u32) -> Result<String, LabError> {
        let count = count.to_string();
        let to = to.to_string();
        self.exec(from, "ping", &["-n", "-c", &count, "-i", "0.2", "-W", "2", &to]).await
    }

    /// `iptables-save -t mangle` inside a host.
    pub async fn mangle_rules(&self, host: &str) -> Result<String, LabError> {
        self.exec(host, "iptables-save", &["-t", "mangle"]).await
    }

    /// Runs `iptables -w args…` inside a host.
    pub async fn iptables(&self, host: &str, args: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["-w"];
        full.extend_from_slice(args);
        self.exec(host, "iptables", &full).await
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
        self.remove_leftovers();
        tracing::info!(bridge = %self.bridge, "lab network removed");
        // The subnet claim is released when its field drops, after the devices are gone.
    }
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
        let in_use = run_text("ip", ["-o", "-4", "addr", "show"]).await?;
        let second = range.second_octet();
        for i in 0..254u32 {
            // Spread labs over the range so that concurrent processes rarely contend.
            let third = u8::try_from((seed + i) % 254 + 1).unwrap_or(1);
            let subnet = format!("10.{second}.{third}.");
            if in_use.contains(&format!(" {subnet}")) {
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
