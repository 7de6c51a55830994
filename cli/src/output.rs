//! What fleetctl prints: clean serde structs converted from the proto messages (so JSON
//! output does not expose prost's integer enums), and the hand-written aligned tables.

use std::{
    borrow::Cow,
    io::{self, Write},
};

use serde::Serialize;
use teefleet_model::{Direction, Protocol, Sample, text::escaped};
use teefleet_proto::v1;

use crate::args::Format;
use crate::config::{self, Setting, Settings, Source};

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
    /// Mirrored traffic summed over the hosts.
    pub packets: u64,
    pub bytes: u64,
    pub packets_per_second: f64,
    pub bytes_per_second: f64,
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
}

/// A collector as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CollectorOut {
    pub instance_id: String,
    pub ip: String,
    /// Null when the collector has no IPv6 address (it then receives IPv4 clones only).
    pub ipv6: Option<String>,
    pub subnet_id: String,
    /// How clones reach it: `vxlan` or `none`.
    pub encap: String,
    pub session_count: u32,
    pub source_dest_check: String,
    pub original_source_dest_check: bool,
    pub ec2_error: Option<String>,
}

/// A host as printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostOut {
    pub host_id: String,
    pub agent_version: String,
    pub addresses: Vec<String>,
    pub connected: bool,
    pub desired_version: u64,
    pub applied_version: u64,
    pub last_error: Option<String>,
    pub last_seen: Option<String>,
    pub rule_count: u32,
    /// Null until the agent reports it.
    pub dataplane: Option<DataplaneOut>,
    pub drift_repairs: u64,
    pub counters: Vec<CountersOut>,
    /// Most recent first; only `host get` fills it.
    pub events: Vec<EventOut>,
}

/// What the agent found its host's dataplane to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataplaneOut {
    pub backend: String,
    pub iptables_version: String,
    pub ipv6: bool,
    pub problems: Vec<String>,
}

/// One session's mirrored traffic on one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CountersOut {
    pub session: String,
    pub packets: u64,
    pub bytes: u64,
    pub packets_per_second: f64,
    pub bytes_per_second: f64,
}

/// Something the agent did or saw on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventOut {
    pub kind: String,
    pub message: String,
    pub at_unix_ms: u64,
    /// The same instant in RFC 3339, for people.
    pub at: String,
}

/// The acknowledgement of a delete or remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletedOut {
    pub kind: &'static str,
    pub name: String,
    pub deleted: bool,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
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
            packets: s.packets,
            bytes: s.bytes,
            packets_per_second: s.packets_per_second,
            bytes_per_second: s.bytes_per_second,
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
        }
    }
}

impl From<&v1::Collector> for CollectorOut {
    fn from(c: &v1::Collector) -> Self {
        CollectorOut {
            instance_id: c.instance_id.clone(),
            ip: c.ip.clone(),
            ipv6: non_empty(&c.ipv6),
            subnet_id: c.subnet_id.clone(),
            encap: c.encap.clone(),
            session_count: c.session_count,
            source_dest_check: c.source_dest_check.clone(),
            original_source_dest_check: c.original_source_dest_check,
            ec2_error: non_empty(&c.ec2_error),
        }
    }
}

impl From<&v1::Host> for HostOut {
    fn from(h: &v1::Host) -> Self {
        HostOut {
            host_id: h.host_id.clone(),
            agent_version: h.agent_version.clone(),
            addresses: h.addresses.clone(),
            connected: h.connected,
            desired_version: h.desired_version,
            applied_version: h.applied_version,
            last_error: non_empty(&h.last_error),
            last_seen: non_empty(&h.last_seen),
            rule_count: h.rule_count,
            dataplane: h.dataplane.as_ref().map(|d| DataplaneOut {
                backend: d.backend.clone(),
                iptables_version: d.iptables_version.clone(),
                ipv6: d.ipv6,
                problems: d.problems.clone(),
            }),
            drift_repairs: h.drift_repairs,
            counters: h.counters.iter().map(CountersOut::from).collect(),
            events: h.events.iter().map(EventOut::from).collect(),
        }
    }
}

impl From<&v1::SessionCounters> for CountersOut {
    fn from(c: &v1::SessionCounters) -> Self {
        CountersOut {
            session: c.session.clone(),
            packets: c.packets,
            bytes: c.bytes,
            packets_per_second: c.packets_per_second,
            bytes_per_second: c.bytes_per_second,
        }
    }
}

impl From<&v1::HostEvent> for EventOut {
    fn from(e: &v1::HostEvent) -> Self {
        let at = i64::try_from(e.at_unix_ms)
            .ok()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        EventOut { kind: e.kind.clone(), message: e.message.clone(), at_unix_ms: e.at_unix_ms, at }
    }
}

/// Renders rows under a header as left-aligned columns separated by two spaces, with no
/// trailing whitespace. Widths count characters, not bytes. Cells are shown escaped: they
/// hold what agents and callers sent, and the controller's cleaning is not the only
/// defence of the operator's terminal.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<Cow<'_, str>>> = rows.iter().map(|row| row.iter().map(|c| escaped(c)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            let len = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(len),
                None => widths.push(len),
            }
        }
    }
    let mut out = String::new();
    let header: Vec<Cow<'_, str>> = headers.iter().map(|h| Cow::Borrowed(*h)).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `Key:` and value lines, the values aligned one space after the longest key.
