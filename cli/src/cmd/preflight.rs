//! What `session create --dry-run` prints: per source, what creating the session would
//! do, and what stands in its way. Nothing was changed.

use serde::Serialize;
use teefleet_model::text::escaped;
use teefleet_proto::v1;

use crate::render::{Render, non_empty};
use crate::table::{key_values, or_dash, table_of};

/// A preflight as printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreflightOut {
    pub name: String,
    /// Create would make the session now: no problem refuses it.
    pub would_create: bool,
    pub collector: String,
    /// `vxlan` or `none`.
    pub encap: String,
    /// The VNI the session would get; null if it would get none.
    pub vni: Option<u32>,
    pub collector_subnet_id: Option<String>,
    /// `connected`, `disconnected` or `none`.
    pub collector_agent: String,
    /// e.g. `enabled -> disabled`; null when the check stays as it is.
    pub collector_source_dest_check: Option<String>,
    pub sources: Vec<PreflightSourceOut>,
    pub problems: Vec<PreflightProblemOut>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreflightSourceOut {
    pub host_id: String,
    pub from_tags: bool,
    /// Null when EC2 does not know the host.
    pub subnet_id: Option<String>,
    /// `connected`, `disconnected` or `none`.
    pub agent: String,
    pub encap: String,
    /// Raw: the TEE gateways; VXLAN: the tunnel's remote.
    pub gateways: Vec<String>,
    /// e.g. `enabled -> disabled`; null when the check stays as it is.
    pub source_dest_check: Option<String>,
    /// The rules the session would add to the host.
    pub rule_count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreflightProblemOut {
    /// The host it is about; null for the session as a whole.
    pub host_id: Option<String>,
    pub message: String,
    /// Create would refuse the session for it.
    pub refuses: bool,
}

impl From<&v1::SessionPreflight> for PreflightOut {
    fn from(p: &v1::SessionPreflight) -> Self {
        PreflightOut {
            name: p.name.clone(),
            would_create: p.would_create,
            collector: p.collector.clone(),
            encap: p.encap.clone(),
            vni: (p.vni != 0).then_some(p.vni),
            collector_subnet_id: non_empty(&p.collector_subnet_id),
            collector_agent: p.collector_agent.clone(),
            collector_source_dest_check: non_empty(&p.collector_source_dest_check),
            sources: p
                .sources
                .iter()
                .map(|s| PreflightSourceOut {
                    host_id: s.host_id.clone(),
                    from_tags: s.from_tags,
                    subnet_id: non_empty(&s.subnet_id),
                    agent: s.agent.clone(),
                    encap: s.encap.clone(),
                    gateways: s.gateways.clone(),
                    source_dest_check: non_empty(&s.source_dest_check),
                    rule_count: s.rule_count,
                })
                .collect(),
            problems: p
                .problems
                .iter()
                .map(|q| PreflightProblemOut {
                    host_id: non_empty(&q.host_id),
                    message: q.message.clone(),
                    refuses: q.refuses,
                })
                .collect(),
        }
    }
}

/// `vxlan VNI 7 to 10.0.0.9` or `tee via 10.0.0.9, fd00::9`; `-` on a host that would get no rule.
fn delivery_cell(encap: &str, vni: Option<u32>, gateways: &[String]) -> String {
    if gateways.is_empty() {
        return "-".to_owned();
    }
    let to = gateways.join(", ");
    match (encap, vni) {
        ("none", _) => format!("tee via {to}"),
        (other, Some(vni)) => format!("{other} VNI {vni} to {to}"),
        (other, None) => format!("{other} to {to}"),
    }
}

impl Render for PreflightOut {
    /// What would happen, the sources as a table, then the problems, refusals first.
    fn text(&self) -> String {
        let verdict = if self.would_create { "would be created" } else { "would be refused" };
        let mut out = format!("Dry run: nothing was changed. Session {} {verdict}.\n\n", escaped(&self.name));
        let mut fields = vec![(
            "Collector",
            format!(
                "{} (encap {}, subnet {}, agent {})",
                self.collector,
                self.encap,
                self.collector_subnet_id.as_deref().unwrap_or("unknown"),
                self.collector_agent
            ),
        )];
        fields.push(("VNI", self.vni.map_or_else(|| "none free".to_owned(), |v| v.to_string())));
        fields.push((
            "Collector's Source/Dest Check",
            self.collector_source_dest_check.clone().unwrap_or_else(|| "unchanged".to_owned()),
        ));
        out.push_str(&key_values(&fields));
        out.push('\n');
        let headers = ["HOST", "ORIGIN", "SUBNET", "AGENT", "DELIVERY", "SRC/DST-CHECK", "RULES"];
        out.push_str(&table_of(&headers, &self.sources, |s| {
            vec![
                s.host_id.clone(),
                if s.from_tags { "tag" } else { "named" }.to_owned(),
                or_dash(s.subnet_id.as_deref().unwrap_or_default()),
                s.agent.clone(),
                delivery_cell(&s.encap, self.vni, &s.gateways),
                s.source_dest_check.clone().unwrap_or_else(|| "-".to_owned()),
                s.rule_count.to_string(),
            ]
        }));
        let mut problems: Vec<&PreflightProblemOut> = self.problems.iter().collect();
        problems.sort_by_key(|p| !p.refuses);
        if !problems.is_empty() {
            out.push_str("\nProblems:\n");
        }
        for p in problems {
            let mark = if p.refuses { "refuses: " } else { "" };
            let host = p.host_id.as_deref().map(|h| format!("{}: ", escaped(h))).unwrap_or_default();
            out.push_str(&format!("  - {mark}{host}{}\n", escaped(&p.message)));
        }
        out
    }
}
