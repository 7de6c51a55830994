//! The agent's side of the fleet PKI, without any I/O: the CA pin and the chain it is
//! looked for in, the controller's CA certificate, a fresh key with its signing request,
//! and the client certificate with its key and lifetime.

use std::{
    fmt,
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData as _};
use sha2::{Digest as _, Sha256};
use teefleet_model::HostId;
use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject as _};
use x509_parser::certificate::X509Certificate;

const PIN_PREFIX: &str = "sha256:";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{what}: no PEM certificate")]
    NoCertificate { what: &'static str },
    #[error("{what}: not a valid X.509 certificate: {reason}")]
    Certificate { what: &'static str, reason: String },
    #[error("{what}: not a CA certificate")]
    NotCa { what: &'static str },
    #[error("the private key is not a valid PEM key")]
    Key(#[source] rcgen::Error),
    #[error("cannot make a key or signing request")]
    Generate(#[source] rcgen::Error),
    #[error("the client certificate is not for this agent's key")]
    KeyMismatch,
    #[error("the client certificate was issued to host {issued_to:?}, not {host}")]
    OtherHost { issued_to: String, host: HostId },
    #[error("the client certificate names no host ({issued_to:?})")]
    NoHost { issued_to: String },
}

/// `--ca-pin`: the SHA-256 of the CA certificate's DER, as `fleet-controller ca pin` prints it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaPin([u8; 32]);

impl CaPin {
    /// The pin of a certificate.
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    pub fn matches(&self, der: &[u8]) -> bool {
        Self::of(der) == *self
    }
}

impl FromStr for CaPin {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected sha256: and 64 hex digits, as `fleet-controller ca pin` prints, not {s:?}");
        let hex_digits = s.trim().strip_prefix(PIN_PREFIX).ok_or_else(bad)?;
        let mut pin = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut pin).map_err(|_| bad())?;
        Ok(Self(pin))
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PIN_PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The pinned certificate is not in what the controller presented.
#[derive(Debug, thiserror::Error)]
#[error(
    "the controller presented no certificate with --ca-pin {expected}; it presented {}. \
     Check the pin against `fleet-controller ca pin`, and that nothing intercepts the connection",
    list(seen)
)]
pub struct PinMismatch {
    pub expected: CaPin,
    pub seen: Vec<CaPin>,
}

fn list(pins: &[CaPin]) -> String {
    if pins.is_empty() {
        return "no certificate".to_owned();
    }
    pins.iter().map(CaPin::to_string).collect::<Vec<_>>().join(", ")
}

/// The certificate of `chain` (leaf first, as in a handshake) whose SHA-256 is `pin`.
pub fn find_pinned<'a>(chain: &'a [CertificateDer<'a>], pin: &CaPin) -> Result<&'a CertificateDer<'a>, PinMismatch> {
    chain
        .iter()
        .find(|der| pin.matches(der))
        .ok_or_else(|| PinMismatch { expected: *pin, seen: chain.iter().map(|der| CaPin::of(der)).collect() })
}

/// The controller's CA certificate: the agent's only trust root once it is known.
#[derive(Clone, PartialEq, Eq)]
pub struct CaCert {
    pem: String,
    pin: CaPin,
}

impl CaCert {
    /// The first certificate of `pem`, which must be a CA.
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        let der = first_der(pem, "the CA certificate")?;
        Self::from_der(&der)
    }

    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let what = "the CA certificate";
        if !parse(der, what)?.is_ca() {
            return Err(PkiError::NotCa { what });
        }
        Ok(Self { pem: to_pem(der), pin: CaPin::of(der) })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn pin(&self) -> CaPin {
        self.pin
    }
}

impl fmt::Debug for CaCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaCert").field("pin", &self.pin).finish_non_exhaustive()
    }
}

/// When a certificate may be used, by its own notBefore and notAfter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    pub fn lifetime(&self) -> Duration {
        self.not_after.duration_since(self.not_before).unwrap_or_default()
    }

    /// Two thirds into the lifetime, which leaves a third of it to retry a failed renewal.
    pub fn renew_at(&self) -> SystemTime {
        self.not_before + self.lifetime() * 2 / 3
    }

    /// How long from `now` until [`Self::renew_at`]; zero when that is past.
    pub fn until_renewal(&self, now: SystemTime) -> Duration {
        self.renew_at().duration_since(now).unwrap_or_default()
    }

    pub fn expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

/// The agent's client certificate and private key, known to belong together and to the
/// host. `Debug` does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    cert_pem: String,
    key_pem: String,
    validity: Validity,
    fingerprint: CaPin,
}

