//! The calls fleetctl makes: the settings resolved, one gRPC channel to the controller's
//! admin API, one function per subcommand, and the `--wait` loop. Errors keep the
//! controller's message verbatim, because it names the offending field.

use std::io::Write;
use std::time::Duration;

use teefleet_proto::v1;
use teefleet_proto::v1::audit_service_client::AuditServiceClient;
use teefleet_proto::v1::collector_service_client::CollectorServiceClient;
use teefleet_proto::v1::host_service_client::HostServiceClient;
use teefleet_proto::v1::session_service_client::SessionServiceClient;
use teefleet_proto::v1::token_service_client::TokenServiceClient;

use crate::args::{
    AuditCommand, Cli, CollectorCommand, Command, ConfigCommand, CreateArgs, Format, HostCommand, SessionCommand,
    TokenCommand,
};
use crate::config::{self, ConfigError};
use crate::error::{CliError, with_access_hint};
use crate::output::{
    self, AuditOut, CollectorOut, ConfigOut, DeletedOut, HostOut, HostRevokedOut, NewTokenOut, RevokedOut, SessionOut,
    TokenOut,
};
use crate::transport::{self, Transport};

/// The largest answer about sessions fleetctl reads. gRPC's default of 4 MiB is less than
/// a few sessions over tiers of thousands of hosts take, each listed with its status.
const MAX_SESSIONS_MESSAGE: usize = 256 * 1024 * 1024;

/// How often `--wait` asks for the session's state.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Runs one parsed command: config commands locally, the others against the controller.
/// `env` looks up environment variables (injected so tests need not set the process's).
pub async fn run(cli: Cli, env: &dyn Fn(&str) -> Option<String>, out: &mut impl Write) -> Result<(), CliError> {
    let location = config::file_path(&cli.connection, env);
    if let Command::Config(ConfigCommand::Set) = cli.command {
        let Some((path, _)) = location else {
            return Err(
                ConfigError("no config file location: set HOME or XDG_CONFIG_HOME, or pass --config".into()).into()
            );
        };
        return config_set(&cli, &path, out);
    }
    let file = config::load(location, true)?;
    let settings = config::resolve(&cli.connection, env, &file)?;
    if let Command::Config(ConfigCommand::Show) = cli.command {
        let exists = settings.file.as_ref().is_some_and(|p| p.exists());
        let problem = transport::plan(&settings).err().map(|e| e.0);
        let shown = ConfigOut::new(&settings, exists, problem);
        return Ok(output::emit(out, cli.output, &shown, || output::config_detail(&shown))?);
    }
    let plan = transport::plan(&settings)?;
    let channel = transport::connect(&plan).await?;
    execute(channel, cli.command, cli.output, out).await.map_err(|e| match e {
        // A status with a source was made on this side, by the transport, not sent by the
        // controller (which can only send a code and a message).
        CliError::Status(status) if std::error::Error::source(&status).is_some() => {
            transport::unreachable(&plan, &status)
        }
        other => with_access_hint(other, &settings),
    })
}

/// `config set`: merges the flags given into the file, checks the result makes sense on
/// its own, and writes it with mode 0600.
fn config_set(cli: &Cli, path: &std::path::Path, out: &mut impl Write) -> Result<(), CliError> {
    let current = config::load(Some((path.to_owned(), true)), false)?;
    let merged = config::merge(current.config, &cli.connection)?;
    let saved = config::LoadedFile { path: Some(path.to_owned()), config: merged };
    // The file alone must be usable, bar a missing CA (it may be set next), so a typo in a
    // URL is caught now rather than at the next command.
    let alone = config::resolve(&Default::default(), &|_| None, &saved)?;
    let mut probe = alone.clone();
    probe.ca_cert.get_or_insert(config::Setting { value: "(set later)".into(), source: config::Source::Default });
    if let Err(e) = transport::plan(&probe) {
        return Err(
            ConfigError(format!("not saved: {e}; give the settings that go together in one `config set`")).into()
        );
    }
    if let Some(ca) = cli.connection.ca_cert.as_ref().and(saved.config.ca_cert.as_ref()) {
        transport::read_ca(ca)?;
    }
    config::save(path, &saved.config)?;
    let shown = ConfigOut::new(&alone, true, transport::plan(&alone).err().map(|e| e.0));
    Ok(output::emit(out, cli.output, &shown, || format!("saved {}\n", path.display()))?)
}

