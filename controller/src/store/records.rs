//! What the store hands back: plain records decoded (and re-validated) from rows.

use std::net::{IpAddr, Ipv6Addr};

use chrono::{DateTime, Utc};
use sqlx::{Row, postgres::PgRow, types::Json};
use teefleet_model::{CollectorId, Encap, HostId, MaxLoss, SessionSpec, TagSelector, Vni};

use super::{Result, StoreError, corrupt, filter_from_row, version};
use crate::delivery::CollectorAgent;

/// A stored VNI; the schema keeps it in range.
fn vni(stored: i32) -> Result<Vni> {
    u32::try_from(stored).map_err(corrupt).and_then(|v| Vni::new(v).map_err(corrupt))
}
use crate::report::{Dataplane, HostEvent, SessionCounters, Traffic};

/// Source/Dest Check as teefleet last observed or set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdcState {
    Enabled,
    Disabled,
    Unknown,
}

impl SdcState {
    pub fn as_str(self) -> &'static str {
        match self {
            SdcState::Enabled => "enabled",
            SdcState::Disabled => "disabled",
            SdcState::Unknown => "unknown",
        }
    }

    pub(super) fn parse(s: &str) -> Result<Self> {
        match s {
            "enabled" => Ok(SdcState::Enabled),
            "disabled" => Ok(SdcState::Disabled),
            "unknown" => Ok(SdcState::Unknown),
            other => Err(corrupt(format!("source_dest_check {other:?}"))),
        }
    }
}

impl From<bool> for SdcState {
    fn from(enabled: bool) -> Self {
        if enabled { SdcState::Enabled } else { SdcState::Disabled }
    }
}

#[derive(Debug, Clone)]
pub struct NewCollector {
    /// Its instance id, or the name of a collector that is not an instance.
    pub instance_id: CollectorId,
    pub ip: IpAddr,
    /// Where IPv6 traffic is cloned to; without it only IPv4 traffic is mirrored.
    pub ipv6: Option<Ipv6Addr>,
    pub subnet_id: String,
    /// The value found in EC2 at registration.
    pub source_dest_check: bool,
    pub encap: Encap,
}

#[derive(Debug, Clone)]
pub struct CollectorRecord {
    /// Its instance id, or the name of a collector that is not an instance.
    pub instance_id: CollectorId,
    pub ip: IpAddr,
    pub ipv6: Option<Ipv6Addr>,
    pub subnet_id: String,
    pub original_source_dest_check: bool,
    pub source_dest_check: SdcState,
    pub ec2_error: Option<String>,
    pub session_count: u32,
    pub encap: Encap,
}

impl CollectorRecord {
    pub(super) fn from_row(row: &PgRow) -> Result<Self> {
        Ok(Self {
            instance_id: row.try_get::<String, _>("instance_id")?.parse().map_err(corrupt)?,
            ip: row.try_get::<String, _>("ip")?.parse().map_err(corrupt)?,
            ipv6: row.try_get::<Option<String>, _>("ipv6")?.map(|ip| ip.parse()).transpose().map_err(corrupt)?,
            subnet_id: row.try_get("subnet_id")?,
            original_source_dest_check: row.try_get("original_source_dest_check")?,
            source_dest_check: SdcState::parse(&row.try_get::<String, _>("source_dest_check")?)?,
            ec2_error: row.try_get("ec2_error")?,
            session_count: u32::try_from(row.try_get::<i64, _>("session_count")?).unwrap_or(u32::MAX),
            encap: row.try_get::<String, _>("encap")?.parse().map_err(corrupt)?,
        })
    }

    /// Every address of the collector, one per family, as the compiler wants them.
    pub fn ips(&self) -> Vec<IpAddr> {
        std::iter::once(self.ip).chain(self.ipv6.map(IpAddr::V6)).collect()
    }
}

#[derive(Debug, Clone)]
pub struct HostRecord {
    pub host_id: HostId,
    pub agent_version: String,
    pub addresses: Vec<String>,
    pub connected: bool,
    pub desired_version: u64,
    pub applied_version: u64,
    pub last_error: Option<String>,
    pub last_seen: Option<DateTime<Utc>>,
    pub rule_count: u32,
    pub dataplane: Option<Dataplane>,
    pub drift_repairs: u64,
    /// Per session, as of the agent's last Health; rates are zero once it is disconnected.
    pub counters: Vec<SessionCounters>,
}

impl HostRecord {
    pub(super) fn from_row(row: &PgRow) -> Result<Self> {
        let connected = row.try_get::<Option<bool>, _>("live")?.unwrap_or(false);
        let Json(mut counters): Json<Vec<SessionCounters>> = row.try_get("counters")?;
        if !connected {
            for c in &mut counters {
                c.traffic = c.traffic.without_rates();
            }
        }
        Ok(Self {
            host_id: row.try_get::<String, _>("host_id")?.parse().map_err(corrupt)?,
            agent_version: row.try_get("agent_version")?,
            addresses: row.try_get("addresses")?,
            connected,
            desired_version: version(row.try_get("desired_version")?),
            applied_version: version(row.try_get("applied_version")?),
            last_error: row.try_get("last_error")?,
            last_seen: row.try_get("last_seen")?,
            rule_count: u32::try_from(row.try_get::<i32, _>("rule_count")?).unwrap_or(0),
            dataplane: row.try_get::<Option<Json<Dataplane>>, _>("dataplane")?.map(|Json(d)| d),
            drift_repairs: version(row.try_get("drift_repairs")?),
            counters,
        })
    }
}