fn key_values(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(key, _)| key.chars().count() + 2).max().unwrap_or(0);
    fields.iter().map(|(key, value)| format!("{:<width$}{}\n", format!("{key}:"), escaped(value))).collect()
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".to_owned() } else { s.to_owned() }
}

fn join_or_dash(items: &[String]) -> String {
    join_or_dash_with(items, ",")
}

fn join_or_dash_with(items: &[String], separator: &str) -> String {
    if items.is_empty() { "-".to_owned() } else { items.join(separator) }
}

/// `1.5 KiB`: a byte count for people, in binary units.
pub fn bytes_text(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if !bytes.is_finite() || bytes < 1024.0 {
        return format!("{} B", bytes.max(0.0).round());
    }
    let mut value = bytes / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The mirrored-traffic cells of a table row: packets, bytes, packets/s, bytes/s.
fn traffic_cells(packets: u64, bytes: u64, pps: f64, bps: f64) -> [String; 4] {
    // An f64 is exact to 2^53 bytes, far beyond the one decimal shown; JSON has the exact
    // count.
    [packets.to_string(), bytes_text(bytes as f64), format!("{pps:.1}"), format!("{}/s", bytes_text(bps))]
}

const TRAFFIC_HEADERS: [&str; 4] = ["PACKETS", "BYTES", "PKT/S", "BYTES/S"];

/// `0.01`, not `0.010000000000000002`: the sample as the model prints it.
pub fn sample_text(sample: f64) -> String {
    Sample::from_fraction(sample).map_or_else(|_| sample.to_string(), |s| s.to_string())
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

/// The `session list` table.
pub fn sessions_table(sessions: &[SessionOut]) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
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
            row.push(or_dash(&s.created_at));
            row
        })
        .collect();
    let mut headers = vec!["NAME", "STATE", "SOURCES", "COLLECTOR", "FILTER", "APPLIED"];
    headers.extend(TRAFFIC_HEADERS);
    headers.push("CREATED");
    table(&headers, &rows)
}

/// The `session get` view: the session's fields, then a table of its hosts, then problems.
pub fn session_detail(s: &SessionOut) -> String {
    let by_tag = !s.source_tags.is_empty();
    let mut fields = vec![
        ("Name", s.name.clone()),
        ("State", s.state.to_owned()),
        ("Sources", join_or_dash_with(&named_sources(s), ", ")),
    ];
    if by_tag {
        fields.push(("Source tags", format!("{} ({})", s.source_tags.join(", "), hosts_text(tagged_count(s)))));
    }
    if s.allow_routed {
        fields.push(("Routed", "allowed: sources may be in another subnet than the collector".to_owned()));
    }
    fields.extend([
        ("Collector", s.collector.clone()),
        ("Delivery", delivery_text(&s.encap, s.vni, s.disable_source_check)),
        ("Direction", s.direction.to_owned()),
        ("Protocol", s.protocol.to_owned()),
        ("Port", s.port.clone().unwrap_or_else(|| "any".to_owned())),
        ("Peers", if s.cidrs.is_empty() { "any".to_owned() } else { s.cidrs.join(", ") }),
        ("Sample", s.sample.map_or_else(|| "all packets".to_owned(), sample_text)),
        ("Max pps", s.max_pps.map_or_else(|| "no cap".to_owned(), |p| p.to_string())),
        ("Created", or_dash(&s.created_at)),
    ]);
    let mut out = key_values(&fields);
    out.push('\n');
    // Which sources came from tags is a column only where there are tags.
    let origin = |h: &SessionHostOut| by_tag.then(|| if h.from_tags { "tag" } else { "named" }.to_owned());
    let mut rows: Vec<Vec<String>> = s
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
            if s.disable_source_check {
                row.push(h.source_dest_check.clone().unwrap_or_else(|| "-".to_owned()));
            }
            row.extend(traffic_cells(h.packets, h.bytes, h.packets_per_second, h.bytes_per_second));
            row.push(h.error.clone().unwrap_or_else(|| "-".to_owned()));
            row
        })
        .collect();
    let mut total = vec!["TOTAL".to_owned()];
    total.resize(5 + usize::from(by_tag) + usize::from(s.disable_source_check), String::new());
    total.extend(traffic_cells(s.packets, s.bytes, s.packets_per_second, s.bytes_per_second));
    rows.push(total);
    let mut headers = vec!["HOST"];
    if by_tag {
        headers.push("ORIGIN");
    }
    headers.extend(["APPLIED", "CONNECTED", "DESIRED", "HOST-VERSION"]);
    if s.disable_source_check {
        headers.push("SRC/DST-CHECK");
    }
    headers.extend(TRAFFIC_HEADERS);
    headers.push("ERROR");
    out.push_str(&table(&headers, &rows));
    if !s.problems.is_empty() {
        out.push_str("\nProblems:\n");
        for p in &s.problems {
            out.push_str(&format!("  - {}\n", escaped(p)));
        }
    }
    out
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

