//! 500 callers with bogus tokens against a controller serving TLS: the log grows by a few
//! lines a second, the audit log by a bounded number of rows, and operators are served
//! throughout. Alone in its binary because it reads what the controller logs.

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{
    Controller, FakeCloud, database, free_port, get,
    secure::{BOOTSTRAP, audit, with_token},
    tls_channel,
};
use teefleet_proto::v1::{self as pb, session_service_client::SessionServiceClient};

const CALLERS: usize = 500;
const FLOOD: Duration = Duration::from_secs(6);

/// Everything the controller logs, for counting lines.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().expect("log")).lines().map(str::to_owned).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_token_callers_neither_flood_the_log_nor_starve_operators() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).init();

    let (_pg, url) = database().await;
    let metrics = free_port();
    let flags = ["--refusal-report-interval", "2s", "--metrics-listen", &metrics];
    let (ctl, ca) = Controller::start_secure_with(url, FakeCloud::with(&[]), BOOTSTRAP, &flags).await;
    // The callers share a few connections, as a client library would.
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(tls_channel(ctl.addr, &ca, None).await);
    }
    let before = log.lines().len();
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..CALLERS {
        let channel = channels[i % channels.len()].clone();
        callers.spawn(async move {
            let mut refused = 0u64;
            while started.elapsed() < FLOOD {
                let req = with_token(pb::ListSessionsRequest {}, &format!("tf1.bogus.{i}"));
                if SessionServiceClient::new(channel.clone()).list_sessions(req).await.is_err() {
                    refused += 1;
                }
            }
            refused
        });
    }
    // An operator is served throughout.
    let mut served = 0;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < FLOOD {
        let call = Instant::now();
        let req = with_token(pb::ListSessionsRequest {}, BOOTSTRAP);
        SessionServiceClient::new(ctl.channel.clone()).list_sessions(req).await.expect("the operator is served");
        slowest = slowest.max(call.elapsed());
        served += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut refused = 0;
    while let Some(n) = callers.join_next().await {
        refused += n.expect("caller");
    }
    // One more report interval, so the last summary is written.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let lines = log.lines();
    let grown = lines.len() - before;
    println!(
        "{refused} refused calls, {served} operator calls (slowest {slowest:?}), {grown} log lines in {elapsed:.1} s"
    );
    assert!(refused > 1_000, "the flood happened: {refused} refused calls");
    assert!(
        (grown as f64) < 4.0 * elapsed,
        "the log grew by {grown} lines in {elapsed:.1} s:\n{}",
        lines[before..].iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    let summaries: Vec<&String> = lines[before..].iter().filter(|l| l.contains("refused")).collect();
    assert!(!summaries.is_empty(), "the refusals are reported");

    let rows = audit(&ctl.channel, BOOTSTRAP).await;
    let refused_rows: Vec<_> = rows.iter().filter(|r| r.result.starts_with("Unauthenticated")).collect();
    assert!(!refused_rows.is_empty(), "refused calls are audited");
    assert!(refused_rows.len() < 100, "{} audit rows for {refused} refusals", refused_rows.len());
    let counted: u64 = refused_rows.iter().map(|r| refusals_in(&r.result)).sum();
    assert_eq!(counted, refused, "every refusal is counted in some audit row: {refused_rows:#?}");

    let text = get(&metrics, "/metrics").await;
    let line = format!("teefleet_controller_refused_calls_total{{kind=\"admin\",reason=\"unknown_token\"}} {refused}");
    assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    ctl.stop().await;
}

/// How many refusals an audit row stands for: one, or the count of a summary row
/// ("... (N calls)").
fn refusals_in(result: &str) -> u64 {
    result.rsplit_once('(').and_then(|(_, tail)| tail.strip_suffix(" calls)")).and_then(|n| n.parse().ok()).unwrap_or(1)
}
