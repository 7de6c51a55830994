//! The store on a real Postgres. Version invariants: versions strictly increase per host,
//! concurrent changes never hand out the same version, only covered hosts are recompiled,
//! and an agent that reports a higher version than the database knows gets a higher one
//! still. Round trips: throttles, IPv6 collectors and agents' reports come back as stored.

mod common;

use std::collections::BTreeSet;

use common::database;
use teefleet_controller::{
    report::{Dataplane, Health, HostEvent, SessionCounters, Traffic},
    store::{AckOutcome, AckRecord, AuditEntry, HelloRecord, NewCollector, SessionChange, Store},
};
use teefleet_lab::postgres::TempPostgres;
use teefleet_model::{Encap, Filter, HostId, IpFamily, MaxPps, SessionSpec, Throttle, TtlChange, Vni};

const COLLECTOR: &str = "i-0c0000000000000c1";

async fn store() -> (TempPostgres, Store) {
    let (pg, url) = database().await;
    (pg, store_at(&url).await)
}

/// The store on `url`, with the raw collector registered.
async fn store_at(url: &str) -> Store {
    let store = Store::connect(url).await.expect("connect and migrate");
    store
        .add_collector(
            &NewCollector {
                instance_id: COLLECTOR.parse().expect("id"),
                ip: "10.9.0.100".parse().expect("ip"),
                ipv6: None,
                subnet_id: "subnet-1".into(),
                source_dest_check: true,
                encap: Encap::None,
            },
            &audit(),
        )
        .await
        .expect("collector");
    store
}

fn audit() -> AuditEntry {
    AuditEntry::new("test", "local", "test", "")
}

fn hello(applied_version: u64, connection_id: i64) -> HelloRecord<'static> {
    HelloRecord { agent_version: "test", addresses: &[], applied_version, connection_id, dataplane: None }
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
        async move { store.create_session(&spec(&format!("s{i}"), &["h1"]), &hosts, &audit()).await }
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
    assert_eq!(store.create_session(&spec("a", &["h1", "h2"]), &known, &audit()).await.expect("a").len(), 2);
    assert_eq!(store.create_session(&spec("b", &["h2"]), &known, &audit()).await.expect("b"), [host("h2")]);
    assert_eq!(store.desired(&host("h1")).await.expect("h1").version(), 1);
    assert_eq!(store.desired(&host("h2")).await.expect("h2").version(), 2);
    assert_eq!(store.delete_session(&"b".parse().expect("name"), &audit()).await.expect("delete"), [host("h2")]);
    let h2 = store.desired(&host("h2")).await.expect("h2");
    assert_eq!((h2.version(), h2.rules().len()), (3, 2), "a removal is a new version too");
}

#[tokio::test]
async fn a_version_never_pushed_is_stale_and_moves_nothing() {
    let (_pg, store) = store().await;
    // An agent whose state file outlived the database says it applied version 7.
    let outcome = store.host_hello(&host("h1"), &hello(7, 1)).await.expect("hello");
    assert!(outcome.stale);
    assert_eq!((outcome.desired.version(), outcome.desired.rules().len()), (0, 0));
    store.create_session(&spec("a", &["h1"]), &[], &audit()).await.expect("create");
    assert_eq!(store.desired(&host("h1")).await.expect("desired").version(), 1);
    for claimed in [2, u64::MAX] {
        let outcome = store.host_hello(&host("h1"), &hello(claimed, 2)).await.expect("hello");
        assert!(outcome.stale && outcome.desired.version() == 1, "{claimed}");
        assert_eq!(store.host(&host("h1")).await.expect("host").applied_version, 0);
    }
    assert!(!store.host_ack(&host("h1"), 2, 0).await.expect("ack"), "a version above the desired one");
    assert!(store.host_ack(&host("h1"), 1, 2).await.expect("ack"));
    let outcome = store.host_hello(&host("h1"), &hello(1, 3)).await.expect("hello");
    assert!(!outcome.stale);
    assert_eq!(store.host(&host("h1")).await.expect("host").applied_version, 1);
}