/// The `collector list` / `collector add` table.
pub fn collectors_table(collectors: &[CollectorOut]) -> String {
    let rows: Vec<Vec<String>> = collectors
        .iter()
        .map(|c| {
            vec![
                c.instance_id.clone(),
                c.ip.clone(),
                c.ipv6.clone().unwrap_or_else(|| "-".to_owned()),
                or_dash(&c.subnet_id),
                or_dash(&c.encap),
                c.session_count.to_string(),
                or_dash(&c.source_dest_check),
                if c.original_source_dest_check { "enabled" } else { "disabled" }.to_owned(),
                c.ec2_error.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    table(&["INSTANCE", "IP", "IPV6", "SUBNET", "ENCAP", "SESSIONS", "SRC/DST-CHECK", "ORIGINAL", "EC2-ERROR"], &rows)
}

/// The `host list` table.
pub fn hosts_table(hosts: &[HostOut]) -> String {
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            vec![
                h.host_id.clone(),
                yes_no(h.connected),
                format!("{}/{}", h.applied_version, h.desired_version),
                h.rule_count.to_string(),
                h.last_seen.clone().unwrap_or_else(|| "never".to_owned()),
                or_dash(&h.agent_version),
                join_or_dash(&h.addresses),
                h.last_error.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    table(&["HOST", "CONNECTED", "APPLIED/DESIRED", "RULES", "LAST-SEEN", "AGENT", "ADDRESSES", "ERROR"], &rows)
}

/// The `host get` view: the host's fields and dataplane, then its per-session counters,
/// then its recent events.
pub fn host_detail(h: &HostOut) -> String {
    let mut fields = vec![
        ("Host", h.host_id.clone()),
        ("Connected", yes_no(h.connected)),
        ("Agent", or_dash(&h.agent_version)),
        ("Addresses", if h.addresses.is_empty() { "-".to_owned() } else { h.addresses.join(", ") }),
        ("Versions", format!("applied {} of desired {}", h.applied_version, h.desired_version)),
        ("Rules", h.rule_count.to_string()),
        ("Last seen", h.last_seen.clone().unwrap_or_else(|| "never".to_owned())),
        ("Last error", h.last_error.clone().unwrap_or_else(|| "-".to_owned())),
    ];
    match &h.dataplane {
        Some(d) => {
            fields.push(("Backend", if d.backend.is_empty() { "unknown".to_owned() } else { d.backend.clone() }));
            fields.push(("iptables", or_dash(&d.iptables_version)));
            fields.push(("IPv6", yes_no(d.ipv6)));
        }
        None => fields.push(("Backend", "not reported".to_owned())),
    }
    fields.push(("Drift repairs", h.drift_repairs.to_string()));
    let mut out = key_values(&fields);
    if let Some(d) = h.dataplane.as_ref().filter(|d| !d.problems.is_empty()) {
        out.push_str("\nDataplane problems:\n");
        for p in &d.problems {
            out.push_str(&format!("  - {}\n", escaped(p)));
        }
    }
    out.push('\n');
    if h.counters.is_empty() {
        out.push_str("No counters reported.\n");
    } else {
        let rows: Vec<Vec<String>> = h
            .counters
            .iter()
            .map(|c| {
                let mut row = vec![c.session.clone()];
                row.extend(traffic_cells(c.packets, c.bytes, c.packets_per_second, c.bytes_per_second));
                row
            })
            .collect();
        let mut headers = vec!["SESSION"];
        headers.extend(TRAFFIC_HEADERS);
        out.push_str(&table(&headers, &rows));
    }
    out.push('\n');
    if h.events.is_empty() {
        out.push_str("No recent events.\n");
    } else {
        let rows: Vec<Vec<String>> =
            h.events.iter().map(|e| vec![or_dash(&e.at), e.kind.clone(), e.message.clone()]).collect();
        out.push_str("Recent events:\n");
        out.push_str(&table(&["AT", "KIND", "MESSAGE"], &rows));
    }
    out
}

/// A token as listed; never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenOut {
    pub id: String,
    pub role: String,
    /// `active`, `expired`, `used up` or `revoked`, as of the listing.
    pub state: &'static str,
    /// Null for a token that never expires (the bootstrap token).
    pub expires_at: Option<String>,
    /// Enrollments left for an agent token; null when unlimited.
    pub uses_left: Option<u32>,
    pub created_at: String,
    pub created_by: String,
    pub revoked_at: Option<String>,
    /// The one host a join token enrolls; null for any host.
    pub host_id: Option<String>,
}

impl TokenOut {
    /// The token as of `now`, which decides whether it has expired.
    pub fn new(t: &v1::Token, now: chrono::DateTime<chrono::Utc>) -> Self {
        let expired = chrono::DateTime::parse_from_rfc3339(&t.expires_at).is_ok_and(|at| at <= now);
        let state = if !t.revoked_at.is_empty() {
            "revoked"
        } else if expired {
            "expired"
        } else if t.uses_left == Some(0) {
            "used up"
        } else {
            "active"
        };
        TokenOut {
            id: t.id.clone(),
            role: t.role.clone(),
            state,
            expires_at: non_empty(&t.expires_at),
            uses_left: t.uses_left,
            created_at: t.created_at.clone(),
            created_by: t.created_by.clone(),
            revoked_at: non_empty(&t.revoked_at),
            host_id: non_empty(&t.host_id),
        }
    }
}

/// A token just created, with its secret: `token` is what to pass as --token or to
/// fleet-agent --join-token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewTokenOut {
    pub id: String,
    pub token: String,
    pub role: String,
    pub expires_at: Option<String>,
    /// Null when unlimited (and for every role but agent).
    pub uses_left: Option<u32>,
    /// The one host this join token enrolls; null for any host.
    pub host_id: Option<String>,
}

impl From<&v1::CreateTokenResponse> for NewTokenOut {
    fn from(r: &v1::CreateTokenResponse) -> Self {
        let t = r.token.clone().unwrap_or_default();
        NewTokenOut {
            id: t.id,
            token: r.secret.clone(),
            role: t.role,
            expires_at: non_empty(&t.expires_at),
            uses_left: t.uses_left,
            host_id: non_empty(&t.host_id),
        }
    }
}

/// The acknowledgement of a revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevokedOut {
    pub kind: &'static str,
    pub id: String,
    pub revoked: bool,
}

/// What revoking a host did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRevokedOut {
    pub host_id: String,
    /// How many of its certificates were still valid.
    pub revoked_certificates: u32,
    /// Whether its agent was connected, and now is not.
    pub disconnected: bool,
}

