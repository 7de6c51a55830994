//! Enrollment requests: how an agent proves it may join (a join token or its instance
//! identity), encoded by the agent and decoded by the controller with the same code.

use teefleet_model::{HostId, IdentityEvidence, JoinProof, ValidationError};

use crate::v1 as pb;

/// An Enroll or Renew request for `host` with `csr` (PEM); a renewal carries no proof.
pub fn enroll_request(host: &HostId, csr: String, proof: Option<&JoinProof>) -> pb::EnrollRequest {
    let mut request = pb::EnrollRequest { host_id: host.to_string(), csr, ..Default::default() };
    match proof {
        Some(JoinProof::Token(secret)) => request.join_token.clone_from(secret),
        Some(JoinProof::InstanceIdentity(evidence)) => {
            request.identity_document = evidence.document().to_owned();
            request.identity_signature = evidence.signature().to_owned();
        }
        None => {}
    }
    request
}

/// The proof an Enroll request carries: `None` when it carries none, an error when it
/// carries two or a malformed one.
pub fn join_proof(request: &pb::EnrollRequest) -> Result<Option<JoinProof>, ValidationError> {
    let identity = !request.identity_document.is_empty() || !request.identity_signature.is_empty();
    match (request.join_token.is_empty(), identity) {
        (true, false) => Ok(None),
        (false, false) => JoinProof::token(&request.join_token).map(Some),
        (true, true) => IdentityEvidence::new(request.identity_document.clone(), request.identity_signature.clone())
            .map(|e| Some(JoinProof::InstanceIdentity(e))),
        (false, true) => {
            Err(ValidationError::new("join_token", "give a join token or an instance identity document, not both"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let host: HostId = "i-0123456789abcdef0".parse().expect("host");
        let evidence = IdentityEvidence::new("{\"instanceId\":\"i-1\"}".into(), "MIAG\nCSq".into()).expect("ok");
        for proof in [None, Some(JoinProof::token("s3cret").expect("ok")), Some(JoinProof::InstanceIdentity(evidence))]
        {
            let request = enroll_request(&host, "CSR".into(), proof.as_ref());
            assert_eq!((request.host_id.as_str(), request.csr.as_str()), (host.as_str(), "CSR"));
            assert_eq!(join_proof(&request).expect("valid"), proof);
        }
    }

    #[test]
    fn two_proofs_or_half_a_one_are_refused() {
        let both = pb::EnrollRequest {
            join_token: "t".into(),
            identity_document: "{}".into(),
            identity_signature: "x".into(),
            ..Default::default()
        };
        assert!(join_proof(&both).expect_err("both").reason.contains("not both"));
        let half = pb::EnrollRequest { identity_document: "{}".into(), ..Default::default() };
        assert_eq!(join_proof(&half).expect_err("no signature").field, "identity_signature");
    }
}
