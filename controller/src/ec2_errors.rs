//! EC2 failures in one sentence: what failed, what to check, and the SDK's error code,
//! instead of the SDK's debug dump (about 900 characters for missing credentials).

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use teefleet_model::{InstanceId, text::printable};

/// The longest part of EC2's own message kept: the first sentence says what is wrong,
/// the rest (an encoded authorization message, say) helps nobody reading a terminal.
const MAX_DETAIL: usize = 200;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CloudError {
    #[error("EC2 instance {0} does not exist")]
    NotFound(String),
    #[error("the EC2 API could not be reached: {0}")]
    Unavailable(String),
    #[error("EC2 refused the call: {0}")]
    Refused(String),
}

impl CloudError {
    /// The error's kind in one word, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CloudError::NotFound(_) => "not_found",
            CloudError::Unavailable(_) => "unavailable",
            CloudError::Refused(_) => "refused",
        }
    }
}

/// Where the calls go, so a failure can name it.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

/// `op` is the EC2 action (`DescribeInstances`); `id` is the instance the call was about,
/// if it was about one: only then can EC2's "no such instance" mean NotFound.
pub fn classify<E, R>(target: &Target, op: &str, id: Option<&InstanceId>, err: SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let endpoint = || target.endpoint.clone().unwrap_or_else(|| "the EC2 endpoint".to_owned());
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("unknown error");
            let detail = first_sentence(e.message().unwrap_or("no message"));
            match (code, id) {
                ("InvalidInstanceID.NotFound" | "InvalidInstanceID.Malformed", Some(id)) => {
                    CloudError::NotFound(id.to_string())
                }
                ("RequestLimitExceeded" | "Unavailable" | "InternalError" | "ServiceUnavailable", _) => {
                    CloudError::Unavailable(format!("{op} failed ({code}): EC2 is throttling or unavailable: {detail}"))
                }
                ("AuthFailure" | "InvalidClientTokenId" | "SignatureDoesNotMatch" | "ExpiredToken", _) => {
                    CloudError::Refused(format!(
                        "{op} failed ({code}): EC2 does not accept the controller's AWS credentials; check the \
                         access key, the instance role and the clock"
                    ))
                }
                ("UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException", _) => {
                    CloudError::Refused(format!(
                        "{op} failed ({code}): the controller's IAM identity may not call ec2:{op}; allow it in its policy"
                    ))
                }
                _ => CloudError::Refused(format!("{op} failed ({code}): {detail}")),
            }
        }
        SdkError::DispatchFailure(d) if d.is_io() => CloudError::Unavailable(format!(
            "{op} failed: cannot connect to {} ({}); check AWS_ENDPOINT_URL, the region and the network path",
            endpoint(),
            root_cause(&err)
        )),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) if timed_out(&err) => CloudError::Unavailable(
            format!("{op} failed: {} did not answer in time; check the network path", endpoint()),
        ),
        // What fails before a request is sent is configuration: no region to sign for, or
        // no credentials to sign with. Retrying does not help.
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) if target.region.is_none() => {
            CloudError::Refused(format!(
                "{op} failed: no AWS region is configured; set AWS_REGION (or the profile's region)"
            ))
        }
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => CloudError::Refused(format!(
            "{op} failed: the request could not be signed ({}); check the AWS credentials (environment, profile \
             or instance role)",
            root_cause(&err)
        )),
        _ => CloudError::Unavailable(format!("{op} failed: EC2's reply could not be read ({})", root_cause(&err))),
    }
}

/// The SDK reports a timeout in two ways: its own operation timeout, or the connector's.
fn timed_out<E, R>(err: &SdkError<E, R>) -> bool {
    match err {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(d) => d.is_timeout(),
        _ => false,
    }
}

/// The innermost error's own words, first sentence only: the outer layers only say
/// "dispatch failure".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    first_sentence(&cause.to_string())
}

fn first_sentence(text: &str) -> String {
    let end = text.find(". ").map_or(text.len(), |i| i + 1);
    printable(&text[..end], MAX_DETAIL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec2_messages_keep_their_first_sentence() {
        assert_eq!(first_sentence("You are not authorized. Encoded message: abc"), "You are not authorized.");
        assert_eq!(first_sentence("one"), "one");
        assert_eq!(first_sentence(&"x".repeat(500)).len(), MAX_DETAIL);
    }
}