impl HostRevokedOut {
    pub fn new(host_id: String, r: &v1::RevokeHostResponse) -> Self {
        HostRevokedOut { host_id, revoked_certificates: r.revoked_certificates, disconnected: r.disconnected }
    }
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditOut {
    pub id: u64,
    pub at: String,
    /// `token:<id> (<role>)`, `host:<id>`, or `insecure`.
    pub actor: String,
    pub peer: String,
    pub action: String,
    pub target: String,
    /// `ok`, or the error the caller got.
    pub result: String,
}

impl From<&v1::AuditRecord> for AuditOut {
    fn from(r: &v1::AuditRecord) -> Self {
        AuditOut {
            id: r.id,
            at: r.at.clone(),
            actor: r.actor.clone(),
            peer: r.peer.clone(),
            action: r.action.clone(),
            target: r.target.clone(),
            result: r.result.clone(),
        }
    }
}

/// One connection setting as `config show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingOut<T> {
    /// Null when unset.
    pub value: T,
    /// `--token`, `env FLEET_TOKEN`, `config file`, `default`, or `unset`.
    pub source: String,
}

/// The settings in force; the token only as its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigOut {
    /// Null when there is no place for one (no HOME).
    pub file: Option<String>,
    pub file_exists: bool,
    pub controller: SettingOut<String>,
    pub token: SettingOut<Option<String>>,
    pub ca_cert: SettingOut<Option<String>>,
    pub insecure: SettingOut<bool>,
    /// Why commands would refuse these settings; null when they would connect.
    pub problem: Option<String>,
}

fn source_name(source: &Source) -> String {
    match source {
        Source::File(_) => "config file".to_owned(),
        other => other.to_string(),
    }
}

impl ConfigOut {
    pub fn new(s: &Settings, file_exists: bool, problem: Option<String>) -> Self {
        fn opt<T>(setting: Option<&Setting<T>>, show: impl Fn(&T) -> String) -> SettingOut<Option<String>> {
            match setting {
                Some(s) => SettingOut { value: Some(show(&s.value)), source: source_name(&s.source) },
                None => SettingOut { value: None, source: "unset".to_owned() },
            }
        }
        ConfigOut {
            file: s.file.as_ref().map(|p| p.display().to_string()),
            file_exists,
            controller: SettingOut { value: s.controller.value.clone(), source: source_name(&s.controller.source) },
            token: opt(s.token.as_ref(), |t| config::redact(t)),
            ca_cert: opt(s.ca_cert.as_ref(), |p| p.display().to_string()),
            insecure: SettingOut { value: s.insecure.value, source: source_name(&s.insecure.source) },
            problem,
        }
    }
}

/// `token create`'s view: the token, its secret, and the warning that it is shown once.
pub fn new_token_text(t: &NewTokenOut) -> String {
    let mut fields = vec![
        ("ID", t.id.clone()),
        ("Role", t.role.clone()),
        ("Expires", t.expires_at.clone().unwrap_or_else(|| "never".to_owned())),
    ];
    if t.role == "agent" {
        fields.push(("Uses", t.uses_left.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())));
        if let Some(host) = &t.host_id {
            fields.push(("Host", format!("{host} only (it may replace the host's certificate)")));
        }
    }
    fields.push(("Token", t.token.clone()));
    let mut out = key_values(&fields);
    out.push_str("\nSave the token now: it cannot be shown again (the controller keeps only its hash).\n");
    out
}

/// The `token list` table.
pub fn tokens_table(tokens: &[TokenOut]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.role.clone(),
                t.state.to_owned(),
                t.expires_at.clone().unwrap_or_else(|| "never".to_owned()),
                t.uses_left.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                t.host_id.clone().unwrap_or_else(|| "-".to_owned()),
                or_dash(&t.created_at),
                or_dash(&t.created_by),
            ]
        })
        .collect();
    table(&["ID", "ROLE", "STATE", "EXPIRES", "USES-LEFT", "HOST", "CREATED", "CREATED-BY"], &rows)
}

/// `host revoke`'s one line.
pub fn host_revoked_text(h: &HostRevokedOut) -> String {
    let certs = match h.revoked_certificates {
        1 => "1 certificate".to_owned(),
        n => format!("{n} certificates"),
    };
    let stream = if h.disconnected { "its stream was closed" } else { "it was not connected" };
    format!("host {} revoked: {certs} revoked, {stream}\n", h.host_id)
}

