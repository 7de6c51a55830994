//! PreflightSession: what CreateSession would do with a request, per source, found with
//! create's own checks and compiler; what create would refuse is reported, not returned,
//! and nothing is written.

use std::collections::{BTreeMap, BTreeSet};

use teefleet_model::{CollectorId, Encap, HostId, InstanceId, SessionSpec, compile};
use teefleet_proto::v1 as pb;
use tracing::debug;

use super::{Api, ApiError, admin::compile_input, convert};
use crate::{
    cloud::{CloudError, InstanceInfo},
    preflight::{self, Agent, CollectorFacts, Problem, SourceFacts},
    selectors::describe_tags,
    store::{CollectorRecord, PreflightRead},
};

impl Api {
    pub(super) async fn preflight_session(
        &self,
        req: &pb::CreateSessionRequest,
    ) -> Result<pb::SessionPreflight, ApiError> {
        let spec = SessionSpec::try_from(req)?;
        teefleet_proto::session_ttl(req.ttl_seconds)?;
        let collector = self.store.collector(spec.collector()).await?;
        let raw = collector.encap == Encap::None;
        let mut problems = Vec::new();
        refusal(Self::check_source_checks(&spec, raw, &collector), &mut problems)?;
        Self::check_peers_and_rules(&spec, &collector)?;
        let tagged = self.preflight_tags(&spec, &collector, &mut problems).await?;

        let mut hosts: Vec<HostId> = spec.sources().iter().chain(tagged.keys()).cloned().collect();
        let collector_host = collector.instance_id.as_str().parse::<HostId>().ok();
        hosts.extend(collector_host.clone());
        let read = self.store.preflight_read(spec.name(), spec.vni(), &hosts).await?;
        problems.extend(store_problems(&spec, &read));
        let agent = |host: &HostId| match read.agents.get(host) {
            Some(true) => Agent::Connected,
            Some(false) => Agent::Disconnected,
            None => Agent::None,
        };

        let collectors: BTreeSet<CollectorId> =
            self.store.list_collectors().await?.into_iter().map(|c| c.instance_id).collect();
        let mut described = self.describe(spec.sources()).await;
        let mut sources = Vec::with_capacity(hosts.len());
        for host in spec.sources() {
            let (instance, ec2_error) = described.remove(host).unwrap_or_default();
            let is_collector = host.as_str().parse::<CollectorId>().is_ok_and(|id| collectors.contains(&id));
            sources.push(SourceFacts {
                host: host.clone(),
                from_tags: false,
                agent: agent(host),
                instance,
                ec2_error,
                is_collector,
            });
        }
        for (host, instance) in tagged.iter().filter(|(h, _)| spec.sources().binary_search(h).is_err()) {
            let instance = Some(crate::cloud::InstanceInfo {
                private_ip: None,
                ipv6: None,
                subnet_id: instance.clone(),
                source_dest_check: None,
            });
            sources.push(SourceFacts {
                host: host.clone(),
                from_tags: true,
                agent: agent(host),
                instance,
                ec2_error: None,
                is_collector: false,
            });
        }

        let mut input = compile_input(&spec, &collector, sources.iter().map(|s| s.host.clone()).collect())?;
        if !raw {
            input.vni = read.vni.or(input.vni);
        }
        let rules = compile(&[input]).map_err(|e| teefleet_model::ValidationError::new("filter", e.to_string()))?;
        let facts = collector_facts(&collector, collector_host.as_ref().map_or(Agent::None, agent));
        let plan = preflight::plan(&spec, &facts, &sources, &rules, read.vni, problems);
        debug!(session = %spec.name(), sources = plan.sources.len(), problems = plan.problems.len(), "preflight");
        Ok(convert::pb_preflight(&spec, &collector, &facts, &plan))
    }