#[tokio::test]
async fn stale_stream_cannot_mark_a_newer_one_disconnected() {
    let (_pg, store) = store().await;
    store.host_hello(&host("h1"), &hello(0, 1)).await.expect("first stream");
    store.host_hello(&host("h1"), &hello(0, 2)).await.expect("second stream");
    store.host_disconnected(&host("h1"), 1).await.expect("stale disconnect");
    let hosts = store.list_hosts().await.expect("hosts");
    assert!(hosts[0].connected, "the newer stream is still connected");
    store.host_disconnected(&host("h1"), 2).await.expect("disconnect");
    assert!(!store.list_hosts().await.expect("hosts")[0].connected);
}

#[tokio::test]
async fn throttles_and_ipv6_collectors_survive_the_round_trip() {
    let (_pg, store) = store().await;
    let dual = "i-0c0000000000000d2";
    let added = store
        .add_collector(
            &NewCollector {
                instance_id: dual.parse().expect("id"),
                ip: "10.9.0.200".parse().expect("ip"),
                ipv6: Some("2001:db8::200".parse().expect("ip")),
                subnet_id: "subnet-1".into(),
                source_dest_check: true,
                encap: Encap::None,
            },
            &audit(),
        )
        .await
        .expect("collector");
    assert_eq!(added.ipv6, "2001:db8::200".parse().ok());
    assert_eq!(store.collector(&COLLECTOR.parse().expect("id")).await.expect("v4 only").ipv6, None);

    let throttle = Throttle::new(Some("0.25".parse().expect("sample")), Some(MaxPps::new(1000).expect("pps")));
    let spec = SessionSpec::new(
        "web".parse().expect("name"),
        vec![host("h1")],
        dual.parse().expect("id"),
        Filter::default().with_throttle(throttle),
    )
    .expect("spec");
    store.create_session(&spec, &[host("h1")], &audit()).await.expect("created");
    let stored = store.session(spec.name()).await.expect("session");
    assert_eq!(stored.spec, spec.clone().with_vni(Vni::new(1).ok()), "the first session gets VNI 1");
    let rules = store.desired(&host("h1")).await.expect("desired");
    assert_eq!(rules.rules().len(), 4, "two directions, two families");
    assert!(rules.rules().iter().all(|r| r.throttle() == throttle));
    assert_eq!(rules.rules().iter().filter(|r| r.gateway().is_some_and(|g| g.is_ipv6())).count(), 2);
}

fn traffic(packets: u64) -> Traffic {
    Traffic::reported(packets, packets * 64, 1.5, 96.0).0
}

#[tokio::test]
async fn agent_reports_are_stored_and_shown_per_session() {
    let (_pg, store) = store().await;
    store.create_session(&spec("web", &["h1"]), &[host("h1")], &audit()).await.expect("web");
    store.create_session(&spec("db", &["h1"]), &[], &audit()).await.expect("db");
    let (nft, _) = Dataplane::reported("nft", "v1.8.9", true, &[]);
    store.host_hello(&host("h1"), &HelloRecord { dataplane: Some(&nft), ..hello(0, 1) }).await.expect("hello");
    store
        .host_health(
            &host("h1"),
            &Health {
                rule_count: 4,
                drift_repairs: 2,
                counters: vec![
                    SessionCounters { session: "db".parse().expect("name"), traffic: traffic(7) },
                    SessionCounters { session: "web".parse().expect("name"), traffic: traffic(100) },
                ],
                dataplane: None,
                ..Health::default()
            },
        )
        .await
        .map(|stored| assert!(stored, "nothing holds h1"))
        .expect("health");
    // A Hello without a dataplane keeps the one reported before.
    store.host_hello(&host("h1"), &hello(0, 2)).await.expect("hello again");

    let h = store.host(&host("h1")).await.expect("host");
    assert_eq!((h.dataplane.as_ref(), h.drift_repairs, h.counters.len()), (Some(&nft), 2, 2));
    let web = store.session(&"web".parse().expect("name")).await.expect("web");
    assert_eq!(web.sources[0].traffic, traffic(100));
    let db = store.session(&"db".parse().expect("name")).await.expect("db");
    assert_eq!(db.sources[0].traffic, traffic(7));

    // The next Health replaces the snapshot: a session the agent no longer reports has none.
    assert!(store.host_health(&host("h1"), &Health { rule_count: 2, ..Health::default() }).await.expect("health"));
    let web = store.session(&"web".parse().expect("name")).await.expect("web");
    assert_eq!(web.sources[0].traffic, Traffic::default());
}

