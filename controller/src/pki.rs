//! The controller's certificate authority: one CA for the fleet, kept in Postgres so every
//! replica signs with it, the key sealed at rest when the operator gives a secret. It
//! signs each replica's server certificate and the short-lived client certificates agents
//! enroll for.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use ring::{aead, pbkdf2, rand::SecureRandom, rand::SystemRandom};
use sha2::{Digest, Sha256};
use teefleet_model::HostId;

/// A CA is valid for ten years; replacing it means re-enrolling every agent.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// A replica's server certificate; a new one (with a new key) is made at every start.
const SERVER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this long in the past, so hosts whose clocks lag still accept them.
const CLOCK_SKEW: Duration = Duration::from_secs(300);
/// The CSR a caller may send, in bytes of PEM: an ECDSA or Ed25519 request is far smaller.
pub const MAX_CSR_BYTES: usize = 8 * 1024;
/// PBKDF2 rounds for the sealing key: paid once per controller start.
const SEAL_ROUNDS: u32 = 200_000;
/// Sealed key layout: version, salt, nonce, then ciphertext with tag.
const SEAL_VERSION: u8 = 1;
const SALT_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("the stored CA key is sealed; give the secret it was sealed with (--ca-key-secret)")]
    SecretMissing,
    #[error("the stored CA key cannot be unsealed with this --ca-key-secret (wrong secret, or damaged)")]
    Unseal,
    #[error("the stored CA is unusable: {0}")]
    Corrupt(String),
    #[error("the certificate signing request is not usable: {0}")]
    BadCsr(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the system random number generator failed")]
    Random,
    #[error("the server's TLS configuration is invalid: {0}")]
    Tls(String),
}

/// A CA as stored: the certificate, and the key in PKCS#8 DER, sealed or not.
#[derive(Debug, Clone)]
pub struct StoredCa {
    pub cert_pem: String,
    pub key: Vec<u8>,
    pub sealed: bool,
}

/// A certificate signed for an agent.
#[derive(Debug, Clone)]
pub struct Issued {
    pub pem: String,
    /// SHA-256 of the DER: how the stream recognises the certificate.
    pub fingerprint: [u8; 32],
    /// SHA-256 of its SubjectPublicKeyInfo: which key the agent holds.
    pub public_key_sha256: [u8; 32],
    pub not_after: chrono::DateTime<chrono::Utc>,
}

/// A certificate signing request whose signature verified: whoever sent it holds the key.
pub struct Csr {
    params: CertificateSigningRequestParams,
    key_sha256: [u8; 32],
}

impl Csr {
    pub fn parse(pem: &str) -> Result<Self, PkiError> {
        if pem.len() > MAX_CSR_BYTES {
            return Err(PkiError::BadCsr(format!("larger than {MAX_CSR_BYTES} bytes")));
        }
        // Parsing checks the request's signature against its key.
        let params = CertificateSigningRequestParams::from_pem(pem).map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let key_sha256 = Sha256::digest(params.public_key.subject_public_key_info()).into();
        Ok(Self { params, key_sha256 })
    }

    /// SHA-256 of the key's SubjectPublicKeyInfo.
    pub fn key_sha256(&self) -> [u8; 32] {
        self.key_sha256
    }
}

pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("pin", &self.pin()).finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA, and how to store it (sealed with `secret` when given).
    pub fn generate(secret: Option<&str>) -> Result<(Ca, StoredCa), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("teefleet fleet CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(serial()?);
        (params.not_before, params.not_after) = validity(CA_LIFETIME);
        let cert = params.self_signed(&key)?;
        let key_der = key.serialize_der();
        let stored = StoredCa {
            cert_pem: cert.pem(),
            key: match secret {
                Some(s) => seal(s, &key_der)?,
                None => key_der,
            },
            sealed: secret.is_some(),
        };
        let ca = Ca { cert_pem: cert.pem(), cert_der: cert.der().to_vec(), issuer: Issuer::new(params, key) };
        Ok((ca, stored))
    }

    /// The CA from its stored form.
    pub fn load(stored: &StoredCa, secret: Option<&str>) -> Result<Ca, PkiError> {
        let key_der = match (stored.sealed, secret) {
            (true, None) => return Err(PkiError::SecretMissing),
            (true, Some(s)) => unseal(s, &stored.key)?,
            (false, _) => stored.key.clone(),
        };
        let key = KeyPair::try_from(key_der.as_slice()).map_err(|e| PkiError::Corrupt(format!("CA key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(&stored.cert_pem, key)
            .map_err(|e| PkiError::Corrupt(format!("CA certificate: {e}")))?;
        let cert_der = pem_der(&stored.cert_pem).ok_or_else(|| PkiError::Corrupt("CA certificate PEM".into()))?;
        Ok(Ca { cert_pem: stored.cert_pem.clone(), cert_der, issuer })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// `sha256:HEX` of the CA certificate's DER: what `--ca-pin` takes.
    pub fn pin(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(&self.cert_der)))
    }

    /// A server certificate for `sans` (DNS names or IP addresses) with a fresh key, as
    /// (chain PEM, key PEM). The chain ends with the CA certificate so an agent that knows
    /// only the CA's pin can find the CA in the handshake.
    pub fn server_identity(&self, sans: &[String]) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans.to_vec())?;
        params.distinguished_name = name("teefleet controller");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(serial()?);
        (params.not_before, params.not_after) = validity(SERVER_LIFETIME);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((format!("{}{}", cert.pem(), self.cert_pem), key.serialize_pem()))
    }

    /// The server's TLS: a fresh certificate for `sans`, TLS 1.2 and 1.3 only (rustls has
    /// no older ones), HTTP/2 by ALPN, and client certificates of this CA checked when
    /// presented (enrollment and the admin API have none; the agent stream asks for one).
    pub fn server_tls(&self, sans: &[String]) -> Result<rustls::ServerConfig, PkiError> {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let tls = |e: &dyn std::fmt::Display| PkiError::Tls(e.to_string());
        let (chain, key) = self.server_identity(sans)?;
        let chain =
            CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| tls(&e))?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| tls(&e))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(|e| tls(&e))?)
            .map_err(|e| tls(&e))?;
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls(&e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(&e))?
            .with_client_cert_verifier(clients)
            .with_single_cert(chain, key)
            .map_err(|e| tls(&e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// Signs an agent's CSR for `host`, valid for `lifetime`. Only the CSR's public key is
    /// used (its signature proves the caller holds the private key); names, usages and
    /// lifetime are the controller's, so a caller cannot ask for more than a client
    /// certificate of its own host.
    pub fn sign_agent(&self, csr: &Csr, host: &HostId, lifetime: Duration) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(host.as_str());
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://teefleet/host/{host}").try_into().map_err(|e| PkiError::BadCsr(format!("{e}")))?,
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(serial()?);
        (params.not_before, params.not_after) = validity(lifetime);
        let not_after = chrono::DateTime::from_timestamp(params.not_after.unix_timestamp(), 0)
            .ok_or_else(|| PkiError::Corrupt("certificate expiry out of range".into()))?;
        let cert = params.signed_by(&csr.params.public_key, &self.issuer)?;
        Ok(Issued {
            pem: cert.pem(),
            fingerprint: fingerprint(cert.der()),
            public_key_sha256: csr.key_sha256,
            not_after,
        })
    }
}

/// SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "teefleet");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn validity(lifetime: Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (now - CLOCK_SKEW, now + lifetime)
}

fn serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| PkiError::Random)?;
    // Positive and without a leading zero byte, as RFC 5280 asks.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes()).ok().map(|c| c.to_vec())
}

fn seal_key(secret: &str, salt: &[u8]) -> aead::LessSafeKey {
    let mut key = [0u8; 32];
    let rounds = std::num::NonZeroU32::new(SEAL_ROUNDS).unwrap_or(std::num::NonZeroU32::MIN);
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, salt, secret.as_bytes(), &mut key);
    // 32 bytes is AES-256's key length, so this cannot fail.
    aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &key).unwrap_or_else(|_| unreachable!()))
}

fn seal(secret: &str, plain: &[u8]) -> Result<Vec<u8>, PkiError> {
    let rng = SystemRandom::new();
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; aead::NONCE_LEN];
    rng.fill(&mut salt).map_err(|_| PkiError::Random)?;
    rng.fill(&mut nonce).map_err(|_| PkiError::Random)?;
    let mut data = plain.to_vec();
    seal_key(secret, &salt)
        .seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from([SEAL_VERSION]), &mut data)
        .map_err(|_| PkiError::Random)?;
    let mut out = vec![SEAL_VERSION];
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&data);
    Ok(out)
}

