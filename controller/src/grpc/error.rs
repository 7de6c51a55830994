//! The one place where errors become gRPC statuses. Database and SDK internals are logged,
//! never sent to a client.

use teefleet_model::ValidationError;
use tonic::Status;
use tracing::{error, warn};

use crate::{cloud::CloudError, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Invalid(v) => Status::invalid_argument(v.to_string()),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::Cloud(c @ CloudError::NotFound(_)) => Status::not_found(c.to_string()),
            ApiError::Cloud(c @ CloudError::Unavailable(_)) => Status::unavailable(c.to_string()),
            ApiError::Cloud(c @ CloudError::Refused(_)) => Status::failed_precondition(c.to_string()),
            ApiError::Store(s) => match s {
                StoreError::NotFound { .. } => Status::not_found(s.to_string()),
                StoreError::AlreadyExists { .. } => Status::already_exists(s.to_string()),
                StoreError::InUse(m) => Status::failed_precondition(m),
                StoreError::Stale(m) => Status::aborted(m),
                s if s.is_unavailable() => {
                    error!(error = ?s, "database unavailable");
                    Status::unavailable("the controller's database is unavailable; retry shortly")
                }
                s if s.is_conflict() => {
                    warn!(error = ?s, "transaction aborted by a conflict");
                    Status::aborted("the change collided with a concurrent one and was not made; retry it")
                }
                s => {
                    error!(error = ?s, "store error");
                    Status::internal("internal error in the controller's store; see the controller log")
                }
            },
        }
    }
}
