//! The controller's configuration: flags with environment fallbacks, read once.

use std::{net::SocketAddr, path::PathBuf, str::FromStr as _, time::Duration};

use teefleet_model::{Listen, TagSelector};

use crate::iid::{JoinPolicy, Signers};

fn parse_tag(text: &str) -> Result<TagSelector, String> {
    TagSelector::from_str(text.trim()).map_err(|e| e.reason)
}

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "fleet-controller", version = teefleet_proto::VERSION, about = "teefleet controller: sessions in, rule sets out")]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Postgres connection URL; migrations are applied at start. Required (it is optional
    /// only to clap, so that `ca print --database-url URL` works as well).
    #[arg(long, env = "FLEET_DATABASE_URL", global = true, default_value = "")]
    pub database_url: String,

    /// Address to serve gRPC on (admin API, agent streams, grpc.health.v1).
    #[arg(long, env = "FLEET_LISTEN", default_value = "127.0.0.1:7300")]
    pub listen: SocketAddr,

    /// A DNS name or IP address agents and fleetctl use to reach this controller; put in
    /// the server certificate. Repeat or separate with commas. Default: localhost,
    /// 127.0.0.1, ::1 and the --listen address.
    #[arg(long = "tls-san", env = "FLEET_TLS_SAN", value_delimiter = ',')]
    pub tls_sans: Vec<String>,

    /// Seals the CA's private key in the database with a key derived from this secret.
    /// Every replica needs the same secret. Without it the key is stored in the clear.
    #[arg(long, env = "FLEET_CA_KEY_SECRET", hide_env_values = true)]
    pub ca_key_secret: Option<String>,

    /// How long an agent's client certificate is valid; agents renew at two thirds.
    #[arg(long, env = "FLEET_AGENT_CERT_TTL", default_value = "24h", value_parser = teefleet_model::parse_duration)]
    pub agent_cert_ttl: Duration,

    /// How often each replica compares the desired versions of the agents it holds with
    /// the database, in case a change notification was lost (e.g. in a database outage).
    #[arg(long, env = "FLEET_RESYNC_INTERVAL", default_value = "5s", value_parser = teefleet_model::parse_duration)]
    pub resync_interval: Duration,

    /// How often the leader asks EC2 which instances carry each session's source tags, so
    /// the session follows instances that appear and go away. Each pass costs one
    /// DescribeInstances query (and its pages) per distinct set of tags.
    #[arg(long, env = "FLEET_SELECTOR_INTERVAL", default_value = "30s", value_parser = teefleet_model::parse_duration)]
    pub selector_interval: Duration,

    /// How often the leader deletes the sessions whose lifetime (`session create --ttl`)
    /// has ended.
    #[arg(long, env = "FLEET_EXPIRY_INTERVAL", default_value = "10s", value_parser = teefleet_model::parse_duration)]
    pub expiry_interval: Duration,

    /// The admin token to accept (at least 16 characters). Without it, a first start with
    /// no usable admin token creates one and logs it once.
    #[arg(long, env = "FLEET_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,

    /// How often refused calls (bad tokens, certificates or roles) that were not logged or
    /// audited one by one are summed up, in the log and in the audit log.
    #[arg(long, env = "FLEET_REFUSAL_REPORT_INTERVAL", default_value = "10s", value_parser = teefleet_model::parse_duration)]
    pub refusal_report_interval: Duration,

    /// The most client connections served at once (agents, fleetctl, enrollments); kept
    /// below the open-file limit, which the controller raises to its hard limit at start.
    #[arg(long, env = "FLEET_MAX_CONNECTIONS", default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// The most connections from one address. Behind a proxy or NAT that hides the agents'
    /// addresses, raise it to the number of agents behind one address.
    #[arg(long, env = "FLEET_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_address: u32,

    /// How long a new connection gets to finish its TLS handshake and send the HTTP/2
    /// preface before it is closed.
    #[arg(long, env = "FLEET_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = teefleet_model::parse_duration)]
    pub handshake_timeout: Duration,

    /// How far back a session's delivery compares what its sources sent with what its
    /// collector counted (10s to 5m).
    #[arg(long, env = "FLEET_DELIVERY_WINDOW", value_name = "DURATION", default_value = "60s",
          value_parser = teefleet_model::parse_duration)]
    pub delivery_window: Duration,

    /// Where to serve Prometheus /metrics; `off` disables it.
    #[arg(long, env = "FLEET_METRICS_LISTEN", value_name = "ADDR:PORT|off", default_value = "127.0.0.1:9478")]
    pub metrics_listen: Listen,

    /// An AWS account whose instances may enroll with their EC2 instance identity document
    /// instead of a join token (repeat, or separate with commas). Without one, agents enroll
    /// only with join tokens. The controller checks each enrolling instance with
    /// DescribeInstances in its own region and account.
    #[arg(long = "join-account", env = "FLEET_JOIN_ACCOUNTS", value_name = "ACCOUNT_ID", value_delimiter = ',',
          value_parser = crate::iid::parse_account)]
    pub join_accounts: Vec<String>,

    /// A tag an instance must carry to enroll by instance identity, KEY=VALUE (repeat, or
    /// separate with commas: all are needed).
    #[arg(long = "join-tag", env = "FLEET_JOIN_TAGS", value_name = "KEY=VALUE", value_delimiter = ',',
          value_parser = parse_tag)]
    pub join_tags: Vec<TagSelector>,

    /// PEM certificates that sign instance identity documents, replacing the built-in AWS
    /// RSA-2048 certificates of every commercial, GovCloud and China region (for tests, or a
    /// region newer than this build).
    #[arg(long = "iid-certs", env = "FLEET_IID_CERTS", value_name = "FILE")]
    pub iid_certs: Option<PathBuf>,

    /// Plaintext gRPC with no authentication: anyone who can connect is an admin and any
    /// agent may speak for any host. For labs only.
    #[arg(long, env = "FLEET_INSECURE")]
    pub insecure: bool,

    /// Allow --insecure on an address other than loopback.
    #[arg(long, env = "FLEET_ALLOW_INSECURE_REMOTE", requires = "insecure")]
    pub allow_insecure_remote: bool,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// The fleet's certificate authority.
    Ca {
        #[command(subcommand)]
        what: CaCommand,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CaCommand {
    /// Print the CA certificate (PEM), e.g. for fleetctl --ca-cert.
    Print,
    /// Print the CA's pin, `sha256:HEX` of its DER, for fleet-agent --ca-pin.
    Pin,
}

const DELIVERY_WINDOW_MIN: Duration = Duration::from_secs(10);
const DELIVERY_WINDOW_MAX: Duration = Duration::from_secs(300);

impl Config {
    /// How sessions' delivery is judged: over the window, and a host whose counters are
    /// older than the liveness window has gone silent.
    pub fn delivery_window(&self) -> crate::delivery::Window {
        let length = chrono::TimeDelta::from_std(self.delivery_window).unwrap_or(chrono::TimeDelta::seconds(60));
        crate::delivery::Window { length, silent_after: chrono::TimeDelta::seconds(crate::store::LIVENESS_SECS as i64) }
    }

    /// Flag combinations clap cannot check.
    pub fn check(&self) -> Result<(), String> {
        if self.database_url.is_empty() {
            return Err("give the Postgres URL with --database-url or FLEET_DATABASE_URL".to_owned());
        }
        if self.insecure && !self.listen.ip().is_loopback() && !self.allow_insecure_remote {
            return Err(format!(
                "--insecure serves plaintext without authentication; on {} anyone who can reach it controls \
                 mirroring. Listen on loopback, drop --insecure, or add --allow-insecure-remote",
                self.listen
            ));
        }
        if !(DELIVERY_WINDOW_MIN..=DELIVERY_WINDOW_MAX).contains(&self.delivery_window) {
            return Err(format!(
                "--delivery-window must be between {}s and {}s: agents report every 10s by default, and counter \
                 samples are kept for {}s",
                DELIVERY_WINDOW_MIN.as_secs(),
                DELIVERY_WINDOW_MAX.as_secs(),
                crate::heartbeat::SAMPLES_KEPT.as_secs()
            ));
        }
        self.join_policy()?;
        if let Some(t) = self.bootstrap_token.as_ref().filter(|t| t.len() < crate::auth::MIN_BOOTSTRAP_LEN) {
            return Err(format!(
                "the bootstrap token has {} characters; give at least {}",
                t.len(),
                crate::auth::MIN_BOOTSTRAP_LEN
            ));
        }
        Ok(())
    }

    /// Enrollment by instance identity as configured: `None` without `--join-account`.
    pub fn join_policy(&self) -> Result<Option<JoinPolicy>, String> {
        if self.join_accounts.is_empty() {
            return match (self.join_tags.is_empty(), &self.iid_certs) {
                (true, None) => Ok(None),
                _ => Err("--join-tag and --iid-certs apply to enrollment by instance identity, which is off without \
                          --join-account (FLEET_JOIN_ACCOUNTS)"
                    .to_owned()),
            };
        }
        let signers = match &self.iid_certs {
            Some(path) => Signers::load(path),
            None => Signers::aws(),
        };
        let signers = signers.map_err(|e| match std::error::Error::source(&e) {
            Some(source) => format!("--iid-certs: {e}: {source}"),
            None => format!("--iid-certs: {e}"),
        })?;
        Ok(Some(JoinPolicy {
            accounts: self.join_accounts.iter().cloned().collect(),
            tags: self.join_tags.clone(),
            signers,
        }))
    }

    /// The connection caps and deadline as configured (before the open-file limit).
    pub fn connection_limits(&self) -> crate::connections::Limits {
        crate::connections::Limits {
            max: self.max_connections as usize,
            per_address: self.max_connections_per_address as usize,
            setup: self.handshake_timeout,
        }
    }

    /// The names in the server certificate.
    pub fn sans(&self) -> Vec<String> {
        if !self.tls_sans.is_empty() {
            return self.tls_sans.clone();
        }
        let mut sans: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(str::to_owned).into();
        let ip = self.listen.ip();
        if !ip.is_unspecified() && !ip.is_loopback() {
            sans.push(ip.to_string());
        }
        sans
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from([&["fleet-controller", "--database-url", "postgres://x"], args].concat()).expect("parse")
    }

    #[test]
    fn the_version_names_the_commit() {
        let shown = Config::try_parse_from(["fleet-controller", "--version"]).expect_err("shown, not run");
        assert!(shown.to_string().contains(" (commit "), "{shown}");
    }

    #[test]
    fn insecure_is_loopback_only_unless_asked() {
        assert!(parse(&["--insecure"]).check().is_ok());
        let remote = parse(&["--insecure", "--listen", "10.0.0.1:7300"]);
        assert!(remote.check().expect_err("refused").contains("--allow-insecure-remote"));
        assert!(parse(&["--insecure", "--allow-insecure-remote", "--listen", "10.0.0.1:7300"]).check().is_ok());
        assert!(
            Config::try_parse_from(["fleet-controller", "--database-url", "x", "--allow-insecure-remote"]).is_err()
        );
        assert!(parse(&["--bootstrap-token", "short"]).check().is_err());
    }

    #[test]
    fn selector_interval() {
        assert_eq!(parse(&[]).selector_interval, Duration::from_secs(30));
        assert_eq!(parse(&["--selector-interval", "2m"]).selector_interval, Duration::from_secs(120));
        for bad in ["0s", "30", "soon"] {
            let args = ["fleet-controller", "--database-url", "x", "--selector-interval", bad];
            assert!(Config::try_parse_from(args).is_err(), "{bad}");
        }
    }

    #[test]
    fn metrics_are_served_on_loopback_unless_off() {
        let default: std::net::SocketAddr = "127.0.0.1:9478".parse().expect("addr");
        assert_eq!(parse(&[]).metrics_listen, Listen::On(default));
        assert_eq!(parse(&["--metrics-listen", "off"]).metrics_listen, Listen::Off);
        assert_eq!(parse(&["--metrics-listen", "0.0.0.0:9100"]).metrics_listen.to_string(), "0.0.0.0:9100");
        let args = ["fleet-controller", "--database-url", "x", "--metrics-listen", "9478"];
        assert!(Config::try_parse_from(args).is_err(), "a port alone is not an address");
    }

    #[test]
    fn expiry_interval() {
        assert_eq!(parse(&[]).expiry_interval, Duration::from_secs(10));
        assert_eq!(parse(&["--expiry-interval", "1s"]).expiry_interval, Duration::from_secs(1));
        let args = ["fleet-controller", "--database-url", "x", "--expiry-interval", "10"];
        assert!(Config::try_parse_from(args).is_err(), "a bare number is no duration");
    }

    #[test]
    fn join_by_identity_needs_an_account_and_takes_tags_and_certificates() {
        assert!(parse(&[]).join_policy().expect("valid").is_none(), "off by default");
        let policy = parse(&["--join-account", "123456789012,210987654321", "--join-tag", "fleet=mirror"])
            .join_policy()
            .expect("valid")
            .expect("on");
        assert_eq!(policy.accounts.len(), 2);
        assert_eq!(policy.tags.iter().map(ToString::to_string).collect::<Vec<_>>(), ["fleet=mirror"]);
        assert_eq!(policy.signers.len(), 39, "AWS's built-in certificates");
        for bad in [&["--join-account", "12345"][..], &["--join-account", "12345678901x"], &["--join-tag", "=x"]] {
            let args = [&["fleet-controller", "--database-url", "x"][..], bad].concat();
            assert!(Config::try_parse_from(args).is_err(), "{bad:?}");
        }
        let err = parse(&["--join-tag", "fleet=mirror"]).check().expect_err("tags without accounts");
        assert!(err.contains("--join-account"), "{err}");
        let err = parse(&["--join-account", "123456789012", "--iid-certs", "/nonexistent.pem"])
            .check()
            .expect_err("unreadable certificates");
        assert!(err.contains("--iid-certs") && err.contains("/nonexistent.pem"), "{err}");
    }

    #[test]
    fn default_sans_include_the_listen_address() {
        assert_eq!(parse(&["--listen", "10.0.0.1:7300"]).sans(), ["localhost", "127.0.0.1", "::1", "10.0.0.1"]);
        assert_eq!(parse(&["--tls-san", "ctl.example,10.0.0.9"]).sans(), ["ctl.example", "10.0.0.9"]);
        assert!(matches!(parse(&["ca", "pin"]).command, Some(Command::Ca { what: CaCommand::Pin })));
        let late = Config::try_parse_from(["fleet-controller", "ca", "print", "--database-url", "postgres://y"]);
        assert_eq!(late.expect("parse").database_url, "postgres://y");
        let missing = Config::try_parse_from(["fleet-controller"]).expect("parse");
        assert!(missing.check().expect_err("refused").contains("--database-url"));
    }
}