#[tokio::test]
async fn health_skips_a_host_another_transaction_holds_and_names_it() {
    use sqlx::Connection as _;
    let (_pg, url) = database().await;
    let store = Store::connect(&url).await.expect("connect and migrate");
    for h in ["h1", "h2"] {
        store.host_hello(&host(h), &hello(0, 1)).await.expect("hello");
    }
    // What a recompile does to the hosts it rewrites.
    let mut holder = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut holder).await.expect("begin");
    sqlx::query("SELECT 1 FROM hosts WHERE host_id = 'h1' FOR UPDATE").execute(&mut holder).await.expect("lock");

    let report = |rule_count| Health { rule_count, ..Health::default() };
    let busy = store.hosts_health(&[(host("h1"), report(5)), (host("h2"), report(6))]).await.expect("health");
    assert_eq!(busy, [host("h1")], "h1 is held: skipped, not waited for");
    assert_eq!(store.host(&host("h2")).await.expect("h2").rule_count, 6);
    assert_eq!(store.host(&host("h1")).await.expect("h1").rule_count, 0);

    sqlx::query("COMMIT").execute(&mut holder).await.expect("commit");
    assert!(store.host_health(&host("h1"), &report(5)).await.expect("health"));
    assert_eq!(store.host(&host("h1")).await.expect("h1").rule_count, 5);
    // A host that does not exist is not "busy": nothing to keep for it.
    assert!(store.hosts_health(&[(host("gone"), report(1))]).await.expect("health").is_empty());
}

#[tokio::test]
async fn events_are_kept_most_recent_first_and_trimmed() {
    let (_pg, store) = store().await;
    store.host_hello(&host("h1"), &hello(0, 1)).await.expect("hello");
    store.host_hello(&host("h2"), &hello(0, 1)).await.expect("hello");
    let event = |i: usize| {
        HostEvent::new("drift_repaired".parse().expect("kind"), &format!("repair {i}"), 1_700_000_000_000, 0)
    };
    for i in 0..60 {
        store.add_host_event(&host("h1"), &event(i)).await.expect("event");
    }
    store.add_host_event(&host("h2"), &event(0)).await.expect("event");
    let events = store.host_events(&host("h1")).await.expect("events");
    let messages: Vec<_> = events.iter().map(HostEvent::message).collect();
    let want: Vec<_> = (10..60).rev().map(|i| format!("repair {i}")).collect();
    assert_eq!(messages, want);
    assert_eq!(store.host_events(&host("h2")).await.expect("events").len(), 1, "trimming is per host");
}

