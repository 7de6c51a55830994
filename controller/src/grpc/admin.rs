//! Admin services: sessions, collectors, hosts.

use std::net::IpAddr;

use teefleet_model::{
    CollectorId, CompileInput, Direction, Encap, HostId, InstanceId, SessionName, SessionSpec, ValidationError, Vni,
    check_collector_ipv6, compile, limits,
};
use teefleet_proto::field;
use teefleet_proto::v1::{
    self as pb, collector_service_server::CollectorService, host_service_server::HostService,
    session_service_server::SessionService,
};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::{Api, ApiError, convert};
use crate::{
    auth::Role,
    cloud::{CloudError, TaggedInstance},
    selectors::{self, Resolution, describe_off_link, describe_tags},
    store::{AuditEntry, CollectorRecord, NewCollector, SessionRecord},
};

type Reply<T> = Result<Response<T>, Status>;

/// What the compiler needs of `spec` over `sources`. Any VNI compiles alike, so a session
/// without one yet compiles with the lowest; the store allocates the real one.
pub(super) fn compile_input(
    spec: &SessionSpec,
    collector: &CollectorRecord,
    sources: Vec<HostId>,
) -> Result<CompileInput, ApiError> {
    let raw = collector.encap == Encap::None;
    Ok(CompileInput {
        vni: (!raw).then_some(spec.vni().unwrap_or(Vni::new(Vni::MIN)?)),
        name: spec.name().clone(),
        collector: spec.collector().into(),
        sources,
        collector_ips: collector.ips(),
        filter: spec.filter().clone(),
    })
}

impl Api {
    /// Checks that every source is a known host: one whose agent has said Hello, or an
    /// EC2 instance (whose agent may not be installed yet). Returns the latter. The store
    /// and EC2 are each asked once, about all the sources at a time; the first source
    /// neither knows is named, as it was when each was asked in turn.
    pub(super) async fn resolve_sources(&self, sources: &[HostId]) -> Result<Vec<HostId>, ApiError> {
        let known = self.store.known_hosts(sources).await?;
        let unknown: Vec<&HostId> = sources.iter().filter(|h| !known.contains(*h)).collect();
        // EC2 is not asked about what comes after a source that cannot be an instance:
        // that one is refused whatever EC2 says.
        let askable: Vec<InstanceId> = unknown.iter().map_while(|h| h.as_str().parse::<InstanceId>().ok()).collect();
        let in_ec2 =
            if askable.is_empty() { Default::default() } else { self.cloud.describe_instances(&askable).await? };
        let mut found = Vec::with_capacity(unknown.len());
        for host in unknown {
            match host.as_str().parse::<InstanceId>() {
                Ok(instance) if in_ec2.contains_key(&instance) => found.push(host.clone()),
                _ => {
                    return Err(ApiError::NotFound(format!(
                        "host {host} is unknown: no agent has connected with that id and EC2 has no such instance"
                    )));
                }
            }
        }
        Ok(found)
    }

    /// A raw session that mirrors inbound traffic needs its sources' checks off, which only
    /// the operator may ask for; a VXLAN session needs no check changed anywhere.
    pub(super) fn check_source_checks(
        spec: &SessionSpec,
        raw: bool,
        collector: &CollectorRecord,
    ) -> Result<(), ApiError> {
        let inbound = spec.filter().direction() != Direction::Egress;
        if !raw && spec.disable_source_check() {
            return Err(ApiError::FailedPrecondition(format!(
                "collector {} takes VXLAN, whose clones leave the sources from their own address: no Source/Dest Check \
             needs to change; drop --disable-source-check",
                collector.instance_id
            )));
        }
        if raw && inbound && !spec.disable_source_check() {
            return Err(ApiError::FailedPrecondition(format!(
                "collector {} takes raw clones (--encap none), and a clone of an inbound packet carries the peer's \
             address, which EC2 drops as the source sends it while the source's Source/Dest Check is on. Mirror \
             to a VXLAN collector (collector add --encap vxlan), pass --disable-source-check to have teefleet turn \
             the sources' checks off (and restore them after), or mirror --direction egress only",
                collector.instance_id
            )));
        }
        Ok(())
    }