/// Runs one parsed controller command, writing its result to `out`.
pub async fn execute(
    channel: Transport,
    command: Command,
    format: Format,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match command {
        Command::Collector(cmd) => collector(CollectorServiceClient::new(channel), cmd, format, out).await,
        Command::Host(cmd) => host(HostServiceClient::new(channel), cmd, format, out).await,
        Command::Session(cmd) => {
            let client = SessionServiceClient::new(channel).max_decoding_message_size(MAX_SESSIONS_MESSAGE);
            session(client, cmd, format, out).await
        }
        Command::Token(cmd) => token(TokenServiceClient::new(channel), cmd, format, out).await,
        Command::Audit(AuditCommand::List { since, limit }) => {
            let request = v1::ListAuditRequest { since: since.unwrap_or_default(), limit: limit.unwrap_or(0) };
            let records = AuditServiceClient::new(channel).list_audit(request).await?.into_inner().records;
            let records: Vec<AuditOut> = records.iter().map(AuditOut::from).collect();
            Ok(output::emit(out, format, &records, || output::audit_table(&records))?)
        }
        // `run` handles these without a controller.
        Command::Config(_) => Ok(()),
    }
}

async fn host(
    mut client: HostServiceClient<Transport>,
    cmd: HostCommand,
    format: Format,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match cmd {
        HostCommand::List => {
            let hosts = client.list_hosts(v1::ListHostsRequest {}).await?.into_inner().hosts;
            let hosts: Vec<HostOut> = hosts.iter().map(HostOut::from).collect();
            Ok(output::emit(out, format, &hosts, || output::hosts_table(&hosts))?)
        }
        HostCommand::Get { host_id } => {
            let host = client.get_host(v1::GetHostRequest { host_id }).await?.into_inner();
            let host = HostOut::from(&host);
            Ok(output::emit(out, format, &host, || output::host_detail(&host))?)
        }
        HostCommand::Revoke { host_id } => {
            let answer = client.revoke_host(v1::RevokeHostRequest { host_id: host_id.clone() }).await?.into_inner();
            let revoked = HostRevokedOut::new(host_id, &answer);
            Ok(output::emit(out, format, &revoked, || output::host_revoked_text(&revoked))?)
        }
    }
}

async fn token(
    mut client: TokenServiceClient<Transport>,
    cmd: TokenCommand,
    format: Format,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match cmd {
        TokenCommand::Create(args) => {
            // `Cli::check` refused --uses with another role before connecting.
            let request = args.to_request().map_err(tonic::Status::invalid_argument)?;
            let created = client.create_token(request).await?.into_inner();
            let created = NewTokenOut::from(&created);
            Ok(output::emit(out, format, &created, || output::new_token_text(&created))?)
        }
        TokenCommand::List => {
            let tokens = client.list_tokens(v1::ListTokensRequest {}).await?.into_inner().tokens;
            let now = chrono::Utc::now();
            let tokens: Vec<TokenOut> = tokens.iter().map(|t| TokenOut::new(t, now)).collect();
            Ok(output::emit(out, format, &tokens, || output::tokens_table(&tokens))?)
        }
        TokenCommand::Revoke { id } => {
            client.revoke_token(v1::RevokeTokenRequest { id: id.clone() }).await?;
            let revoked = RevokedOut { kind: "token", id, revoked: true };
            Ok(output::emit(out, format, &revoked, || format!("token {} revoked\n", revoked.id))?)
        }
    }
}

