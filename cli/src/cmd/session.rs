//! `fleetctl session`: create (and wait for, or only preflight), list, show, update and
//! delete mirroring sessions. `update` and the preflight's answer have files of their own.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;
use teefleet_model::{Direction, MaxLoss, MaxPps, Protocol, Sample, TagSelector, Ttl, Vni, text::escaped};
use teefleet_proto::v1;
use teefleet_proto::v1::session_service_client::SessionServiceClient;

use super::preflight::PreflightOut;
use super::session_update::{self, UpdateArgs};
use crate::error::CliError;
use crate::render::{DeletedOut, Format, Render, emit, non_empty};
use crate::table::{
    TRAFFIC_HEADERS, join_or_dash_with, key_values, or_dash, sample_text, table, table_of, time_text, traffic_cells,
    yes_no,
};
use crate::transport::Transport;

/// The largest answer about sessions fleetctl reads. gRPC's default of 4 MiB is less than
/// a few sessions over tiers of thousands of hosts take, each listed with its status.
const MAX_SESSIONS_MESSAGE: usize = 256 * 1024 * 1024;

/// How often `--wait` asks for the session's state.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Create a mirroring session.
    Create(CreateArgs),
    /// List the sessions.
    List,
    /// Show one session with per-host status; with --wait, once every source has applied it.
    Get {
        /// The session's name.
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Change a session's throttle, filter, sources, tags or lifetime in place: each host
    /// it affects gets one new rule set.
    Update(UpdateArgs),
    /// Delete a session; its rules are removed from the sources.
    Delete {
        /// The session's name.
        name: String,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source_choice").required(true).multiple(true).args(["sources", "source_tags"])))]
pub struct CreateArgs {
    /// The session's name.
    pub name: String,
    /// A source host's instance id (repeat for several sources).
    #[arg(long = "source", value_name = "INSTANCE_ID")]
    pub sources: Vec<String>,
    /// Every running instance with this EC2 tag is a source, and instances that get it
    /// later become sources too (repeat: an instance must carry all of them). Matched
    /// exactly: * and ? are not wildcards. With or instead of --source.
    #[arg(long = "source-tag", value_name = "KEY=VALUE", value_parser = parse_source_tag)]
    pub source_tags: Vec<String>,
    /// The collector's instance id.
    #[arg(long, value_name = "INSTANCE_ID")]
    pub collector: String,
    /// Which traffic of the sources to mirror [default: both].
    #[arg(long, value_enum)]
    pub direction: Option<Direction>,
    /// The protocol to mirror [default: all].
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    /// The host's service port, `N` or `N-M` [default: any].
    #[arg(long, value_parser = parse_port)]
    pub port: Option<v1::PortRange>,
    /// A peer network to mirror (repeatable) [default: any peer].
    #[arg(long = "cidr", value_name = "CIDR")]
    pub cidrs: Vec<String>,
    /// Clone only this random fraction of the matching packets: 0.01 or 1% [default: every
    /// packet].
    #[arg(long, value_name = "F", value_parser = parse_sample)]
    pub sample: Option<Sample>,
    /// Clone at most this many packets per second per host and address family [default: no
    /// cap].
    #[arg(long, value_name = "N", value_parser = parse_max_pps)]
    pub max_pps: Option<MaxPps>,
    /// Accept sources in another EC2 subnet than a raw (`--encap none`) collector. Raw TEE
    /// needs the collector on-link; say this only if it is (clones to an off-link gateway
    /// are dropped). VXLAN collectors need no such thing.
    #[arg(long)]
    pub allow_routed: bool,
    /// For a raw (`--encap none`) collector: have teefleet turn the sources' Source/Dest
    /// Check off while the session lives (and restore each after), so that clones of
    /// inbound packets, which carry the peer's address, leave them. EC2 drops them
    /// otherwise; a raw session that mirrors inbound traffic needs it.
    #[arg(long)]
    pub disable_source_check: bool,
    /// The session's VXLAN network identifier (1-16777215), unique among live sessions
    /// [default: the lowest free one].
    #[arg(long, value_name = "N", value_parser = parse_vni)]
    pub vni: Option<Vni>,
    /// Degrade the session when more than this share of a source's clones is lost over
    /// the controller's delivery window: 1% or 0.01 [default: 1%].
    #[arg(long, value_name = "SHARE", value_parser = parse_max_loss)]
    pub max_loss: Option<MaxLoss>,
    /// The session deletes itself this long after it is created: 90m, 2h, 7d (1m to 30d)
    /// [default: it lives until deleted].
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub ttl: Option<Ttl>,
    /// Change nothing: print what creating the session would do on each source, and what
    /// stands in its way.
    #[arg(long, conflicts_with = "wait")]
    pub dry_run: bool,
    #[command(flatten)]
    pub wait: Wait,
}

/// `--wait` and for how long, on `session create` and `session get`.
#[derive(Debug, Args)]
pub struct Wait {
    /// Wait until every source has applied the session.
    #[arg(id = "wait", long = "wait")]
    pub enabled: bool,
    /// How long `--wait` waits: 90s, 5m (a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "60s", requires = "wait",
          value_parser = teefleet_model::parse_duration_or_seconds)]
    pub timeout: Duration,
}