    /// Refuses sources EC2 places in another subnet than the collector: TEE's gateway must
    /// be on-link, and a clone sent to an off-link gateway is silently dropped. Hosts EC2
    /// does not know (agents off EC2), a collector without a known subnet, and sources EC2
    /// cannot describe right now are not checked.
    pub(super) async fn check_on_link(&self, sources: &[HostId], collector: &CollectorRecord) -> Result<(), ApiError> {
        if collector.subnet_id.is_empty() {
            return Ok(());
        }
        let instances: Vec<InstanceId> = sources.iter().filter_map(|h| h.as_str().parse().ok()).collect();
        if instances.is_empty() {
            return Ok(());
        }
        let described = match self.cloud.describe_instances(&instances).await {
            Ok(described) => described,
            // EC2 trouble does not refuse a session (its status shows the trouble); the
            // check is a guard against a mistake, not a security boundary.
            Err(CloudError::Unavailable(m)) => {
                warn!(sources = instances.len(), error = %m, "cannot check the sources' subnets; accepting them");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        // In the sources' order, so the first one off the link is named.
        for (host, info) in instances.iter().filter_map(|i| Some((i, described.get(i)?))) {
            if let Some(subnet) = info.subnet_id.as_ref().filter(|s| **s != collector.subnet_id) {
                return Err(ApiError::FailedPrecondition(format!(
                    "source {host} is in subnet {subnet} but collector {} is in {}: raw TEE (--encap none) can only \
                     send clones to a gateway on the source's own link, so they would be dropped. Register the \
                     collector with --encap vxlan (the default), use a collector in {subnet}, or pass \
                     --allow-routed if the collector is reachable on-link anyway",
                    collector.instance_id, collector.subnet_id
                )));
            }
        }
        Ok(())
    }

    /// The instances the session's tags match now, checked as named sources are. A session
    /// with tags is refused when EC2 cannot be asked: created without its tag sources, it
    /// would look like a session whose tags match nothing.
    pub(super) async fn resolve_tags(
        &self,
        spec: &SessionSpec,
        collector: &CollectorRecord,
    ) -> Result<(Vec<HostId>, Option<String>), ApiError> {
        if spec.selectors().is_empty() {
            return Ok((Vec::new(), None));
        }
        let (resolution, limit, _) = self.match_tags(spec, collector).await?;
        Self::tag_sources(spec, collector, resolution, limit)
    }

    /// What the session's tags match now, planned as for the session (its collector and
    /// other collectors skipped, sources off the collector's link apart), and how many of
    /// them it may use.
    pub(super) async fn match_tags(
        &self,
        spec: &SessionSpec,
        collector: &CollectorRecord,
    ) -> Result<(Resolution, usize, Vec<TaggedInstance>), ApiError> {
        let tags = describe_tags(spec.selectors());
        let limit = limits::MAX_SESSION_HOSTS.saturating_sub(spec.sources().len());
        // One more than may be used, and one for the collector, tells "too many" from "just
        // enough".
        let found = self.cloud.instances_with_tags(spec.selectors(), limit + 2).await.map_err(|e| match e {
            CloudError::Unavailable(m) => ApiError::Cloud(CloudError::Unavailable(format!(
                "{m}; cannot find the instances carrying {tags}, so the session was not created or changed; retry"
            ))),
            other => ApiError::Cloud(other),
        })?;
        let collectors: Vec<InstanceId> =
            self.store.list_collectors().await?.into_iter().filter_map(|c| c.instance_id.instance()).collect();
        let routed_ok = spec.allow_routed() || collector.encap == Encap::Vxlan;
        let resolution =
            selectors::plan(found.clone(), &collector.instance_id, &collector.subnet_id, routed_ok, &collectors);
        Ok((resolution, limit, found))
    }

    /// The resolution's sources, refusing what create refuses.
    pub(super) fn tag_sources(
        spec: &SessionSpec,
        collector: &CollectorRecord,
        resolution: Resolution,
        limit: usize,
    ) -> Result<(Vec<HostId>, Option<String>), ApiError> {
        let tags = describe_tags(spec.selectors());
        if !resolution.off_link.is_empty() {
            return Err(ApiError::FailedPrecondition(format!(
                "{} carry {tags} but are in another subnet than collector {} ({}): raw TEE (--encap none) can only \
                 send clones to a gateway on the source's own link, so they would be dropped. Register the \
                 collector with --encap vxlan (the default), use a collector in their subnet, narrow the tags, or \
                 pass --allow-routed if the collector is reachable on-link anyway",
                describe_off_link(&resolution.off_link),
                collector.instance_id,
                collector.subnet_id
            )));
        }
        if resolution.sources.len() > limit {
            return Err(ApiError::FailedPrecondition(format!(
                "more than {limit} instances carry {tags}, but a session covers at most {} hosts, named ones \
                 included; narrow the tags",
                limits::MAX_SESSION_HOSTS
            )));
        }
        let problem = selectors::skipped_problem(&resolution, &tags, &collector.instance_id, &collector.subnet_id);
        Ok((resolution.sources, problem))
    }

    /// What a session needs of its collector, checked before anything is stored: the
    /// Source/Dest Checks it may change, an IPv6 address for IPv6 peers, and rules that
    /// compile.
    pub(super) fn check_against_collector(spec: &SessionSpec, collector: &CollectorRecord) -> Result<(), ApiError> {
        Self::check_source_checks(spec, collector.encap == Encap::None, collector)?;
        Self::check_peers_and_rules(spec, collector)
    }

    /// A collector with an IPv6 address for IPv6 peers, and rules that compile.
    pub(super) fn check_peers_and_rules(spec: &SessionSpec, collector: &CollectorRecord) -> Result<(), ApiError> {
        let raw = collector.encap == Encap::None;
        if let Some(orphan) = spec.filter().cidrs().iter().find(|c| raw && !c.is_ipv4() && collector.ipv6.is_none()) {
            return Err(ValidationError::new(
                "filter.cidrs",
                format!(
                    "{orphan} is IPv6 but collector {} has no IPv6 address and takes raw clones (--encap none); \
                     register the collector with one (collector add --ipv6), use a VXLAN collector, or mirror \
                     IPv4 peers only",
                    collector.instance_id
                ),
            )
            .into());
        }
        if let Some(orphan) = spec.filter().cidrs().iter().find(|c| !c.is_ipv4() && collector.ipv6.is_none()) {
            return Err(ValidationError::new(
                "filter.cidrs",
                format!(
                    "{orphan} is IPv6 but collector {} has no IPv6 address; register the collector with one \
                     (collector add --ipv6) or mirror IPv4 peers only",
                    collector.instance_id
                ),
            )
            .into());
        }
        // Compile the session alone first, so any other rule it cannot produce is refused
        // before anything is stored.
        compile(&[compile_input(spec, collector, spec.sources().to_vec())?])
            .map_err(|e| ValidationError::new("filter", e.to_string()))?;
        Ok(())
    }

    async fn create_session(&self, req: pb::CreateSessionRequest, audit: &AuditEntry) -> Result<pb::Session, ApiError> {
        let spec = SessionSpec::try_from(&req)?;
        let ttl = teefleet_proto::session_ttl(req.ttl_seconds)?;

        let collector = self.store.collector(spec.collector()).await?;
        let raw = collector.encap == Encap::None;
        Self::check_against_collector(&spec, &collector)?;
        let found_in_ec2 = self.resolve_sources(spec.sources()).await?;
        // VXLAN reaches a collector in any subnet the sources can route to.
        if raw && !spec.allow_routed() {
            self.check_on_link(spec.sources(), &collector).await?;
        }
        let (matched, problem) = self.resolve_tags(&spec, &collector).await?;

        let changed =
            self.store.create_session_matched(&spec, &found_in_ec2, &matched, problem.as_deref(), ttl, audit).await?;
        info!(
            session = %spec.name(), collector = %spec.collector(), tags = %describe_tags(spec.selectors()),
            matched = matched.len(), hosts = changed.len(), "session created"
        );
        self.session_reply(spec.name()).await
    }

    pub(super) async fn session_reply(&self, name: &teefleet_model::SessionName) -> Result<pb::Session, ApiError> {
        let record = self.store.session(name).await?;
        let mut replies = self.session_replies(std::slice::from_ref(&record)).await?;
        replies
            .pop()
            .ok_or_else(|| ApiError::from(crate::store::StoreError::NotFound { what: "session", id: name.to_string() }))
    }

    /// Sessions with their status and delivery.
    async fn session_replies(&self, records: &[SessionRecord]) -> Result<Vec<pb::Session>, ApiError> {
        let views = crate::sessions::views(&self.store, records, self.delivery).await?;
        Ok(records.iter().zip(&views).map(|(r, view)| convert::pb_session(r, view, self.delivery)).collect())
    }

    async fn add_collector(&self, req: pb::AddCollectorRequest, audit: &AuditEntry) -> Result<pb::Collector, ApiError> {
        let ip_override = teefleet_proto::collector_ip(&req.ip)?;
        let ipv6_override = teefleet_proto::collector_ipv6(&req.ipv6)?;
        let encap = teefleet_proto::encap(&req.encap)?;
        if !req.name.is_empty() {
            return self.add_named_collector(&req, ip_override, ipv6_override, encap, audit).await;
        }
        let id = field::<InstanceId>("instance_id", &req.instance_id)?;
        let instance = self.cloud.describe_instance(&id).await?;
        let ip = match (ip_override, instance.private_ip) {
            (Some(ip), _) => IpAddr::V4(ip),
            (None, Some(ip)) if ip.is_ipv4() => ip,
            _ => {
                return Err(ApiError::FailedPrecondition(format!(
                    "instance {id} has no private IPv4 address; give the collector's address with --ip"
                )));
            }
        };
        // An address EC2 reports that could not be a gateway is left out rather than
        // refusing the collector: it still works for IPv4.
        let ipv6 = ipv6_override.or_else(|| {
            instance.ipv6.filter(|&v6| match check_collector_ipv6(v6) {
                Ok(()) => true,
                Err(why) => {
                    warn!(collector = %id, error = %why, "ignoring the instance's IPv6 address");
                    false
                }
            })
        });
        let record = self
            .store
            .add_collector(
                &NewCollector {
                    instance_id: id.clone().into(),
                    ip,
                    ipv6,
                    subnet_id: instance.subnet_id.unwrap_or_default(),
                    // EC2 reports the check on for every instance unless someone turned it off.
                    source_dest_check: instance.source_dest_check.unwrap_or(true),
                    encap,
                },
                audit,
            )
            .await?;
        info!(collector = %id, %ip, ipv6 = ?ipv6, %encap, "collector registered");
        Ok(convert::pb_collector(&record))
    }

    /// A collector that is not an EC2 instance (a load balancer's address, an appliance):
    /// named by the operator, reached at `ip`, VXLAN only, since nothing of it can be
    /// changed in EC2 and raw clones need its Source/Dest Check off.
    async fn add_named_collector(
        &self,
        req: &pb::AddCollectorRequest,
        ip: Option<std::net::Ipv4Addr>,
        ipv6: Option<std::net::Ipv6Addr>,
        encap: Encap,
        audit: &AuditEntry,
    ) -> Result<pb::Collector, ApiError> {
        let id = field::<CollectorId>("name", &req.name)?;
        if !req.instance_id.is_empty() {
            return Err(ValidationError::new("name", "give an instance id or a name, not both").into());
        }
        if id.instance().is_some() {
            return Err(
                ValidationError::new("name", format!("{id} is an instance id; register it without --name")).into()
            );
        }
        if encap != Encap::Vxlan {
            return Err(ValidationError::new(
                "encap",
                "a collector that is not an EC2 instance takes VXLAN only: raw clones need its Source/Dest Check off",
            )
            .into());
        }
        let ip = ip.map(IpAddr::V4).or(ipv6.map(IpAddr::V6)).ok_or_else(|| {
            ValidationError::new(
                "ip",
                format!("collector {id} is not an EC2 instance, so its address is needed (--ip)"),
            )
        })?;
        let new = NewCollector {
            instance_id: id.clone(),
            ip,
            ipv6,
            subnet_id: String::new(),
            source_dest_check: true,
            encap,
        };
        let record = self.store.add_collector(&new, audit).await?;
        info!(collector = %id, %ip, "collector registered by name");
        Ok(convert::pb_collector(&record))
    }

    async fn get_host(&self, req: &pb::GetHostRequest) -> Result<pb::Host, ApiError> {
        let id = field::<HostId>("host_id", &req.host_id)?;
        let record = self.store.host(&id).await?;
        let events = self.store.host_events(&id).await?;
        Ok(pb::Host { events: events.iter().map(pb::HostEvent::from).collect(), ..convert::pb_host(&record) })
    }

    async fn remove_collector(&self, req: pb::RemoveCollectorRequest, audit: &AuditEntry) -> Result<(), ApiError> {
        let id = field::<CollectorId>("instance_id", &req.instance_id)?;
        let record = self.store.collector(&id).await?;
        if record.session_count > 0 {
            // Let the store produce the message naming the sessions.
            self.store.delete_collector(&id, audit).await?;
        }
        // Put Source/Dest Check back before forgetting the collector: afterwards nothing
        // would remember that teefleet changed it.
        let original = crate::store::SdcState::from(record.original_source_dest_check);
        if let Some(instance) = id.instance().filter(|_| record.source_dest_check != original) {
            self.cloud.set_source_dest_check(&instance, record.original_source_dest_check).await.map_err(|e| {
                ApiError::Cloud(match e {
                    CloudError::Unavailable(m) => CloudError::Unavailable(format!(
                        "{m}; the collector is kept until its Source/Dest Check is restored, retry"
                    )),
                    other => other,
                })
            })?;
        }
        self.store.delete_collector(&id, audit).await?;
        info!(collector = %id, "collector removed");
        Ok(())
    }
}

#[tonic::async_trait]
impl SessionService for Api {
    async fn create_session(&self, req: Request<pb::CreateSessionRequest>) -> Reply<pb::Session> {
        let caller = self.authorize(&req, Role::Operator, "session.create").await?;
        let req = req.into_inner();
        let entry = caller.audit("session.create", &req.name);
        Ok(Response::new(self.audited(&entry, Api::create_session(self, req, &entry)).await?))
    }

    async fn get_session(&self, req: Request<pb::GetSessionRequest>) -> Reply<pb::Session> {
        self.authorize(&req, Role::Viewer, "session.get").await?;
        let name = field::<SessionName>("name", &req.get_ref().name).map_err(ApiError::from)?;
        Ok(Response::new(self.session_reply(&name).await?))
    }

    async fn list_sessions(&self, req: Request<pb::ListSessionsRequest>) -> Reply<pb::ListSessionsResponse> {
        self.authorize(&req, Role::Viewer, "session.list").await?;
        let records = self.store.list_sessions().await.map_err(ApiError::from)?;
        let sessions = self.session_replies(&records).await?;
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn delete_session(&self, req: Request<pb::DeleteSessionRequest>) -> Reply<pb::DeleteSessionResponse> {
        let caller = self.authorize(&req, Role::Operator, "session.delete").await?;
        let name = field::<SessionName>("name", &req.get_ref().name).map_err(ApiError::from)?;
        let entry = caller.audit("session.delete", name.as_str());
        let changed = self.audited(&entry, async { Ok(self.store.delete_session(&name, &entry).await?) }).await?;
        info!(session = %name, hosts = changed.len(), by = %entry.actor(), "session deleted");
        Ok(Response::new(pb::DeleteSessionResponse {}))
    }

    async fn update_session(&self, req: Request<pb::UpdateSessionRequest>) -> Reply<pb::UpdateSessionResponse> {
        let caller = self.authorize(&req, Role::Operator, "session.update").await?;
        let req = req.into_inner();
        let entry = caller.audit("session.update", &req.name);
        Ok(Response::new(self.audited(&entry, Api::update_session(self, &req, &entry)).await?))
    }

    /// Needs the role that may create the session: it describes instances in EC2 and
    /// says which hosts have agents.
    async fn preflight_session(&self, req: Request<pb::CreateSessionRequest>) -> Reply<pb::SessionPreflight> {
        self.authorize(&req, Role::Operator, "session.preflight").await?;
        Ok(Response::new(Api::preflight_session(self, req.get_ref()).await?))
    }
}

#[tonic::async_trait]
impl CollectorService for Api {
    async fn add_collector(&self, req: Request<pb::AddCollectorRequest>) -> Reply<pb::Collector> {
        let caller = self.authorize(&req, Role::Admin, "collector.add").await?;
        let req = req.into_inner();
        let entry = caller.audit("collector.add", &req.instance_id);
        Ok(Response::new(self.audited(&entry, Api::add_collector(self, req, &entry)).await?))
    }

    async fn list_collectors(&self, req: Request<pb::ListCollectorsRequest>) -> Reply<pb::ListCollectorsResponse> {
        self.authorize(&req, Role::Viewer, "collector.list").await?;
        let records = self.store.list_collectors().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListCollectorsResponse {
            collectors: records.iter().map(convert::pb_collector).collect(),
        }))
    }

    async fn remove_collector(&self, req: Request<pb::RemoveCollectorRequest>) -> Reply<pb::RemoveCollectorResponse> {
        let caller = self.authorize(&req, Role::Admin, "collector.remove").await?;
        let req = req.into_inner();
        let entry = caller.audit("collector.remove", &req.instance_id);
        self.audited(&entry, Api::remove_collector(self, req, &entry)).await?;
        Ok(Response::new(pb::RemoveCollectorResponse {}))
    }
}

#[tonic::async_trait]
impl HostService for Api {
    async fn list_hosts(&self, req: Request<pb::ListHostsRequest>) -> Reply<pb::ListHostsResponse> {
        self.authorize(&req, Role::Viewer, "host.list").await?;
        let records = self.store.list_hosts().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListHostsResponse { hosts: records.iter().map(convert::pb_host).collect() }))
    }

    async fn get_host(&self, req: Request<pb::GetHostRequest>) -> Reply<pb::Host> {
        self.authorize(&req, Role::Viewer, "host.get").await?;
        Ok(Response::new(Api::get_host(self, req.get_ref()).await?))
    }

    async fn revoke_host(&self, req: Request<pb::RevokeHostRequest>) -> Reply<pb::RevokeHostResponse> {
        Ok(Response::new(Api::revoke_host(self, req).await?))
    }
}
