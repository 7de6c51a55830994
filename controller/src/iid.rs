//! EC2 instance identity documents: an agent proves which instance it runs on with the
//! document IMDS serves and its RSA-2048 signature (a PKCS#7 SignedData that carries the
//! document, BER-encoded as AWS makes it). This module checks the signature against the
//! certificates that sign documents (AWS's per region, built in, or `--iid-certs`) and
//! reads the document; what the controller then checks with EC2 lives in `grpc/access.rs`.
//!
//! Parsing is RustCrypto's `cms` (BER included); the RSA verification is ring's, which
//! the controller already has for TLS.

use std::{collections::BTreeSet, path::Path};

use cms::{
    content_info::ContentInfo,
    signed_data::{SignedData, SignerIdentifier, SignerInfo},
};
use der::{
    Any, Decode as _, Encode as _, EncodingRules, Reader as _, SliceReader, Tag, Tagged as _, asn1::OctetString,
    oid::ObjectIdentifier,
};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use rustls_pki_types::{CertificateDer, pem::PemObject as _};
use sha2::{Digest as _, Sha256};
use teefleet_model::{IdentityEvidence, InstanceId, TagSelector};
use x509_cert::{Certificate, name::Name, serial_number::SerialNumber};

/// AWS's RSA-2048 instance identity certificates, one per region (see the file's header).
const AWS_RSA2048: &str = include_str!("../certs/aws-rsa2048.pem");

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// The identifier octet of a primitive OCTET STRING (X.690 8.7).
const OCTET_STRING_TAG: u8 = 0x04;
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

/// Why a signed identity document is not accepted, or the certificates cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IidError {
    #[error("the signature is not base64 (send the body of /latest/dynamic/instance-identity/rsa2048 as it is)")]
    Base64(#[source] base64::DecodeError),
    #[error(
        "the signature is not a PKCS#7 SignedData (send /latest/dynamic/instance-identity/rsa2048, not /signature)"
    )]
    NotSignedData(#[source] der::Error),
    #[error("the signature carries no document")]
    NoContent,
    #[error("the document differs from the one the signature carries")]
    ContentMismatch,
    #[error("the signature has {0} signers; an identity document has one")]
    SignerCount(usize),
    #[error("the signature uses {0}; identity documents are signed with SHA-256 and RSA")]
    Algorithm(ObjectIdentifier),
    #[error("the signature's message digest does not match the document")]
    DigestMismatch,
    #[error("the document was not signed by any certificate the controller trusts ({0})")]
    UnknownSigner(String),
    #[error("the signature does not verify with {0}")]
    BadSignature(String),
    #[error("the document says region {document}, but it was signed with the certificate of {signer}")]
    WrongRegion { document: String, signer: String },
    #[error("the signed document is not an instance identity document")]
    Document(#[source] serde_json::Error),
    #[error("the signed document's instanceId is not an instance id")]
    InstanceId(#[source] teefleet_model::ValidationError),
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{label} is not valid PEM")]
    Pem { label: String },
    #[error("{source_name} holds no PEM certificate")]
    NoCertificates { source_name: String },
    #[error("{label} is not a usable certificate")]
    Certificate {
        label: String,
        #[source]
        source: der::Error,
    },
}

impl IidError {
    /// A word for metrics and refusal summaries.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownSigner(_) | Self::BadSignature(_) | Self::WrongRegion { .. } | Self::DigestMismatch => {
                "bad_identity_signature"
            }
            _ => "bad_identity_document",
        }
    }
}

/// Who may enroll by instance identity (`--join-account`, `--join-tag`) and the
/// certificates their documents are verified with.
#[derive(Debug)]
pub struct JoinPolicy {
    pub accounts: BTreeSet<String>,
    pub tags: Vec<TagSelector>,
    pub signers: Signers,
}

/// An AWS account id, as `--join-account` takes it: twelve digits.
pub fn parse_account(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit()) {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not an AWS account id (12 digits)"))
    }
}

