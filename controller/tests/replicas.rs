//! Several controller replicas on one Postgres: a change made through one reaches agents
//! held by another through LISTEN/NOTIFY; a lost notification is repaired by the resync;
//! exactly one replica runs the EC2 reconciler and another takes over when it stops; a
//! database outage answers UNAVAILABLE, keeps agents' streams, and loses no
//! acknowledgement.

mod common;

use std::time::Duration;

use common::{Agent, Controller, FakeCloud, add_collector, database, eventually};
use teefleet_proto::v1::{
    self as pb, agent_message::Msg, host_service_client::HostServiceClient,
    session_service_client::SessionServiceClient,
};
use tonic::{Code, transport::Channel};

const COLLECTOR: &str = "i-0c000000000000001";
const COLLECTOR2: &str = "i-0c000000000000002";
const SOURCE: &str = "i-05000000000000001";

/// Resyncs so rare that only a notification can deliver within a test's timeouts.
const NO_RESYNC: &[&str] = &["--resync-interval", "1h"];

fn cloud() -> std::sync::Arc<FakeCloud> {
    FakeCloud::with(&[(COLLECTOR, "10.9.0.100"), (COLLECTOR2, "10.9.0.101"), (SOURCE, "10.9.0.10")])
}

async fn create_session(channel: &Channel, name: &str, collector: &str) -> Result<pb::Session, tonic::Status> {
    let request = pb::CreateSessionRequest {
        name: name.into(),
        sources: vec![SOURCE.into()],
        collector: collector.into(),
        // The collectors take raw clones, so both directions need the source's check off.
        disable_source_check: true,
        ..Default::default()
    };
    SessionServiceClient::new(channel.clone()).create_session(request).await.map(tonic::Response::into_inner)
}

async fn delete_session(channel: &Channel, name: &str) {
    SessionServiceClient::new(channel.clone())
        .delete_session(pb::DeleteSessionRequest { name: name.into() })
        .await
        .expect("session deleted");
}

async fn applied_version(channel: &Channel, host: &str) -> Result<u64, tonic::Status> {
    let reply = HostServiceClient::new(channel.clone()).get_host(pb::GetHostRequest { host_id: host.into() }).await?;
    Ok(reply.into_inner().applied_version)
}