/// Parses `N` or `N-M` into a port range. Only the syntax is checked here: the controller
/// rejects port 0, ports above 65535 and reversed ranges with a message naming the field.
pub fn parse_port(text: &str) -> Result<v1::PortRange, String> {
    let number = |s: &str| s.trim().parse::<u32>().map_err(|_| format!("{text:?} is not a port: use N or N-M"));
    match text.split_once('-') {
        Some((first, last)) => Ok(v1::PortRange { first: number(first)?, last: number(last)? }),
        None => {
            let port = number(text)?;
            Ok(v1::PortRange { first: port, last: port })
        }
    }
}

/// Parses `--sample` as the model does: a fraction in (0, 1] or a percentage.
pub fn parse_sample(text: &str) -> Result<Sample, String> {
    text.parse::<Sample>().map_err(|e| e.reason)
}

/// Checks `--source-tag` as the controller will (KEY=VALUE within EC2's limits) and passes
/// it on as typed.
pub fn parse_source_tag(text: &str) -> Result<String, String> {
    text.parse::<TagSelector>().map(|_| text.to_owned()).map_err(|e| e.reason)
}

/// Parses `--vni`: 1 to 16777215.
pub fn parse_vni(text: &str) -> Result<Vni, String> {
    text.parse::<Vni>().map_err(|e| e.reason)
}

/// Parses `--max-loss`: a share from 0 to 1, or a percentage.
pub fn parse_max_loss(text: &str) -> Result<MaxLoss, String> {
    text.parse::<MaxLoss>().map_err(|e| e.reason)
}

/// Parses `--ttl`: a duration of 1m to 30d.
pub fn parse_ttl(text: &str) -> Result<Ttl, String> {
    text.parse::<Ttl>().map_err(|e| e.reason)
}

/// Parses `--max-pps`: a whole number in the range the kernel's limit match accepts.
pub fn parse_max_pps(text: &str) -> Result<MaxPps, String> {
    let pps = text.parse::<u32>().map_err(|_| format!("{text:?} is not a whole number of packets per second"))?;
    MaxPps::new(pps).map_err(|e| e.reason)
}

impl CreateArgs {
    /// The request the controller receives; unset direction and protocol stay unspecified,
    /// which the controller reads as "both" and "all".
    pub fn to_request(&self) -> v1::CreateSessionRequest {
        v1::CreateSessionRequest {
            name: self.name.clone(),
            sources: self.sources.clone(),
            collector: self.collector.clone(),
            filter: Some(v1::Filter {
                direction: self.direction.map_or(v1::Direction::Unspecified, Into::into).into(),
                protocol: self.protocol.map_or(v1::Protocol::Unspecified, Into::into).into(),
                ports: self.port,
                cidrs: self.cidrs.clone(),
                sample: self.sample.map_or(0.0, Sample::fraction),
                max_pps: self.max_pps.map_or(0, MaxPps::get),
            }),
            allow_routed: self.allow_routed,
            source_tags: self.source_tags.clone(),
            vni: self.vni.map_or(0, Vni::get),
            disable_source_check: self.disable_source_check,
            max_loss: self.max_loss.map(MaxLoss::get),
            ttl_seconds: self.ttl.map_or(0, Ttl::secs),
        }
    }
}

impl SessionCommand {
    /// A session to create is checked as the controller will check it, field by field, so
    /// that every mistake shows at once and nothing is sent.
    pub fn check(&self) -> Result<(), CliError> {
        let (what, problems) = match self {
            SessionCommand::Create(args) => {
                ("the session cannot be created", teefleet_proto::create_session_problems(&args.to_request()))
            }
            SessionCommand::Update(args) => ("the session cannot be updated", args.problems()),
            _ => return Ok(()),
        };
        if problems.is_empty() { Ok(()) } else { Err(CliError::Invalid { what, problems }) }
    }

