//! `fleetctl collector`: register, list and remove the instances (or named addresses)
//! that receive the clones.

use std::io::Write;

use clap::Subcommand;
use serde::Serialize;
use teefleet_proto::v1;
use teefleet_proto::v1::collector_service_client::CollectorServiceClient;

use crate::error::CliError;
use crate::render::{DeletedOut, Format, Render, emit, non_empty};
use crate::table::{or_dash, table_of};
use crate::transport::Transport;

#[derive(Debug, Subcommand)]
pub enum CollectorCommand {
    /// Register an EC2 instance as a collector, or (with --name and --ip) a collector that
    /// is not an instance, such as a load balancer.
    Add {
        /// The collector's EC2 instance id.
        #[arg(required_unless_present = "name")]
        instance_id: Option<String>,
        /// A collector that is not an EC2 instance: the name sessions will call it by
        /// (VXLAN only; needs --ip).
        #[arg(long, conflicts_with = "instance_id", requires = "ip")]
        name: Option<String>,
        /// The IPv4 address to send clones to [default: the instance's primary private IP].
        #[arg(long)]
        ip: Option<String>,
        /// The IPv6 address to send IPv6 clones to [default: the instance's first IPv6
        /// address, if it has one]. Raw (`--encap none`) sessions to a collector without one
        /// mirror IPv4 only; VXLAN carries IPv6 inside IPv4.
        #[arg(long)]
        ipv6: Option<String>,
        /// How clones reach it: `vxlan` (UDP 4789, as AWS Traffic Mirroring sends them; any
        /// subnet the sources can route to; no Source/Dest Check changes) or `none` (raw
        /// TEE: same subnet only, and the collector's Source/Dest Check off).
        #[arg(long, value_parser = ["vxlan", "none"], default_value = "vxlan")]
        encap: String,
    },
    /// List the registered collectors.
    List,
    /// Unregister a collector that no session uses.
    Remove {
        /// The collector's EC2 instance id.
        instance_id: String,
    },
}

impl CollectorCommand {
    /// Makes the call and prints the answer.
    pub async fn run(self, channel: Transport, format: Format, out: &mut impl Write) -> Result<(), CliError> {
        let mut client = CollectorServiceClient::new(channel);
        match self {
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
                Ok(emit(out, format, &CollectorOut::from(&collector))?)
            }
            CollectorCommand::List => {
                let list = client.list_collectors(v1::ListCollectorsRequest {}).await?.into_inner().collectors;
                let list: Vec<CollectorOut> = list.iter().map(CollectorOut::from).collect();
                Ok(emit(out, format, &list)?)
            }
            CollectorCommand::Remove { instance_id } => {
                client.remove_collector(v1::RemoveCollectorRequest { instance_id: instance_id.clone() }).await?;
                Ok(emit(out, format, &DeletedOut { kind: "collector", name: instance_id, deleted: true })?)
            }
        }
    }
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

/// `collector add` prints the one row of the table.
impl Render for CollectorOut {
    fn text(&self) -> String {
        std::slice::from_ref(self).text()
    }
}

impl Render for [CollectorOut] {
    /// The `collector list` / `collector add` table.
    fn text(&self) -> String {
        table_of(
            &["INSTANCE", "IP", "IPV6", "SUBNET", "ENCAP", "SESSIONS", "SRC/DST-CHECK", "ORIGINAL", "EC2-ERROR"],
            self,
            |c| {
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
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_table() {
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
        assert!([dual].text().lines().nth(1).expect("row").starts_with("i-col     10.0.0.9  fd00::9"));
        let t = [c].text();
        let cols: Vec<&str> = t.lines().nth(1).expect("row").split_whitespace().collect();
        assert_eq!(cols, ["i-col", "10.0.0.9", "-", "subnet-1", "none", "2", "disabled", "enabled", "-"]);
    }
}