impl Credentials {
    /// Checks that the first certificate of `cert_pem` is for `key_pem`'s key and was
    /// issued to `host` (its common name, as the controller signs it).
    pub fn new(cert_pem: String, key_pem: String, host: &HostId) -> Result<Self, PkiError> {
        let what = "the client certificate";
        let der = first_der(&cert_pem, what)?;
        let cert = parse(&der, what)?;
        let key = KeyPair::from_pem(&key_pem).map_err(PkiError::Key)?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::KeyMismatch);
        }
        let issued_to = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or_default();
        if issued_to != host.as_str() {
            return Err(PkiError::OtherHost { issued_to: issued_to.to_owned(), host: host.clone() });
        }
        let time = |t: &x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
        };
        let validity =
            Validity { not_before: time(&cert.validity().not_before), not_after: time(&cert.validity().not_after) };
        Ok(Self { cert_pem, key_pem, validity, fingerprint: CaPin::of(&der) })
    }

    /// The host the first certificate of `cert_pem` was issued to (its common name).
    pub fn issued_to(cert_pem: &str) -> Result<HostId, PkiError> {
        let what = "the client certificate";
        let der = first_der(cert_pem, what)?;
        let cert = parse(&der, what)?;
        let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or_default();
        cn.parse().map_err(|_| PkiError::NoHost { issued_to: cn.to_owned() })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn validity(&self) -> Validity {
        self.validity
    }

    /// The SHA-256 of the certificate's DER, as the controller records it.
    pub fn fingerprint(&self) -> CaPin {
        self.fingerprint
    }

    /// What the TLS client presents.
    pub fn identity(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("fingerprint", &self.fingerprint)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

/// A fresh ECDSA P-256 key (PEM) and a signing request for it. The controller reads only
/// the key from the request, so its subject is just informative.
pub fn new_key_and_csr(host: &HostId) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(PkiError::Generate)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, host.as_str());
    params.distinguished_name = name;
    let csr = params.serialize_request(&key).and_then(|csr| csr.pem()).map_err(PkiError::Generate)?;
    Ok((key.serialize_pem(), csr))
}

fn first_der(pem: &str, what: &'static str) -> Result<Vec<u8>, PkiError> {
    match CertificateDer::pem_slice_iter(pem.as_bytes()).next() {
        Some(Ok(der)) => Ok(der.to_vec()),
        Some(Err(e)) => Err(PkiError::Certificate { what, reason: e.to_string() }),
        None => Err(PkiError::NoCertificate { what }),
    }
}

fn parse<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>, PkiError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(PkiError::Certificate { what, reason: "trailing bytes".to_owned() }),
        Err(e) => Err(PkiError::Certificate { what, reason: e.to_string() }),
    }
}

