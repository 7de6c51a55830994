//! Why a fleetctl command failed, and the exit code each reason gets: 1 for what the
//! controller said or for a controller that cannot be reached, 64 (EX_USAGE) for
//! connection settings or a config file that cannot be used, 2 for arguments the
//! controller would refuse (as for clap's own usage errors, which exit before any of
//! this runs).

use std::borrow::Cow;

use crate::config::{self, ConfigError, Settings};

/// The exit code when the controller refused or could not be reached.
pub const EXIT_FAILURE: u8 = 1;

/// The exit code for arguments the controller would refuse, found before sending: the
/// same as clap's for arguments it refuses itself.
pub const EXIT_USAGE: u8 = 2;

/// The exit code for bad connection settings or config file (EX_USAGE), apart from clap's
/// 2 for bad arguments and 1 for what the controller said.
pub const EXIT_CONFIG: u8 = 64;

/// Why a command failed; printed as `error: <message>`, with the exit code of `exit_code`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The controller answered with an error status; its message is shown verbatim.
    #[error("{}", status_text(.0))]
    Status(#[from] tonic::Status),
    /// The controller refused the caller's token (UNAUTHENTICATED) or its role
    /// (PERMISSION_DENIED): its message, then what to do about it.
    #[error("{}\nhint: {hint}", status_text(status))]
    Access {
        #[source]
        status: tonic::Status,
        hint: String,
    },
    /// The controller could not be reached, or the connection failed during the call.
    #[error("cannot reach the controller at {url}: {detail}{}", hint_line(hint.as_deref()))]
    Connect { url: String, detail: String, hint: Option<String> },
    /// The settings or the config file cannot be used; nothing was sent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--wait` gave up; the message lists the hosts that have not applied the session.
    #[error("{0}")]
    WaitTimeout(String),
    /// `--dry-run` found problems for which the controller would refuse the session; the
    /// plan, with them, was printed.
    #[error("session {0} would not be created: see the problems above; nothing was changed")]
    WouldRefuse(String),
    /// Writing the output failed (for example a closed pipe).
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// The request has problems the controller would refuse; nothing was sent.
    #[error("{what}; nothing was sent:{}", problem_lines(problems))]
    Invalid { what: &'static str, problems: Vec<teefleet_model::ValidationError> },
}

fn problem_lines(problems: &[teefleet_model::ValidationError]) -> String {
    problems.iter().map(|p| format!("\n  {}", teefleet_model::text::escaped(&p.to_string()))).collect()
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) => EXIT_CONFIG,
            CliError::Invalid { .. } => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

/// The controller's message, escaped: it can quote what an agent or a caller sent.
fn status_text(status: &tonic::Status) -> Cow<'_, str> {
    if status.message().is_empty() {
        status.code().description().into()
    } else {
        teefleet_model::text::escaped(status.message())
    }
}

fn hint_line(hint: Option<&str>) -> String {
    hint.map(|hint| format!("\nhint: {hint}")).unwrap_or_default()
}

/// Adds what to do to a refusal of the caller's token or role, naming where the token
/// came from, since a stale one in the config file or the environment is the usual cause.
pub fn with_access_hint(error: CliError, settings: &Settings) -> CliError {
    let CliError::Status(status) = error else { return error };
    let save = "pass it with --token, set FLEET_TOKEN, or save it with `fleetctl config set --token TOKEN`";
    let hint = match (status.code(), &settings.token) {
        (tonic::Code::Unauthenticated, None) => {
            format!("no token is configured; ask an admin for one (`fleetctl token create`) and {save}")
        }
        (tonic::Code::Unauthenticated, Some(token)) => format!(
            "the token sent ({}) came from {}; ask an admin for a valid one (`fleetctl token create`) and {save}",
            config::redact(&token.value),
            token.source
        ),
        (tonic::Code::PermissionDenied, Some(token)) => format!(
            "the token sent ({}) came from {}; ask an admin for a token with a larger role",
            config::redact(&token.value),
            token.source
        ),
        _ => return CliError::Status(status),
    };
    CliError::Access { status, hint }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_show_the_message_verbatim() {
        let e = CliError::from(tonic::Status::invalid_argument("filter.cidrs[0]: \"10.0.0.300/8\" is not a CIDR"));
        assert_eq!(e.to_string(), "filter.cidrs[0]: \"10.0.0.300/8\" is not a CIDR");
        let e = CliError::from(tonic::Status::unavailable(""));
        assert_eq!(e.to_string(), "The service is currently unavailable");
    }

    fn settings_with_token(source: Option<config::Source>) -> Settings {
        let file = config::LoadedFile::default();
        let mut s = config::resolve(&Default::default(), &|_| None, &file).expect("resolves");
        s.token = source.map(|source| config::Setting { value: "tf1.0a1b2c3d4e5f.secret".into(), source });
        s
    }

    #[test]
    fn access_refusals_get_a_hint_naming_the_tokens_source() {
        let none = settings_with_token(None);
        let e = with_access_hint(tonic::Status::unauthenticated("no bearer token").into(), &none);
        assert_eq!(
            e.to_string(),
            "no bearer token\nhint: no token is configured; ask an admin for one (`fleetctl token create`) and pass \
             it with --token, set FLEET_TOKEN, or save it with `fleetctl config set --token TOKEN`"
        );
        assert_eq!(e.exit_code(), 1);
        let from_file = settings_with_token(Some(config::Source::File("/c.toml".into())));
        let e = with_access_hint(tonic::Status::unauthenticated("token 0a1b2c3d4e5f is expired").into(), &from_file);
        assert!(
            e.to_string().starts_with(
                "token 0a1b2c3d4e5f is expired\nhint: the token sent (tf1.0a1b2c3d4e5f.<redacted>) came from config \
                 file /c.toml; ask an admin for a valid one"
            ),
            "{e}"
        );
        let e = with_access_hint(tonic::Status::permission_denied("role viewer").into(), &from_file);
        assert_eq!(
            e.to_string(),
            "role viewer\nhint: the token sent (tf1.0a1b2c3d4e5f.<redacted>) came from config file /c.toml; ask an \
             admin for a token with a larger role"
        );
        // Other codes, and the secret, stay out of it.
        let e = with_access_hint(tonic::Status::not_found("no session web").into(), &from_file);
        assert_eq!(e.to_string(), "no session web");
        assert!(
            !with_access_hint(tonic::Status::unauthenticated("x").into(), &from_file).to_string().contains("secret")
        );
    }
}
