//! Sessions whose sources are chosen by EC2 tag, against moto's EC2 and a real Postgres:
//! created by tag, resolved through DescribeInstances (every page), kept current as
//! instances appear and go away, never losing a named source or a tier to an unreachable
//! EC2, and refused with the right codes when the tags are bad, EC2 cannot be asked or an
//! instance is off the collector's link.

mod common;

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use aws_sdk_ec2::{
    Client,
    types::{InstanceType, ResourceType, Tag, TagSpecification},
};
use common::{Agent, Controller, add_collector, database, eventually, session};
use teefleet_controller::{
    cloud::{Cloud, Ec2},
    selectors,
    store::Store,
};
use teefleet_lab::{Ec2Fixture, Moto, TempPostgres, ec2};
use teefleet_model::{HostId, InstanceId, TagSelector};
use teefleet_proto::v1::{
    self as pb, audit_service_client::AuditServiceClient, session_service_client::SessionServiceClient,
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

/// An AMI id from moto's built-in catalogue, as the lab uses.
const IMAGE_ID: &str = "ami-03cf127a";
const WEB: &[(&str, &str)] = &[("role", "web"), ("env", "prod")];
/// The explicit tests resolve by hand; the controller's own resolver must not get there
/// first, whenever it is wired in.
const NO_BACKGROUND_RESOLVER: &[&str] = &["--selector-interval", "1d"];

/// moto with a VPC, a subnet and the collector instance in it.
struct Aws {
    /// Kept for its lifetime: dropping it stops moto.
    _moto: Moto,
    client: Client,
    fixture: Ec2Fixture,
}

impl Aws {
    async fn start(pg: &TempPostgres, cidr: &str, collector_ip: Ipv4Addr) -> Aws {
        let logs = pg.log_path().parent().expect("the cluster's directory").to_owned();
        let moto = Moto::start(&logs).await.expect("moto starts");
        let client = ec2::client(&moto.endpoint());
        let fixture = Ec2Fixture::create(client.clone(), cidr, &[("collector".to_owned(), collector_ip)])
            .await
            .expect("VPC, subnet and collector");
        Aws { _moto: moto, client, fixture }
    }

    fn collector(&self) -> String {
        self.fixture.instance_id("collector").expect("collector").to_owned()
    }

    /// EC2 as the controller sees it: small pages, so pagination is exercised.
    fn cloud(&self) -> Arc<dyn Cloud> {
        Arc::new(Ec2::from_client(self.client.clone()).with_page_size(5))
    }

    /// Runs an instance with `tags` in `subnet` (the collector's if None).
    async fn launch(&self, subnet: Option<&str>, tags: &[(&str, &str)]) -> String {
        let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
        for (k, v) in tags {
            spec = spec.tags(Tag::builder().key(*k).value(*v).build());
        }
        let out = self
            .client
            .run_instances()
            .image_id(IMAGE_ID)
            .instance_type(InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet.unwrap_or(&self.fixture.subnet_id))
            .tag_specifications(spec.build())
            .send()
            .await
            .expect("RunInstances");
        out.instances().first().and_then(|i| i.instance_id()).expect("an instance id").to_owned()
    }

    async fn terminate(&self, ids: &[&str]) {
        self.client
            .terminate_instances()
            .set_instance_ids(Some(ids.iter().map(|s| (*s).to_owned()).collect()))
            .send()
            .await
            .expect("TerminateInstances");
    }

    /// A subnet in another VPC: off the collector's link.
    async fn other_subnet(&self, cidr: &str) -> String {
        let vpc = self.client.create_vpc().cidr_block(cidr).send().await.expect("CreateVpc");
        let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).expect("vpc id");
        let subnet = self.client.create_subnet().vpc_id(vpc_id).cidr_block(cidr).send().await.expect("CreateSubnet");
        subnet.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_owned()
    }
}

/// EC2 that cannot be reached: nothing listens on port 1.
fn unreachable_ec2() -> Arc<dyn Cloud> {
    Arc::new(Ec2::from_client(ec2::client("http://127.0.0.1:1")))
}