    /// Makes the call and prints the answer.
    pub async fn run(self, channel: Transport, format: Format, out: &mut impl Write) -> Result<(), CliError> {
        let mut client = SessionServiceClient::new(channel).max_decoding_message_size(MAX_SESSIONS_MESSAGE);
        match self {
            SessionCommand::Create(args) => create(client, &args, format, out).await,
            SessionCommand::List => {
                let list = client.list_sessions(v1::ListSessionsRequest {}).await?.into_inner().sessions;
                let list: Vec<SessionOut> = list.iter().map(SessionOut::from).collect();
                Ok(emit(out, format, &list)?)
            }
            SessionCommand::Get { name, wait } => {
                let mut s = client.get_session(v1::GetSessionRequest { name }).await?.into_inner();
                if wait.enabled {
                    s = wait_active(&mut client, s, wait.timeout, Waited::Existing).await?;
                }
                Ok(emit(out, format, &SessionOut::from(&s))?)
            }
            SessionCommand::Update(args) => session_update::run(&mut client, &args, format, out).await,
            SessionCommand::Delete { name } => {
                client.delete_session(v1::DeleteSessionRequest { name: name.clone() }).await?;
                Ok(emit(out, format, &DeletedOut { kind: "session", name, deleted: true })?)
            }
        }
    }
}

/// `session create`, and with `--wait` the wait until every source has applied it.
async fn create(
    mut client: SessionServiceClient<Transport>,
    args: &CreateArgs,
    format: Format,
    out: &mut impl Write,
) -> Result<(), CliError> {
    if args.dry_run {
        let plan = client.preflight_session(args.to_request()).await?.into_inner();
        emit(out, format, &PreflightOut::from(&plan))?;
        // So that a script can ask "would this be created?" by the exit code alone.
        return if plan.would_create { Ok(()) } else { Err(CliError::WouldRefuse(plan.name)) };
    }
    let mut session = client.create_session(args.to_request()).await?.into_inner();
    if args.wait.enabled {
        session = wait_active(&mut client, session, args.wait.timeout, Waited::Created).await?;
    }
    Ok(emit(out, format, &SessionOut::from(&session))?)
}

/// Whose session `--wait` waited for: one this command just created, which stays when the
/// wait gives up, or one that already existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    Created,
    Existing,
}

/// Polls the session until it is active or the timeout passes.
async fn wait_active(
    client: &mut SessionServiceClient<Transport>,
    mut session: v1::Session,
    timeout: Duration,
    waited: Waited,
) -> Result<v1::Session, CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if session.state == v1::SessionState::Active as i32 {
            return Ok(session);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::WaitTimeout(wait_timeout_message(&SessionOut::from(&session), timeout, waited)));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        session = client.get_session(v1::GetSessionRequest { name: session.name.clone() }).await?.into_inner();
    }
}

/// Explains a `--wait` timeout: that the session exists (and was created, when it was),
/// its state, each host that has not applied it and why, or that it has no source yet, and
/// its other problems; then how to keep waiting or to delete it. What the controller and
/// agents sent is escaped, as in tables.
pub fn wait_timeout_message(s: &SessionOut, timeout: Duration, waited: Waited) -> String {
    let name = escaped(&s.name);
    let was = match waited {
        Waited::Created => "was created but ",
        Waited::Existing => "",
    };
    let mut msg = format!("session {name} {was}is not active after {}s (state {})", timeout.as_secs(), s.state);
    let pending: Vec<String> = s
        .hosts
        .iter()
        .filter(|h| !h.applied)
        .map(|h| {
            let mut line = format!(
                "{} ({}, applied version {} of {}",
                escaped(&h.host_id),
                if h.connected { "connected" } else { "disconnected" },
                h.applied_version,
                h.desired_version
            );
            if let Some(e) = &h.error {
                line.push_str(&format!(", error: {}", escaped(e)));
            }
            line.push(')');
            line
        })
        .collect();
    if !pending.is_empty() {
        msg.push_str("; not applied on: ");
        msg.push_str(&pending.join("; "));
    }
    if s.hosts.is_empty() {
        msg.push_str("; it has no source yet");
        if !s.source_tags.is_empty() {
            msg.push_str(&format!(" (no running instance carries {})", escaped(&s.source_tags.join(", "))));
        }
    }
    if !s.problems.is_empty() {
        msg.push_str("; problems: ");
        msg.push_str(&escaped(&s.problems.join("; ")));
    }
    msg.push_str(&format!(
        "\nhint: the session stays and its sources keep applying it: wait longer with `fleetctl session get \
         {name} --wait --timeout 5m`, or delete it with `fleetctl session delete {name}`"
    ));
    msg
}

