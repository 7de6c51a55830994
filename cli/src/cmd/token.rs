//! `fleetctl token`: create (showing the secret once), list and revoke bearer tokens and
//! agents' join tokens.

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use teefleet_proto::v1;
use teefleet_proto::v1::token_service_client::TokenServiceClient;

use crate::error::CliError;
use crate::render::{Format, Render, emit, non_empty};
use crate::table::{key_values, or_dash, table_of, time_text};
use crate::transport::Transport;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret, once.
    Create(TokenCreateArgs),
    /// List the tokens (never their secrets).
    List,
    /// Revoke a token: calls with it fail from now on.
    Revoke {
        /// The token's id, as `token list` shows it.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// What the token may do: agent (enroll an agent only), viewer (read), operator (also
    /// manage sessions), admin (also collectors, tokens and hosts).
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// How long the token is valid: 90s, 30m, 1h, 7d (at least a minute).
    #[arg(long, value_name = "DURATION", value_parser = teefleet_model::parse_duration)]
    pub ttl: std::time::Duration,
    /// How many agents may enroll with it (role agent only) [default: unlimited until it
    /// expires, or 1 with --host].
    #[arg(long, value_name = "N")]
    pub uses: Option<u32>,
    /// Make a join token for this host only (role agent only). It enrolls the host even
    /// while the host holds a live certificate, as a rebuilt host or one that lost its key
    /// needs, and retires that certificate; no other join token can.
    #[arg(long, value_name = "HOST_ID")]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Agent,
    Viewer,
    Operator,
    Admin,
}

impl RoleArg {
    /// The role's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RoleArg::Agent => "agent",
            RoleArg::Viewer => "viewer",
            RoleArg::Operator => "operator",
            RoleArg::Admin => "admin",
        }
    }
}

/// The controller's own words when `--uses` comes with another role than agent.
pub const USES_NEEDS_AGENT: &str =
    "uses: only join tokens (role agent) have a number of uses; operator tokens last until they expire";

/// The controller's own words when `--host` comes with another role than agent.
pub const HOST_NEEDS_AGENT: &str =
    "host_id: only join tokens (role agent) are made for a host; operator tokens are for people";

impl TokenCreateArgs {
    /// The request the controller receives, or the controller's refusal of `--uses` or
    /// `--host` for another role than agent, given early.
    pub fn to_request(&self) -> Result<v1::CreateTokenRequest, &'static str> {
        if self.role != RoleArg::Agent {
            if self.uses.is_some() {
                return Err(USES_NEEDS_AGENT);
            }
            if self.host.is_some() {
                return Err(HOST_NEEDS_AGENT);
            }
        }
        Ok(v1::CreateTokenRequest {
            role: self.role.as_str().to_owned(),
            ttl_seconds: self.ttl.as_secs(),
            uses: self.uses,
            host_id: self.host.clone().unwrap_or_default(),
        })
    }
}