#[tokio::test]
async fn a_change_through_one_replica_reaches_agents_on_another() {
    let (_pg, url) = database().await;
    let a = Controller::start_with(url.clone(), cloud(), NO_RESYNC).await;
    let b = Controller::start_with(url, cloud(), NO_RESYNC).await;
    add_collector(&a.channel, COLLECTOR).await;
    let mut agent = Agent::connect(&b.channel, SOURCE, 0).await;
    // The stream is registered once the host is known; only then can a change find it.
    eventually(10, "the agent's Hello to be recorded", || async { applied_version(&a.channel, SOURCE).await.ok() })
        .await;

    create_session(&a.channel, "web", COLLECTOR).await.expect("created through A");
    let set = agent.rule_set_within(10).await;
    assert_eq!(set.version, 1);
    assert!(!set.rules.is_empty(), "the session's rules reach the agent on B");
    agent.send(Msg::Ack(pb::Ack { version: 1 })).await;
    eventually(10, "A to see B's agent acknowledge", || async {
        (applied_version(&a.channel, SOURCE).await.ok()? == 1).then_some(())
    })
    .await;

    delete_session(&a.channel, "web").await;
    let set = agent.rule_set_within(10).await;
    assert_eq!((set.version, set.rules.len()), (2, 0));
    agent.nothing_within(Duration::from_millis(500)).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_resync_repairs_a_lost_notification() {
    let (_pg, url) = database().await;
    let ctl = Controller::start_with(url.clone(), cloud(), &["--resync-interval", "1s"]).await;
    let mut agent = Agent::connect(&ctl.channel, SOURCE, 0).await;
    eventually(10, "the agent's Hello to be recorded", || async { applied_version(&ctl.channel, SOURCE).await.ok() })
        .await;
    // A change written without NOTIFY, as if the notification had been lost.
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    sqlx::query("UPDATE hosts SET desired_version = 7 WHERE host_id = $1")
        .bind(SOURCE)
        .execute(&pool)
        .await
        .expect("update");
    assert_eq!(agent.rule_set_within(10).await.version, 7);
    ctl.stop().await;
}

#[tokio::test]
async fn one_replica_runs_the_ec2_reconciler_and_another_takes_over() {
    let (_pg, url) = database().await;
    let (cloud_a, cloud_b) = (cloud(), cloud());
    let a = Controller::start_with(url.clone(), cloud_a.clone(), &[]).await;
    let b = Controller::start_with(url.clone(), cloud_b.clone(), &[]).await;
    add_collector(&a.channel, COLLECTOR).await;
    add_collector(&a.channel, COLLECTOR2).await;
    Agent::connect(&a.channel, SOURCE, 0).await;
    eventually(10, "the agent's Hello to be recorded", || async { applied_version(&a.channel, SOURCE).await.ok() })
        .await;

    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let holders = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
            .fetch_one(&pool)
            .await
            .expect("pg_locks")
    };
    eventually(15, "a replica to lead", || async { (holders().await == 1).then_some(()) }).await;

    create_session(&b.channel, "first", COLLECTOR).await.expect("created");
    let a_leads = eventually(15, "the leader to disable Source/Dest Check", || async {
        match (cloud_a.source_dest_check(COLLECTOR), cloud_b.source_dest_check(COLLECTOR)) {
            (Some(false), _) => Some(true),
            (_, Some(false)) => Some(false),
            _ => None,
        }
    })
    .await;
    let (leader, follower, follower_cloud, other_cloud) =
        if a_leads { (a, b, cloud_b, cloud_a) } else { (b, a, cloud_a, cloud_b) };
    assert_eq!(other_cloud.source_dest_check(COLLECTOR), Some(false));
    assert_eq!(follower_cloud.source_dest_check(COLLECTOR), Some(true), "only the leader calls EC2");

    leader.stop().await;
    create_session(&follower.channel, "second", COLLECTOR2).await.expect("created");
    eventually(20, "the other replica to take over the EC2 reconciler", || async {
        (follower_cloud.source_dest_check(COLLECTOR2) == Some(false)).then_some(())
    })
    .await;
    assert_eq!(holders().await, 1);
    follower.stop().await;
}

#[tokio::test]
async fn a_database_outage_is_unavailable_and_loses_nothing() {
    let (pg, url) = database().await;
    let ctl = Controller::start_with(url, cloud(), &["--resync-interval", "1s"]).await;
    add_collector(&ctl.channel, COLLECTOR).await;
    let mut agent = Agent::connect(&ctl.channel, SOURCE, 0).await;
    eventually(10, "the agent's Hello to be recorded", || async { applied_version(&ctl.channel, SOURCE).await.ok() })
        .await;
    create_session(&ctl.channel, "web", COLLECTOR).await.expect("created");
    assert_eq!(agent.next_rule_set().await.version, 1);

    pg.pause().await.expect("stop Postgres");
    // The acknowledgement arrives while the database is away: it must be recorded later.
    agent.send(Msg::Ack(pb::Ack { version: 1 })).await;
    let refused = create_session(&ctl.channel, "during", COLLECTOR).await.expect_err("refused");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("database is unavailable"), "{}", refused.message());
    let refused = applied_version(&ctl.channel, SOURCE).await.expect_err("refused");
    assert_eq!(refused.code(), Code::Unavailable);
    // The agent keeps its stream through the outage: nothing ends it or is pushed.
    agent.nothing_within(Duration::from_secs(30)).await;

    pg.resume().await.expect("start Postgres again");
    eventually(30, "the acknowledgement made during the outage to be recorded", || async {
        (applied_version(&ctl.channel, SOURCE).await.ok()? == 1).then_some(())
    })
    .await;
    delete_session(&ctl.channel, "web").await;
    assert_eq!(agent.rule_set_within(10).await.version, 2, "the same stream gets changes again");
    ctl.stop().await;
}