/// A certificate that signs identity documents, as far as verifying needs it.
struct Signer {
    /// Names it in messages: `AWS us-east-1`, or `--iid-certs certificate 2`.
    label: String,
    /// The region whose documents it signs, for the built-in ones.
    region: Option<String>,
    issuer: Name,
    serial: SerialNumber,
    /// The RSAPublicKey DER, as ring takes it.
    key: Vec<u8>,
}

/// The certificates identity documents are verified against.
pub struct Signers {
    signers: Vec<Signer>,
}

impl std::fmt::Debug for Signers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signers({})", self.signers.len())
    }
}

/// What the controller uses of a verified document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityDocument {
    pub account_id: String,
    pub instance_id: InstanceId,
    pub region: String,
    pub pending_time: String,
    /// SHA-256 of the signed document: one per launch or start of the instance, however
    /// the signature around it is encoded, so a copy cannot pass for a new document.
    pub digest: [u8; 32],
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    account_id: String,
    instance_id: String,
    region: String,
    #[serde(default)]
    pending_time: String,
}

impl Signers {
    /// AWS's RSA-2048 certificates of every region.
    pub fn aws() -> Result<Self, IidError> {
        Self::parse(AWS_RSA2048, "the built-in AWS certificates", true)
    }

    /// The certificates in a PEM file (`--iid-certs`).
    pub fn load(path: &Path) -> Result<Self, IidError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| IidError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &format!("--iid-certs {}", path.display()), false)
    }

    /// Every certificate in `pem`. The built-in file labels each with a `# region: NAME`
    /// line before it.
    fn parse(pem: &str, source_name: &str, regional: bool) -> Result<Self, IidError> {
        let regions: Vec<Option<String>> = if regional {
            pem.lines()
                .filter_map(|l| l.strip_prefix("# region: "))
                .map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect()
        } else {
            Vec::new()
        };
        let mut signers = Vec::new();
        for (i, der) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
            let region = regions.get(i).cloned().flatten();
            let label = match &region {
                Some(region) => format!("the AWS certificate of {region}"),
                None => format!("certificate {} of {source_name}", i + 1),
            };
            let der = der.map_err(|_| IidError::Pem { label: label.clone() })?;
            let cert =
                Certificate::from_der(&der).map_err(|source| IidError::Certificate { label: label.clone(), source })?;
            let tbs = cert.tbs_certificate();
            signers.push(Signer {
                label,
                region,
                issuer: tbs.issuer().clone(),
                serial: tbs.serial_number().clone(),
                key: tbs.subject_public_key_info().subject_public_key.raw_bytes().to_vec(),
            });
        }
        if signers.is_empty() {
            return Err(IidError::NoCertificates { source_name: source_name.to_owned() });
        }
        Ok(Self { signers })
    }

    pub fn len(&self) -> usize {
        self.signers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.signers.is_empty()
    }

    /// Verifies `evidence`: the signature carries the document, one signer, SHA-256 with
    /// RSA, by a trusted certificate (the one for the document's region, when known).
    pub fn verify(&self, evidence: &IdentityEvidence) -> Result<IdentityDocument, IidError> {
        use base64::Engine as _;
        let compact: String = evidence.signature().split_whitespace().collect();
        let ber = base64::engine::general_purpose::STANDARD.decode(compact).map_err(IidError::Base64)?;
        let info = ContentInfo::from_ber(&ber).map_err(IidError::NotSignedData)?;
        if info.content_type != ID_SIGNED_DATA {
            return Err(IidError::Algorithm(info.content_type));
        }
        let signed: SignedData =
            info.content.decode_as_encoding(EncodingRules::Ber).map_err(IidError::NotSignedData)?;
        let encap = &signed.encap_content_info;
        let content = match (&encap.econtent, encap.econtent_type == ID_DATA) {
            (Some(any), true) => content_octets(any)?,
            (Some(_), false) => return Err(IidError::Algorithm(encap.econtent_type)),
            (None, _) => return Err(IidError::NoContent),
        };
        if *content != *evidence.document().as_bytes() {
            return Err(IidError::ContentMismatch);
        }
        let [signer_info] = signed.signer_infos.0.as_slice() else {
            return Err(IidError::SignerCount(signed.signer_infos.0.len()));
        };
        let digest: [u8; 32] = Sha256::digest(&content).into();
        let signer = self.signer(signer_info)?;
        verify_signer_info(signer_info, signer, &content, &digest)?;
        let raw: RawDocument = serde_json::from_slice(&content).map_err(IidError::Document)?;
        if let Some(region) = signer.region.as_ref().filter(|r| **r != raw.region) {
            return Err(IidError::WrongRegion { document: raw.region, signer: region.clone() });
        }
        Ok(IdentityDocument {
            account_id: raw.account_id,
            instance_id: raw.instance_id.parse().map_err(IidError::InstanceId)?,
            region: raw.region,
            pending_time: raw.pending_time,
            digest,
        })
    }

    /// The trusted certificate the signer names.
    fn signer(&self, info: &SignerInfo) -> Result<&Signer, IidError> {
        match &info.sid {
            SignerIdentifier::IssuerAndSerialNumber(id) => {
                self.signers.iter().find(|s| s.issuer == id.issuer && s.serial == id.serial_number).ok_or_else(|| {
                    IidError::UnknownSigner(format!("issuer {}, serial {}", id.issuer, id.serial_number))
                })
            }
            SignerIdentifier::SubjectKeyIdentifier(_) => {
                Err(IidError::UnknownSigner("a subject key identifier, which AWS does not use".into()))
            }
        }
    }
}

