//! `fleetctl host`: the hosts whose agents connected, one host's dataplane, counters and
//! events, and revoking a host's identity.

use std::io::Write;

use clap::Subcommand;
use serde::Serialize;
use teefleet_model::text::escaped;
use teefleet_proto::v1;
use teefleet_proto::v1::host_service_client::HostServiceClient;

use crate::error::CliError;
use crate::render::{Format, Render, emit, non_empty};
use crate::table::{TRAFFIC_HEADERS, join_or_dash, key_values, or_dash, table_of, time_text, traffic_cells, yes_no};
use crate::transport::Transport;

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List the hosts whose agents have connected.
    List,
    /// Show one host: its dataplane, drift repairs, per-session counters and recent events.
    Get {
        /// The host's id (its EC2 instance id, or the id its agent was given).
        host_id: String,
    },
    /// Revoke every certificate of a host and close its stream (admin). Its agent can
    /// come back only by enrolling again with a new join token.
    Revoke {
        /// The host's id.
        host_id: String,
    },
}

impl HostCommand {
    /// Makes the call and prints the answer.
    pub async fn run(self, channel: Transport, format: Format, out: &mut impl Write) -> Result<(), CliError> {
        let mut client = HostServiceClient::new(channel);
        match self {
            HostCommand::List => {
                let hosts = client.list_hosts(v1::ListHostsRequest {}).await?.into_inner().hosts;
                let hosts: Vec<HostOut> = hosts.iter().map(HostOut::from).collect();
                Ok(emit(out, format, &hosts)?)
            }
            HostCommand::Get { host_id } => {
                let host = client.get_host(v1::GetHostRequest { host_id }).await?.into_inner();
                Ok(emit(out, format, &HostOut::from(&host))?)
            }
            HostCommand::Revoke { host_id } => {
                let answer = client.revoke_host(v1::RevokeHostRequest { host_id: host_id.clone() }).await?.into_inner();
                Ok(emit(out, format, &HostRevokedOut::new(host_id, &answer))?)
            }
        }
    }
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

impl Render for [HostOut] {
    /// The `host list` table.
    fn text(&self) -> String {
        table_of(
            &["HOST", "CONNECTED", "APPLIED/DESIRED", "RULES", "LAST-SEEN", "AGENT", "ADDRESSES", "ERROR"],
            self,
            |h| {
                vec![
                    h.host_id.clone(),
                    yes_no(h.connected),
                    format!("{}/{}", h.applied_version, h.desired_version),
                    h.rule_count.to_string(),
                    h.last_seen.as_deref().map_or_else(|| "never".to_owned(), time_text),
                    or_dash(&h.agent_version),
                    join_or_dash(&h.addresses),
                    h.last_error.clone().unwrap_or_else(|| "-".to_owned()),
                ]
            },
        )
    }
}

impl Render for HostOut {
    /// The `host get` view: the host's fields and dataplane, then its per-session counters,
    /// then its recent events.
    fn text(&self) -> String {
        let mut fields = vec![
            ("Host", self.host_id.clone()),
            ("Connected", yes_no(self.connected)),
            ("Agent", or_dash(&self.agent_version)),
            ("Addresses", if self.addresses.is_empty() { "-".to_owned() } else { self.addresses.join(", ") }),
            ("Versions", format!("applied {} of desired {}", self.applied_version, self.desired_version)),
            ("Rules", self.rule_count.to_string()),
            ("Last seen", self.last_seen.as_deref().map_or_else(|| "never".to_owned(), time_text)),
            ("Last error", self.last_error.clone().unwrap_or_else(|| "-".to_owned())),
        ];
        match &self.dataplane {
            Some(d) => {
                fields.push(("Backend", if d.backend.is_empty() { "unknown".to_owned() } else { d.backend.clone() }));
                fields.push(("iptables", or_dash(&d.iptables_version)));
                fields.push(("IPv6", yes_no(d.ipv6)));
            }
            None => fields.push(("Backend", "not reported".to_owned())),
        }
        fields.push(("Drift repairs", self.drift_repairs.to_string()));
        let mut out = key_values(&fields);
        if let Some(d) = self.dataplane.as_ref().filter(|d| !d.problems.is_empty()) {
            out.push_str("\nDataplane problems:\n");
            for p in &d.problems {
                out.push_str(&format!("  - {}\n", escaped(p)));
            }
        }
        out.push('\n');
        if self.counters.is_empty() {
            out.push_str("No counters reported.\n");
        } else {
            let mut headers = vec!["SESSION"];
            headers.extend(TRAFFIC_HEADERS);
            out.push_str(&table_of(&headers, &self.counters, |c| {
                let mut row = vec![c.session.clone()];
                row.extend(traffic_cells(c.packets, c.bytes, c.packets_per_second, c.bytes_per_second));
                row
            }));
        }
        out.push('\n');
        if self.events.is_empty() {
            out.push_str("No recent events.\n");
        } else {
            out.push_str("Recent events:\n");
            out.push_str(&table_of(&["AT", "KIND", "MESSAGE"], &self.events, |e| {
                vec![or_dash(&time_text(&e.at)), e.kind.clone(), e.message.clone()]
            }));
        }
        out
    }
}

impl Render for HostRevokedOut {
    /// `host revoke`'s one line.
    fn text(&self) -> String {
        let certs = match self.revoked_certificates {
            1 => "1 certificate".to_owned(),
            n => format!("{n} certificates"),
        };
        let stream = if self.disconnected { "its stream was closed" } else { "it was not connected" };
        format!("host {} revoked: {certs} revoked, {stream}\n", self.host_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::proto_host;

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
        let t = HostOut::from(&proto_host()).text();
        assert!(t.contains("Backend:       nft\n"), "{t}");
        assert!(t.contains("iptables:      iptables v1.8.9 (nf_tables)\n"), "{t}");
        assert!(t.contains("Drift repairs: 3\n"), "{t}");
        assert!(t.contains("Dataplane problems:\n  - TEE target missing for ip6tables\n"), "{t}");
        let counter = t.lines().find(|l| l.starts_with("web")).expect("counter row");
        let cols: Vec<&str> = counter.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(cols, ["web", "12", "2.9 KiB", "0.5", "100 B/s"]);
        assert!(t.contains("2023-11-14T22:13:20Z  drift_repaired  jump from PREROUTING was removed\n"), "{t}");

        let bare = HostOut::from(&v1::Host { host_id: "h".into(), ..Default::default() }).text();
        assert!(bare.contains("Backend:       not reported\n"), "{bare}");
        assert!(bare.contains("No counters reported.\n") && bare.contains("No recent events.\n"), "{bare}");
    }

    #[test]
    fn host_table() {
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
        let t = [h].text();
        let cols: Vec<&str> = t.lines().nth(1).expect("row").split_whitespace().collect();
        assert_eq!(cols, ["i-src1", "yes", "3/4", "2", "never", "0.1.0", "10.0.0.2,fd00::2", "-"]);
    }

    #[test]
    fn host_revocation() {
        let r =
            HostRevokedOut::new("i-1".into(), &v1::RevokeHostResponse { revoked_certificates: 1, disconnected: false });
        assert_eq!(r.text(), "host i-1 revoked: 1 certificate revoked, it was not connected\n");
        let r =
            HostRevokedOut::new("i-2".into(), &v1::RevokeHostResponse { revoked_certificates: 0, disconnected: true });
        assert_eq!(r.text(), "host i-2 revoked: 0 certificates revoked, its stream was closed\n");
    }

    #[test]
    fn text_from_outside_is_escaped_in_tables_and_exact_in_json() {
        let hostile = "a\u{1b}]0;owned\u{7}\nforged row\u{202e}txt";
        let mut proto = proto_host();
        proto.last_error = hostile.into();
        proto.events[0].message = hostile.into();
        proto.dataplane.as_mut().expect("dataplane").problems = vec![hostile.into()];
        let host = HostOut::from(&proto);
        for text in [std::slice::from_ref(&host).text(), host.text()] {
            assert!(!text.chars().any(|c| teefleet_model::text::acts_on_terminals(c) && c != '\n'), "{text}");
            assert!(text.contains("a\\u{1b}]0;owned\\u{7}\\u{a}forged row\\u{202e}txt"), "{text}");
            assert!(!text.lines().any(|l| l.starts_with("forged")), "no row is forged: {text}");
        }
        let json = serde_json::to_value(&host).expect("serializes");
        assert_eq!(json["last_error"], hostile, "JSON keeps the text exact");
    }
}
