//! The EC2 edge: what teefleet asks of the cloud (describe an instance, set its
//! Source/Dest Check, find the instances carrying some tags), behind a trait so the
//! reconciler's and the resolver's logic does not depend on the SDK.

use std::{
    collections::BTreeMap,
    future::Future,
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, Instance, InstanceStateName};
use futures::future::BoxFuture;
use teefleet_model::{InstanceId, TagSelector, carries_all};
use tracing::warn;

pub use crate::ec2_errors::{CloudError, Target};
use crate::{ec2_errors::classify, metrics::Metrics};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub private_ip: Option<IpAddr>,
    /// The instance's first IPv6 address, if it has one.
    pub ipv6: Option<Ipv6Addr>,
    pub subnet_id: Option<String>,
    pub source_dest_check: Option<bool>,
}

/// An instance found by its tags, with what the controller checks before making it a
/// source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedInstance {
    pub id: InstanceId,
    pub subnet_id: Option<String>,
}

/// What enrollment by instance identity checks of an instance: that it is running, whose
/// it is, and its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// EC2's state name: `pending`, `running`, `stopping`, `stopped`, ...
    pub state: String,
    /// The account that owns the instance's reservation, when EC2 says.
    pub owner_id: Option<String>,
    pub tags: Vec<(String, String)>,
}

impl Standing {
    pub fn is_running(&self) -> bool {
        self.state == InstanceStateName::Running.as_str()
    }
}

pub trait Cloud: Send + Sync + 'static {
    fn describe_instance<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<InstanceInfo, CloudError>>;
    /// The instances of `ids` that EC2 knows, by id; one it does not know is absent, not
    /// an error. A session names up to a thousand sources, which one call per source
    /// would make a thousand round trips; this default does exactly that, for clouds that
    /// have nothing better.
    fn describe_instances<'a>(
        &'a self,
        ids: &'a [InstanceId],
    ) -> BoxFuture<'a, Result<BTreeMap<InstanceId, InstanceInfo>, CloudError>> {
        Box::pin(async move {
            let mut found = BTreeMap::new();
            for id in ids {
                match self.describe_instance(id).await {
                    Ok(info) => {
                        found.insert(id.clone(), info);
                    }
                    Err(CloudError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(found)
        })
    }
    fn set_source_dest_check<'a>(&'a self, id: &'a InstanceId, enabled: bool) -> BoxFuture<'a, Result<(), CloudError>>;
    /// The instance's state, owner and tags; `None` when EC2 does not know it.
    fn standing<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<Option<Standing>, CloudError>>;
    /// The running and pending instances that carry every tag of `tags` (none for no
    /// tags), sorted by id. It may stop listing once it has found more than `limit`, so a
    /// tag half the account carries is noticed without reading the whole account.
    fn instances_with_tags<'a>(
        &'a self,
        tags: &'a [TagSelector],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<TaggedInstance>, CloudError>>;
}

/// Any cloud with its calls counted in the metrics, by the EC2 action each method makes.
pub struct Metered {
    inner: Arc<dyn Cloud>,
    metrics: Arc<Metrics>,
}

impl Metered {
    pub fn new(inner: Arc<dyn Cloud>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn count<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, CloudError>>,
    ) -> Result<T, CloudError> {
        let result = call.await;
        self.metrics.ec2_call(operation, result.as_ref().err());
        result
    }
}

impl Cloud for Metered {
    fn describe_instance<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<InstanceInfo, CloudError>> {
        Box::pin(self.count("describe_instances", self.inner.describe_instance(id)))
    }

    fn describe_instances<'a>(
        &'a self,
        ids: &'a [InstanceId],
    ) -> BoxFuture<'a, Result<BTreeMap<InstanceId, InstanceInfo>, CloudError>> {
        // Counted as one call, though EC2 may be asked in a few batches.
        Box::pin(self.count("describe_instances", self.inner.describe_instances(ids)))
    }

    fn set_source_dest_check<'a>(&'a self, id: &'a InstanceId, enabled: bool) -> BoxFuture<'a, Result<(), CloudError>> {
        Box::pin(self.count("modify_instance_attribute", self.inner.set_source_dest_check(id, enabled)))
    }

    fn standing<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<Option<Standing>, CloudError>> {
        Box::pin(self.count("describe_instances", self.inner.standing(id)))
    }

    fn instances_with_tags<'a>(
        &'a self,
        tags: &'a [TagSelector],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<TaggedInstance>, CloudError>> {
        Box::pin(self.count("describe_instances", self.inner.instances_with_tags(tags, limit)))
    }
}