/// Every session gets the lowest free VNI unless it asks for one; a VNI in use is refused
/// and changes nothing; a VXLAN collector's sessions compile into tunnels to it.
#[tokio::test]
async fn vnis_are_allocated_unique_and_reach_vxlan_rules() {
    let (_pg, store) = store().await;
    let vxlan = "i-0c0000000000000d3";
    store
        .add_collector(
            &NewCollector {
                instance_id: vxlan.parse().expect("id"),
                ip: "10.8.0.5".parse().expect("ip"),
                ipv6: None,
                subnet_id: "subnet-2".into(),
                source_dest_check: true,
                encap: Encap::Vxlan,
            },
            &audit(),
        )
        .await
        .expect("collector");
    let spec = |name: &str, collector: &str, vni: Option<u32>| {
        SessionSpec::new(
            name.parse().expect("name"),
            vec![host("h1")],
            collector.parse().expect("id"),
            Filter::default(),
        )
        .expect("spec")
        .with_vni(vni.map(|v| Vni::new(v).expect("vni")))
    };
    let vni_of = async |name: &str| store.session(&name.parse().expect("name")).await.expect("session").spec.vni();
    store.create_session(&spec("a", COLLECTOR, None), &[host("h1")], &audit()).await.expect("a");
    store.create_session(&spec("b", vxlan, Some(7)), &[], &audit()).await.expect("b");
    store.create_session(&spec("c", vxlan, None), &[], &audit()).await.expect("c");
    assert_eq!(
        (vni_of("a").await, vni_of("b").await, vni_of("c").await),
        (Vni::new(1).ok(), Vni::new(7).ok(), Vni::new(2).ok())
    );

    let before = store.desired(&host("h1")).await.expect("desired");
    let taken = store.create_session(&spec("d", vxlan, Some(7)), &[], &audit()).await.unwrap_err();
    assert!(taken.to_string().contains('7'), "{taken}");
    assert!(store.session(&"d".parse().expect("name")).await.is_err(), "nothing stored");
    assert_eq!(store.desired(&host("h1")).await.expect("desired"), before);

    // Deleting a session frees its VNI for the next one.
    store.delete_session(&"a".parse().expect("name"), &audit()).await.expect("delete");
    store.create_session(&spec("e", vxlan, None), &[], &audit()).await.expect("e");
    assert_eq!(vni_of("e").await, Vni::new(1).ok());

    let rules = store.desired(&host("h1")).await.expect("desired");
    let tunnels: Vec<_> = rules.tunnels().iter().map(|t| (t.vni().get(), t.remote().to_string())).collect();
    assert_eq!(tunnels, [(1, "10.8.0.5".to_owned()), (2, "10.8.0.5".to_owned()), (7, "10.8.0.5".to_owned())]);
    // Both families go into the IPv4 tunnel, though the collector has no IPv6 address.
    assert_eq!(rules.rules().iter().filter(|r| r.family() == IpFamily::Ipv6).count(), 6);
}

/// What a collector counts, as (session, source, address).
async fn counted(store: &Store) -> Vec<(String, String, String)> {
    let set = store.desired(&host(COLLECTOR)).await.expect("the collector's set");
    set.arrivals().iter().map(|a| (a.session().to_string(), a.source().to_string(), a.from().to_string())).collect()
}

fn entries(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter().map(|(s, h, a)| ((*s).to_owned(), (*h).to_owned(), (*a).to_owned())).collect()
}