pub(super) fn event_from_row(row: &PgRow) -> Result<HostEvent> {
    let at: DateTime<Utc> = row.try_get("at")?;
    let at = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let kind = row.try_get::<String, _>("kind")?.parse().map_err(corrupt)?;
    Ok(HostEvent::new(kind, &row.try_get::<String, _>("message")?, at, at))
}

/// One source host of a session, as the status view needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceStatus {
    pub host_id: HostId,
    /// The first desired version of the host that contains the session.
    pub required_version: u64,
    pub connected: bool,
    pub desired_version: u64,
    pub applied_version: u64,
    pub nacked_version: Option<u64>,
    pub last_error: Option<String>,
    /// What the host's agent last reported for this session; zero before its first report.
    pub traffic: Traffic,
    /// The host is a source because it carries the session's tags, not because it was named.
    pub from_tags: bool,
    /// The host's Source/Dest Check, when teefleet manages it (`disable_source_check`).
    pub source_dest_check: Option<SdcState>,
}

#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// As created: its named sources and its tags.
    pub spec: SessionSpec,
    pub created_at: DateTime<Utc>,
    /// When the session deletes itself; `None` if it lives until deleted.
    pub expires_at: Option<DateTime<Utc>>,
    pub collector_ip: IpAddr,
    pub collector_sdc: SdcState,
    pub collector_encap: Encap,
    pub collector_ec2_error: Option<String>,
    /// Every current source, named or matched by tag, by host id.
    pub sources: Vec<SourceStatus>,
    /// Why the last re-resolution of the session's tags was not applied in full.
    pub resolve_problem: Option<String>,
    /// Whether an agent ever said Hello for the collector, so that it counts arrivals.
    pub collector_agent: CollectorAgent,
}

impl SessionRecord {
    pub(super) fn from_rows(row: &PgRow, sources: &[PgRow]) -> Result<Self> {
        let keys: Vec<String> = row.try_get("selector_keys")?;
        let values: Vec<String> = row.try_get("selector_values")?;
        if keys.len() != values.len() {
            return Err(corrupt("session selectors: keys and values differ in number"));
        }
        let selectors = keys
            .into_iter()
            .zip(values)
            .map(|(k, v)| TagSelector::new(k, v).map_err(corrupt))
            .collect::<Result<_>>()?;
        let spec = SessionSpec::selecting(
            row.try_get::<String, _>("name")?.parse().map_err(corrupt)?,
            row.try_get::<Vec<String>, _>("sources")?
                .iter()
                .map(|h| h.parse().map_err(corrupt))
                .collect::<Result<_>>()?,
            selectors,
            row.try_get::<String, _>("collector_id")?.parse().map_err(corrupt)?,
            filter_from_row(row)?,
        )
        .map_err(corrupt)?
        .with_allow_routed(row.try_get("allow_routed")?)
        .with_vni(Some(vni(row.try_get("vni")?)?))
        .with_disable_source_check(row.try_get("disable_source_check")?)
        .with_max_loss(MaxLoss::new(row.try_get("max_loss")?).map_err(corrupt)?);
        let sources = sources
            .iter()
            .map(|r| {
                let connected = r.try_get::<Option<bool>, _>("live")?.unwrap_or(false);
                Ok(SourceStatus {
                    host_id: r.try_get::<String, _>("host_id")?.parse().map_err(corrupt)?,
                    required_version: version(r.try_get("required_version")?),
                    connected,
                    desired_version: version(r.try_get("desired_version")?),
                    applied_version: version(r.try_get("applied_version")?),
                    nacked_version: r.try_get::<Option<i64>, _>("nacked_version")?.map(version),
                    last_error: r.try_get("last_error")?,
                    traffic: r
                        .try_get::<Option<Json<SessionCounters>>, _>("counters")?
                        .map(|Json(c)| c.traffic)
                        .unwrap_or_default(),
                    from_tags: r.try_get("from_tags")?,
                    source_dest_check: r
                        .try_get::<Option<String>, _>("source_check")?
                        .map(|s| SdcState::parse(&s))
                        .transpose()?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Self {
            spec,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            collector_ip: row.try_get::<String, _>("collector_ip")?.parse().map_err(corrupt)?,
            collector_sdc: SdcState::parse(&row.try_get::<String, _>("collector_sdc")?)?,
            collector_encap: row.try_get::<String, _>("collector_encap")?.parse().map_err(corrupt)?,
            collector_ec2_error: row.try_get("collector_ec2_error")?,
            sources,
            resolve_problem: row.try_get("resolve_problem")?,
            collector_agent: if row.try_get("collector_has_agent")? {
                CollectorAgent::Present
            } else {
                CollectorAgent::Absent
            },
        })
    }
}