fn create(name: &str, sources: &[&str], tags: &[&str], collector: &str) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        name: name.into(),
        sources: sources.iter().map(|s| (*s).to_owned()).collect(),
        source_tags: tags.iter().map(|s| (*s).to_owned()).collect(),
        collector: collector.into(),
        // The collector takes raw clones (these tests are about its subnet), so both
        // directions need the sources' checks off.
        disable_source_check: true,
        ..Default::default()
    }
}

async fn session_names(channel: &Channel) -> Vec<String> {
    let list = SessionServiceClient::new(channel.clone())
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .expect("list")
        .into_inner();
    list.sessions.into_iter().map(|s| s.name).collect()
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// (host, from tags) of each source.
fn origins(s: &pb::Session) -> Vec<(String, bool)> {
    s.hosts.iter().map(|h| (h.host_id.clone(), h.from_tags)).collect()
}

fn host(id: &str) -> HostId {
    id.parse().expect("host id")
}

async fn resolution_audits(channel: &Channel) -> usize {
    let records = AuditServiceClient::new(channel.clone())
        .list_audit(pb::ListAuditRequest::default())
        .await
        .expect("audit")
        .into_inner()
        .records;
    records.iter().filter(|r| r.action == "session.resolve" && r.actor == "controller" && r.result == "ok").count()
}

#[tokio::test]
async fn sessions_by_tag_follow_the_instances_in_ec2() {
    let (pg, url) = database().await;
    let aws = Aws::start(&pg, "10.77.0.0/24", Ipv4Addr::new(10, 77, 0, 100)).await;
    // The named source carries the tags too: it stays named, and stays when it goes away.
    let named = aws.launch(None, WEB).await;
    let web1 = aws.launch(None, WEB).await;
    let web2 = aws.launch(None, WEB).await;
    aws.launch(None, &[("role", "db"), ("env", "prod")]).await;
    aws.launch(None, &[("role", "web"), ("env", "staging")]).await;
    let cloud = aws.cloud();
    let ctl = Controller::start_cloud(url.clone(), cloud.clone(), NO_BACKGROUND_RESOLVER).await;
    add_collector(&ctl.channel, &aws.collector()).await;
    let store = Store::connect(&url).await.expect("store");
    let mut agent1 = Agent::connect(&ctl.channel, &web1, 0).await;

    let created = SessionServiceClient::new(ctl.channel.clone())
        .create_session(create("web", &[&named], &["role=web", "env=prod"], &aws.collector()))
        .await
        .expect("created")
        .into_inner();
    assert_eq!(created.source_tags, ["env=prod", "role=web"], "sorted by key");
    assert_eq!(created.sources, sorted(&[&named, &web1, &web2]));
    let mut want = vec![(named.clone(), false), (web1.clone(), true), (web2.clone(), true)];
    want.sort();
    assert_eq!(origins(&created), want);
    let set = agent1.next_rule_set().await;
    assert_eq!((set.version, set.rules.len()), (1, 2), "ingress and egress for web1");
    for h in [&named, &web2] {
        let desired = store.desired(&host(h)).await.expect("desired");
        assert_eq!((desired.version(), desired.rules().len()), (1, 2), "{h} compiled");
    }

    // The tier changes: web3 appears, web1 and the named host are terminated.
    let web3 = aws.launch(None, WEB).await;
    aws.terminate(&[&web1, &named]).await;
    let pass = selectors::resolve_once(&store, cloud.as_ref()).await.expect("resolved");
    assert_eq!((pass.sessions, pass.kept), (1, 0));
    let mut changed: Vec<String> = pass.changed.iter().map(ToString::to_string).collect();
    changed.sort();
    // The collector counted web1's clones (its agent said Hello from an address) and
    // counts them no more.
    assert_eq!(changed, sorted(&[&web1, &web3, &aws.collector()]));
    let s = session(&ctl.channel, "web").await;
    assert_eq!(s.sources, sorted(&[&named, &web2, &web3]), "the named source is never removed");
    assert!(origins(&s).contains(&(named.clone(), false)));
    let set = agent1.next_rule_set().await;
    assert_eq!((set.version, set.rules.len()), (2, 0), "web1 left the session");
    assert_eq!(store.desired(&host(&web3)).await.expect("web3").rules().len(), 2);
    assert_eq!(store.desired(&host(&named)).await.expect("named").version(), 1, "untouched");
    assert_eq!(resolution_audits(&ctl.channel).await, 1);
    let again = selectors::resolve_once(&store, cloud.as_ref()).await.expect("resolved");
    assert!(again.changed.is_empty(), "nothing new, nothing changed");
    assert_eq!(resolution_audits(&ctl.channel).await, 1, "only changes are audited");

    // EC2 briefly unreachable: the sources stay and the session says why.
    let web4 = aws.launch(None, WEB).await;
    let pass = selectors::resolve_once(&store, unreachable_ec2().as_ref()).await.expect("resolved");
    assert_eq!((pass.kept, pass.changed.len()), (1, 0));
    let s = session(&ctl.channel, "web").await;
    assert_eq!(s.sources, sorted(&[&named, &web2, &web3]));
    assert_eq!(s.state, i32::from(pb::SessionState::Degraded));
    assert!(
        s.problems.iter().any(|p| p.starts_with("source tags: not resolved (the EC2 API could not be reached")),
        "{:?}",
        s.problems
    );

    // The periodic resolver picks up web4 and clears the problem once EC2 answers again.
    let stop = CancellationToken::new();
    let resolver = tokio::spawn(selectors::run(store.clone(), cloud.clone(), Duration::from_secs(1), stop.clone()));
    let s = eventually(30, "web4 to join the session", || async {
        let s = session(&ctl.channel, "web").await;
        s.sources.contains(&web4).then_some(s)
    })
    .await;
    assert!(s.problems.iter().all(|p| !p.starts_with("source tags")), "{:?}", s.problems);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), resolver).await.expect("stops").expect("no panic");
    ctl.stop().await;
}