/// The most instances DescribeInstances returns per page, and the fewest it accepts asking for.
const MAX_PAGE: i32 = 1000;
const MIN_PAGE: i32 = 5;
/// Instance ids per `instance-id` filter: EC2 accepts at most 200 values in one filter.
const IDS_PER_CALL: usize = 200;

/// EC2 through aws-sdk-ec2, configured by the standard chain (environment, profile,
/// instance role; `AWS_ENDPOINT_URL` points it at another endpoint such as moto).
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
    page_size: i32,
    target: Target,
}

impl Ec2 {
    pub async fn from_env() -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(30))
            .build();
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts).load().await;
        let target = Target {
            endpoint: config.endpoint_url().map(str::to_owned),
            region: config.region().map(ToString::to_string),
        };
        if target.region.is_none() {
            warn!("no AWS region is configured (AWS_REGION or the profile's): every EC2 call will fail");
        }
        Self::from_client(aws_sdk_ec2::Client::new(&config)).with_target(target)
    }

    /// EC2 through a client configured by the caller, such as one pointed at moto.
    pub fn from_client(client: aws_sdk_ec2::Client) -> Self {
        let target = Target { endpoint: None, region: client.config().region().map(ToString::to_string) };
        Self { client, page_size: MAX_PAGE, target }
    }

    /// Names the endpoint in failures, which a client does not tell.
    pub fn with_target(self, target: Target) -> Self {
        Self { target, ..self }
    }

    /// Asks DescribeInstances for pages of `n` (5 to 1000) instead of the largest, so a
    /// test sees several pages with a handful of instances.
    pub fn with_page_size(self, n: i32) -> Self {
        Self { page_size: n.clamp(MIN_PAGE, MAX_PAGE), ..self }
    }
}

/// The instance's primary IPv6 address if EC2 names one, else the first IPv6 address of
/// its interfaces in device order (the primary interface first), so the choice does not
/// depend on the order EC2 lists them in.
fn first_ipv6(instance: &Instance) -> Option<Ipv6Addr> {
    let mut interfaces: Vec<_> = instance.network_interfaces().iter().collect();
    interfaces.sort_by_key(|n| n.attachment().and_then(|a| a.device_index()).unwrap_or(i32::MAX));
    instance
        .ipv6_address()
        .into_iter()
        .chain(interfaces.iter().flat_map(|n| n.ipv6_addresses()).filter_map(|a| a.ipv6_address()))
        .find_map(|ip| ip.parse().ok())
}

/// EC2 reads `*` and `?` in a filter value as wildcards and `\` as their escape; escaped,
/// a value matches only itself.
fn literal_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '*' | '?' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// DescribeInstances filters for instances that are running or about to, and carry every
/// tag. An empty value cannot be a filter value, so such a tag is asked for by its key and
/// its value checked on the answer.
fn tag_filters(tags: &[TagSelector]) -> Vec<Filter> {
    let states = Filter::builder()
        .name("instance-state-name")
        .values(InstanceStateName::Pending.as_str())
        .values(InstanceStateName::Running.as_str())
        .build();
    let by_tag = tags.iter().map(|t| {
        if t.value().is_empty() {
            Filter::builder().name("tag-key").values(literal_filter_value(t.key())).build()
        } else {
            Filter::builder().name(format!("tag:{}", t.key())).values(literal_filter_value(t.value())).build()
        }
    });
    std::iter::once(states).chain(by_tag).collect()
}

/// What the controller keeps of an instance EC2 described.
fn info(instance: &Instance) -> InstanceInfo {
    InstanceInfo {
        private_ip: instance.private_ip_address().and_then(|ip| ip.parse().ok()),
        ipv6: first_ipv6(instance),
        subnet_id: instance.subnet_id().map(str::to_owned),
        source_dest_check: instance.source_dest_check(),
    }
}

