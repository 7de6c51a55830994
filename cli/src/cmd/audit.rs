//! `fleetctl audit`: the controller's record of every change and who made it.

use std::io::Write;

use clap::Subcommand;
use serde::Serialize;
use teefleet_proto::v1;
use teefleet_proto::v1::audit_service_client::AuditServiceClient;

use crate::error::CliError;
use crate::render::{Format, Render, emit};
use crate::table::{or_dash, table_of, time_text};
use crate::transport::Transport;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit records, oldest first.
    List {
        /// Only records at or after this time, RFC 3339: 2026-11-25T10:00:00Z.
        #[arg(long, value_name = "TIME", value_parser = parse_since)]
        since: Option<String>,
        /// At most this many records (1-1000) [default: the controller's, 100].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
    },
}

/// Checks `--since` is RFC 3339 and passes it on as typed.
pub fn parse_since(text: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("{text:?} is not an RFC 3339 time ({e}); e.g. 2026-11-25T10:00:00Z"))
}

impl AuditCommand {
    /// Makes the call and prints the answer.
    pub async fn run(self, channel: Transport, format: Format, out: &mut impl Write) -> Result<(), CliError> {
        let AuditCommand::List { since, limit } = self;
        let request = v1::ListAuditRequest { since: since.unwrap_or_default(), limit: limit.unwrap_or(0) };
        let records = AuditServiceClient::new(channel).list_audit(request).await?.into_inner().records;
        let records: Vec<AuditOut> = records.iter().map(AuditOut::from).collect();
        Ok(emit(out, format, &records)?)
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

impl Render for [AuditOut] {
    /// The `audit list` table.
    fn text(&self) -> String {
        table_of(&["AT", "ACTOR", "ACTION", "TARGET", "RESULT", "PEER"], self, |r| {
            vec![
                or_dash(&time_text(&r.at)),
                or_dash(&r.actor),
                or_dash(&r.action),
                or_dash(&r.target),
                or_dash(&r.result),
                or_dash(&r.peer),
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_records() {
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
            records.text(),
            "AT                    ACTOR                       ACTION          TARGET        RESULT                           PEER\n\
             2026-11-25T10:00:00Z  token:0a1b2c3d4e5f (admin)  session.create  web           ok                               10.0.0.5:40000\n\
             2026-11-25T10:00:05Z  insecure                    token.revoke    ffffffffffff  NotFound: no token ffffffffffff  -\n"
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
    fn text_from_outside_is_escaped_in_tables() {
        let record = v1::AuditRecord { target: "a\nb\u{1b}[31m".into(), ..Default::default() };
        let text = [AuditOut::from(&record)].text();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("a\\u{a}b\\u{1b}[31m"), "{text}");
    }
}
