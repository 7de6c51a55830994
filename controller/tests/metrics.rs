//! `/metrics` as Prometheus sees it: the controller on real Postgres, scraped over HTTP
//! after a session is created and an agent acknowledges its rule set; and the Grafana
//! dashboard in `deploy/grafana`, whose queries may name only metrics the daemons expose.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{Agent, Controller, FakeCloud, add_collector, database, eventually, free_port, get, session};
use teefleet_agent::firewall::{Check, Counter};
use teefleet_controller::cloud::CloudError;
use teefleet_proto::v1::{self as pb, agent_message::Msg, session_service_client::SessionServiceClient};

const COLLECTOR: &str = "i-0c0000000000000c1";
const SOURCE: &str = "i-05000000000000001";

/// The value of the sample `series` (name and labels exactly as exposed).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

#[tokio::test]
async fn a_scrape_shows_agents_pushes_latency_sessions_and_ec2_calls() {
    let (_pg, url) = database().await;
    let metrics = free_port();
    let cloud = FakeCloud::with(&[(COLLECTOR, "10.9.0.100"), (SOURCE, "10.9.0.10")]);
    let ctl = Controller::start_with(url, cloud, &["--metrics-listen", &metrics]).await;
    add_collector(&ctl.channel, COLLECTOR).await;
    let mut agent = Agent::connect(&ctl.channel, SOURCE, 0).await;
    // Both directions, so the reconciler turns the source's and the collector's checks off.
    let create = pb::CreateSessionRequest {
        name: "web".into(),
        sources: vec![SOURCE.into()],
        collector: COLLECTOR.into(),
        disable_source_check: true,
        ..Default::default()
    };
    SessionServiceClient::new(ctl.channel.clone()).create_session(create).await.expect("created");
    let set = agent.next_rule_set().await;
    agent.send(Msg::Ack(pb::Ack { version: set.version })).await;
    let active = i32::from(pb::SessionState::Active);
    eventually(10, "the session to become active", || async {
        (session(&ctl.channel, "web").await.state == active).then_some(())
    })
    .await;

    // The first scrape reads the sessions; later ones within 30 s show the same counts.
    let text = get(&metrics, "/metrics").await;
    assert_eq!(value(&text, "teefleet_controller_agents_connected"), 1.0);
    assert!(value(&text, "teefleet_controller_pushes_total") >= 1.0, "{text}");
    assert_eq!(value(&text, "teefleet_controller_push_to_ack_seconds_count"), 1.0, "one Ack, one observation");
    assert_eq!(value(&text, "teefleet_controller_push_to_ack_seconds_bucket{le=\"30.0\"}"), 1.0);
    assert_eq!(value(&text, "teefleet_controller_sessions{status=\"active\"}"), 1.0);
    assert_eq!(value(&text, "teefleet_controller_sessions{status=\"pending\"}"), 0.0);
    assert_eq!(value(&text, "teefleet_controller_sessions{status=\"degraded\"}"), 0.0);
    // The collector was described when added; both checks were turned off.
    assert!(value(&text, "teefleet_controller_ec2_calls_total{operation=\"describe_instances\"}") >= 1.0);
    assert!(value(&text, "teefleet_controller_ec2_calls_total{operation=\"modify_instance_attribute\"}") >= 2.0);
    assert!(!text.contains("teefleet_controller_ec2_failures_total{"), "no EC2 call failed:\n{text}");
    value(&text, "teefleet_controller_database_errors_total{kind=\"unavailable\"}");

    // A repeated Ack is not a second delivery.
    agent.send(Msg::Ack(pb::Ack { version: set.version })).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = get(&metrics, "/metrics").await;
    assert_eq!(value(&text, "teefleet_controller_push_to_ack_seconds_count"), 1.0);

    drop(agent);
    eventually(10, "the stream to end", || async {
        let text = get(&metrics, "/metrics").await;
        (value(&text, "teefleet_controller_agents_connected") == 0.0).then_some(())
    })
    .await;
    ctl.stop().await;
}

/// The series names a registry's text exposes, read from its `# TYPE` lines: a counter's
/// samples end in `_total`, a histogram's in `_bucket`, `_sum` and `_count`. A labelled
/// family with no sample is not in the text at all, so callers give each one a sample.
fn exposed(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(declared) = line.strip_prefix("# TYPE ") else { continue };
        let Some((name, kind)) = declared.split_once(' ') else { continue };
        match kind {
            "counter" => names.insert(format!("{name}_total")),
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
                true
            }
            _ => names.insert(name.to_owned()),
        };
    }
    names
}

/// Every `teefleet_` name in a PromQL expression.
fn names_in(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.starts_with("teefleet_"))
        .map(str::to_owned)
        .collect()
}

/// Every query in the dashboard: panels' targets and the template variables'.
fn queries(json: &serde_json::Value, out: &mut Vec<String>) {
    match json {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(q)) => out.push(q.clone()),
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_names_only_metrics_the_daemons_expose() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/teefleet.json");
    let text = std::fs::read_to_string(path).expect("read the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");

    let controller = teefleet_controller::metrics::Metrics::default();
    controller.refused_call("admin", "unknown_token");
    controller.refused_connection("address_cap");
    controller.ignored_report("stale_hello");
    controller.ended_stream("malformed");
    controller.ec2_call("describe_instances", Some(&CloudError::Unavailable("throttled".into())));
    controller.session_delivery(&"web".parse().expect("name"), 10, 9, Some(0.1));
    let agent = teefleet_agent::status::Status::new(Duration::from_secs(5));
    agent.record_synced(&"https://controller:7300".parse().expect("url"));
    let counters = [("web".parse().expect("name"), Counter { packets: 1, bytes: 100 })];
    agent.record_check(Ok(&Check { counters: counters.into(), ..Check::default() }));
    let (controller, agent) = (controller.text(), agent.metrics());
    let known: BTreeSet<String> = exposed(&controller).into_iter().chain(exposed(&agent)).collect();
    assert!(known.contains("teefleet_agent_applies_total"), "{known:?}");

    let mut all = Vec::new();
    queries(&dashboard, &mut all);
    assert!(!all.is_empty(), "the dashboard has queries");
    let unknown: Vec<(String, &String)> = all
        .iter()
        .flat_map(|q| names_in(q).into_iter().map(move |n| (n, q)))
        .filter(|(n, _)| !known.contains(n))
        .collect();
    assert!(unknown.is_empty(), "names no daemon exposes: {unknown:#?}\nexposed: {known:#?}");
    let used: BTreeSet<String> = all.iter().flat_map(|q| names_in(q)).collect();
    for family in ["agents_connected", "pushes_total", "push_to_ack_seconds_bucket", "sessions", "session_loss_ratio"] {
        assert!(used.contains(&format!("teefleet_controller_{family}")), "the dashboard shows {family}");
    }
    assert!(used.iter().any(|n| n.starts_with("teefleet_agent_")), "the dashboard shows the agents' metrics");

    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        dashboard["schemaVersion"]
    );
    let variables = dashboard["templating"]["list"].as_array().expect("template variables");
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus data source variable named DS_PROMETHEUS"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    let rows: Vec<&str> = panels.iter().filter(|p| p["type"] == "row").filter_map(|p| p["title"].as_str()).collect();
    assert_eq!(rows, ["Fleet", "Sessions", "Delivery"]);
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = &panel["title"];
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has a query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {title}");
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!names_in(expr).is_empty(), "panel {title}: {expr:?} names a teefleet metric");
        }
    }
}