#[tokio::test]
async fn tag_sessions_are_refused_when_they_cannot_work() {
    let (pg, url) = database().await;
    let aws = Aws::start(&pg, "10.79.0.0/24", Ipv4Addr::new(10, 79, 0, 100)).await;
    let near = aws.launch(None, &[("role", "far")]).await;
    let far_subnet = aws.other_subnet("10.80.0.0/24").await;
    let far = aws.launch(Some(&far_subnet), &[("role", "far")]).await;
    let ctl = Controller::start_cloud(url.clone(), aws.cloud(), NO_BACKGROUND_RESOLVER).await;
    add_collector(&ctl.channel, &aws.collector()).await;
    let collector = aws.collector();
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());

    let nine: Vec<String> = (0..9).map(|i| format!("k{i}=v")).collect();
    let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
    let long_key = format!("{}=x", "k".repeat(129));
    let cases: [(&[&str], &[&str], &str); 7] = [
        (&[], &["role"], "source_tags[0]: \"role\" is not KEY=VALUE"),
        (&[], &["role=web", "=x"], "source_tags[1]: tag \"=x\" has an empty key"),
        (&[], &[long_key.as_str()], "source_tags[0]: tag key"),
        (&[], &["role=web\u{1b}[2J"], "source_tags[0]: tag \"role=web\\u{1b}[2J\" contains a control character"),
        (&[], &nine, "source_tags: 9 tags given; at most 8"),
        (&[], &["role=web", "role=db"], "source_tags: tag key \"role\" is given twice"),
        (&[], &[], "sources: a session needs at least one source"),
    ];
    for (sources, tags, prefix) in cases {
        let err = sessions.create_session(create("bad", sources, tags, &collector)).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{tags:?}: {}", err.message());
        assert!(err.message().starts_with(prefix), "{tags:?}: {}", err.message());
    }

    // An instance off the collector's link is refused as a named one is, unless allowed.
    let err = sessions.create_session(create("far", &[], &["role=far"], &collector)).await.expect_err("off-link");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    for part in [far.as_str(), far_subnet.as_str(), &aws.fixture.subnet_id, "--allow-routed"] {
        assert!(err.message().contains(part), "{part} in {}", err.message());
    }
    assert!(!err.message().contains(&near), "only the off-link instance is named: {}", err.message());
    assert!(session_names(&ctl.channel).await.is_empty(), "refused sessions are not stored");
    let routed = pb::CreateSessionRequest { allow_routed: true, ..create("far", &[], &["role=far"], &collector) };
    let s = sessions.create_session(routed).await.expect("allowed").into_inner();
    assert_eq!((s.sources, s.allow_routed), (sorted(&[&near, &far]), true));

    // Tags that match nothing yet: the session waits, and says so.
    let s = sessions.create_session(create("later", &[], &["role=batch"], &collector)).await.expect("created");
    let s = s.into_inner();
    assert!(s.sources.is_empty());
    assert_eq!(s.state, i32::from(pb::SessionState::Pending));
    assert!(s.problems.iter().any(|p| p.starts_with("no running instance carries role=batch yet")), "{:?}", s.problems);

    // Re-resolution skips what creation would have refused, unless the session allows it.
    let batch_near = aws.launch(None, &[("role", "batch")]).await;
    let batch_far = aws.launch(Some(&far_subnet), &[("role", "batch")]).await;
    let far2 = aws.launch(Some(&far_subnet), &[("role", "far")]).await;
    let store = Store::connect(&url).await.expect("store");
    selectors::resolve_once(&store, aws.cloud().as_ref()).await.expect("resolved");
    let s = session(&ctl.channel, "later").await;
    assert_eq!(s.sources, std::slice::from_ref(&batch_near));
    assert!(
        s.problems.iter().any(|p| p.starts_with(&format!("source tags: skipped {batch_far} ({far_subnet})"))
            && p.contains("--allow-routed")),
        "{:?}",
        s.problems
    );
    assert_eq!(session(&ctl.channel, "far").await.sources, sorted(&[&near, &far, &far2]));
    ctl.stop().await;

    // EC2 unreachable when a session with tags is created: refused, nothing stored. A
    // session of named, known hosts does not need EC2.
    let ctl = Controller::start_cloud(url, unreachable_ec2(), NO_BACKGROUND_RESOLVER).await;
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());
    let err =
        sessions.create_session(create("down", &[], &["role=web"], &collector)).await.expect_err("EC2 cannot be asked");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("role=web") && err.message().contains("not created"), "{}", err.message());
    let err = sessions
        .create_session(create("down", &[&near], &["role=web"], &collector))
        .await
        .expect_err("EC2 cannot be asked");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(!session_names(&ctl.channel).await.contains(&"down".to_owned()), "nothing stored");
    sessions.create_session(create("named", &[&near], &[], &collector)).await.expect("no EC2 needed");
    ctl.stop().await;
}