/// The `audit list` table.
pub fn audit_table(records: &[AuditOut]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                or_dash(&r.at),
                or_dash(&r.actor),
                or_dash(&r.action),
                or_dash(&r.target),
                or_dash(&r.result),
                or_dash(&r.peer),
            ]
        })
        .collect();
    table(&["AT", "ACTOR", "ACTION", "TARGET", "RESULT", "PEER"], &rows)
}

/// `config show`'s view: the file, then each setting, its value and where it came from.
pub fn config_detail(c: &ConfigOut) -> String {
    let file = match (&c.file, c.file_exists) {
        (Some(path), true) => path.clone(),
        (Some(path), false) => format!("{path} (absent)"),
        (None, _) => "none (no HOME or XDG_CONFIG_HOME; pass --config)".to_owned(),
    };
    let unset = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let rows = vec![
        vec!["controller".to_owned(), c.controller.value.clone(), c.controller.source.clone()],
        vec!["token".to_owned(), unset(&c.token.value), c.token.source.clone()],
        vec!["ca_cert".to_owned(), unset(&c.ca_cert.value), c.ca_cert.source.clone()],
        vec!["insecure".to_owned(), c.insecure.value.to_string(), c.insecure.source.clone()],
    ];
    let mut out = format!("Config file: {file}\n\n{}", table(&["SETTING", "VALUE", "SOURCE"], &rows));
    if let Some(problem) = &c.problem {
        out.push_str(&format!("\nProblem: {problem}\n"));
    }
    out
}

/// Writes `value` as pretty JSON followed by a newline.
pub fn write_json<T: Serialize + ?Sized>(out: &mut impl Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::other)?;
    writeln!(out)
}