/// A session as printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionOut {
    pub name: String,
    /// Every current source, named or matched by `source_tags` (see `hosts[].from_tags`).
    pub sources: Vec<String>,
    /// `KEY=VALUE` tags: running instances that carry all of them are sources.
    pub source_tags: Vec<String>,
    /// Sources may be in another subnet than the collector.
    pub allow_routed: bool,
    pub collector: String,
    /// The session's VXLAN network identifier.
    pub vni: u32,
    /// The collector's encapsulation: `vxlan` or `none`.
    pub encap: String,
    /// The sources' Source/Dest Check is off while the session lives.
    pub disable_source_check: bool,
    pub direction: &'static str,
    pub protocol: &'static str,
    /// `"80"` or `"8000-8080"`; null when the session mirrors every port.
    pub port: Option<String>,
    pub cidrs: Vec<String>,
    /// The fraction of matching packets cloned; null when every packet is.
    pub sample: Option<f64>,
    /// The most clones per second per host and family; null when uncapped.
    pub max_pps: Option<u32>,
    pub state: &'static str,
    pub hosts: Vec<SessionHostOut>,
    pub problems: Vec<String>,
    pub created_at: String,
    /// RFC 3339: when the session deletes itself; null if it lives until deleted.
    pub expires_at: Option<String>,
    /// Mirrored traffic summed over the hosts.
    pub packets: u64,
    pub bytes: u64,
    pub packets_per_second: f64,
    pub bytes_per_second: f64,
    /// Clones sent and delivered over the last `window_seconds`, summed over the sources
    /// whose delivery is known; null when none is.
    pub sent_packets: Option<u64>,
    pub delivered_packets: Option<u64>,
    /// The share of those clones lost, 0 to 1; null when unknown.
    pub loss_ratio: Option<f64>,
    pub window_seconds: u32,
    /// Above this loss ratio, the session is degraded.
    pub max_loss: f64,
    /// Why delivery is unknown, or known for only some sources; null otherwise.
    pub delivery_unknown: Option<String>,
}

/// One source's progress on a session, and what it mirrored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionHostOut {
    pub host_id: String,
    pub applied: bool,
    pub connected: bool,
    /// Null when the host reported no error.
    pub error: Option<String>,
    pub desired_version: u64,
    pub applied_version: u64,
    pub packets: u64,
    pub bytes: u64,
    pub packets_per_second: f64,
    pub bytes_per_second: f64,
    /// A source because it carries the session's tags, not because it was named.
    pub from_tags: bool,
    /// The host's Source/Dest Check when the session has teefleet turn it off; null
    /// otherwise.
    pub source_dest_check: Option<String>,
    /// This host's clones over the session's window; null when unknown.
    pub sent_packets: Option<u64>,
    pub delivered_packets: Option<u64>,
    pub loss_ratio: Option<f64>,
    /// Why this host's delivery is unknown; null when it is known.
    pub delivery_unknown: Option<String>,
}

/// The lower-case name of a direction as the controller reads it (unset is both).
fn direction_name(value: i32) -> &'static str {
    teefleet_proto::direction(value).map_or("unknown", Direction::as_str)
}

/// The lower-case name of a protocol as the controller reads it (unset is all).
fn protocol_name(value: i32) -> &'static str {
    teefleet_proto::protocol(value).map_or("unknown", Protocol::as_str)
}

/// The lower-case name of a session state.
pub fn state_name(value: i32) -> &'static str {
    match v1::SessionState::try_from(value) {
        Ok(v1::SessionState::Pending) => "pending",
        Ok(v1::SessionState::Active) => "active",
        Ok(v1::SessionState::Degraded) => "degraded",
        Ok(v1::SessionState::Unspecified) | Err(_) => "unknown",
    }
}

/// `"80"` for a single port, `"80-90"` for a range.
pub fn port_text(range: &v1::PortRange) -> String {
    if range.first == range.last { range.first.to_string() } else { format!("{}-{}", range.first, range.last) }
}

impl From<&v1::Session> for SessionOut {
    fn from(s: &v1::Session) -> Self {
        let filter = s.filter.clone().unwrap_or_default();
        SessionOut {
            name: s.name.clone(),
            sources: s.sources.clone(),
            source_tags: s.source_tags.clone(),
            allow_routed: s.allow_routed,
            collector: s.collector.clone(),
            vni: s.vni,
            encap: s.encap.clone(),
            disable_source_check: s.disable_source_check,
            direction: direction_name(filter.direction),
            protocol: protocol_name(filter.protocol),
            port: filter.ports.as_ref().map(port_text),
            cidrs: filter.cidrs,
            sample: (filter.sample != 0.0).then_some(filter.sample),
            max_pps: (filter.max_pps != 0).then_some(filter.max_pps),
            state: state_name(s.state),
            hosts: s.hosts.iter().map(SessionHostOut::from).collect(),
            problems: s.problems.clone(),
            created_at: s.created_at.clone(),
            expires_at: non_empty(&s.expires_at),
            packets: s.packets,
            bytes: s.bytes,
            packets_per_second: s.packets_per_second,
            bytes_per_second: s.bytes_per_second,
            sent_packets: s.sent_packets,
            delivered_packets: s.delivered_packets,
            loss_ratio: s.loss_ratio,
            window_seconds: s.window_seconds,
            max_loss: s.max_loss,
            delivery_unknown: non_empty(&s.delivery_unknown),
        }
    }
}

