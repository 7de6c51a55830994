//! fleet-siege end to end at a tiny size, so it does not rot: a TLS controller (built in
//! the same target directory) on a real Postgres, a few idle connections and bogus-token
//! callers, and the real fleetctl. No timing is asserted. Needs `cargo build --workspace
//! --bins` first, like the lab's tests.

use clap::Parser;
use teefleet_loadgen::siege::{self, SiegeConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_siege_runs_and_the_operator_is_served() {
    let config = SiegeConfig::parse_from([
        "fleet-siege",
        "--idle",
        "20",
        "--callers",
        "5",
        "--baseline-secs",
        "1",
        "--ramp-secs",
        "1",
        "--secs",
        "2",
    ]);
    let report = siege::run(&config).await.expect("the siege runs");
    let run = &report.runs[0];
    for (what, window) in [("quiet", &run.baseline), ("siege", &run.siege)] {
        assert_eq!(window.fleetctl_failed, 0, "{what}: {:?}", window.first_failure);
        assert!(window.fleetctl.is_some_and(|s| s.count > 0), "{what}: fleetctl was timed");
    }
    assert_eq!(run.attack.idle_held, 20, "{:?}", run.attack);
    assert!(run.attack.bogus_calls > 0 && run.attack.bogus_transport_errors == 0, "{:?}", run.attack);
    assert!(report.table().contains("siege: fleetctl session list"));
}
