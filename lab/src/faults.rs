//! Faults on the path to a host, made in the bridge its port is on: a share of the frames
//! toward it dropped, as a full security group, a congested link or an overloaded
//! collector would lose them. What the host's own agent counts is then what really
//! arrived.

use crate::LabError;
use crate::netns::Network;
use crate::vpc::{nft, remove_table};

/// Frames toward one host being dropped; removed by [`Loss::clear`] or when dropped.
#[derive(Debug)]
pub struct Loss {
    table: String,
}

impl Network {
    /// Drops `percent` % of the frames toward `host` that match `what` (an nftables
    /// expression of the bridge family, e.g. `ether type ip udp dport 4789`), at random,
    /// on its bridge port.
    pub async fn drop_toward(&self, host: &str, percent: u8, what: &str) -> Result<Loss, LabError> {
        if percent > 100 {
            return Err(LabError::Invalid(format!("{percent} % is no share of frames")));
        }
        let veth = self.host(host)?.veth().to_owned();
        // The port's name is unique to this lab, and so is the table named after it.
        let table = format!("loss_{}", veth.replace('-', "_"));
        let text = format!(
            "table bridge {table} {{\n  chain toward {{\n    type filter hook postrouting priority 10; policy accept;\n    \
             oifname \"{veth}\" {what} numgen random mod 100 < {percent} counter drop\n  }}\n}}\n"
        );
        remove_table(&table);
        nft(&text).await?;
        tracing::info!(host, percent, what, "dropping frames toward the host");
        Ok(Loss { table })
    }
}

impl Loss {
    /// Stops dropping.
    pub fn clear(self) {}
}

impl Drop for Loss {
    fn drop(&mut self) {
        remove_table(&self.table);
        tracing::info!(table = %self.table, "no longer dropping frames");
    }
}
