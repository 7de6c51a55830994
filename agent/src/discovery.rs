//! Finding the controller's CA by its pin, the kubeadm discovery-hash pattern: open a TLS
//! handshake whose verifier trusts nothing and only records the chain the controller
//! presents (its certificate, then the CA's), and keep the certificate whose SHA-256 is
//! `--ca-pin`. The handshake is always aborted, so nothing is ever sent over it; from then
//! on the agent verifies the controller normally, with that CA as its only root.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::net::TcpStream;
use tokio_rustls::{
    TlsConnector,
    rustls::{
        self, ClientConfig, DigitallySignedStruct, SignatureScheme,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        crypto::{CryptoProvider, ring},
        pki_types::{CertificateDer, ServerName, UnixTime},
    },
};
use tracing::info;

use crate::{
    config::ControllerUrl,
    pki::{CaCert, CaPin, PinMismatch, PkiError, find_pinned},
};

/// Connecting and the handshake together.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot reach the controller at {authority} to find its CA")]
    Connect {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the controller at {authority} did not answer within {} s", TIMEOUT.as_secs())]
    Timeout { authority: String },
    #[error("{authority} presented no certificate: is it the controller's TLS port?")]
    NoChain {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host:?} is not a valid TLS server name")]
    ServerName { host: String },
    #[error("cannot set up TLS")]
    Tls(#[source] rustls::Error),
    #[error(transparent)]
    Pin(#[from] PinMismatch),
    #[error("the certificate with pin {pin} cannot be the CA")]
    NotCa {
        pin: CaPin,
        #[source]
        source: PkiError,
    },
}

impl DiscoveryError {
    /// Whether trying again later may succeed (the controller may be starting); a wrong
    /// pin or a bad name will not change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Timeout { .. } | Self::NoChain { .. })
    }
}

/// The CA certificate in the chain `url`'s controller presents whose SHA-256 is `pin`.
pub async fn discover_ca(url: &ControllerUrl, pin: &CaPin) -> Result<CaCert, DiscoveryError> {
    let authority = url.authority();
    let name = ServerName::try_from(url.server_name().to_owned())
        .map_err(|_| DiscoveryError::ServerName { host: url.server_name().to_owned() })?;
    let provider = Arc::new(ring::default_provider());
    let capture = Arc::new(Capture { chain: Mutex::default(), provider: provider.clone() });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(DiscoveryError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let handshake = async {
        let tcp = TcpStream::connect(&authority)
            .await
            .map_err(|source| DiscoveryError::Connect { authority: authority.clone(), source })?;
        // The verifier refuses every chain, so this never yields a usable connection.
        Ok::<_, DiscoveryError>(TlsConnector::from(Arc::new(config)).connect(name, tcp).await)
    };
    let outcome = tokio::time::timeout(TIMEOUT, handshake)
        .await
        .map_err(|_| DiscoveryError::Timeout { authority: authority.clone() })??;
    let chain = std::mem::take(&mut *capture.lock());
    if chain.is_empty() {
        let source = outcome.err().unwrap_or_else(|| std::io::Error::other("the handshake ended without a chain"));
        return Err(DiscoveryError::NoChain { authority, source });
    }
    let der = find_pinned(&chain, pin)?;
    let ca = CaCert::from_der(der).map_err(|source| DiscoveryError::NotCa { pin: *pin, source })?;
    info!(controller = %url, pin = %pin, "found the controller's CA by its pin");
    Ok(ca)
}

/// A verifier that records the presented chain and accepts nothing.
#[derive(Debug)]
struct Capture {
    chain: Mutex<Vec<CertificateDer<'static>>>,
    provider: Arc<CryptoProvider>,
}

impl Capture {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CertificateDer<'static>>> {
        // The critical sections only assign, so a panic cannot leave the chain torn.
        self.chain.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn refused() -> rustls::Error {
    rustls::Error::General("pin discovery trusts no certificate; the chain was recorded".to_owned())
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.lock() = std::iter::once(end_entity).chain(intermediates).map(|c| c.clone().into_owned()).collect();
        Err(refused())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(refused())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(refused())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
