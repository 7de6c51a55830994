//! How a host proves, when it enrolls, that it may join the fleet: a join token, or the
//! EC2 instance identity document AWS signed for it.

use std::fmt;

use crate::ValidationError;

/// What an agent sends to enroll. The proof is checked by the controller; these types only
/// bound what is carried, so a request cannot make the controller parse megabytes.
#[derive(Clone, PartialEq, Eq)]
pub enum JoinProof {
    /// A join token's secret (`fleetctl token create --role agent`).
    Token(String),
    /// The instance identity document and its RSA-2048 PKCS#7 signature, as IMDS serves
    /// them.
    InstanceIdentity(IdentityEvidence),
}

impl JoinProof {
    /// The longest token secret carried.
    pub const MAX_TOKEN_LEN: usize = 256;

    /// A token proof; an empty or oversized secret is none.
    pub fn token(secret: &str) -> Result<Self, ValidationError> {
        if secret.is_empty() || secret.len() > Self::MAX_TOKEN_LEN {
            return Err(ValidationError::new("join_token", format!("must be 1 to {} characters", Self::MAX_TOKEN_LEN)));
        }
        Ok(Self::Token(secret.to_owned()))
    }

    /// The method's name as flags and logs say it.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Token(_) => "token",
            Self::InstanceIdentity(_) => "instance-identity",
        }
    }
}

impl fmt::Debug for JoinProof {
    /// Never shows the token's secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(..)"),
            Self::InstanceIdentity(e) => f.debug_tuple("InstanceIdentity").field(e).finish(),
        }
    }
}

/// An instance identity document (`/latest/dynamic/instance-identity/document`) and its
/// signature (`/latest/dynamic/instance-identity/rsa2048`: base64 of a PKCS#7 SignedData
/// that carries the document), unverified. AWS's are well under a kilobyte and three
/// kilobytes; the bounds leave room for longer fields.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityEvidence {
    document: String,
    signature: String,
}

impl IdentityEvidence {
    pub const MAX_DOCUMENT: usize = 8 * 1024;
    pub const MAX_SIGNATURE: usize = 16 * 1024;

    pub fn new(document: String, signature: String) -> Result<Self, ValidationError> {
        if document.trim().is_empty() || document.len() > Self::MAX_DOCUMENT {
            return Err(ValidationError::new(
                "identity_document",
                format!("must be 1 to {} bytes", Self::MAX_DOCUMENT),
            ));
        }
        if signature.trim().is_empty() || signature.len() > Self::MAX_SIGNATURE {
            return Err(ValidationError::new(
                "identity_signature",
                format!("must be 1 to {} bytes", Self::MAX_SIGNATURE),
            ));
        }
        Ok(Self { document, signature })
    }

    pub fn document(&self) -> &str {
        &self.document
    }

    /// Base64, possibly broken into lines as IMDS serves it.
    pub fn signature(&self) -> &str {
        &self.signature
    }
}

impl fmt::Debug for IdentityEvidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityEvidence({} + {} bytes)", self.document.len(), self.signature.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_no_secret_in_debug() {
        assert!(JoinProof::token("").is_err());
        assert!(JoinProof::token(&"x".repeat(JoinProof::MAX_TOKEN_LEN + 1)).is_err());
        let proof = JoinProof::token("s3cret").expect("ok");
        assert_eq!((proof.method(), format!("{proof:?}").contains("s3cret")), ("token", false));
        let err = IdentityEvidence::new(" ".into(), "sig".into()).expect_err("empty");
        assert_eq!(err.field, "identity_document");
        let err =
            IdentityEvidence::new("{}".into(), "x".repeat(IdentityEvidence::MAX_SIGNATURE + 1)).expect_err("long");
        assert_eq!(err.field, "identity_signature");
        let ok = IdentityEvidence::new("{}".into(), "MIAG".into()).expect("ok");
        assert_eq!(JoinProof::InstanceIdentity(ok).method(), "instance-identity");
    }
}
