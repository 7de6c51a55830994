//! The agent's configuration: one typed struct, read once from flags and environment.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use teefleet_model::HostId;

use crate::firewall::Variant;

/// fleet-agent: keeps this host's TEE mirroring rules in line with the teefleet controller.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "fleet-agent",
    version,
    about,
    after_help = "Run `fleet-agent cleanup --help` for removing every rule of ours (uninstall)."
)]
pub struct Config {
    /// The controller's agent endpoint, e.g. http://controller:7000.
    #[arg(long, env = "FLEET_CONTROLLER", value_name = "URL", value_parser = parse_http_url)]
    pub controller: String,

    /// This host's id; defaults to the EC2 instance id from instance metadata.
    #[arg(long, env = "FLEET_HOST_ID", value_name = "ID", value_parser = parse_host_id)]
    pub host_id: Option<HostId>,

    /// Where the last applied rule set is kept across restarts.
    #[arg(long, env = "FLEET_STATE_DIR", value_name = "DIR", value_parser = parse_dir)]
    pub state_dir: PathBuf,

    /// Seconds between health reports.
    #[arg(long, env = "FLEET_HEALTH_INTERVAL", value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub health_interval: u64,

    /// Seconds between drift checks: our chains are read back and restored if something
    /// else changed them, and the counters are read.
    #[arg(long, env = "FLEET_DRIFT_INTERVAL", value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub drift_interval: u64,

    /// Which iptables to use: `auto` runs `iptables` (the host's choice), `nft` and
    /// `legacy` run `iptables-nft` or `iptables-legacy` and their -save/-restore.
    #[arg(long, env = "FLEET_IPTABLES_BACKEND", value_name = "auto|nft|legacy", default_value = "auto",
          value_parser = parse_backend)]
    pub iptables_backend: Variant,

    /// Where to serve /healthz, /readyz and /metrics; `off` disables them.
    #[arg(long, env = "FLEET_METRICS_LISTEN", value_name = "ADDR:PORT|off", default_value = "127.0.0.1:9477",
          value_parser = parse_listen)]
    pub metrics_listen: Listen,

    /// The EC2 instance metadata service, used when --host-id is not given.
    #[arg(long, env = "FLEET_IMDS_ENDPOINT", value_name = "URL", default_value = "http://169.254.169.254",
          value_parser = parse_http_url)]
    pub imds_endpoint: String,
}

impl Config {
    pub fn health_interval(&self) -> Duration {
        Duration::from_secs(self.health_interval)
    }

    pub fn drift_interval(&self) -> Duration {
        Duration::from_secs(self.drift_interval)
    }
}

/// `fleet-agent cleanup`: removes every chain and jump of ours, in both families.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "fleet-agent cleanup",
    bin_name = "fleet-agent cleanup",
    version,
    about = "Removes every chain and jump teefleet installed on this host \
(both address families) and, with --state-dir, the saved rule set, so a restarted agent does not bring them back. \
Idempotent; stop the agent first."
)]
pub struct CleanupConfig {
    /// The agent's state directory; its saved rule set is deleted.
    #[arg(long, env = "FLEET_STATE_DIR", value_name = "DIR", value_parser = parse_dir)]
    pub state_dir: Option<PathBuf>,

    /// As for the agent: auto, nft or legacy.
    #[arg(long, env = "FLEET_IPTABLES_BACKEND", value_name = "auto|nft|legacy", default_value = "auto",
          value_parser = parse_backend)]
    pub iptables_backend: Variant,
}

/// Where the HTTP endpoints listen, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Off,
    On(SocketAddr),
}

fn parse_backend(s: &str) -> Result<Variant, String> {
    match s {
        "auto" => Ok(Variant::System),
        "nft" => Ok(Variant::Nft),
        "legacy" => Ok(Variant::Legacy),
        _ => Err(format!("{s:?} is not auto, nft or legacy")),
    }
}

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s == "off" {
        return Ok(Listen::Off);
    }
    s.parse().map(Listen::On).map_err(|_| format!("{s:?} is not ADDR:PORT (e.g. 127.0.0.1:9477) or off"))
}

/// A URL that is not a plain `http://HOST[:PORT]`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an http://HOST[:PORT] URL")]
pub struct UrlError(String);