fn unseal(secret: &str, sealed: &[u8]) -> Result<Vec<u8>, PkiError> {
    let [SEAL_VERSION, rest @ ..] = sealed else { return Err(PkiError::Unseal) };
    if rest.len() < SALT_LEN + aead::NONCE_LEN {
        return Err(PkiError::Unseal);
    }
    let (salt, rest) = rest.split_at(SALT_LEN);
    let (nonce, data) = rest.split_at(aead::NONCE_LEN);
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| PkiError::Unseal)?;
    let mut data = data.to_vec();
    let plain = seal_key(secret, salt)
        .open_in_place(nonce, aead::Aad::from([SEAL_VERSION]), &mut data)
        .map_err(|_| PkiError::Unseal)?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(host: &str) -> (KeyPair, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![format!("{host}.example")]).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.serialize_request(&key).expect("csr").pem().expect("pem");
        (key, pem)
    }

    #[test]
    fn sealed_ca_needs_its_secret() {
        let (ca, stored) = Ca::generate(Some("s3cret")).expect("generate");
        assert!(stored.sealed);
        assert!(matches!(Ca::load(&stored, None), Err(PkiError::SecretMissing)));
        assert!(matches!(Ca::load(&stored, Some("wrong")), Err(PkiError::Unseal)));
        let loaded = Ca::load(&stored, Some("s3cret")).expect("load");
        assert_eq!(loaded.pin(), ca.pin());
        let mut damaged = stored.clone();
        let last = damaged.key.len() - 1;
        damaged.key[last] ^= 1;
        assert!(matches!(Ca::load(&damaged, Some("s3cret")), Err(PkiError::Unseal)));
    }

    #[test]
    fn unsealed_ca_round_trips_and_pins_its_der() {
        let (ca, stored) = Ca::generate(None).expect("generate");
        assert!(!stored.sealed);
        let loaded = Ca::load(&stored, None).expect("load");
        assert_eq!(loaded.pin(), ca.pin());
        assert!(ca.pin().starts_with("sha256:") && ca.pin().len() == 7 + 64);
        let der = pem_der(ca.cert_pem()).expect("der");
        assert_eq!(ca.pin(), format!("sha256:{}", hex::encode(fingerprint(&der))));
    }

    #[test]
    fn agent_certificates_ignore_what_the_csr_asks_for() {
        let (ca, _) = Ca::generate(None).expect("generate");
        let host: HostId = "web-1".parse().expect("host");
        let (_, pem) = csr("evil");
        let csr = Csr::parse(&pem).expect("csr");
        let issued = ca.sign_agent(&csr, &host, Duration::from_secs(3600)).expect("sign");
        assert_eq!(issued.public_key_sha256, csr.key_sha256());
        let der = pem_der(&issued.pem).expect("der");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        assert_eq!(cert.subject().iter_common_name().next().and_then(|c| c.as_str().ok()), Some("web-1"));
        assert!(!cert.is_ca(), "a CSR asking for a CA must get a leaf");
        let sans = cert.subject_alternative_name().expect("ext").expect("sans").value.general_names.clone();
        assert_eq!(format!("{sans:?}"), r#"[URI("spiffe://teefleet/host/web-1")]"#);
        assert_eq!(issued.fingerprint, fingerprint(&der));
        let left = issued.not_after - chrono::Utc::now();
        assert!(left <= chrono::Duration::seconds(3600) && left > chrono::Duration::seconds(3500));
    }

    #[test]
    fn garbage_and_oversized_csrs_are_refused() {
        for bad in ["", "not pem", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"] {
            assert!(matches!(Csr::parse(bad), Err(PkiError::BadCsr(_))), "{bad}");
        }
        assert!(matches!(Csr::parse(&"A".repeat(MAX_CSR_BYTES + 1)), Err(PkiError::BadCsr(_))));
        // A request whose signature does not verify against its key proves nothing: the
        // same-key retry of an enrollment relies on this.
        let (_, good) = csr("web-1");
        let mut der = pem::parse(&good).expect("pem").into_contents();
        let last = der.len() - 1;
        der[last] ^= 1;
        let forged = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        assert!(Csr::parse(&good).is_ok());
        assert!(matches!(Csr::parse(&forged), Err(PkiError::BadCsr(_))));
    }

    #[test]
    fn server_chain_ends_with_the_ca() {
        let (ca, _) = Ca::generate(None).expect("generate");
        let (chain, key) = ca.server_identity(&["localhost".into(), "127.0.0.1".into()]).expect("identity");
        assert!(chain.ends_with(ca.cert_pem()));
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(key.contains("PRIVATE KEY"));
    }
}