async fn collector(
    mut client: CollectorServiceClient<Transport>,
    cmd: CollectorCommand,
    format: Format,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match cmd {
        CollectorCommand::Add { instance_id, ip, ipv6, encap, name } => {
            let collector = client
                .add_collector(v1::AddCollectorRequest {
                    instance_id: instance_id.unwrap_or_default(),
                    ip: ip.unwrap_or_default(),
                    ipv6: ipv6.unwrap_or_default(),
                    encap,
                    name: name.unwrap_or_default(),
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
    mut client: SessionServiceClient<Transport>,
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
    mut client: SessionServiceClient<Transport>,
    args: &CreateArgs,
    format: Format,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut session = client.create_session(args.to_request()).await?.into_inner();
    if args.wait {
        session = wait_active(&mut client, session, args.timeout).await?;
    }
    let s = SessionOut::from(&session);
    Ok(output::emit(out, format, &s, || output::session_detail(&s))?)
}

/// Polls the session until it is active or the timeout passes.
async fn wait_active(
    client: &mut SessionServiceClient<Transport>,
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
    use crate::error::EXIT_CONFIG;
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
            from_tags: false,
            source_dest_check: None,
        }
    }

    #[test]
    fn wait_timeout_lists_unapplied_hosts_and_errors() {
        let s = SessionOut {
            name: "web".into(),
            sources: vec!["i-a".into(), "i-b".into(), "i-c".into()],
            source_tags: vec![],
            allow_routed: false,
            collector: "i-col".into(),
            vni: 1,
            encap: "vxlan".into(),
            disable_source_check: false,
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

    async fn run_in(home: &std::path::Path, vars: &[(&str, &str)], args: &[&str]) -> (Result<(), CliError>, String) {
        use clap::Parser;
        let cli = Cli::try_parse_from(std::iter::once("fleetctl").chain(args.iter().copied())).expect("parses");
        let mut vars: std::collections::HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        vars.entry("HOME".into()).or_insert_with(|| home.display().to_string());
        let env = move |name: &str| vars.get(name).cloned();
        let mut out = Vec::new();
        let result = run(cli, &env, &mut out).await;
        (result, String::from_utf8(out).expect("utf-8"))
    }

    #[tokio::test]
    async fn config_set_refuses_a_file_that_cannot_work() {
        let home = tempfile::tempdir().expect("home");
        let file = home.path().join(".config/fleetctl/config.toml");
        let (result, _) = run_in(home.path(), &[], &["config", "set", "--controller", "http://lab:7300"]).await;
        let err = result.expect_err("plaintext without --insecure");
        assert_eq!(err.exit_code(), EXIT_CONFIG);
        assert!(err.to_string().starts_with("not saved: http://lab:7300 (from config file "), "{err}");
        assert!(err.to_string().ends_with("give the settings that go together in one `config set`"), "{err}");
        assert!(!file.exists());

        let (result, out) =
            run_in(home.path(), &[], &["config", "set", "--controller", "http://lab:7300", "--insecure"]).await;
        result.expect("saved");
        assert_eq!(out, format!("saved {}\n", file.display()));
        let (result, _) = run_in(home.path(), &[], &["config", "set", "--controller", "https://lab:7300"]).await;
        assert!(result.expect_err("contradiction").to_string().contains("asks for plaintext but https://lab:7300"));

        // A TLS URL without its CA yet is fine: it may come next.
        let (result, _) =
            run_in(home.path(), &[], &["config", "set", "--controller", "https://lab:7300", "--insecure=false"]).await;
        result.expect("saved");
        let missing = home.path().join("missing.pem");
        let (result, _) =
            run_in(home.path(), &[], &["config", "set", "--ca-cert", missing.to_str().expect("utf-8")]).await;
        assert!(result.expect_err("no such CA").to_string().starts_with("reading the CA certificate"));
        let (result, _) = run_in(home.path(), &[], &["config", "set", "--token", "a b"]).await;
        assert!(result.expect_err("not a header").to_string().contains("holds spaces"));
        assert_eq!(
            std::fs::read_to_string(&file).expect("read"),
            "# fleetctl's settings; `fleetctl config set` rewrites this file.\n\
             controller = \"https://lab:7300\"\n\
             insecure = false\n"
        );
    }

    #[tokio::test]
    async fn config_show_and_refusals_need_no_controller() {
        let home = tempfile::tempdir().expect("home");
        let (result, out) = run_in(
            home.path(),
            &[("FLEET_TOKEN", "tf1.0a1b2c3d4e5f.s"), ("FLEET_INSECURE", "1")],
            &["config", "show", "-o", "json"],
        )
        .await;
        result.expect("shows");
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(v["controller"], serde_json::json!({"value": "http://127.0.0.1:7300", "source": "default"}));
        assert_eq!(v["token"]["value"], "tf1.0a1b2c3d4e5f.<redacted>");
        assert_eq!(v["file_exists"], false);
        assert_eq!(v["problem"], serde_json::Value::Null);

        let (result, out) = run_in(home.path(), &[], &["--controller", "http://127.0.0.1:1", "session", "list"]).await;
        let err = result.expect_err("plaintext without --insecure");
        assert_eq!((err.exit_code(), out.as_str()), (EXIT_CONFIG, ""));
        let (result, _) =
            run_in(home.path(), &[], &["--config", "/nonexistent/fleetctl.toml", "session", "list"]).await;
        assert!(
            result
                .expect_err("named but absent")
                .to_string()
                .starts_with("reading config file /nonexistent/fleetctl.toml")
        );
        let (result, _) = run_in(home.path(), &[("HOME", "")], &["config", "set", "--insecure"]).await;
        assert_eq!(
            result.expect_err("nowhere to write").to_string(),
            "no config file location: set HOME or XDG_CONFIG_HOME, or pass --config"
        );
    }
}