impl TokenCommand {
    /// Makes the call and prints the answer.
    pub async fn run(self, channel: Transport, format: Format, out: &mut impl Write) -> Result<(), CliError> {
        let mut client = TokenServiceClient::new(channel);
        match self {
            TokenCommand::Create(args) => {
                // `Cli::check` refused --uses with another role before connecting.
                let request = args.to_request().map_err(tonic::Status::invalid_argument)?;
                let created = client.create_token(request).await?.into_inner();
                Ok(emit(out, format, &NewTokenOut::from(&created))?)
            }
            TokenCommand::List => {
                let tokens = client.list_tokens(v1::ListTokensRequest {}).await?.into_inner().tokens;
                let now = chrono::Utc::now();
                let tokens: Vec<TokenOut> = tokens.iter().map(|t| TokenOut::new(t, now)).collect();
                Ok(emit(out, format, &tokens)?)
            }
            TokenCommand::Revoke { id } => {
                client.revoke_token(v1::RevokeTokenRequest { id: id.clone() }).await?;
                Ok(emit(out, format, &RevokedOut { kind: "token", id, revoked: true })?)
            }
        }
    }
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

impl Render for RevokedOut {
    fn text(&self) -> String {
        format!("token {} revoked\n", self.id)
    }
}

impl Render for [TokenOut] {
    /// The `token list` table.
    fn text(&self) -> String {
        table_of(&["ID", "ROLE", "STATE", "EXPIRES", "USES-LEFT", "HOST", "CREATED", "CREATED-BY"], self, |t| {
            vec![
                t.id.clone(),
                t.role.clone(),
                t.state.to_owned(),
                t.expires_at.as_deref().map_or_else(|| "never".to_owned(), time_text),
                t.uses_left.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                t.host_id.clone().unwrap_or_else(|| "-".to_owned()),
                or_dash(&time_text(&t.created_at)),
                or_dash(&t.created_by),
            ]
        })
    }
}

impl Render for NewTokenOut {
    /// `token create`'s view: the token, its secret, and the warning that it is shown once.
    fn text(&self) -> String {
        let mut fields = vec![
            ("ID", self.id.clone()),
            ("Role", self.role.clone()),
            ("Expires", self.expires_at.as_deref().map_or_else(|| "never".to_owned(), time_text)),
        ];
        if self.role == "agent" {
            fields.push(("Uses", self.uses_left.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())));
            if let Some(host) = &self.host_id {
                fields.push(("Host", format!("{host} only (it may replace the host's certificate)")));
            }
        }
        fields.push(("Token", self.token.clone()));
        let mut out = key_values(&fields);
        out.push_str("\nSave the token now: it cannot be shown again (the controller keeps only its hash).\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{may_2026, proto_token};

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
            [active, join, used, expired, revoked, bootstrap.clone()].text(),
            "ID            ROLE      STATE    EXPIRES               USES-LEFT  HOST  CREATED               CREATED-BY\n\
             aaaaaaaaaaaa  operator  active   2026-06-01T00:00:00Z  -          -     2026-05-01T00:00:00Z  token:0a1b2c3d4e5f (admin)\n\
             bbbbbbbbbbbb  agent     active   2026-06-01T00:00:00Z  2          i-0a  2026-05-01T00:00:00Z  token:0a1b2c3d4e5f (admin)\n\
             cccccccccccc  agent     used up  2026-06-01T00:00:00Z  0          -     2026-05-01T00:00:00Z  token:0a1b2c3d4e5f (admin)\n\
             dddddddddddd  viewer    expired  2026-05-14T00:00:00Z  -          -     2026-05-01T00:00:00Z  token:0a1b2c3d4e5f (admin)\n\
             eeeeeeeeeeee  admin     revoked  2026-06-01T00:00:00Z  -          -     2026-05-01T00:00:00Z  token:0a1b2c3d4e5f (admin)\n\
             ffffffffffff  admin     active   never                 -          -     2026-05-01T00:00:00Z  -\n"
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
        emit(&mut buf, Format::Json, &created).expect("writes");
        assert_eq!(
            String::from_utf8(buf).expect("utf-8"),
            "{\n  \"id\": \"0a1b2c3d4e5f\",\n  \"token\": \"tf1.0a1b2c3d4e5f.cafe\",\n  \"role\": \"agent\",\n  \
             \"expires_at\": \"2026-06-01T00:00:00+00:00\",\n  \"uses_left\": 5,\n  \"host_id\": null\n}\n"
        );
        assert_eq!(
            created.text(),
            "ID:      0a1b2c3d4e5f\n\
             Role:    agent\n\
             Expires: 2026-06-01T00:00:00Z\n\
             Uses:    5\n\
             Token:   tf1.0a1b2c3d4e5f.cafe\n\
             \n\
             Save the token now: it cannot be shown again (the controller keeps only its hash).\n"
        );
        let unlimited = NewTokenOut { uses_left: None, ..created.clone() };
        assert!(unlimited.text().contains("Uses:    unlimited\n"));
        let operator = NewTokenOut { role: "operator".into(), uses_left: None, ..created.clone() };
        assert!(!operator.text().contains("Uses:"));
        let for_host = NewTokenOut { host_id: Some("i-0a".into()), uses_left: Some(1), ..created };
        assert!(for_host.text().contains("Uses:    1\nHost:    i-0a only"), "{}", for_host.text());
        assert_eq!(serde_json::to_value(&operator).expect("serializes")["uses_left"], serde_json::Value::Null);
    }
}