#[tokio::test]
async fn listing_by_tag_reads_every_page_and_matches_exactly() {
    let (pg, _url) = database().await;
    let aws = Aws::start(&pg, "10.81.0.0/24", Ipv4Addr::new(10, 81, 0, 100)).await;
    let mut batch = Vec::new();
    for _ in 0..7 {
        batch.push(aws.launch(None, &[("batch", "b1")]).await);
    }
    batch.sort();
    let literal = aws.launch(None, &[("pattern", "a*")]).await;
    aws.launch(None, &[("pattern", "abc")]).await;
    let empty = aws.launch(None, &[("env", "")]).await;
    aws.launch(None, &[("env", "prod")]).await;
    let cloud = aws.cloud();
    let tags = |t: &[&str]| t.iter().map(|t| t.parse().expect("tag")).collect::<Vec<TagSelector>>();
    let ids = |found: Vec<teefleet_controller::cloud::TaggedInstance>| {
        found.into_iter().map(|i| i.id.to_string()).collect::<Vec<_>>()
    };

    let found = cloud.instances_with_tags(&tags(&["batch=b1"]), 100).await.expect("listed");
    assert_eq!(ids(found.clone()), batch, "seven instances over pages of five");
    assert!(found.iter().all(|i| i.subnet_id.as_deref() == Some(aws.fixture.subnet_id.as_str())));
    let some = cloud.instances_with_tags(&tags(&["batch=b1"]), 2).await.expect("listed");
    assert!(some.len() > 2 && some.len() < 7, "stops after the page that passed the limit: {}", some.len());

    aws.terminate(&[&batch[0]]).await;
    let found = cloud.instances_with_tags(&tags(&["batch=b1"]), 100).await.expect("listed");
    assert_eq!(ids(found), batch[1..], "terminated instances are not sources");

    let found = cloud.instances_with_tags(&tags(&["pattern=a*"]), 100).await.expect("listed");
    assert_eq!(ids(found), [literal], "* is not a wildcard");
    let found = cloud.instances_with_tags(&tags(&["env="]), 100).await.expect("listed");
    assert_eq!(ids(found), [empty], "an empty value matches only an empty value");
    assert!(cloud.instances_with_tags(&[], 100).await.expect("listed").is_empty(), "no tags select nothing");
    let err = unreachable_ec2().instances_with_tags(&tags(&["batch=b1"]), 100).await.expect_err("unreachable");
    assert!(matches!(err, teefleet_controller::cloud::CloudError::Unavailable(_)), "{err}");
}