fn to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der))
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, IsCa, Issuer};

    use super::*;

    fn ca() -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let cert = params.self_signed(&key).expect("ca");
        (cert, Issuer::new(params, key))
    }

    /// A leaf for `key` named `cn`, valid from `from` for `secs` seconds (Unix time).
    fn leaf(issuer: &Issuer<'_, KeyPair>, key: &KeyPair, cn: &str, from: i64, secs: i64) -> rcgen::Certificate {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.not_before = time::OffsetDateTime::from_unix_timestamp(from).expect("time");
        params.not_after = time::OffsetDateTime::from_unix_timestamp(from + secs).expect("time");
        params.signed_by(key, issuer).expect("leaf")
    }

    #[test]
    fn pins_parse_and_print() {
        let hex_digits = "ab".repeat(32);
        let pin: CaPin = format!("sha256:{hex_digits}").parse().expect("pin");
        assert_eq!(pin.to_string(), format!("sha256:{hex_digits}"));
        let upper: CaPin = format!(" sha256:{} ", hex_digits.to_uppercase()).parse().expect("any case");
        assert_eq!(upper, pin);
        for bad in [
            hex_digits.clone(),
            format!("sha1:{hex_digits}"),
            format!("SHA256:{hex_digits}"),
            format!("sha256:{}", &hex_digits[1..]),
            format!("sha256:{hex_digits}00"),
            format!("sha256:{}zz", &hex_digits[2..]),
            "sha256:".to_owned(),
            String::new(),
        ] {
            let err = bad.parse::<CaPin>().expect_err(&bad);
            assert!(err.contains("sha256:") && err.contains("fleet-controller ca pin"), "{err}");
        }
    }

    #[test]
    fn the_pinned_certificate_is_found_in_the_chain() {
        let (ca_cert, issuer) = ca();
        let key = KeyPair::generate().expect("key");
        let server = leaf(&issuer, &key, "controller", 1_700_000_000, 3600);
        let chain = [server.der().clone(), ca_cert.der().clone()];
        let pin = CaPin::of(ca_cert.der());
        assert_eq!(find_pinned(&chain, &pin).expect("found"), ca_cert.der());

        let wrong: CaPin = format!("sha256:{}", "00".repeat(32)).parse().expect("pin");
        let err = find_pinned(&chain, &wrong).expect_err("not there");
        assert_eq!(err.seen, [CaPin::of(server.der()), pin]);
        let text = err.to_string();
        assert!(text.contains(&wrong.to_string()) && text.contains(&pin.to_string()), "{text}");
        let empty = find_pinned(&[], &wrong).expect_err("nothing presented").to_string();
        assert!(empty.contains("presented no certificate"), "{empty}");
    }

    #[test]
    fn a_ca_certificate_must_be_a_ca() {
        let (ca_cert, issuer) = ca();
        let ca = CaCert::from_pem(&ca_cert.pem()).expect("ca");
        assert_eq!(ca.pin(), CaPin::of(ca_cert.der()));
        assert_eq!(CaCert::from_pem(ca.pem()).expect("round trip"), ca);
        let key = KeyPair::generate().expect("key");
        let leaf = leaf(&issuer, &key, "h1", 1_700_000_000, 60);
        assert!(matches!(CaCert::from_der(leaf.der()), Err(PkiError::NotCa { .. })));
        assert!(matches!(CaCert::from_pem("nothing"), Err(PkiError::NoCertificate { .. })));
        assert!(matches!(CaCert::from_der(b"\x30\x03\x02\x01\x01"), Err(PkiError::Certificate { .. })));
    }

    #[test]
    fn credentials_belong_to_their_key_and_host() {
        let (_, issuer) = ca();
        let host: HostId = "h1".parse().expect("host");
        let (key_pem, csr) = new_key_and_csr(&host).expect("csr");
        assert!(csr.contains("BEGIN CERTIFICATE REQUEST"), "{csr}");
        let key = KeyPair::from_pem(&key_pem).expect("key");
        let cert = leaf(&issuer, &key, "h1", 1_700_000_000, 3000);
        let creds = Credentials::new(cert.pem(), key_pem.clone(), &host).expect("valid");
        assert_eq!(creds.fingerprint(), CaPin::of(cert.der()));
        assert_eq!(creds.validity().lifetime(), Duration::from_secs(3000));
        assert!(!format!("{creds:?}").contains("PRIVATE"), "Debug hides the key");

        let other_key = KeyPair::generate().expect("key");
        let foreign = leaf(&issuer, &other_key, "h1", 1_700_000_000, 3000);
        assert!(matches!(Credentials::new(foreign.pem(), key_pem.clone(), &host), Err(PkiError::KeyMismatch)));
        let other_host = leaf(&issuer, &key, "h2", 1_700_000_000, 3000);
        let err = Credentials::new(other_host.pem(), key_pem.clone(), &host).expect_err("other host");
        assert!(err.to_string().contains("\"h2\", not h1"), "{err}");
        assert!(matches!(Credentials::new(cert.pem(), "junk".into(), &host), Err(PkiError::Key(_))));
    }

    #[test]
    fn renewal_is_at_two_thirds_of_the_lifetime() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        let v = Validity { not_before: at(1000), not_after: at(4000) };
        assert_eq!(v.lifetime(), Duration::from_secs(3000));
        assert_eq!(v.renew_at(), at(3000));
        assert_eq!(v.until_renewal(at(1000)), Duration::from_secs(2000));
        assert_eq!(v.until_renewal(at(2999)), Duration::from_secs(1));
        assert_eq!(v.until_renewal(at(3500)), Duration::ZERO, "overdue means now");
        assert!(!v.expired(at(3999)) && v.expired(at(4000)) && v.expired(at(5000)));
        // A 24 h certificate backdated by 5 minutes, as the controller signs them.
        let day = Validity { not_before: at(100_000 - 300), not_after: at(100_000 + 86_400) };
        assert_eq!(day.renew_at(), at(100_000 - 300 + (86_400 + 300) * 2 / 3));
        // Nonsense (notAfter before notBefore) counts as expired, never as valid.
        let backwards = Validity { not_before: at(5000), not_after: at(4000) };
        assert_eq!(backwards.lifetime(), Duration::ZERO);
        assert!(backwards.expired(at(4500)));
    }
}
