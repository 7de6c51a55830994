//! The store's version invariants on a real Postgres: versions strictly increase per
//! host, concurrent changes never hand out the same version, only covered hosts are
//! recompiled, and an agent that reports a higher version than the database knows gets a
//! higher one still.

mod common;

use std::collections::BTreeSet;

use common::database;
use teefleet_controller::store::{NewCollector, Store};
use teefleet_lab::postgres::TempPostgres;
use teefleet_model::{Filter, HostId, SessionSpec};

const COLLECTOR: &str = "i-0c0000000000000c1";

async fn store() -> (TempPostgres, Store) {
    let (pg, url) = database().await;
    let store = Store::connect(&url).await.expect("connect and migrate");
    store
        .add_collector(&NewCollector {
            instance_id: COLLECTOR.parse().expect("id"),
            ip: "10.9.0.100".parse().expect("ip"),
            subnet_id: "subnet-1".into(),
            source_dest_check: true,
        })
        .await
        .expect("collector");
    (pg, store)
}

fn host(id: &str) -> HostId {
    id.parse().expect("host")
}

fn spec(name: &str, sources: &[&str]) -> SessionSpec {
    SessionSpec::new(
        name.parse().expect("name"),
        sources.iter().map(|s| host(s)).collect(),
        COLLECTOR.parse().expect("id"),
        Filter::default(),
    )
    .expect("spec")
}

#[tokio::test]
async fn concurrent_changes_get_distinct_increasing_versions() {
    let (_pg, store) = store().await;
    let hosts = [host("h1")];
    let creates = (0..8).map(|i| {
        let store = store.clone();
        let hosts = hosts.clone();
        async move { store.create_session(&spec(&format!("s{i}"), &["h1"]), &hosts).await }
    });
    for result in futures::future::join_all(creates).await {
        assert_eq!(result.expect("created"), [host("h1")]);
    }
    let desired = store.desired(&host("h1")).await.expect("desired");
    assert_eq!(desired.version(), 8, "eight changes, eight versions");
    assert_eq!(desired.rules().len(), 16);
    let sessions = store.list_sessions().await.expect("list");
    let required: BTreeSet<u64> = sessions.iter().map(|s| s.sources[0].required_version).collect();
    assert_eq!(required, (1..=8).collect(), "each session needs the version that added it");
}

#[tokio::test]
async fn only_covered_hosts_are_recompiled() {
    let (_pg, store) = store().await;
    let known = [host("h1"), host("h2")];
    assert_eq!(store.create_session(&spec("a", &["h1", "h2"]), &known).await.expect("a").len(), 2);
    assert_eq!(store.create_session(&spec("b", &["h2"]), &known).await.expect("b"), [host("h2")]);
    assert_eq!(store.desired(&host("h1")).await.expect("h1").version(), 1);
    assert_eq!(store.desired(&host("h2")).await.expect("h2").version(), 2);
    assert_eq!(store.delete_session(&"b".parse().expect("name")).await.expect("delete"), [host("h2")]);
    let h2 = store.desired(&host("h2")).await.expect("h2");
    assert_eq!((h2.version(), h2.rules().len()), (3, 2), "a removal is a new version too");
}

#[tokio::test]
async fn agent_ahead_of_the_database_gets_a_higher_version() {
    let (_pg, store) = store().await;
    // An agent whose state file outlived the database says it applied version 7.
    let desired = store.host_hello(&host("h1"), "test", &[], 7, 1).await.expect("hello");
    assert_eq!((desired.version(), desired.rules().len()), (8, 0));
    store.create_session(&spec("a", &["h1"]), &[]).await.expect("create");
    assert_eq!(store.desired(&host("h1")).await.expect("desired").version(), 9);
}

#[tokio::test]
async fn stale_stream_cannot_mark_a_newer_one_disconnected() {
    let (_pg, store) = store().await;
    store.host_hello(&host("h1"), "test", &[], 0, 1).await.expect("first stream");
    store.host_hello(&host("h1"), "test", &[], 0, 2).await.expect("second stream");
    store.host_disconnected(&host("h1"), 1).await.expect("stale disconnect");
    let hosts = store.list_hosts().await.expect("hosts");
    assert!(hosts[0].connected, "the newer stream is still connected");
    store.host_disconnected(&host("h1"), 2).await.expect("disconnect");
    assert!(!store.list_hosts().await.expect("hosts")[0].connected);
}
