//! Preflight: what creating a session would do on each source, and what stands in its
//! way, without doing it. `plan` is pure: the gRPC handler gathers the facts (the store's,
//! EC2's) and the refusals create's own checks return, and the rules come from the same
//! compiler.

use std::{collections::BTreeMap, net::IpAddr};

use teefleet_model::{Encap, HostId, MirrorRule, SessionSpec, Vni};

use crate::{cloud::InstanceInfo, store::SdcState};

/// A host's agent as the controller knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    Connected,
    /// It has said Hello before, but has no live stream now.
    Disconnected,
    /// No agent has ever said Hello with this host id.
    None,
}

impl Agent {
    pub fn as_str(self) -> &'static str {
        match self {
            Agent::Connected => "connected",
            Agent::Disconnected => "disconnected",
            Agent::None => "none",
        }
    }
}

/// What is known of one source.
#[derive(Debug, Clone)]
pub struct SourceFacts {
    pub host: HostId,
    pub from_tags: bool,
    pub agent: Agent,
    /// What EC2 says of it; `None` when it is no instance EC2 knows, or EC2 could not say.
    pub instance: Option<InstanceInfo>,
    /// Why EC2 could not be asked about it.
    pub ec2_error: Option<String>,
    /// It is a registered collector.
    pub is_collector: bool,
}

/// What is known of the session's collector.
#[derive(Debug, Clone)]
pub struct CollectorFacts {
    pub id: String,
    pub encap: Encap,
    pub subnet_id: String,
    pub agent: Agent,
    /// Its check as teefleet last saw it; `None` for a collector that is no instance.
    pub source_dest_check: Option<SdcState>,
}

/// One problem, of a host or of the whole session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub host: Option<String>,
    pub message: String,
    /// Create would refuse the session for it.
    pub refuses: bool,
}

impl Problem {
    pub fn session(message: impl Into<String>, refuses: bool) -> Self {
        Self { host: None, message: message.into(), refuses }
    }

    fn host(host: &HostId, message: impl Into<String>, refuses: bool) -> Self {
        Self { host: Some(host.to_string()), message: message.into(), refuses }
    }
}

/// A change of a Source/Dest Check: from what it is to what the session needs.
pub type CheckChange = (SdcState, SdcState);

/// What the session would do on one source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcePlan {
    pub host: HostId,
    pub from_tags: bool,
    pub subnet_id: Option<String>,
    pub agent: Agent,
    pub encap: Encap,
    /// Raw: the TEE gateways (the collector's addresses); VXLAN: the tunnel's remote.
    pub gateways: Vec<IpAddr>,
    pub check: Option<CheckChange>,
    pub rules: usize,
}

/// What creating the session would do.
#[derive(Debug, Clone, PartialEq)]
pub struct Preflight {
    pub vni: Option<Vni>,
    pub collector_check: Option<CheckChange>,
    pub sources: Vec<SourcePlan>,
    pub problems: Vec<Problem>,
}

impl Preflight {
    /// Create would make the session: nothing refuses it.
    pub fn would_create(&self) -> bool {
        !self.problems.iter().any(|p| p.refuses)
    }
}

/// The plan for `spec` over `sources`, given the rules the compiler made for each host
/// and the problems found while gathering the facts.
pub fn plan(
    spec: &SessionSpec,
    collector: &CollectorFacts,
    sources: &[SourceFacts],
    rules: &BTreeMap<HostId, Vec<MirrorRule>>,
    vni: Option<Vni>,
    mut problems: Vec<Problem>,
) -> Preflight {
    let raw = collector.encap == Encap::None;
    let mut plans = Vec::with_capacity(sources.len());
    for source in sources {
        problems.extend(source_problems(spec, collector, source));
        let host_rules = rules.get(&source.host).map_or(&[][..], Vec::as_slice);
        let mut gateways: Vec<IpAddr> =
            host_rules.iter().filter_map(|r| r.gateway().or_else(|| r.tunnel().map(|t| t.remote()))).collect();
        gateways.sort();
        gateways.dedup();
        let check = (raw && spec.disable_source_check() && source.instance.is_some()).then(|| {
            let now =
                source.instance.as_ref().and_then(|i| i.source_dest_check).map_or(SdcState::Unknown, SdcState::from);
            (now, SdcState::Disabled)
        });
        plans.push(SourcePlan {
            host: source.host.clone(),
            from_tags: source.from_tags,
            subnet_id: source.instance.as_ref().and_then(|i| i.subnet_id.clone()),
            agent: source.agent,
            encap: collector.encap,
            gateways,
            check: check.filter(|(now, want)| now != want),
            rules: host_rules.len(),
        });
    }
    match collector.agent {
        Agent::Connected => {}
        Agent::Disconnected => problems.push(Problem::session(
            format!("collector {}'s agent is not connected: delivery will be unknown until it is", collector.id),
            false,
        )),
        Agent::None => problems.push(Problem::session(
            format!(
                "collector {} has no agent: delivery will be unknown, since nothing counts the clones that arrive",
                collector.id
            ),
            false,
        )),
    }
    if sources.is_empty() {
        problems.push(Problem::session("the session would have no source yet: it would mirror nothing", false));
    }
    let collector_check = collector
        .source_dest_check
        .filter(|now| raw && *now != SdcState::Disabled)
        .map(|now| (now, SdcState::Disabled));
    Preflight { vni, collector_check, sources: plans, problems }
}

