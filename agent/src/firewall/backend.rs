//! What the host's iptables is and can do, found once at start and reported in Hello and
//! Health: the backend (nft or legacy), the version, whether ip6tables works, and every
//! problem found on the way, so an operator sees "TEE is missing" before a push fails.

use teefleet_model::{MaxPps, MirrorRule, Protocol, RuleDirection, Sample, Throttle};

use super::{
    layout::{Family, Hook, TABLE},
    observe::Observed,
    render::render_rule,
    tools::Iptables,
};
use crate::error_chain;

/// The chain name used by the dry run; `--test` commits nothing, so it never exists.
const PROBE_CHAIN: &str = "TEEFLEET-PROBE";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataplaneInfo {
    /// `nft`, `legacy`, or `unknown`.
    pub backend: String,
    /// As `iptables --version` prints it.
    pub iptables_version: String,
    /// Whether IPv6 rules can be applied (ip6tables present, readable and TEE-capable).
    pub ipv6: bool,
    pub problems: Vec<String>,
}

impl DataplaneInfo {
    /// Runs the checks. Never fails: what does not work becomes a problem in the report.
    pub async fn detect(iptables: &Iptables) -> DataplaneInfo {
        Self::detect_with_ipv6_backend(iptables).await.0
    }

    /// [`Self::detect`], and the backend of the IPv6 tool (`nft`, `legacy`, `unknown`):
    /// the host's alternatives choose `iptables` and `ip6tables` separately, and the
    /// dataplane trusts the nf_tables generation only when both are nft.
    pub(crate) async fn detect_with_ipv6_backend(iptables: &Iptables) -> (DataplaneInfo, &'static str) {
        let mut info = DataplaneInfo::default();
        match iptables.version(Family::V4).await {
            Ok(version) => {
                info.backend = backend_of(&version).to_owned();
                info.iptables_version = version;
            }
            Err(e) => {
                info.backend = "unknown".to_owned();
                info.problems.push(format!("{}: {}", iptables.program(Family::V4), error_chain(&e)));
            }
        }
        let v4 = check_family(iptables, Family::V4).await;
        info.problems.extend(v4);
        let (v6, ipv6_backend) = match iptables.version(Family::V6).await {
            Ok(version) => (check_family(iptables, Family::V6).await, backend_of(&version)),
            Err(e) => (vec![format!("{}: {}", iptables.program(Family::V6), error_chain(&e))], "unknown"),
        };
        info.ipv6 = v6.is_empty();
        info.problems.extend(v6);
        (info, ipv6_backend)
    }

    /// Why IPv6 rules cannot be applied, for the error that refuses them.
    pub fn ipv6_problem(&self) -> String {
        let found: Vec<&str> =
            self.problems.iter().filter(|p| p.starts_with("ip6tables")).map(String::as_str).collect();
        if found.is_empty() { "not checked".to_owned() } else { found.join("; ") }
    }
}

/// `iptables v1.8.9 (nf_tables)` → `nft`; `iptables v1.8.9 (legacy)` → `legacy`.
fn backend_of(version: &str) -> &'static str {
    if version.contains("(nf_tables)") {
        "nft"
    } else if version.contains("(legacy)") {
        "legacy"
    } else {
        "unknown"
    }
}

/// Reads the mangle table (catching an incompatible one) and dry-runs a rule that uses
/// every match and target the renderer can emit.
async fn check_family(iptables: &Iptables, family: Family) -> Vec<String> {
    let tool = iptables.program(family);
    let mut problems = Vec::new();
    match iptables.save(family).await.map(|text| Observed::parse(&text)) {
        Ok(Ok(_)) => {}
        Ok(Err(e)) | Err(e) => problems.push(format!("{tool}: {}", error_chain(&e))),
    }
    if let Err(e) = iptables.test_restore(family, &probe_input(family)).await {
        problems.push(format!("{tool}: the TEE target or a match it needs does not work: {}", error_chain(&e)));
    }
    problems
}

fn probe_input(family: Family) -> String {
    let gateway = match family {
        Family::V4 => "192.0.2.1",
        Family::V6 => "2001:db8::1",
    };
    // Every value is a literal that the model accepts, so the expects cannot fire.
    let sample = "0.5".parse::<Sample>().expect("valid sample");
    let rule = MirrorRule::new(
        "probe".parse().expect("valid name"),
        RuleDirection::Ingress,
        gateway.parse().expect("valid address"),
        Protocol::Tcp,
        Some(teefleet_model::PortRange::new(1, 2).expect("valid ports")),
        None,
    )
    .expect("valid rule")
    .with_throttle(Throttle::new(Some(sample), Some(MaxPps::new(1).expect("valid cap"))));
    let line = render_rule(&rule, family).replacen(Hook::Pre.chain(), PROBE_CHAIN, 1);
    format!("*{TABLE}\n:{PROBE_CHAIN} - [0:0]\n{line}\nCOMMIT\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends() {
        assert_eq!(backend_of("iptables v1.8.9 (nf_tables)"), "nft");
        assert_eq!(backend_of("iptables v1.8.7 (legacy)"), "legacy");
        assert_eq!(backend_of("iptables v1.4.21"), "unknown");
    }

    #[test]
    fn probe_uses_every_match() {
        let text = probe_input(Family::V6);
        for needle in
            ["-m tcp", "-m iprange", "-m statistic", "-m hashlimit", "-m comment", "-j TEE --gateway 2001:db8::1"]
        {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        assert!(text.starts_with("*mangle\n:TEEFLEET-PROBE - [0:0]\n-A TEEFLEET-PROBE "), "{text}");
    }
}
