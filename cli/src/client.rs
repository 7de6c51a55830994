//! The calls fleetctl makes: one gRPC channel to the controller's admin API, one function
//! per subcommand, and the `--wait` loop. Errors keep the controller's message verbatim,
//! because it names the offending field.

use std::io::Write;
use std::time::Duration;

use teefleet_proto::v1;
use teefleet_proto::v1::collector_service_client::CollectorServiceClient;
use teefleet_proto::v1::host_service_client::HostServiceClient;
use teefleet_proto::v1::session_service_client::SessionServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::args::{CollectorCommand, Command, CreateArgs, Format, HostCommand, SessionCommand};
use crate::output::{self, CollectorOut, DeletedOut, HostOut, SessionOut};

/// How often `--wait` asks for the session's state.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Why a command failed; printed as `error: <message>` with exit code 1.
#[derive(Debug)]
pub enum CliError {
    /// The controller answered with an error status; its message is shown verbatim.
    Status(tonic::Status),
    /// The controller could not be reached.
    Connect { url: String, detail: String },
    /// `--wait` gave up; the message lists the hosts that have not applied the session.
    WaitTimeout(String),
    /// Writing the output failed (for example a closed pipe).
    Output(std::io::Error),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Status(status) if status.message().is_empty() => {
                write!(f, "{}", status.code().description())
            }
            CliError::Status(status) => f.write_str(status.message()),
            CliError::Connect { url, detail } => {
                write!(f, "cannot reach the controller at {url}: {detail}")
            }
            CliError::WaitTimeout(message) => f.write_str(message),
            CliError::Output(e) => write!(f, "writing output: {e}"),
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        CliError::Status(status)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Output(e)
    }
}

/// Connects lazily-but-checked: a bad URL or an unreachable controller fails here with a
/// message naming the URL, not later with an opaque transport error.
pub async fn connect(url: &str) -> Result<Channel, CliError> {
    let connect_error = |detail: String| CliError::Connect { url: url.to_owned(), detail };
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| connect_error(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    endpoint.connect().await.map_err(|e| {
        // The transport error's Display is terse ("transport error"); its source says why.
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            detail = format!("{detail}: {s}");
            source = s.source();
        }
        connect_error(detail)
    })
}

/// Runs one parsed command against the controller, writing its result to `out`.
pub async fn execute(channel: Channel, command: Command, format: Format, out: &mut impl Write) -> Result<(), CliError> {
    match command {
        Command::Collector(cmd) => collector(CollectorServiceClient::new(channel), cmd, format, out).await,
        Command::Host(HostCommand::List) => {
            let hosts = HostServiceClient::new(channel).list_hosts(v1::ListHostsRequest {}).await?.into_inner().hosts;
            let hosts: Vec<HostOut> = hosts.iter().map(HostOut::from).collect();
            Ok(output::emit(out, format, &hosts, || output::hosts_table(&hosts))?)
        }
        Command::Host(HostCommand::Get { host_id }) => {
            let host = HostServiceClient::new(channel).get_host(v1::GetHostRequest { host_id }).await?.into_inner();
            let host = HostOut::from(&host);
            Ok(output::emit(out, format, &host, || output::host_detail(&host))?)
        }
        Command::Session(cmd) => session(SessionServiceClient::new(channel), cmd, format, out).await,
    }
}

async fn collector(
    mut client: CollectorServiceClient<Channel>,
    cmd: CollectorCommand,
    format: Format,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match cmd {
        CollectorCommand::Add { instance_id, ip, ipv6 } => {
            let collector = client
                .add_collector(v1::AddCollectorRequest {
                    instance_id,
                    ip: ip.unwrap_or_default(),
                    ipv6: ipv6.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let collector = CollectorOut::from(&collector);
            let row = std::slice::from_ref(&collector);
            Ok(output::emit(out, format, &collector, || output::collectors_table(row))?)
        }
        CollectorCommand::List => {
            let list = client.list_collectors(v1::ListCollectorsRequest {}).await?.into_inner().collectors;
            let list: Vec<CollectorOut> = list.iter().map(CollectorOut::from).collect();
            Ok(output::emit(out, format, &list, || output::collectors_table(&list))?)
        }
        CollectorCommand::Remove { instance_id } => {
            client.remove_collector(v1::RemoveCollectorRequest { instance_id: instance_id.clone() }).await?;
            deleted(out, format, "collector", instance_id)
        }
    }
}

async fn session(
    mut client: SessionServiceClient<Channel>,
    cmd: SessionCommand,
    format: Format,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match cmd {
        SessionCommand::Create(args) => create_session(client, &args, format, out).await,
        SessionCommand::List => {
            let list = client.list_sessions(v1::ListSessionsRequest {}).await?.into_inner().sessions;
            let list: Vec<SessionOut> = list.iter().map(SessionOut::from).collect();
            Ok(output::emit(out, format, &list, || output::sessions_table(&list))?)
        }
        SessionCommand::Get { name } => {
            let s = client.get_session(v1::GetSessionRequest { name }).await?.into_inner();
            let s = SessionOut::from(&s);
            Ok(output::emit(out, format, &s, || output::session_detail(&s))?)
        }
        SessionCommand::Delete { name } => {
            client.delete_session(v1::DeleteSessionRequest { name: name.clone() }).await?;
            deleted(out, format, "session", name)
        }
    }
}

fn deleted(out: &mut impl Write, format: Format, kind: &'static str, name: String) -> Result<(), CliError> {
    let d = DeletedOut { kind, name, deleted: true };
    Ok(output::emit(out, format, &d, || format!("{} {} deleted\n", d.kind, d.name))?)
}

async fn create_session(
    mut client: SessionServiceClient<Channel>,
    args: &CreateArgs,
    format: Format,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut session = client.create_session(args.to_request()).await?.into_inner();
    if args.wait {
        session = wait_active(&mut client, session, Duration::from_secs(args.timeout)).await?;
    }
    let s = SessionOut::from(&session);
    Ok(output::emit(out, format, &s, || output::session_detail(&s))?)
}

/// Polls the session until it is active or the timeout passes.
async fn wait_active(
    client: &mut SessionServiceClient<Channel>,
    mut session: v1::Session,
    timeout: Duration,
) -> Result<v1::Session, CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if session.state == v1::SessionState::Active as i32 {
            return Ok(session);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::WaitTimeout(wait_timeout_message(&SessionOut::from(&session), timeout)));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        session = client.get_session(v1::GetSessionRequest { name: session.name.clone() }).await?.into_inner();
    }
}