/// The bytes an `eContent` OCTET STRING carries. BER lets a signer cut it into chunks (a
/// constructed string of indefinite length, as AWS's and `openssl cms -stream`'s are), and
/// `der` then keeps the chunks' own encodings as the value; they are joined here. A
/// document is JSON, so its first byte is never an OCTET STRING tag: a value that starts
/// with one is chunks.
fn content_octets(any: &Any) -> Result<Vec<u8>, IidError> {
    if any.tag() != Tag::OctetString {
        return Err(IidError::NoContent);
    }
    let value = any.value();
    if value.first() != Some(&OCTET_STRING_TAG) {
        return Ok(value.to_vec());
    }
    let mut reader =
        SliceReader::new_with_encoding_rules(value, EncodingRules::Ber).map_err(IidError::NotSignedData)?;
    let mut content = Vec::with_capacity(value.len());
    while !reader.is_finished() {
        let chunk = OctetString::decode(&mut reader).map_err(IidError::NotSignedData)?;
        content.extend_from_slice(chunk.as_bytes());
    }
    Ok(content)
}

/// Checks the signature of `info` by `signer` over `content` (SHA-256 `digest`): over the
/// signed attributes when there are some (AWS's have), which must then name the content
/// type and its digest, else over the content itself.
fn verify_signer_info(info: &SignerInfo, signer: &Signer, content: &[u8], digest: &[u8; 32]) -> Result<(), IidError> {
    if info.digest_alg.oid != ID_SHA256 {
        return Err(IidError::Algorithm(info.digest_alg.oid));
    }
    if info.signature_algorithm.oid != RSA_ENCRYPTION && info.signature_algorithm.oid != SHA256_WITH_RSA {
        return Err(IidError::Algorithm(info.signature_algorithm.oid));
    }
    let signed_bytes = match &info.signed_attrs {
        Some(attrs) => {
            let value = |oid| attrs.iter().find(|a| a.oid == oid).and_then(|a| a.values.iter().next());
            let named_digest = value(ID_MESSAGE_DIGEST)
                .and_then(|v| v.decode_as::<OctetString>().ok())
                .ok_or(IidError::DigestMismatch)?;
            if named_digest.as_bytes() != digest {
                return Err(IidError::DigestMismatch);
            }
            let content_type = value(ID_CONTENT_TYPE).and_then(|v| v.decode_as::<ObjectIdentifier>().ok());
            if content_type != Some(ID_DATA) {
                return Err(IidError::DigestMismatch);
            }
            // What was signed is the attributes' DER as a SET, not the implicit [0] they
            // travel under.
            attrs.to_der().map_err(IidError::NotSignedData)?
        }
        None => content.to_vec(),
    };
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &signer.key)
        .verify(&signed_bytes, info.signature.as_bytes())
        .map_err(|_| IidError::BadSignature(signer.label.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real documents AWS signed (us-west-2 and us-west-1, 2021), published in Teleport's
    /// EC2 join tests (`lib/auth/join_ec2_test.go`): the format the controller must read.
    const US_WEST_2: &str = include_str!("../testdata/iid-us-west-2.b64");
    const US_WEST_1: &str = include_str!("../testdata/iid-us-west-1.b64");

    /// The document inside a signature, as IMDS would serve it beside the signature.
    fn document_of(signature: &str) -> String {
        use base64::Engine as _;
        let compact: String = signature.split_whitespace().collect();
        let ber = base64::engine::general_purpose::STANDARD.decode(compact).expect("base64");
        let info = ContentInfo::from_ber(&ber).expect("ber");
        let signed: SignedData = info.content.decode_as_encoding(EncodingRules::Ber).expect("signed data");
        let any = signed.encap_content_info.econtent.expect("content");
        String::from_utf8(content_octets(&any).expect("octets")).expect("utf-8")
    }

    fn evidence(signature: &str) -> IdentityEvidence {
        IdentityEvidence::new(document_of(signature), signature.to_owned()).expect("evidence")
    }

    #[test]
    fn the_built_in_certificates_verify_documents_aws_signed() {
        let aws = Signers::aws().expect("built in");
        assert_eq!(aws.len(), 39, "one per region");
        let doc = aws.verify(&evidence(US_WEST_2)).expect("verifies");
        assert_eq!(
            (doc.account_id.as_str(), doc.instance_id.as_str(), doc.region.as_str(), doc.pending_time.as_str()),
            ("278576220453", "i-078517ca8a70a1dde", "us-west-2", "2021-09-03T21:25:44Z")
        );
        let other = aws.verify(&evidence(US_WEST_1)).expect("verifies");
        assert_eq!(other.instance_id.as_str(), "i-01b940c45fd11fe74");
        assert_ne!(doc.digest, other.digest);
    }

    #[test]
    fn a_changed_document_or_signature_is_refused() {
        let aws = Signers::aws().expect("built in");
        let genuine = evidence(US_WEST_2);
        let forged = genuine.document().replace("278576220453", "111111111111");
        let err = aws.verify(&IdentityEvidence::new(forged, US_WEST_2.into()).expect("ok")).expect_err("forged");
        assert!(matches!(err, IidError::ContentMismatch), "{err}");
        // One bit of the RSA signature flipped (it is the tail, before the BER padding).
        use base64::Engine as _;
        let compact: String = US_WEST_2.split_whitespace().collect();
        let mut ber = base64::engine::general_purpose::STANDARD.decode(compact).expect("b64");
        let at = ber.len() - 20;
        ber[at] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(&ber);
        let err =
            aws.verify(&IdentityEvidence::new(genuine.document().into(), tampered).expect("ok")).expect_err("tampered");
        assert!(matches!(err, IidError::BadSignature(ref who) if who.contains("us-west-2")), "{err}");
        assert_eq!(err.reason(), "bad_identity_signature");
        let err = aws.verify(&IdentityEvidence::new("{}".into(), "not base64!".into()).expect("ok")).expect_err("b64");
        assert!(matches!(err, IidError::Base64(_)), "{err}");
    }

    #[test]
    fn only_the_given_certificates_are_trusted() {
        // us-west-1's certificate alone does not know the us-west-2 signer.
        let pem = AWS_RSA2048.split("# region: ").find(|b| b.starts_with("us-west-1 ")).expect("block");
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("certs.pem");
        std::fs::write(&path, pem).expect("write");
        let only = Signers::load(&path).expect("loads");
        assert_eq!(only.len(), 1);
        assert!(only.verify(&evidence(US_WEST_1)).is_ok());
        let err = only.verify(&evidence(US_WEST_2)).expect_err("unknown signer");
        assert!(matches!(err, IidError::UnknownSigner(_)), "{err}");
        std::fs::write(&path, "no certificates here").expect("write");
        assert!(matches!(Signers::load(&path), Err(IidError::NoCertificates { .. })));
        assert!(matches!(Signers::load(&dir.path().join("missing")), Err(IidError::Read { .. })));
    }
}
