//! How a lab is configured before it starts: which parts run, on which addresses, with
//! which flags, and how its parts authenticate to each other.

use std::path::PathBuf;

use crate::netns::Range;

/// How to build a [`Lab`].
#[derive(Debug, Clone)]
pub struct LabBuilder {
    pub(crate) range: Range,
    pub(crate) start_controller: bool,
    pub(crate) start_agents: bool,
    pub(crate) rust_log: String,
    pub(crate) controller_args: Vec<String>,
    pub(crate) agent_args: Vec<String>,
    pub(crate) ec2_ipv6: bool,
    pub(crate) secure: bool,
    pub(crate) replicas: usize,
    pub(crate) enforce_checks: bool,
    pub(crate) join_by_identity: bool,
}

/// The admin token of a secure lab's controller (FLEET_BOOTSTRAP_TOKEN).
pub const LAB_ADMIN_TOKEN: &str = "lab-bootstrap-admin-token-0123456789";

/// How the lab's controller, agents and fleetctl talk.
#[derive(Debug, Clone)]
pub(crate) enum Security {
    /// `--insecure` on all sides: plaintext, no authentication (the default, and the demo).
    Insecure,
    /// TLS with the controller's CA; fleetctl with the bootstrap admin token; agents enroll
    /// with one join token shared by the lab's agents.
    Secure { ca_cert: PathBuf, pin: String, join_token: String },
}

impl Default for LabBuilder {
    fn default() -> Self {
        LabBuilder {
            range: Range::Tests,
            start_controller: true,
            start_agents: true,
            rust_log: std::env::var("TEEFLEET_LAB_RUST_LOG")
                .unwrap_or_else(|_| "info,teefleet=debug,fleet=debug".to_owned()),
            controller_args: Vec::new(),
            agent_args: Vec::new(),
            ec2_ipv6: true,
            secure: false,
            replicas: 1,
            enforce_checks: true,
            join_by_identity: false,
        }
    }
}

impl LabBuilder {
    /// Which /16 to take the lab's /24 from (tests use 10.213, the demo 10.214).
    pub fn range(mut self, range: Range) -> Self {
        self.range = range;
        self
    }

    /// Whether to start `fleet-controller` (default yes).
    pub fn controller(mut self, yes: bool) -> Self {
        self.start_controller = yes;
        self
    }

    /// Whether to start a `fleet-agent` in each source and collector (default yes; needs the
    /// controller).
    pub fn agents(mut self, yes: bool) -> Self {
        self.start_agents = yes;
        self
    }

    /// `RUST_LOG` for the children (default `TEEFLEET_LAB_RUST_LOG` or info + debug for ours).
    pub fn rust_log(mut self, filter: impl Into<String>) -> Self {
        self.rust_log = filter.into();
        self
    }

    /// Extra arguments for `fleet-controller`.
    pub fn controller_arg(mut self, arg: impl Into<String>) -> Self {
        self.controller_args.push(arg.into());
        self
    }

    /// Extra arguments for every `fleet-agent`.
    pub fn agent_arg(mut self, arg: impl Into<String>) -> Self {
        self.agent_args.push(arg.into());
        self
    }

    /// Whether the EC2 instances carry the hosts' IPv6 addresses too (default yes). The
    /// namespaces are dual-stack either way; without it, EC2 describes IPv4-only instances,
    /// so the controller sees collectors without an IPv6 address.
    pub fn ec2_ipv6(mut self, yes: bool) -> Self {
        self.ec2_ipv6 = yes;
        self
    }

    /// Whether the controller serves TLS and authenticates (default no: `--insecure`).
    /// Agents then enroll with a join token and the CA's pin, and fleetctl uses the
    /// bootstrap admin token, [`LAB_ADMIN_TOKEN`].
    pub fn secure(mut self, yes: bool) -> Self {
        self.secure = yes;
        self
    }

    /// How many controller replicas to run on the lab's database (default 1). Agents get
    /// every replica's URL, the first one first.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n.max(1);
        self
    }

    /// Whether the bridges enforce every instance's Source/Dest Check as EC2 reports it
    /// (default yes; no forwards everything, which EC2 never does).
    pub fn enforce_source_dest_checks(mut self, yes: bool) -> Self {
        self.enforce_checks = yes;
        self
    }
}

/// The tag the lab gives every agent host's instance when agents join by instance
/// identity, and the controller asks for (`--join-tag`); the client's instance lacks it.
pub const JOIN_TAG: (&str, &str) = ("teefleet-lab", "agent");

impl LabBuilder {
    /// Whether agents enroll with their instance identity instead of a join token (needs
    /// `secure`): each host namespace gets an IMDS stand-in serving a document the lab
    /// signed, the controller trusts the lab's certificate (`--iid-certs`) and the lab's
    /// account (`--join-account`) and asks for [`JOIN_TAG`], which the agent hosts'
    /// instances carry.
    pub fn join_by_identity(mut self, yes: bool) -> Self {
        self.join_by_identity = yes;
        self
    }
}

/// fleetctl's connection flags for the lab's admin.
pub(crate) fn client_args(security: &Security) -> Vec<String> {
    match security {
        Security::Insecure => vec!["--insecure".to_owned()],
        Security::Secure { ca_cert, .. } => {
            vec![
                "--token".to_owned(),
                LAB_ADMIN_TOKEN.to_owned(),
                "--ca-cert".to_owned(),
                ca_cert.display().to_string(),
            ]
        }
    }
}

/// fleet-agent's connection flags.
pub(crate) fn agent_args(security: &Security, by_identity: bool) -> Vec<String> {
    match security {
        Security::Insecure => vec!["--insecure".to_owned()],
        Security::Secure { pin, .. } if by_identity => {
            vec!["--ca-pin".to_owned(), pin.clone(), "--join-method".to_owned(), "instance-identity".to_owned()]
        }
        Security::Secure { pin, join_token, .. } => {
            vec!["--ca-pin".to_owned(), pin.clone(), "--join-token".to_owned(), join_token.clone()]
        }
    }
}