impl From<&v1::SessionHostStatus> for SessionHostOut {
    fn from(h: &v1::SessionHostStatus) -> Self {
        SessionHostOut {
            host_id: h.host_id.clone(),
            applied: h.applied,
            connected: h.connected,
            error: non_empty(&h.error),
            desired_version: h.desired_version,
            applied_version: h.applied_version,
            packets: h.packets,
            bytes: h.bytes,
            packets_per_second: h.packets_per_second,
            bytes_per_second: h.bytes_per_second,
            from_tags: h.from_tags,
            source_dest_check: non_empty(&h.source_dest_check),
            sent_packets: h.sent_packets,
            delivered_packets: h.delivered_packets,
            loss_ratio: h.loss_ratio,
            delivery_unknown: non_empty(&h.delivery_unknown),
        }
    }
}

/// A one-line summary of a session's filter, e.g. `both all port=any peers=any`, with the
/// throttle when there is one: `sample=0.01 max-pps=500`.
pub fn filter_summary(s: &SessionOut) -> String {
    let mut text = format!(
        "{} {} port={} peers={}",
        s.direction,
        s.protocol,
        s.port.as_deref().unwrap_or("any"),
        if s.cidrs.is_empty() { "any".to_owned() } else { s.cidrs.join(",") }
    );
    if let Some(sample) = s.sample {
        text.push_str(&format!(" sample={}", sample_text(sample)));
    }
    if let Some(pps) = s.max_pps {
        text.push_str(&format!(" max-pps={pps}"));
    }
    text
}

/// The sources a session names (the others came from its tags), in its order.
fn named_sources(s: &SessionOut) -> Vec<String> {
    let tagged: std::collections::BTreeSet<&str> =
        s.hosts.iter().filter(|h| h.from_tags).map(|h| h.host_id.as_str()).collect();
    s.sources.iter().filter(|h| !tagged.contains(h.as_str())).cloned().collect()
}

/// How many sources came from the session's tags.
fn tagged_count(s: &SessionOut) -> usize {
    s.hosts.iter().filter(|h| h.from_tags).count()
}

fn hosts_text(n: usize) -> String {
    if n == 1 { "1 host".to_owned() } else { format!("{n} hosts") }
}

/// The SOURCES cell: the named sources, then the tags and how many hosts carry them
/// rather than every id, since a tier may be thousands of hosts:
/// `i-1,i-2 + tags role=web,env=prod: 12 hosts`.
pub fn sources_summary(s: &SessionOut) -> String {
    let named = named_sources(s).join(",");
    if s.source_tags.is_empty() {
        return named;
    }
    let tags = format!("tags {}: {}", s.source_tags.join(","), hosts_text(tagged_count(s)));
    if named.is_empty() { tags } else { format!("{named} + {tags}") }
}

impl Render for [SessionOut] {
    /// The `session list` table.
    fn text(&self) -> String {
        let mut headers = vec!["NAME", "STATE", "SOURCES", "COLLECTOR", "FILTER", "APPLIED"];
        headers.extend(TRAFFIC_HEADERS);
        headers.extend(["CREATED", "EXPIRES"]);
        table_of(&headers, self, |s| {
            let applied = s.hosts.iter().filter(|h| h.applied).count();
            let mut row = vec![
                s.name.clone(),
                s.state.to_owned(),
                sources_summary(s),
                s.collector.clone(),
                filter_summary(s),
                format!("{applied}/{}", s.hosts.len()),
            ];
            row.extend(traffic_cells(s.packets, s.bytes, s.packets_per_second, s.bytes_per_second));
            row.push(or_dash(&time_text(&s.created_at)));
            row.push(s.expires_at.as_deref().map_or_else(|| "-".to_owned(), time_text));
            row
        })
    }
}

