//! `fleet-agent leave`: the host asks the controller to revoke its certificates, with the
//! agent's own certificate from the state directory, so an uninstalled host leaves no
//! identity behind that a copy of its key could use.

use std::time::SystemTime;

use teefleet_proto::v1 as pb;
use tracing::info;

use crate::{
    config::{ControllerUrls, LeaveConfig},
    credentials::{CERT_FILE, CredentialError, CredentialStore, Stored},
    enroll::{Controller, EnrollError, each_replica},
    pki::Credentials,
};

/// Why the host did not leave. Nothing here prints a key or a secret.
#[derive(Debug, thiserror::Error)]
pub enum LeaveError {
    #[error("{0}")]
    Config(String),
    #[error("this host is not enrolled: {why}")]
    NotEnrolled { why: String },
    #[error("cannot read the state directory")]
    Store(#[from] CredentialError),
    #[error("the controller did not revoke the host")]
    Call(#[source] EnrollError),
}

impl LeaveError {
    /// EX_UNAVAILABLE from sysexits.h: no replica could be reached, so trying later may work.
    pub const UNAVAILABLE: u8 = 69;

    /// The exit code: [`Self::UNAVAILABLE`] when the controller cannot be reached (or is
    /// overloaded), 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Call(e) if e.is_retryable() => Self::UNAVAILABLE,
            _ => 1,
        }
    }
}

/// Revokes this host's certificates; returns how many were still valid.
pub async fn leave(config: LeaveConfig) -> Result<u32, LeaveError> {
    let urls = ControllerUrls::new(config.controller).map_err(|e| LeaveError::Config(e.to_string()))?;
    if !urls.is_tls() {
        return Err(LeaveError::Config(format!(
            "--controller {urls} is plaintext; a host leaves only over TLS, with its own certificate"
        )));
    }
    let store = CredentialStore::new(&config.state_dir);
    let Some(ca) = store.load_ca().await? else {
        let why = format!("{} holds no controller CA", config.state_dir.display());
        return Err(LeaveError::NotEnrolled { why });
    };
    if let Some(pin) = config.ca_pin
        && ca.pin() != pin
    {
        return Err(LeaveError::Config(format!(
            "the stored CA is {}, but --ca-pin is {pin}; this state directory belongs to another controller",
            ca.pin()
        )));
    }
    let cert_path = store.path(CERT_FILE);
    let cert_pem = match tokio::fs::read_to_string(&cert_path).await {
        Ok(pem) => pem,
        Err(e) => {
            let why = format!("cannot read {}: {e}", cert_path.display());
            return Err(LeaveError::NotEnrolled { why });
        }
    };
    let host = Credentials::issued_to(&cert_pem)
        .map_err(|e| LeaveError::NotEnrolled { why: format!("{}: {e}", cert_path.display()) })?;
    let creds = match store.load(&host, SystemTime::now()).await? {
        Stored::Valid(creds) => creds,
        // An expired certificate is refused at the handshake; the controller no longer
        // accepts it anyway.
        Stored::Unusable(why) => return Err(LeaveError::NotEnrolled { why }),
    };
    let controller = Controller::new(urls, ca);
    let response = each_replica(controller.urls(), |url| {
        let creds = &creds;
        let controller = &controller;
        async move {
            let mut client = controller.client(url, Some(creds)).await?;
            client.leave(pb::LeaveRequest {}).await.map_err(EnrollError::from_status)
        }
    })
    .await
    .map_err(LeaveError::Call)?;
    let revoked = response.into_inner().revoked_certificates;
    info!(host_id = %host, revoked, "the controller revoked this host");
    Ok(revoked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_controller_is_69() {
        let call = |code| LeaveError::Call(EnrollError::from_status(tonic::Status::new(code, "x")));
        assert_eq!(call(tonic::Code::Unavailable).exit_code(), 69);
        assert_eq!(call(tonic::Code::Unauthenticated).exit_code(), 1, "a revoked certificate");
        assert_eq!(LeaveError::NotEnrolled { why: "no".into() }.exit_code(), 1);
    }

    #[tokio::test]
    async fn a_state_directory_without_credentials_is_not_enrolled() {
        let dir = tempfile::tempdir().expect("dir");
        let config = LeaveConfig {
            controller: vec!["https://c:7300".parse().expect("url")],
            state_dir: dir.path().to_owned(),
            ca_pin: None,
        };
        let err = leave(config.clone()).await.expect_err("nothing to revoke");
        assert!(matches!(err, LeaveError::NotEnrolled { .. }), "{err}");
        let plain = LeaveConfig { controller: vec!["http://c:7300".parse().expect("url")], ..config };
        assert!(matches!(leave(plain).await, Err(LeaveError::Config(_))));
    }
}