/// Writes either the table text or the JSON form, depending on the format.
pub fn emit<T: Serialize + ?Sized>(
    out: &mut impl Write,
    format: Format,
    value: &T,
    table: impl FnOnce() -> String,
) -> io::Result<()> {
    match format {
        Format::Json => write_json(out, value),
        Format::Table => out.write_all(table().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{may_2026, proto_host, proto_session, proto_tag_session, proto_token};

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let t = table(&["A", "LONGER"], &[vec!["xxxx".into(), "y".into()], vec!["z".into(), String::new()]]);
        assert_eq!(t, "A     LONGER\nxxxx  y\nz\n");
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let t = table(&["N", "X"], &[vec!["é".into(), "1".into()]]);
        assert_eq!(t, "N  X\né  1\n");
    }

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
        emit(&mut buf, Format::Json, &list, || unreachable!()).expect("writes");
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
        assert!(v.is_array());
        assert_eq!(v[0]["name"], "web");
    }

    #[test]
    fn session_list_table() {
        let t = sessions_table(&[SessionOut::from(&proto_session())]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("NAME  STATE     SOURCES"));
        assert!(lines[1].starts_with("web   degraded  i-src1,i-src2"));
        assert!(lines[1].contains("ingress tcp port=80-90 peers=10.0.0.0/8"));
        assert!(lines[1].contains("1/2"));
    }

    #[test]
    fn session_detail_shows_hosts_and_problems() {
        let t = session_detail(&SessionOut::from(&proto_session()));
        assert!(t.contains("State:     degraded\n"), "{t}");
        assert!(t.contains("Port:      80-90\n"), "{t}");
        let host_lines: Vec<&str> = t.lines().filter(|l| l.starts_with("i-src")).collect();
        assert_eq!(host_lines.len(), 2);
        let cols: Vec<&str> = host_lines[0].split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(cols, ["i-src1", "yes", "yes", "3", "3", "1000", "1.5 MiB", "2.5", "2.0 KiB/s", "-"]);
        assert!(host_lines[1].starts_with("i-src2  no       no"), "{t}");
        assert!(host_lines[1].ends_with("TEE target not supported"));
        assert!(t.contains("Problems:\n  - ec2: ModifyInstanceAttribute throttled\n"));
    }

    #[test]
    fn tag_sessions_show_their_tags_and_which_sources_they_gave() {
        let s = SessionOut::from(&proto_tag_session());
        assert_eq!(sources_summary(&s), "i-named + tags env=prod,role=web: 2 hosts");
        let t = sessions_table(std::slice::from_ref(&s));
        assert!(t.lines().nth(1).is_some_and(|l| l.contains("i-named + tags env=prod,role=web: 2 hosts")), "{t}");

        let t = session_detail(&s);
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
        assert!(session_detail(&s).contains("Sources:     -\n"));
    }

    #[test]
    fn named_sessions_look_as_before() {
        let s = SessionOut::from(&proto_session());
        assert_eq!(sources_summary(&s), "i-src1,i-src2");
        let t = session_detail(&s);
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

        let t = session_detail(&s);
        assert!(t.contains("Sample:    0.01\n"), "{t}");
        assert!(t.contains("Max pps:   500\n"), "{t}");
        let total = t.lines().find(|l| l.starts_with("TOTAL")).expect("a total row");
        let cols: Vec<&str> = total.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(cols, ["TOTAL", "1000", "1.5 MiB", "2.5", "2.0 KiB/s"]);

        let unthrottled = SessionOut::from(&proto_session());
        assert_eq!((unthrottled.sample, unthrottled.max_pps), (None, None));
        let v = serde_json::to_value(&unthrottled).expect("serializes");
        assert_eq!((&v["sample"], &v["max_pps"]), (&serde_json::Value::Null, &serde_json::Value::Null));
        let t = session_detail(&unthrottled);
        assert!(t.contains("Sample:    all packets\n") && t.contains("Max pps:   no cap\n"), "{t}");
    }

    #[test]
    fn byte_counts_for_people() {
        assert_eq!(bytes_text(0.0), "0 B");
        assert_eq!(bytes_text(1023.0), "1023 B");
        assert_eq!(bytes_text(1536.0), "1.5 KiB");
        assert_eq!(bytes_text(5.0 * 1024.0 * 1024.0 * 1024.0), "5.0 GiB");
        assert_eq!(bytes_text(f64::NAN), "0 B");
        assert_eq!(sample_text(0.000_001), "0.000001");
    }

    #[test]
    fn host_json_shape() {
        let v = serde_json::to_value(HostOut::from(&proto_host())).expect("serializes");
        assert_eq!(v["drift_repairs"], 3);
        assert_eq!(v["dataplane"]["backend"], "nft");
        assert_eq!(v["dataplane"]["ipv6"], true);
        assert_eq!(v["dataplane"]["problems"][0], "TEE target missing for ip6tables");
        assert_eq!(v["counters"][0]["session"], "web");
        assert_eq!((v["counters"][0]["packets"].as_u64(), v["counters"][0]["bytes"].as_u64()), (Some(12), Some(3000)));
        assert_eq!(v["events"][0]["kind"], "drift_repaired");
        assert_eq!(v["events"][0]["message"], "jump from PREROUTING was removed");
        assert_eq!(v["events"][0]["at_unix_ms"], 1_700_000_000_123_u64);
        assert_eq!(v["events"][0]["at"], "2023-11-14T22:13:20.123Z");
        let bare = HostOut::from(&v1::Host { host_id: "h".into(), ..Default::default() });
        let v = serde_json::to_value(bare).expect("serializes");
        assert_eq!(v["dataplane"], serde_json::Value::Null);
        assert_eq!(v["events"].as_array().map(Vec::len), Some(0));
    }

    #[test]
    fn host_detail_shows_dataplane_counters_and_events() {
        let t = host_detail(&HostOut::from(&proto_host()));
        assert!(t.contains("Backend:       nft\n"), "{t}");
        assert!(t.contains("iptables:      iptables v1.8.9 (nf_tables)\n"), "{t}");
        assert!(t.contains("Drift repairs: 3\n"), "{t}");
        assert!(t.contains("Dataplane problems:\n  - TEE target missing for ip6tables\n"), "{t}");
        let counter = t.lines().find(|l| l.starts_with("web")).expect("counter row");
        let cols: Vec<&str> = counter.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(cols, ["web", "12", "2.9 KiB", "0.5", "100 B/s"]);
        assert!(t.contains("2023-11-14T22:13:20.123Z  drift_repaired  jump from PREROUTING was removed\n"), "{t}");

        let bare = host_detail(&HostOut::from(&v1::Host { host_id: "h".into(), ..Default::default() }));
        assert!(bare.contains("Backend:       not reported\n"), "{bare}");
        assert!(bare.contains("No counters reported.\n") && bare.contains("No recent events.\n"), "{bare}");
    }

    #[test]
    fn collector_and_host_tables() {
        let c = CollectorOut::from(&v1::Collector {
            instance_id: "i-col".into(),
            ip: "10.0.0.9".into(),
            subnet_id: "subnet-1".into(),
            session_count: 2,
            source_dest_check: "disabled".into(),
            original_source_dest_check: true,
            ec2_error: String::new(),
            ipv6: String::new(),
            encap: "none".into(),
        });
        assert_eq!((c.ec2_error.clone(), c.ipv6.clone()), (None, None));
        let dual = CollectorOut::from(&v1::Collector {
            instance_id: "i-col".into(),
            ip: "10.0.0.9".into(),
            ipv6: "fd00::9".into(),
            ..Default::default()
        });
        assert!(collectors_table(&[dual]).lines().nth(1).expect("row").starts_with("i-col     10.0.0.9  fd00::9"));
        let t = collectors_table(&[c]);
        let cols: Vec<&str> = t.lines().nth(1).expect("row").split_whitespace().collect();
        assert_eq!(cols, ["i-col", "10.0.0.9", "-", "subnet-1", "none", "2", "disabled", "enabled", "-"]);

        let h = HostOut::from(&v1::Host {
            host_id: "i-src1".into(),
            agent_version: "0.1.0".into(),
            addresses: vec!["10.0.0.2".into(), "fd00::2".into()],
            connected: true,
            desired_version: 4,
            applied_version: 3,
            last_error: String::new(),
            last_seen: String::new(),
            rule_count: 2,
            ..Default::default()
        });
        assert_eq!(h.last_seen, None);
        let t = hosts_table(&[h]);
        let cols: Vec<&str> = t.lines().nth(1).expect("row").split_whitespace().collect();
        assert_eq!(cols, ["i-src1", "yes", "3/4", "2", "never", "0.1.0", "10.0.0.2,fd00::2", "-"]);
    }

    #[test]
    fn token_states_and_table() {
        let now = may_2026();
        let active = TokenOut::new(&proto_token("aaaaaaaaaaaa", "operator"), now);
        let join = TokenOut::new(
            &v1::Token { uses_left: Some(2), host_id: "i-0a".into(), ..proto_token("bbbbbbbbbbbb", "agent") },
            now,
        );
        let used = TokenOut::new(&v1::Token { uses_left: Some(0), ..proto_token("cccccccccccc", "agent") }, now);
        let expired = TokenOut::new(
            &v1::Token { expires_at: "2026-05-14T00:00:00Z".into(), ..proto_token("dddddddddddd", "viewer") },
            now,
        );
        let revoked = TokenOut::new(
            &v1::Token { revoked_at: "2026-05-02T00:00:00+00:00".into(), ..proto_token("eeeeeeeeeeee", "admin") },
            now,
        );
        let bootstrap = TokenOut::new(
            &v1::Token { expires_at: String::new(), created_by: String::new(), ..proto_token("ffffffffffff", "admin") },
            now,
        );
        let states: Vec<&str> =
            [&active, &join, &used, &expired, &revoked, &bootstrap].iter().map(|t| t.state).collect();
        assert_eq!(states, ["active", "active", "used up", "expired", "revoked", "active"]);
        assert_eq!(
            tokens_table(&[active, join, used, expired, revoked, bootstrap.clone()]),
            "ID            ROLE      STATE    EXPIRES                    USES-LEFT  HOST  CREATED                    CREATED-BY\n\
             aaaaaaaaaaaa  operator  active   2026-06-01T00:00:00+00:00  -          -     2026-05-01T00:00:00+00:00  token:0a1b2c3d4e5f (admin)\n\
             bbbbbbbbbbbb  agent     active   2026-06-01T00:00:00+00:00  2          i-0a  2026-05-01T00:00:00+00:00  token:0a1b2c3d4e5f (admin)\n\
             cccccccccccc  agent     used up  2026-06-01T00:00:00+00:00  0          -     2026-05-01T00:00:00+00:00  token:0a1b2c3d4e5f (admin)\n\
             dddddddddddd  viewer    expired  2026-05-14T00:00:00Z       -          -     2026-05-01T00:00:00+00:00  token:0a1b2c3d4e5f (admin)\n\
             eeeeeeeeeeee  admin     revoked  2026-06-01T00:00:00+00:00  -          -     2026-05-01T00:00:00+00:00  token:0a1b2c3d4e5f (admin)\n\
             ffffffffffff  admin     active   never                      -          -     2026-05-01T00:00:00+00:00  -\n"
        );
        assert_eq!(
            serde_json::to_value(&bootstrap).expect("serializes"),
            serde_json::json!({
                "id": "ffffffffffff",
                "role": "admin",
                "state": "active",
                "expires_at": null,
                "uses_left": null,
                "created_at": "2026-05-01T00:00:00+00:00",
                "created_by": "",
                "revoked_at": null,
                "host_id": null,
            })
        );
    }

    #[test]
    fn a_new_token_shows_its_secret_once() {
        let created = NewTokenOut::from(&v1::CreateTokenResponse {
            token: Some(v1::Token { uses_left: Some(5), ..proto_token("0a1b2c3d4e5f", "agent") }),
            secret: "tf1.0a1b2c3d4e5f.cafe".into(),
        });
        let mut buf = Vec::new();
        emit(&mut buf, Format::Json, &created, || unreachable!()).expect("writes");
        assert_eq!(
            String::from_utf8(buf).expect("utf-8"),
            "{\n  \"id\": \"0a1b2c3d4e5f\",\n  \"token\": \"tf1.0a1b2c3d4e5f.cafe\",\n  \"role\": \"agent\",\n  \
             \"expires_at\": \"2026-06-01T00:00:00+00:00\",\n  \"uses_left\": 5,\n  \"host_id\": null\n}\n"
        );
        assert_eq!(
            new_token_text(&created),
            "ID:      0a1b2c3d4e5f\n\
             Role:    agent\n\
             Expires: 2026-06-01T00:00:00+00:00\n\
             Uses:    5\n\
             Token:   tf1.0a1b2c3d4e5f.cafe\n\
             \n\
             Save the token now: it cannot be shown again (the controller keeps only its hash).\n"
        );
        let unlimited = NewTokenOut { uses_left: None, ..created.clone() };
        assert!(new_token_text(&unlimited).contains("Uses:    unlimited\n"));
        let operator = NewTokenOut { role: "operator".into(), uses_left: None, ..created.clone() };
        assert!(!new_token_text(&operator).contains("Uses:"));
        let for_host = NewTokenOut { host_id: Some("i-0a".into()), uses_left: Some(1), ..created };
        assert!(new_token_text(&for_host).contains("Uses:    1\nHost:    i-0a only"), "{}", new_token_text(&for_host));
        assert_eq!(serde_json::to_value(&operator).expect("serializes")["uses_left"], serde_json::Value::Null);
    }

    #[test]
    fn host_revocation_and_audit() {
        let r =
            HostRevokedOut::new("i-1".into(), &v1::RevokeHostResponse { revoked_certificates: 1, disconnected: false });
        assert_eq!(host_revoked_text(&r), "host i-1 revoked: 1 certificate revoked, it was not connected\n");
        let r =
            HostRevokedOut::new("i-2".into(), &v1::RevokeHostResponse { revoked_certificates: 0, disconnected: true });
        assert_eq!(host_revoked_text(&r), "host i-2 revoked: 0 certificates revoked, its stream was closed\n");

        let records: Vec<AuditOut> = [
            v1::AuditRecord {
                id: 1,
                at: "2026-11-25T10:00:00+00:00".into(),
                actor: "token:0a1b2c3d4e5f (admin)".into(),
                peer: "10.0.0.5:40000".into(),
                action: "session.create".into(),
                target: "web".into(),
                result: "ok".into(),
            },
            v1::AuditRecord {
                id: 2,
                at: "2026-11-25T10:00:05+00:00".into(),
                actor: "insecure".into(),
                peer: String::new(),
                action: "token.revoke".into(),
                target: "ffffffffffff".into(),
                result: "NotFound: no token ffffffffffff".into(),
            },
        ]
        .iter()
        .map(AuditOut::from)
        .collect();
        assert_eq!(
            audit_table(&records),
            "AT                         ACTOR                       ACTION          TARGET        RESULT                           PEER\n\
             2026-11-25T10:00:00+00:00  token:0a1b2c3d4e5f (admin)  session.create  web           ok                               10.0.0.5:40000\n\
             2026-11-25T10:00:05+00:00  insecure                    token.revoke    ffffffffffff  NotFound: no token ffffffffffff  -\n"
        );
        assert_eq!(
            serde_json::to_value(&records[0]).expect("serializes"),
            serde_json::json!({
                "id": 1,
                "at": "2026-11-25T10:00:00+00:00",
                "actor": "token:0a1b2c3d4e5f (admin)",
                "peer": "10.0.0.5:40000",
                "action": "session.create",
                "target": "web",
                "result": "ok",
            })
        );
    }

    #[test]
    fn text_from_outside_is_escaped_in_tables_and_exact_in_json() {
        let hostile = "a\u{1b}]0;owned\u{7}\nforged row\u{202e}txt";
        let mut proto = proto_host();
        proto.last_error = hostile.into();
        proto.events[0].message = hostile.into();
        proto.dataplane.as_mut().expect("dataplane").problems = vec![hostile.into()];
        let host = HostOut::from(&proto);
        for text in [hosts_table(std::slice::from_ref(&host)), host_detail(&host)] {
            assert!(!text.chars().any(|c| teefleet_model::text::acts_on_terminals(c) && c != '\n'), "{text}");
            assert!(text.contains("a\\u{1b}]0;owned\\u{7}\\u{a}forged row\\u{202e}txt"), "{text}");
            assert!(!text.lines().any(|l| l.starts_with("forged")), "no row is forged: {text}");
        }
        let json = serde_json::to_value(&host).expect("serializes");
        assert_eq!(json["last_error"], hostile, "JSON keeps the text exact");

        let record = v1::AuditRecord { target: "a\nb\u{1b}[31m".into(), ..Default::default() };
        let text = audit_table(&[AuditOut::from(&record)]);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("a\\u{a}b\\u{1b}[31m"), "{text}");
    }

    #[test]
    fn config_view_redacts_the_token() {
        let settings = Settings {
            controller: Setting { value: "https://ctl:7300".into(), source: Source::File("/c.toml".into()) },
            token: Some(Setting { value: "tf1.0a1b2c3d4e5f.secret".into(), source: Source::Env("FLEET_TOKEN") }),
            ca_cert: None,
            insecure: Setting { value: false, source: Source::Flag("--insecure") },
            file: Some("/c.toml".into()),
        };
        let shown = ConfigOut::new(&settings, true, None);
        assert_eq!(
            config_detail(&shown),
            "Config file: /c.toml\n\
             \n\
             SETTING     VALUE                        SOURCE\n\
             controller  https://ctl:7300             config file\n\
             token       tf1.0a1b2c3d4e5f.<redacted>  env FLEET_TOKEN\n\
             ca_cert     -                            unset\n\
             insecure    false                        --insecure\n"
        );
        assert_eq!(
            serde_json::to_value(&shown).expect("serializes"),
            serde_json::json!({
                "file": "/c.toml",
                "file_exists": true,
                "controller": {"value": "https://ctl:7300", "source": "config file"},
                "token": {"value": "tf1.0a1b2c3d4e5f.<redacted>", "source": "env FLEET_TOKEN"},
                "ca_cert": {"value": null, "source": "unset"},
                "insecure": {"value": false, "source": "--insecure"},
                "problem": null,
            })
        );
        let absent = ConfigOut::new(&Settings { file: Some("/c.toml".into()), ..settings.clone() }, false, None);
        assert!(config_detail(&absent).starts_with("Config file: /c.toml (absent)\n"));
        let troubled = ConfigOut::new(&settings, true, Some("it needs a CA".into()));
        assert!(config_detail(&troubled).ends_with("--insecure\n\nProblem: it needs a CA\n"));
        let nowhere = ConfigOut::new(&Settings { file: None, ..settings }, false, None);
        assert!(config_detail(&nowhere).starts_with("Config file: none (no HOME or XDG_CONFIG_HOME; pass --config)\n"));
    }
}