/// A change recompiles only what the collector counts of the sources it touches; what it
/// counts of the others stays, so after creates, an update moving sources, a source's new
/// address and a delete, the collector counts exactly what its sessions send.
#[tokio::test]
async fn a_collector_counts_what_its_sessions_send_after_every_kind_of_change() {
    let (_pg, store) = store().await;
    for (i, h) in ["h1", "h2", "h3"].into_iter().enumerate() {
        let addresses = [format!("10.9.0.{}", i + 1)];
        let hello = HelloRecord { addresses: &addresses, ..hello(0, i64::try_from(i).expect("small")) };
        store.host_hello(&host(h), &hello).await.expect("hello");
    }
    store.create_session(&spec("s1", &["h1", "h2"]), &[], &audit()).await.expect("s1");
    let changed = store.create_session(&spec("s2", &["h2", "h3"]), &[], &audit()).await.expect("s2");
    assert!(changed.contains(&host(COLLECTOR)), "the collector counts more: {changed:?}");
    assert_eq!(
        counted(&store).await,
        entries(&[
            ("s1", "h1", "10.9.0.1"),
            ("s1", "h2", "10.9.0.2"),
            ("s2", "h2", "10.9.0.2"),
            ("s2", "h3", "10.9.0.3")
        ])
    );

    let before = store.session(&"s1".parse().expect("name")).await.expect("s1").spec;
    let after = before.clone().with_sources(vec![host("h2"), host("h3")], Vec::new()).expect("sources");
    let change =
        SessionChange { before: &before, after: &after, found_in_ec2: &[], matched: None, ttl: TtlChange::Keep };
    store.update_session(&change, &audit()).await.expect("update");
    assert_eq!(
        counted(&store).await,
        entries(&[
            ("s1", "h2", "10.9.0.2"),
            ("s1", "h3", "10.9.0.3"),
            ("s2", "h2", "10.9.0.2"),
            ("s2", "h3", "10.9.0.3")
        ])
    );

    // h2 comes back from another address: the Hello asks for a recount (the controller's
    // recount task makes it), and both sessions count it there.
    let moved = ["10.9.0.22".to_owned()];
    let outcome =
        store.host_hello(&host("h2"), &HelloRecord { addresses: &moved, ..hello(0, 9) }).await.expect("hello");
    assert!(outcome.recount, "a source from a new address");
    store.recompile_collectors(&[host("h2")]).await.expect("recount");
    assert_eq!(
        counted(&store).await,
        entries(&[
            ("s1", "h2", "10.9.0.22"),
            ("s1", "h3", "10.9.0.3"),
            ("s2", "h2", "10.9.0.22"),
            ("s2", "h3", "10.9.0.3")
        ])
    );

    store.delete_session(&"s2".parse().expect("name"), &audit()).await.expect("delete");
    assert_eq!(counted(&store).await, entries(&[("s1", "h2", "10.9.0.22"), ("s1", "h3", "10.9.0.3")]));
    store.delete_session(&"s1".parse().expect("name"), &audit()).await.expect("delete");
    assert_eq!(counted(&store).await, entries(&[]));
}

/// Creates and deletes run side by side, ordered only by the hosts they lock: in bursts of
/// overlapping changes every host gets one version per change that covers it, each
/// session the version that added it, each create a VNI of its own, and the collector
/// counts exactly what the surviving sessions send.
#[tokio::test]
async fn creates_and_deletes_side_by_side_lose_nothing() {
    let (_pg, store) = store().await;
    let hosts: Vec<String> = (0..12).map(|i| format!("h{i}")).collect();
    for (i, h) in hosts.iter().enumerate() {
        let addresses = [format!("10.9.1.{i}")];
        let hello = HelloRecord { addresses: &addresses, ..hello(0, i64::try_from(i).expect("small")) };
        store.host_hello(&host(h), &hello).await.expect("hello");
    }
    // Session `r{round}-{i}` covers three neighbouring hosts, so each host is covered by
    // three sessions of a round; each round deletes the odd sessions of those before.
    let sources = |i: usize| -> Vec<&str> { (i..i + 3).map(|j| hosts[j % hosts.len()].as_str()).collect() };
    let mut changes_per_host = vec![0_u64; hosts.len()];
    let mut live: Vec<(String, usize)> = Vec::new();
    for round in 0..3 {
        let creates: Vec<(String, usize)> = (0..hosts.len()).map(|i| (format!("r{round}-{i}"), i)).collect();
        let deletes: Vec<(String, usize)> = live.iter().filter(|(_, i)| i % 2 == 1).cloned().collect();
        let created = futures::future::join_all(creates.iter().map(|(name, i)| {
            let (store, spec) = (store.clone(), spec(name, &sources(*i)));
            async move { store.create_session(&spec, &[], &audit()).await }
        }));
        let deleted = futures::future::join_all(deletes.iter().map(|(name, _)| {
            let (store, name) = (store.clone(), name.parse().expect("name"));
            async move { store.delete_session(&name, &audit()).await }
        }));
        let (created, deleted) = futures::future::join(created, deleted).await;
        for result in created.into_iter().chain(deleted) {
            result.expect("every change is made");
        }
        for &(_, i) in creates.iter().chain(&deletes) {
            for j in i..i + 3 {
                changes_per_host[j % hosts.len()] += 1;
            }
        }
        live.retain(|l| !deletes.contains(l));
        live.extend(creates);
    }

    for (h, changes) in hosts.iter().zip(&changes_per_host) {
        let set = store.desired(&host(h)).await.expect("desired");
        assert_eq!(set.version(), *changes, "{h}: one version per change covering it");
        let covering = live.iter().filter(|(_, i)| sources(*i).contains(&h.as_str())).count();
        assert_eq!(set.rules().len(), 2 * covering, "{h}: two rules per live session covering it");
    }
    let sessions = store.list_sessions().await.expect("list");
    assert_eq!(sessions.len(), live.len());
    let vnis: BTreeSet<_> = sessions.iter().map(|s| s.spec.vni()).collect();
    assert_eq!(vnis.len(), sessions.len(), "a VNI per session");
    let mut required: Vec<(String, u64)> = Vec::new();
    for s in &sessions {
        for source in &s.sources {
            required.push((source.host_id.to_string(), source.required_version));
        }
    }
    let distinct: BTreeSet<_> = required.iter().collect();
    assert_eq!(distinct.len(), required.len(), "no two sessions need the same version of a host: {required:?}");
    let mut expected: Vec<(String, String, String)> = live
        .iter()
        .flat_map(|(name, i)| {
            sources(*i).into_iter().map(move |h| {
                let at = h.trim_start_matches('h');
                (name.clone(), h.to_owned(), format!("10.9.1.{at}"))
            })
        })
        .collect();
    expected.sort();
    let mut counted = counted(&store).await;
    counted.sort();
    assert_eq!(counted, expected, "the collector counts what the live sessions send");
}