/// `HOST:PORT` of an `http://HOST[:PORT][/]` URL, with the default port made explicit.
/// Only plain HTTP is supported for now, and a path would be silently ignored by gRPC,
/// so both are refused instead of surprising the operator.
pub fn http_authority(url: &str) -> Result<String, UrlError> {
    let bad = || UrlError(url.to_owned());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) || rest.contains(char::is_whitespace) {
        return Err(bad());
    }
    // A bracketed IPv6 literal has colons of its own; only a colon after `]` is a port.
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => (host, Some(port)),
        _ => (rest, None),
    };
    if host.is_empty() || host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad());
    }
    match port {
        Some(p) => p.parse::<u16>().map(|p| format!("{host}:{p}")).map_err(|_| bad()),
        None => Ok(format!("{host}:80")),
    }
}

fn parse_http_url(s: &str) -> Result<String, UrlError> {
    http_authority(s).map(|_| s.trim_end_matches('/').to_owned())
}

fn parse_host_id(s: &str) -> Result<HostId, String> {
    s.parse().map_err(|e: teefleet_model::ValidationError| e.reason)
}

fn parse_dir(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    let path = PathBuf::from(s);
    if path.exists() && !path.is_dir() {
        return Err(format!("{s} exists and is not a directory"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("fleet-agent").chain(args.iter().copied()))
    }

    #[test]
    fn flags() {
        let c =
            parse(&["--controller", "http://c:7000/", "--host-id", "h1", "--state-dir", "/var/lib/x"]).expect("valid");
        assert_eq!(
            (c.controller.as_str(), c.health_interval, c.imds_endpoint.as_str()),
            ("http://c:7000", 10, "http://169.254.169.254")
        );
        assert_eq!(
            (c.drift_interval(), c.metrics_listen),
            (Duration::from_secs(5), Listen::On(([127, 0, 0, 1], 9477).into()))
        );
        assert_eq!(c.host_id.map(String::from).as_deref(), Some("h1"));
        let c =
            parse(&["--controller", "http://c", "--host-id", "h", "--state-dir", "/tmp", "--metrics-listen", "off"])
                .expect("valid");
        assert_eq!(c.metrics_listen, Listen::Off);
    }

    #[test]
    fn invalid_values_name_the_flag() {
        let base = ["--host-id", "h1", "--state-dir", "/tmp"];
        for (extra, flag) in [
            (vec!["--controller", "https://c"], "--controller"),
            (vec!["--controller", "http://c", "--health-interval", "0"], "--health-interval"),
            (vec!["--controller", "http://c", "--imds-endpoint", "x"], "--imds-endpoint"),
            (vec!["--controller", "http://c", "--drift-interval", "0"], "--drift-interval"),
            (vec!["--controller", "http://c", "--metrics-listen", "localhost"], "--metrics-listen"),
            (vec!["--controller", "http://c", "--iptables-backend", "xtables"], "--iptables-backend"),
        ] {
            let args: Vec<&str> = base.iter().copied().chain(extra).collect();
            let err = parse(&args).expect_err("invalid").to_string();
            assert!(err.contains(flag), "{err}");
        }
        let err = parse(&["--controller", "http://c", "--host-id", "a b", "--state-dir", "/tmp"]).expect_err("invalid");
        assert!(err.to_string().contains("--host-id"), "{err}");
        let err = parse(&["--controller", "http://c", "--host-id", "h", "--state-dir", "/etc/hostname"])
            .expect_err("invalid");
        assert!(err.to_string().contains("--state-dir"), "{err}");
    }

    #[test]
    fn authorities() {
        assert_eq!(http_authority("http://169.254.169.254").expect("ok"), "169.254.169.254:80");
        assert_eq!(http_authority("http://127.0.0.1:8080/").expect("ok"), "127.0.0.1:8080");
        assert_eq!(http_authority("http://[fd00:ec2::254]").expect("ok"), "[fd00:ec2::254]:80");
        assert_eq!(http_authority("http://[fd00:ec2::254]:81").expect("ok"), "[fd00:ec2::254]:81");
        for bad in
            ["https://x", "x", "http://", "http://a/b", "http://a b", "http://a:x", "http://a:99999", "http://fd00::1"]
        {
            assert!(http_authority(bad).is_err(), "{bad}");
        }
    }
}