fn source_problems(spec: &SessionSpec, collector: &CollectorFacts, source: &SourceFacts) -> Vec<Problem> {
    let host = &source.host;
    let mut problems = Vec::new();
    if source.is_collector {
        problems.push(Problem::host(
            host,
            "a registered collector, and a collector is never a source: it would mirror the clones it receives",
            true,
        ));
    }
    match (source.agent, &source.instance, &source.ec2_error) {
        (Agent::Connected, ..) => {}
        (Agent::Disconnected, ..) => problems.push(Problem::host(
            host,
            "its agent is not connected: it gets the rules when it reconnects, and mirrors nothing until then",
            false,
        )),
        (Agent::None, Some(_), _) => problems.push(Problem::host(
            host,
            "no agent has connected from it yet: it mirrors nothing until one does",
            false,
        )),
        (Agent::None, None, Some(e)) => problems.push(Problem::host(
            host,
            format!("no agent has connected from it, and EC2 could not be asked about it ({e})"),
            true,
        )),
        (Agent::None, None, None) => problems.push(Problem::host(
            host,
            "unknown: no agent has connected with that id and EC2 has no such instance",
            true,
        )),
    }
    let subnet = source.instance.as_ref().and_then(|i| i.subnet_id.as_deref());
    let off_link = subnet.filter(|s| !collector.subnet_id.is_empty() && *s != collector.subnet_id);
    if let Some(subnet) = off_link.filter(|_| collector.encap == Encap::None && !spec.allow_routed()) {
        problems.push(Problem::host(
            host,
            format!(
                "in subnet {subnet} but collector {} (encap none) is in {}: raw TEE sends clones to a gateway on \
                 the source's own link, so they would be dropped. Use a VXLAN collector, or --allow-routed if the \
                 collector is reachable on-link anyway",
                collector.id, collector.subnet_id
            ),
            !source.from_tags,
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use teefleet_model::{CompileInput, Filter, compile};

    use super::*;

    const COLLECTOR: &str = "i-0c0000000000000c1";

    fn host(id: &str) -> HostId {
        id.parse().expect("host")
    }

    fn spec(sources: &[&str], disable_source_check: bool) -> SessionSpec {
        SessionSpec::new(
            "web".parse().expect("name"),
            sources.iter().map(|s| host(s)).collect(),
            COLLECTOR.parse().expect("collector"),
            Filter::default(),
        )
        .expect("spec")
        .with_disable_source_check(disable_source_check)
    }

    fn collector(encap: Encap, agent: Agent) -> CollectorFacts {
        CollectorFacts {
            id: COLLECTOR.into(),
            encap,
            subnet_id: "subnet-1".into(),
            agent,
            source_dest_check: Some(SdcState::Enabled),
        }
    }

    fn source(id: &str, agent: Agent, subnet: Option<&str>) -> SourceFacts {
        SourceFacts {
            host: host(id),
            from_tags: false,
            agent,
            instance: subnet.map(|s| InstanceInfo {
                private_ip: None,
                ipv6: None,
                subnet_id: Some(s.into()),
                source_dest_check: Some(true),
            }),
            ec2_error: None,
            is_collector: false,
        }
    }

    fn rules(spec: &SessionSpec, vni: Option<Vni>) -> BTreeMap<HostId, Vec<MirrorRule>> {
        compile(&[CompileInput {
            name: spec.name().clone(),
            collector: spec.collector().into(),
            sources: spec.sources().to_vec(),
            collector_ips: vec!["10.0.0.9".parse().expect("ip")],
            filter: spec.filter().clone(),
            vni,
        }])
        .expect("compiles")
    }

    #[test]
    fn a_raw_session_turns_checks_off_and_names_every_problem() {
        let spec = spec(&["i-05000000000000001", "i-05000000000000002", "i-05000000000000003"], true);
        let sources = [
            source("i-05000000000000001", Agent::Connected, Some("subnet-1")),
            source("i-05000000000000002", Agent::Disconnected, Some("subnet-2")),
            SourceFacts { is_collector: true, ..source("i-05000000000000003", Agent::None, None) },
        ];
        let plan = plan(&spec, &collector(Encap::None, Agent::None), &sources, &rules(&spec, None), None, vec![]);
        let first = &plan.sources[0];
        assert_eq!(
            (first.rules, first.encap, first.check),
            (2, Encap::None, Some((SdcState::Enabled, SdcState::Disabled)))
        );
        assert_eq!(first.gateways, ["10.0.0.9".parse::<IpAddr>().expect("ip")]);
        assert_eq!(plan.sources[2].check, None, "a host EC2 does not know has no check");
        assert_eq!(plan.collector_check, Some((SdcState::Enabled, SdcState::Disabled)));
        let said: Vec<(Option<&str>, bool)> = plan.problems.iter().map(|p| (p.host.as_deref(), p.refuses)).collect();
        assert_eq!(
            said,
            [
                (Some("i-05000000000000002"), false),
                (Some("i-05000000000000002"), true),
                (Some("i-05000000000000003"), true),
                (Some("i-05000000000000003"), true),
                (None, false),
            ],
            "{:#?}",
            plan.problems
        );
        assert!(plan.problems[1].message.contains("subnet-2"), "{:?}", plan.problems[1]);
        assert!(plan.problems[4].message.contains("delivery will be unknown"), "{:?}", plan.problems[4]);
        assert!(!plan.would_create());
    }

    #[test]
    fn a_vxlan_session_changes_no_check() {
        let spec = spec(&["i-05000000000000001"], false);
        let vni = Vni::new(7).ok();
        let sources = [source("i-05000000000000001", Agent::Connected, Some("subnet-2"))];
        let plan = plan(&spec, &collector(Encap::Vxlan, Agent::Connected), &sources, &rules(&spec, vni), vni, vec![]);
        assert_eq!((plan.sources[0].rules, plan.sources[0].check, plan.collector_check), (4, None, None));
        assert!(plan.problems.is_empty(), "another subnet is fine with VXLAN: {:?}", plan.problems);
        assert!(plan.would_create());
    }
}