impl Render for SessionOut {
    /// The `session get` view: the session's fields, then a table of its hosts, then problems.
    fn text(&self) -> String {
        let by_tag = !self.source_tags.is_empty();
        let mut fields = vec![
            ("Name", self.name.clone()),
            ("State", self.state.to_owned()),
            ("Sources", join_or_dash_with(&named_sources(self), ", ")),
        ];
        if by_tag {
            fields
                .push(("Source tags", format!("{} ({})", self.source_tags.join(", "), hosts_text(tagged_count(self)))));
        }
        if self.allow_routed {
            fields.push(("Routed", "allowed: sources may be in another subnet than the collector".to_owned()));
        }
        fields.extend([
            ("Collector", self.collector.clone()),
            ("Delivery", delivery_text(&self.encap, self.vni, self.disable_source_check)),
            ("Direction", self.direction.to_owned()),
            ("Protocol", self.protocol.to_owned()),
            ("Port", self.port.clone().unwrap_or_else(|| "any".to_owned())),
            ("Peers", if self.cidrs.is_empty() { "any".to_owned() } else { self.cidrs.join(", ") }),
            ("Sample", self.sample.map_or_else(|| "all packets".to_owned(), sample_text)),
            ("Max pps", self.max_pps.map_or_else(|| "no cap".to_owned(), |p| p.to_string())),
            ("Verified", verified_text(self)),
            ("Created", or_dash(&time_text(&self.created_at))),
            ("Expires", self.expires_at.as_deref().map_or_else(|| "never".to_owned(), time_text)),
        ]);
        let mut out = key_values(&fields);
        out.push('\n');
        // Which sources came from tags is a column only where there are tags.
        let origin = |h: &SessionHostOut| by_tag.then(|| if h.from_tags { "tag" } else { "named" }.to_owned());
        let mut rows: Vec<Vec<String>> = self
            .hosts
            .iter()
            .map(|h| {
                let mut row = vec![h.host_id.clone()];
                row.extend(origin(h));
                row.extend([
                    yes_no(h.applied),
                    yes_no(h.connected),
                    h.desired_version.to_string(),
                    h.applied_version.to_string(),
                ]);
                if self.disable_source_check {
                    row.push(h.source_dest_check.clone().unwrap_or_else(|| "-".to_owned()));
                }
                row.extend(traffic_cells(h.packets, h.bytes, h.packets_per_second, h.bytes_per_second));
                row.push(delivered_cell(h.sent_packets, h.delivered_packets, h.loss_ratio));
                row.push(h.error.clone().unwrap_or_else(|| "-".to_owned()));
                row
            })
            .collect();
        let mut total = vec!["TOTAL".to_owned()];
        total.resize(5 + usize::from(by_tag) + usize::from(self.disable_source_check), String::new());
        total.extend(traffic_cells(self.packets, self.bytes, self.packets_per_second, self.bytes_per_second));
        total.push(delivered_cell(self.sent_packets, self.delivered_packets, self.loss_ratio));
        rows.push(total);
        let mut headers = vec!["HOST"];
        if by_tag {
            headers.push("ORIGIN");
        }
        headers.extend(["APPLIED", "CONNECTED", "DESIRED", "HOST-VERSION"]);
        if self.disable_source_check {
            headers.push("SRC/DST-CHECK");
        }
        headers.extend(TRAFFIC_HEADERS);
        headers.extend(["DELIVERED", "ERROR"]);
        out.push_str(&table(&headers, &rows));
        // Each reason once: a collector without an agent is every source's.
        let mut unknown: Vec<&str> = self.hosts.iter().filter_map(|h| h.delivery_unknown.as_deref()).collect();
        unknown.sort_unstable();
        unknown.dedup();
        if !unknown.is_empty() {
            out.push_str("\nDelivery unknown:\n");
            for why in unknown {
                out.push_str(&format!("  - {}\n", escaped(why)));
            }
        }
        if !self.problems.is_empty() {
            out.push_str("\nProblems:\n");
            for p in &self.problems {
                out.push_str(&format!("  - {}\n", escaped(p)));
            }
        }
        out
    }
}

/// The DELIVERED cell: `4200/6000 (30% lost)`, `6000/6000`, or `unknown`.
fn delivered_cell(sent: Option<u64>, delivered: Option<u64>, loss: Option<f64>) -> String {
    match (sent, delivered, loss) {
        (Some(s), Some(d), Some(l)) if l > 0.0 => format!("{d}/{s} ({} lost)", percent_text(l)),
        (Some(s), Some(d), _) => format!("{d}/{s}"),
        _ => "unknown".to_owned(),
    }
}

/// A share as a percentage: `30%`, `2.5%`, `0.04%`.
fn percent_text(share: f64) -> String {
    let p = share * 100.0;
    let digits = if p >= 10.0 {
        0
    } else if p >= 0.1 {
        1
    } else {
        2
    };
    let text = format!("{p:.digits$}");
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { &text };
    format!("{text}%")
}

/// The Verified field: the window, the limit, and why delivery is unknown when it is.
fn verified_text(s: &SessionOut) -> String {
    let over = format!(
        "clones delivered over the last {} s, degraded above {} lost",
        s.window_seconds,
        percent_text(s.max_loss)
    );
    match &s.delivery_unknown {
        Some(why) => format!("{over}; {}", escaped(why)),
        None => over,
    }
}