    /// The instances the session's tags match, each with its subnet; what create would
    /// refuse or skip among them goes into `problems`.
    async fn preflight_tags(
        &self,
        spec: &SessionSpec,
        collector: &CollectorRecord,
        problems: &mut Vec<Problem>,
    ) -> Result<BTreeMap<HostId, Option<String>>, ApiError> {
        if spec.selectors().is_empty() {
            return Ok(BTreeMap::new());
        }
        let (resolution, limit, found) = match self.match_tags(spec, collector).await {
            Ok(matched) => matched,
            Err(ApiError::Cloud(e @ CloudError::Unavailable(_))) => {
                problems.push(Problem::session(e.to_string(), true));
                return Ok(BTreeMap::new());
            }
            Err(e) => return Err(e),
        };
        let sources = match Self::tag_sources(spec, collector, resolution.clone(), limit) {
            Ok((sources, skipped)) => {
                problems.extend(skipped.map(|p| Problem::session(p, false)));
                sources
            }
            Err(e) => {
                refusal(Err(e), problems)?;
                resolution.sources
            }
        };
        if sources.is_empty() {
            let tags = describe_tags(spec.selectors());
            problems.push(Problem::session(format!("no running instance carries {tags} now"), false));
        }
        let subnets: BTreeMap<HostId, Option<String>> =
            found.into_iter().filter_map(|t| Some((t.id.as_str().parse::<HostId>().ok()?, t.subnet_id))).collect();
        Ok(sources.into_iter().map(|h| (h.clone(), subnets.get(&h).cloned().flatten())).collect())
    }

    /// What EC2 says of each named source, or why it could not say, asked in one batch.
    /// A source that is not an instance id, or that EC2 does not know, is absent.
    async fn describe(&self, hosts: &[HostId]) -> BTreeMap<HostId, (Option<InstanceInfo>, Option<String>)> {
        let instances: Vec<(HostId, InstanceId)> =
            hosts.iter().filter_map(|h| Some((h.clone(), h.as_str().parse().ok()?))).collect();
        if instances.is_empty() {
            return BTreeMap::new();
        }
        let ids: Vec<InstanceId> = instances.iter().map(|(_, i)| i.clone()).collect();
        match self.cloud.describe_instances(&ids).await {
            Ok(mut found) => {
                instances.into_iter().filter_map(|(h, i)| Some((h, (Some(found.remove(&i)?), None)))).collect()
            }
            Err(e) => {
                let why = e.to_string();
                instances.into_iter().map(|(h, _)| (h, (None, Some(why.clone())))).collect()
            }
        }
    }
}

/// A check create makes: a FAILED_PRECONDITION it would answer becomes a problem that
/// refuses the session; anything else is the preflight's own answer.
fn refusal(checked: Result<(), ApiError>, problems: &mut Vec<Problem>) -> Result<(), ApiError> {
    match checked {
        Ok(()) => Ok(()),
        Err(ApiError::FailedPrecondition(m)) => {
            problems.push(Problem::session(m, true));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// What the store says would refuse the session: its name or VNI taken.
fn store_problems(spec: &SessionSpec, read: &PreflightRead) -> Vec<Problem> {
    let mut problems = Vec::new();
    if read.name_taken {
        problems.push(Problem::session(format!("session {} already exists", spec.name()), true));
    }
    match (read.vni, spec.vni()) {
        (Some(_), _) => {}
        (None, Some(asked)) => {
            problems.push(Problem::session(format!("VNI {asked} is taken by another session"), true))
        }
        (None, None) => problems.push(Problem::session("every VXLAN VNI (1 to 16777215) is taken", true)),
    }
    problems
}

fn collector_facts(collector: &CollectorRecord, agent: Agent) -> CollectorFacts {
    CollectorFacts {
        id: collector.instance_id.to_string(),
        encap: collector.encap,
        subnet_id: collector.subnet_id.clone(),
        agent,
        source_dest_check: collector.instance_id.instance().map(|_| collector.source_dest_check),
    }
}