/// Explains a `--wait` timeout: the state, each host that has not applied the session and
/// why, and the session's other problems.
pub fn wait_timeout_message(s: &SessionOut, timeout: Duration) -> String {
    let mut msg = format!("session {} is not active after {}s (state {})", s.name, timeout.as_secs(), s.state);
    let pending: Vec<String> = s
        .hosts
        .iter()
        .filter(|h| !h.applied)
        .map(|h| {
            let mut line = format!(
                "{} ({}, applied version {} of {}",
                h.host_id,
                if h.connected { "connected" } else { "disconnected" },
                h.applied_version,
                h.desired_version
            );
            if let Some(e) = &h.error {
                line.push_str(&format!(", error: {e}"));
            }
            line.push(')');
            line
        })
        .collect();
    if !pending.is_empty() {
        msg.push_str("; not applied on: ");
        msg.push_str(&pending.join("; "));
    }
    if !s.problems.is_empty() {
        msg.push_str("; problems: ");
        msg.push_str(&s.problems.join("; "));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::SessionHostOut;

    fn host(id: &str, applied: bool, connected: bool, error: Option<&str>) -> SessionHostOut {
        SessionHostOut {
            host_id: id.into(),
            applied,
            connected,
            error: error.map(Into::into),
            desired_version: 5,
            applied_version: if applied { 5 } else { 4 },
            packets: 0,
            bytes: 0,
            packets_per_second: 0.0,
            bytes_per_second: 0.0,
        }
    }

    #[test]
    fn wait_timeout_lists_unapplied_hosts_and_errors() {
        let s = SessionOut {
            name: "web".into(),
            sources: vec!["i-a".into(), "i-b".into(), "i-c".into()],
            collector: "i-col".into(),
            direction: "both",
            protocol: "all",
            port: None,
            cidrs: vec![],
            sample: None,
            max_pps: None,
            state: "degraded",
            hosts: vec![
                host("i-a", true, true, None),
                host("i-b", false, true, Some("TEE not supported")),
                host("i-c", false, false, None),
            ],
            problems: vec!["ec2: throttled".into()],
            created_at: String::new(),
            packets: 0,
            bytes: 0,
            packets_per_second: 0.0,
            bytes_per_second: 0.0,
        };
        assert_eq!(
            wait_timeout_message(&s, Duration::from_secs(60)),
            "session web is not active after 60s (state degraded); not applied on: \
             i-b (connected, applied version 4 of 5, error: TEE not supported); \
             i-c (disconnected, applied version 4 of 5); problems: ec2: throttled"
        );
    }

    #[test]
    fn status_errors_show_the_message_verbatim() {
        let e = CliError::from(tonic::Status::invalid_argument("filter.cidrs[0]: \"10.0.0.300/8\" is not a CIDR"));
        assert_eq!(e.to_string(), "filter.cidrs[0]: \"10.0.0.300/8\" is not a CIDR");
        let e = CliError::from(tonic::Status::unavailable(""));
        assert_eq!(e.to_string(), "The service is currently unavailable");
    }

    #[tokio::test]
    async fn unreachable_controller_names_the_url() {
        // Port 1 on loopback refuses connections immediately.
        let err = connect("http://127.0.0.1:1").await.expect_err("nothing listens on port 1");
        let text = err.to_string();
        assert!(text.starts_with("cannot reach the controller at http://127.0.0.1:1: "), "{text}");
        let err = connect("not a url").await.expect_err("bad url");
        assert!(err.to_string().contains("not a url"), "{err}");
    }
}