/// `vxlan, VNI 42` or `raw TEE (encap none)`, and whether sources' checks go off.
fn delivery_text(encap: &str, vni: u32, disable_source_check: bool) -> String {
    match encap {
        "none" if disable_source_check => "raw TEE (encap none), sources' Source/Dest Check off".to_owned(),
        "none" => "raw TEE (encap none)".to_owned(),
        "" => format!("VNI {vni}"),
        other => format!("{}, VNI {vni}", escaped(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{proto_session, proto_tag_session};

    #[test]
    fn session_converts_enums_and_port() {
        let s = SessionOut::from(&proto_session());
        assert_eq!(s.direction, "ingress");
        assert_eq!(s.protocol, "tcp");
        assert_eq!(s.port.as_deref(), Some("80-90"));
        assert_eq!(s.state, "degraded");
        assert_eq!(s.hosts[0].error, None);
        assert_eq!(s.hosts[1].error.as_deref(), Some("iptables-restore: TEE target not supported"));
    }

    #[test]
    fn unspecified_filter_means_both_all_any() {
        let mut p = proto_session();
        p.filter = None;
        p.state = v1::SessionState::Active as i32;
        let s = SessionOut::from(&p);
        assert_eq!((s.direction, s.protocol, s.port.clone()), ("both", "all", None));
        assert_eq!(s.state, "active");
        assert_eq!(filter_summary(&s), "both all port=any peers=any");
        assert_eq!(port_text(&v1::PortRange { first: 53, last: 53 }), "53");
    }

    #[test]
    fn session_json_shape() {
        let s = SessionOut::from(&proto_session());
        let v = serde_json::to_value(&s).expect("serializes");
        assert_eq!(v["name"], "web");
        assert_eq!(v["port"], "80-90");
        assert_eq!(v["state"], "degraded");
        assert_eq!(v["cidrs"][0], "10.0.0.0/8");
        assert_eq!(v["hosts"][0]["error"], serde_json::Value::Null);
        assert_eq!(v["hosts"][1]["applied"], false);
        assert_eq!(v["hosts"][1]["desired_version"], 2);
        assert_eq!(v["problems"][0], "ec2: ModifyInstanceAttribute throttled");

        let mut p = proto_session();
        p.filter = None;
        let v = serde_json::to_value(SessionOut::from(&p)).expect("serializes");
        assert_eq!(v["port"], serde_json::Value::Null);
    }

    #[test]
    fn json_list_is_an_array() {
        let list = vec![SessionOut::from(&proto_session())];
        let mut buf = Vec::new();
        emit(&mut buf, Format::Json, &list).expect("writes");
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
        assert!(v.is_array());
        assert_eq!(v[0]["name"], "web");
    }

    #[test]
    fn session_list_table() {
        let t = [SessionOut::from(&proto_session())].text();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("NAME  STATE     SOURCES"));
        assert!(lines[1].starts_with("web   degraded  i-src1,i-src2"));
        assert!(lines[1].contains("ingress tcp port=80-90 peers=10.0.0.0/8"));
        assert!(lines[1].contains("1/2"));
    }

    #[test]
    fn session_detail_shows_hosts_and_problems() {
        let t = SessionOut::from(&proto_session()).text();
        assert!(t.contains("State:     degraded\n"), "{t}");
        assert!(t.contains("Port:      80-90\n"), "{t}");
        let host_lines: Vec<&str> = t.lines().filter(|l| l.starts_with("i-src")).collect();
        assert_eq!(host_lines.len(), 2);
        let cols: Vec<&str> = host_lines[0].split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(
            cols,
            ["i-src1", "yes", "yes", "3", "3", "1000", "1.5 MiB", "2.5", "2.0 KiB/s", "700/1000 (30% lost)", "-"]
        );
        assert!(host_lines[1].starts_with("i-src2  no       no"), "{t}");
        assert!(host_lines[1].ends_with("TEE target not supported"));
        assert!(t.contains("Problems:\n  - ec2: ModifyInstanceAttribute throttled\n"));
    }

    #[test]
    fn tag_sessions_show_their_tags_and_which_sources_they_gave() {
        let s = SessionOut::from(&proto_tag_session());
        assert_eq!(sources_summary(&s), "i-named + tags env=prod,role=web: 2 hosts");
        let t = std::slice::from_ref(&s).text();
        assert!(t.lines().nth(1).is_some_and(|l| l.contains("i-named + tags env=prod,role=web: 2 hosts")), "{t}");

        let t = s.text();
        assert!(t.contains("Sources:     i-named\n"), "{t}");
        assert!(t.contains("Source tags: env=prod, role=web (2 hosts)\n"), "{t}");
        assert!(t.contains("Routed:      allowed"), "{t}");
        let header = t.lines().find(|l| l.starts_with("HOST")).expect("a host table");
        assert!(header.starts_with("HOST     ORIGIN  APPLIED"), "{t}");
        let origins: Vec<_> = t
            .lines()
            .filter(|l| l.starts_with("i-"))
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(origins, ["i-named named", "i-web1 tag", "i-web2 tag"]);
        let total = t.lines().find(|l| l.starts_with("TOTAL")).expect("a total row");
        assert!(total.contains("1000"), "the total's traffic stays under its columns: {t}");

        let v = serde_json::to_value(&s).expect("serializes");
        assert_eq!(v["source_tags"], serde_json::json!(["env=prod", "role=web"]));
        assert_eq!(v["allow_routed"], true);
        assert_eq!(v["sources"].as_array().map(Vec::len), Some(3));
        assert_eq!((&v["hosts"][0]["from_tags"], &v["hosts"][1]["from_tags"]), (&false.into(), &true.into()));

        // Only tags, matching nothing yet.
        let mut p = proto_tag_session();
        p.sources.clear();
        p.hosts.clear();
        p.source_tags = vec!["role=web".into()];
        let s = SessionOut::from(&p);
        assert_eq!(sources_summary(&s), "tags role=web: 0 hosts");
        assert!(s.text().contains("Sources:     -\n"));
    }

    #[test]
    fn named_sessions_look_as_before() {
        let s = SessionOut::from(&proto_session());
        assert_eq!(sources_summary(&s), "i-src1,i-src2");
        let t = s.text();
        assert!(!t.contains("Source tags") && !t.contains("ORIGIN") && !t.contains("Routed"), "{t}");
        assert_eq!(serde_json::to_value(&s).expect("serializes")["source_tags"], serde_json::json!([]));
    }

    #[test]
    fn session_shows_throttle_and_traffic() {
        let mut p = proto_session();
        let f = p.filter.as_mut().expect("filter");
        f.sample = 0.01;
        f.max_pps = 500;
        let s = SessionOut::from(&p);
        assert_eq!(filter_summary(&s), "ingress tcp port=80-90 peers=10.0.0.0/8 sample=0.01 max-pps=500");
        let v = serde_json::to_value(&s).expect("serializes");
        assert_eq!((v["sample"].as_f64(), v["max_pps"].as_u64()), (Some(0.01), Some(500)));
        assert_eq!((v["packets"].as_u64(), v["bytes"].as_u64()), (Some(1000), Some(1536 * 1024)));
        assert_eq!(v["packets_per_second"], 2.5);
        assert_eq!((v["hosts"][0]["packets"].as_u64(), v["hosts"][1]["bytes"].as_u64()), (Some(1000), Some(0)));
        assert_eq!(v["hosts"][0]["bytes_per_second"], 2048.0);

        let t = s.text();
        assert!(t.contains("Sample:    0.01\n"), "{t}");
        assert!(t.contains("Max pps:   500\n"), "{t}");
        let total = t.lines().find(|l| l.starts_with("TOTAL")).expect("a total row");
        let cols: Vec<&str> = total.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(cols, ["TOTAL", "1000", "1.5 MiB", "2.5", "2.0 KiB/s", "700/1000 (30% lost)"]);

        let unthrottled = SessionOut::from(&proto_session());
        assert_eq!((unthrottled.sample, unthrottled.max_pps), (None, None));
        let v = serde_json::to_value(&unthrottled).expect("serializes");
        assert_eq!((&v["sample"], &v["max_pps"]), (&serde_json::Value::Null, &serde_json::Value::Null));
        let t = unthrottled.text();
        assert!(t.contains("Sample:    all packets\n") && t.contains("Max pps:   no cap\n"), "{t}");
    }

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
            sent_packets: None,
            delivered_packets: None,
            loss_ratio: None,
            delivery_unknown: None,
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
            expires_at: None,
            packets: 0,
            bytes: 0,
            packets_per_second: 0.0,
            bytes_per_second: 0.0,
            sent_packets: None,
            delivered_packets: None,
            loss_ratio: None,
            window_seconds: 60,
            max_loss: 0.01,
            delivery_unknown: None,
        };
        assert_eq!(
            wait_timeout_message(&s, Duration::from_secs(60), Waited::Created),
            "session web was created but is not active after 60s (state degraded); not applied on: \
             i-b (connected, applied version 4 of 5, error: TEE not supported); \
             i-c (disconnected, applied version 4 of 5); problems: ec2: throttled\n\
             hint: the session stays and its sources keep applying it: wait longer with \
             `fleetctl session get web --wait --timeout 5m`, or delete it with `fleetctl session delete web`"
        );
        let again = wait_timeout_message(&s, Duration::from_secs(300), Waited::Existing);
        assert!(again.starts_with("session web is not active after 300s (state degraded); not applied on: i-b "));

        // Nothing to wait for yet, and what the agents said stays on one line.
        let nothing = SessionOut {
            sources: vec![],
            source_tags: vec!["role=web".into(), "env=prod".into()],
            hosts: vec![],
            problems: vec!["ec2: \u{1b}[31mred\nforged".into()],
            state: "pending",
            ..s
        };
        let text = wait_timeout_message(&nothing, Duration::from_secs(60), Waited::Created);
        assert!(
            text.starts_with(
                "session web was created but is not active after 60s (state pending); it has no source yet (no \
                 running instance carries role=web, env=prod); problems: ec2: \\u{1b}[31mred\\u{a}forged\nhint: "
            ),
            "{text}"
        );
    }
}