/// The instance, if it really is running or pending and carries every tag exactly: EC2 has
/// filtered already, but checking again keeps the match exact whatever an endpoint makes
/// of wildcards, and an empty value is only checked here.
fn tagged(instance: &Instance, tags: &[TagSelector]) -> Option<TaggedInstance> {
    let live = matches!(
        instance.state().and_then(|s| s.name()),
        Some(InstanceStateName::Pending | InstanceStateName::Running)
    );
    let carried = instance.tags().iter().filter_map(|t| Some((t.key()?, t.value().unwrap_or_default())));
    if !live || !carries_all(tags, carried) {
        return None;
    }
    let raw = instance.instance_id()?;
    match raw.parse::<InstanceId>() {
        Ok(id) => Some(TaggedInstance { id, subnet_id: instance.subnet_id().map(str::to_owned) }),
        Err(e) => {
            warn!(instance_id = ?raw, error = %e, "EC2 listed an instance id teefleet cannot use; skipping it");
            None
        }
    }
}

impl Ec2 {
    /// Every page of DescribeInstances under `filters`, what `pick` keeps of each
    /// instance; it stops after the page that brings more than `limit`.
    async fn list<T>(
        &self,
        filters: Vec<Filter>,
        limit: usize,
        mut pick: impl FnMut(&Instance) -> Option<T>,
    ) -> Result<Vec<T>, CloudError> {
        let mut pages = self
            .client
            .describe_instances()
            .set_filters(Some(filters))
            .max_results(self.page_size)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(&self.target, "DescribeInstances", None, e))?;
            found.extend(page.reservations().iter().flat_map(|r| r.instances()).filter_map(&mut pick));
            if found.len() > limit {
                break;
            }
        }
        Ok(found)
    }
}

impl Cloud for Ec2 {
    fn describe_instance<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<InstanceInfo, CloudError>> {
        Box::pin(async move {
            let out = self
                .client
                .describe_instances()
                .instance_ids(id.as_str())
                .send()
                .await
                .map_err(|e| classify(&self.target, "DescribeInstances", Some(id), e))?;
            let instance = out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find(|i| i.instance_id() == Some(id.as_str()))
                .ok_or_else(|| CloudError::NotFound(id.to_string()))?;
            Ok(info(instance))
        })
    }