/// Many instances are described in a few DescribeInstances calls by an `instance-id`
/// filter (200 ids at most each, every page read), and an id EC2 does not know is left
/// out rather than failing the rest; a session naming them and one off the collector's
/// link is refused naming that one.
#[tokio::test]
async fn instances_are_described_in_batches_and_unknown_ids_left_out() {
    let (pg, url) = database().await;
    let aws = Aws::start(&pg, "10.81.0.0/24", Ipv4Addr::new(10, 81, 0, 100)).await;
    let mut launched = Vec::new();
    for _ in 0..7 {
        launched.push(aws.launch(None, &[("role", "batch")]).await);
    }
    let far_subnet = aws.other_subnet("10.82.0.0/24").await;
    let far = aws.launch(Some(&far_subnet), &[("role", "batch")]).await;
    let cloud = aws.cloud();
    // 250 ids nobody launched around the real ones: two batches, both read.
    let mut ids: Vec<InstanceId> = (0..250)
        .map(|i| format!("i-0f{i:015x}").parse().expect("id"))
        .chain(launched.iter().map(|id| id.parse().expect("id")))
        .collect();
    ids.push(far.parse().expect("id"));
    let found = cloud.describe_instances(&ids).await.expect("described");
    let mut want: Vec<&str> = launched.iter().map(String::as_str).chain([far.as_str()]).collect();
    want.sort();
    assert_eq!(found.keys().map(InstanceId::as_str).collect::<Vec<_>>(), want);
    assert!(found.values().all(|i| i.private_ip.is_some() && i.subnet_id.is_some()), "{found:?}");
    assert_eq!(found[&far.parse::<InstanceId>().expect("id")].subnet_id.as_deref(), Some(far_subnet.as_str()));

    let ctl = Controller::start_cloud(url, cloud, NO_BACKGROUND_RESOLVER).await;
    add_collector(&ctl.channel, &aws.collector()).await;
    let mut sessions = SessionServiceClient::new(ctl.channel.clone());
    let mut sources: Vec<&str> = launched.iter().map(String::as_str).collect();
    sources.push(&far);
    let err = sessions.create_session(create("far", &sources, &[], &aws.collector())).await.expect_err("off-link");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&far), "{}", err.message());
    sources.pop();
    let created = sessions.create_session(create("near", &sources, &[], &aws.collector())).await.expect("created");
    assert_eq!(created.into_inner().hosts.len(), 7);
    ctl.stop().await;
}