/// Which of many hosts the store knows, asked in one query.
#[tokio::test]
async fn known_hosts_are_found_among_a_thousand() {
    let (_pg, store) = store().await;
    let named: Vec<HostId> = (0..1000).map(|i| host(&format!("h{i:04}"))).collect();
    for h in named.iter().step_by(100) {
        store.host_hello(h, &hello(0, 1)).await.expect("hello");
    }
    let known = store.known_hosts(&named).await.expect("known");
    assert_eq!(known, named.iter().step_by(100).cloned().collect::<BTreeSet<_>>());
    assert!(store.known_hosts(&[]).await.expect("none asked").is_empty());
}

/// Acks are stored in batches as one by one: a version above the desired one is refused
/// and named, and a host whose row a change holds is skipped and named, not waited for.
#[tokio::test]
async fn acks_in_a_batch_skip_held_hosts_and_refuse_unpushed_versions() {
    use sqlx::Connection as _;
    let (_pg, url) = database().await;
    let store = store_at(&url).await;
    for (i, h) in ["h1", "h2", "h3"].into_iter().enumerate() {
        store.host_hello(&host(h), &hello(0, i64::try_from(i).expect("small"))).await.expect("hello");
    }
    store.create_session(&spec("a", &["h1", "h2", "h3"]), &[], &audit()).await.expect("create");
    let mut holder = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut holder).await.expect("begin");
    sqlx::query("SELECT 1 FROM hosts WHERE host_id = 'h1' FOR UPDATE").execute(&mut holder).await.expect("lock");

    let ack = |version| AckRecord { version, rule_count: 2 };
    let outcome =
        store.hosts_ack(&[(host("h1"), ack(1)), (host("h2"), ack(1)), (host("h3"), ack(2))]).await.expect("acks");
    assert_eq!(outcome.busy, [host("h1")].into_iter().collect());
    assert_eq!(outcome.above_desired, [host("h3")].into_iter().collect());
    let applied = |h: &'static str| {
        let store = store.clone();
        async move { store.host(&host(h)).await.expect("host").applied_version }
    };
    assert_eq!((applied("h1").await, applied("h2").await, applied("h3").await), (0, 1, 0));

    sqlx::query("COMMIT").execute(&mut holder).await.expect("commit");
    let outcome = store.hosts_ack(&[(host("h1"), ack(1))]).await.expect("acks");
    assert_eq!(outcome, AckOutcome::default());
    assert_eq!(applied("h1").await, 1);
}