    /// By an `instance-id` filter rather than `InstanceIds`: with the latter one unknown
    /// id fails the whole call, with the filter EC2 simply leaves it out. The batches are
    /// asked at once, each read to its last page.
    fn describe_instances<'a>(
        &'a self,
        ids: &'a [InstanceId],
    ) -> BoxFuture<'a, Result<BTreeMap<InstanceId, InstanceInfo>, CloudError>> {
        Box::pin(async move {
            let batches = ids.chunks(IDS_PER_CALL).map(|batch| async move {
                let filter = Filter::builder()
                    .name("instance-id")
                    .set_values(Some(batch.iter().map(|id| id.as_str().to_owned()).collect()))
                    .build();
                // Only what was asked for, whatever an endpoint makes of the filter.
                self.list(vec![filter], usize::MAX, |i| {
                    let id = batch.iter().find(|id| i.instance_id() == Some(id.as_str()))?;
                    Some((id.clone(), info(i)))
                })
                .await
            });
            let found = futures::future::try_join_all(batches).await?;
            Ok(found.into_iter().flatten().collect())
        })
    }

    fn set_source_dest_check<'a>(&'a self, id: &'a InstanceId, enabled: bool) -> BoxFuture<'a, Result<(), CloudError>> {
        Box::pin(async move {
            self.client
                .modify_instance_attribute()
                .instance_id(id.as_str())
                .source_dest_check(AttributeBooleanValue::builder().value(enabled).build())
                .send()
                .await
                .map_err(|e| classify(&self.target, "ModifyInstanceAttribute", Some(id), e))?;
            Ok(())
        })
    }

    /// By an `instance-id` filter, so an unknown id is an empty answer rather than an
    /// error; the owner comes from the instance's reservation.
    fn standing<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<Option<Standing>, CloudError>> {
        Box::pin(async move {
            let filter = Filter::builder().name("instance-id").values(id.as_str()).build();
            let out = self
                .client
                .describe_instances()
                .filters(filter)
                .send()
                .await
                .map_err(|e| classify(&self.target, "DescribeInstances", Some(id), e))?;
            let found = out.reservations().iter().find_map(|r| {
                let instance = r.instances().iter().find(|i| i.instance_id() == Some(id.as_str()))?;
                Some(Standing {
                    state: instance.state().and_then(|s| s.name()).map_or_else(String::new, |n| n.as_str().to_owned()),
                    owner_id: r.owner_id().map(str::to_owned),
                    tags: instance
                        .tags()
                        .iter()
                        .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
                        .collect(),
                })
            });
            Ok(found)
        })
    }

    fn instances_with_tags<'a>(
        &'a self,
        tags: &'a [TagSelector],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<TaggedInstance>, CloudError>> {
        Box::pin(async move {
            if tags.is_empty() {
                return Ok(Vec::new());
            }
            let mut found = self.list(tag_filters(tags), limit, |i| tagged(i, tags)).await?;
            found.sort_by(|a, b| a.id.cmp(&b.id));
            found.dedup_by(|a, b| a.id == b.id);
            Ok(found)
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::{
        config::{BehaviorVersion, Credentials, Region},
        types::{
            InstanceIpv6Address, InstanceNetworkInterface, InstanceNetworkInterfaceAttachment, InstanceState, Tag,
        },
    };

    use super::*;

    const CLOSED: &str = "http://127.0.0.1:1";

    fn config() -> aws_sdk_ec2::config::Builder {
        aws_sdk_ec2::Config::builder().behavior_version(BehaviorVersion::latest()).endpoint_url(CLOSED)
    }

    async fn describe(conf: aws_sdk_ec2::Config, target: Target) -> CloudError {
        let ec2 = Ec2::from_client(aws_sdk_ec2::Client::from_conf(conf)).with_target(target);
        let id: InstanceId = "i-0123456789abcdef0".parse().expect("id");
        ec2.describe_instance(&id).await.expect_err("nothing answers")
    }

    fn creds() -> Credentials {
        Credentials::new("AKIDEXAMPLE", "secret", None, None, "test")
    }

    #[tokio::test]
    async fn each_configuration_mistake_is_one_sentence_naming_what_to_check() {
        let region = || Some("us-east-1".to_owned());
        let endpoint = Some(CLOSED.to_owned());
        let cases = [
            (
                config().region(Region::new("us-east-1")).credentials_provider(creds()).build(),
                Target { endpoint: endpoint.clone(), region: region() },
                "the EC2 API could not be reached: DescribeInstances failed: cannot connect to http://127.0.0.1:1 (",
                "check AWS_ENDPOINT_URL",
            ),
            (
                config().credentials_provider(creds()).build(),
                Target { endpoint: endpoint.clone(), region: None },
                "EC2 refused the call: DescribeInstances failed: no AWS region is configured",
                "AWS_REGION",
            ),
            (
                config().region(Region::new("us-east-1")).build(),
                Target { endpoint, region: region() },
                "EC2 refused the call: DescribeInstances failed: the request could not be signed (",
                "check the AWS credentials",
            ),
        ];
        for (conf, target, starts, names) in cases {
            let message = describe(conf, target).await.to_string();
            assert!(message.starts_with(starts), "{message}");
            assert!(message.contains(names), "{message}");
            assert!(message.len() < 400 && !message.contains("DispatchFailure"), "{} chars: {message}", message.len());
        }
    }

    /// A cloud that knows no instance, sets every check, and cannot list by tag.
    struct Answers;

    impl Cloud for Answers {
        fn describe_instance<'a>(&'a self, id: &'a InstanceId) -> BoxFuture<'a, Result<InstanceInfo, CloudError>> {
            Box::pin(async move { Err(CloudError::NotFound(id.to_string())) })
        }

        fn set_source_dest_check<'a>(&'a self, _: &'a InstanceId, _: bool) -> BoxFuture<'a, Result<(), CloudError>> {
            Box::pin(async { Ok(()) })
        }

        fn standing<'a>(&'a self, _: &'a InstanceId) -> BoxFuture<'a, Result<Option<Standing>, CloudError>> {
            Box::pin(async { Ok(None) })
        }

        fn instances_with_tags<'a>(
            &'a self,
            _: &'a [TagSelector],
            _: usize,
        ) -> BoxFuture<'a, Result<Vec<TaggedInstance>, CloudError>> {
            Box::pin(async { Err(CloudError::Unavailable("throttled".into())) })
        }
    }

    #[tokio::test]
    async fn metered_counts_every_call_and_failure_by_ec2_action() {
        let metrics = Arc::new(Metrics::default());
        let cloud = Metered::new(Arc::new(Answers), metrics.clone());
        let id: InstanceId = "i-0123456789abcdef0".parse().expect("id");
        assert!(matches!(cloud.describe_instance(&id).await, Err(CloudError::NotFound(_))), "answers pass through");
        cloud.set_source_dest_check(&id, false).await.expect("set");
        assert!(cloud.instances_with_tags(&tags(&["role=web"]), 10).await.is_err());
        let text = metrics.text();
        for line in [
            "teefleet_controller_ec2_calls_total{operation=\"describe_instances\"} 2",
            "teefleet_controller_ec2_calls_total{operation=\"modify_instance_attribute\"} 1",
            "teefleet_controller_ec2_failures_total{operation=\"describe_instances\",error=\"not_found\"} 1",
            "teefleet_controller_ec2_failures_total{operation=\"describe_instances\",error=\"unavailable\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("operation=\"modify_instance_attribute\",error"), "{text}");
    }

    fn interface(index: i32, ips: &[&str]) -> InstanceNetworkInterface {
        let mut b = InstanceNetworkInterface::builder()
            .attachment(InstanceNetworkInterfaceAttachment::builder().device_index(index).build());
        for ip in ips {
            b = b.ipv6_addresses(InstanceIpv6Address::builder().ipv6_address(*ip).build());
        }
        b.build()
    }

    #[test]
    fn ipv6_comes_from_the_primary_interface_first() {
        let none = Instance::builder().network_interfaces(interface(0, &[])).build();
        assert_eq!(first_ipv6(&none), None);
        let listed_out_of_order = Instance::builder()
            .network_interfaces(interface(1, &["fd00::2"]))
            .network_interfaces(interface(0, &["not an ip", "fd00::1"]))
            .build();
        assert_eq!(first_ipv6(&listed_out_of_order), "fd00::1".parse().ok());
        let named = Instance::builder().ipv6_address("fd00::9").network_interfaces(interface(0, &["fd00::1"])).build();
        assert_eq!(first_ipv6(&named), "fd00::9".parse().ok());
    }

    fn tags(list: &[&str]) -> Vec<TagSelector> {
        list.iter().map(|t| t.parse().expect("tag")).collect()
    }

    fn instance(id: &str, state: InstanceStateName, tags: &[(&str, &str)]) -> Instance {
        let mut b = Instance::builder()
            .instance_id(id)
            .subnet_id("subnet-1")
            .state(InstanceState::builder().name(state).build());
        for (k, v) in tags {
            b = b.tags(Tag::builder().key(*k).value(*v).build());
        }
        b.build()
    }

    #[test]
    fn filter_values_are_literal() {
        assert_eq!(literal_filter_value("web"), "web");
        assert_eq!(literal_filter_value(r"a*b?c\d"), r"a\*b\?c\\d");
        let filters = tag_filters(&tags(&["role=web*", "env="]));
        let shown: Vec<(&str, Vec<&str>)> = filters
            .iter()
            .map(|f| (f.name().unwrap_or_default(), f.values().iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            shown,
            [
                ("instance-state-name", vec!["pending", "running"]),
                ("tag:role", vec![r"web\*"]),
                ("tag-key", vec!["env"]),
            ]
        );
    }

    #[test]
    fn answers_are_checked_again() {
        let want = tags(&["role=web", "env="]);
        let ok = instance("i-0123456789abcdef0", InstanceStateName::Running, &[("role", "web"), ("env", "")]);
        assert_eq!(
            tagged(&ok, &want),
            Some(TaggedInstance { id: "i-0123456789abcdef0".parse().expect("id"), subnet_id: Some("subnet-1".into()) })
        );
        let pending = instance("i-0123456789abcdef1", InstanceStateName::Pending, &[("role", "web"), ("env", "")]);
        assert!(tagged(&pending, &want).is_some());
        let stopping = instance("i-0123456789abcdef2", InstanceStateName::Stopping, &[("role", "web"), ("env", "")]);
        assert_eq!(tagged(&stopping, &want), None);
        let wildcard =
            instance("i-0123456789abcdef3", InstanceStateName::Running, &[("role", "webserver"), ("env", "")]);
        assert_eq!(tagged(&wildcard, &want), None, "an endpoint that matched a wildcard is overruled");
        let other_env = instance("i-0123456789abcdef4", InstanceStateName::Running, &[("role", "web"), ("env", "x")]);
        assert_eq!(tagged(&other_env, &want), None);
        let bad_id = instance("not-an-id", InstanceStateName::Running, &[("role", "web"), ("env", "")]);
        assert_eq!(tagged(&bad_id, &want), None);
    }
}
