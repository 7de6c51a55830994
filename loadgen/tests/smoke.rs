//! The load tool end to end at a tiny size, so it does not rot: 20 agents against a real
//! controller (built in the same target directory), Postgres and moto. Only generous
//! timeouts; no timing is asserted. Needs `cargo build --workspace --bins` first, like the
//! lab's tests.

use clap::Parser;
use teefleet_loadgen::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_agents_ack_every_change_and_nothing_else_and_survive_a_restart() {
    let config = Config::parse_from([
        "fleet-loadgen",
        "--agents",
        "20",
        "--health-secs",
        "1",
        "--settle-secs",
        "1",
        "--idle-secs",
        "2",
        "--quiet-secs",
        "1",
        "--converge-timeout-secs",
        "60",
        "--seed-sessions",
        "30",
    ]);
    let report = teefleet_loadgen::run(&config).await.expect("the load run succeeds");

    assert_eq!(report.sizes.len(), 1);
    let size = &report.sizes[0];
    assert_eq!(size.agents, 20);
    assert_eq!(size.scenarios.len(), 2);
    assert!(size.scenarios[0].update.is_some(), "the first scenario measures an update");
    for scenario in &size.scenarios {
        assert_eq!((scenario.covered, scenario.sessions), (20, 1), "{}", scenario.name);
        let update = scenario.update.as_ref().map(|u| ("update", u));
        for (what, phase) in [("create", &scenario.create), ("delete", &scenario.delete)].into_iter().chain(update) {
            let latency = phase.latency.unwrap_or_else(|| panic!("{} {what}: latencies recorded", scenario.name));
            assert_eq!((phase.acked, phase.missing, latency.count), (20, 0, 20), "{} {what}", scenario.name);
            assert_eq!(phase.unexpected(), 0, "{} {what}: {phase:?}", scenario.name);
            let from_first = phase.latency_from_first_start.expect("latencies from the first call's start");
            assert_eq!(from_first.count, 20, "{} {what}", scenario.name);
            assert!(
                from_first.min_ms >= 0.0,
                "{} {what}: an Ack before the first call started: {from_first:?}",
                scenario.name
            );
        }
    }
    assert_eq!(size.idle.pushes, 0, "nothing pushed while idle");
    assert_eq!(size.unrelated_pushes, Some(0), "a session elsewhere pushes nothing here");
    assert_eq!(size.streams_ended, 0);
    assert!(size.idle.health_reports_per_sec > 0.0, "agents report health");
    assert!(size.idle.controller_rss_mb.is_some_and(|m| m > 0.0));
    assert!(size.start_empty_ms.is_some());
    // 20 hosts, the one without an agent that the unrelated session named, and the
    // collector (a host from its registration on, for its agent).
    assert_eq!((size.loaded_hosts, size.loaded_sessions), (Some(22), Some(30)));
    assert!(size.start_loaded_ms.is_some());
    // Killed and restarted under the fleet: every agent is back, holding the version the
    // database wants, so nothing is pushed.
    let storm = size.storm.as_ref().expect("the controller was restarted under the fleet");
    let back = storm.back.expect("agents came back");
    assert_eq!((back.count, storm.missing), (20, 0), "{storm:?}");
    assert_eq!(storm.pushes, 0, "{storm:?}");
    assert!(storm.start_ms.is_some());

    let table = report.table();
    assert!(table.contains("| 20 agents |"), "{table}");
    let json = serde_json::to_value(&report).expect("JSON");
    assert_eq!(json["sizes"][0]["agents"], 20);
}
