//! The agent's TLS material in its state directory: `ca.pem` (the controller's CA, found
//! with `--ca-pin`), `agent.key` and `agent.crt` (its client key and certificate). All are
//! written atomically with mode 0600; the key never leaves the host.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use teefleet_model::HostId;

use crate::{
    pki::{CaCert, Credentials, PkiError},
    state::write_atomically,
};

pub const CA_FILE: &str = "ca.pem";
pub const KEY_FILE: &str = "agent.key";
pub const CERT_FILE: &str = "agent.crt";
/// Owner read and write only: the key is a secret, and nobody else needs the others.
const MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("could not read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is unusable; delete it so the agent finds the CA again with --ca-pin")]
    BadCa {
        path: PathBuf,
        #[source]
        source: PkiError,
    },
    #[error("the credential writer stopped unexpectedly")]
    Join(#[source] tokio::task::JoinError),
}

/// What the state directory holds for the client identity.
#[derive(Debug)]
pub enum Stored {
    /// A certificate and key for this host, not expired.
    Valid(Credentials),
    /// Nothing usable, and why (to tell the operator when no join token is given).
    Unusable(String),
}

#[derive(Debug, Clone)]
pub struct CredentialStore {
    dir: PathBuf,
}

impl CredentialStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The saved CA, or `None` before the first discovery.
    pub async fn load_ca(&self) -> Result<Option<CaCert>, CredentialError> {
        let path = self.path(CA_FILE);
        let Some(pem) = read(&path).await? else { return Ok(None) };
        CaCert::from_pem(&pem).map(Some).map_err(|source| CredentialError::BadCa { path, source })
    }

    pub async fn save_ca(&self, ca: &CaCert) -> Result<(), CredentialError> {
        self.write(vec![(CA_FILE, ca.pem().to_owned())]).await
    }

    /// The stored certificate and key if they belong together, to `host`, and have not
    /// expired at `now`.
    pub async fn load(&self, host: &HostId, now: SystemTime) -> Result<Stored, CredentialError> {
        let (cert_path, key_path) = (self.path(CERT_FILE), self.path(KEY_FILE));
        let (Some(cert), Some(key)) = (read(&cert_path).await?, read(&key_path).await?) else {
            return Ok(Stored::Unusable(format!(
                "there is no client certificate yet ({} and {})",
                cert_path.display(),
                key_path.display()
            )));
        };
        match Credentials::new(cert, key, host) {
            Ok(creds) if creds.validity().expired(now) => {
                Ok(Stored::Unusable(format!("the client certificate {} has expired", cert_path.display())))
            }
            Ok(creds) => Ok(Stored::Valid(creds)),
            Err(e) => Ok(Stored::Unusable(format!("{} is unusable: {e}", cert_path.display()))),
        }
    }

    /// Replaces the key and certificate together.
    pub async fn save(&self, creds: &Credentials) -> Result<(), CredentialError> {
        self.write(vec![(KEY_FILE, creds.key_pem().to_owned()), (CERT_FILE, creds.cert_pem().to_owned())]).await
    }

    async fn write(&self, files: Vec<(&'static str, String)>) -> Result<(), CredentialError> {
        let dir = self.dir.clone();
        let path = self.path(files.first().map_or(CA_FILE, |(name, _)| name));
        tokio::task::spawn_blocking(move || {
            let files: Vec<(&str, &[u8])> = files.iter().map(|(name, text)| (*name, text.as_bytes())).collect();
            write_atomically(&dir, &files, MODE)
        })
        .await
        .map_err(CredentialError::Join)?
        .map_err(|source| CredentialError::Write { path, source })
    }
}

async fn read(path: &Path) -> Result<Option<String>, CredentialError> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CredentialError::Read { path: path.to_owned(), source }),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        os::unix::fs::PermissionsExt as _,
        time::{Duration, UNIX_EPOCH},
    };

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    use super::*;
    use crate::pki::new_key_and_csr;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A CA and credentials for `h1` valid from 1 000 000 000 for 1 000 seconds.
    fn material() -> (CaCert, Credentials) {
        let ca_key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca_cert = params.self_signed(&ca_key).expect("ca");
        let issuer = Issuer::new(params, ca_key);
        let host: HostId = "h1".parse().expect("host");
        let (key_pem, _) = new_key_and_csr(&host).expect("key");
        let key = KeyPair::from_pem(&key_pem).expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "h1");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_000_000_000).expect("time");
        params.not_after = time::OffsetDateTime::from_unix_timestamp(1_000_001_000).expect("time");
        let cert = params.signed_by(&key, &issuer).expect("leaf");
        let creds = Credentials::new(cert.pem(), key_pem, &host).expect("creds");
        (CaCert::from_pem(&ca_cert.pem()).expect("ca"), creds)
    }

    #[tokio::test]
    async fn files_are_private_and_replaced_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CredentialStore::new(dir.path().join("state"));
        let (ca, creds) = material();
        let host: HostId = "h1".parse().expect("host");
        let during = UNIX_EPOCH + Duration::from_secs(1_000_000_500);

        assert_eq!(store.load_ca().await.expect("no file is fine"), None);
        assert!(
            matches!(store.load(&host, during).await.expect("none"), Stored::Unusable(why) if why.contains("no client certificate"))
        );
        store.save_ca(&ca).await.expect("save ca");
        // An existing world-readable key is replaced by a private one.
        std::fs::write(store.path(KEY_FILE), "old").expect("old key");
        std::fs::set_permissions(store.path(KEY_FILE), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        // So is a temp file a crash left behind.
        let stale = dir.path().join("state").join(format!(".{CERT_FILE}.a1b2c3"));
        std::fs::write(&stale, "stale").expect("stale temp");
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        store.save(&creds).await.expect("save");

        for file in [CA_FILE, KEY_FILE, CERT_FILE] {
            assert_eq!(mode(&store.path(file)), 0o600, "{file}");
        }
        assert_eq!(names(&dir.path().join("state")), [CERT_FILE, KEY_FILE, CA_FILE], "no temp files are left");
        assert_eq!(store.load_ca().await.expect("load"), Some(ca));
        let Stored::Valid(loaded) = store.load(&host, during).await.expect("load") else { panic!("valid") };
        assert_eq!(loaded, creds);
    }

    #[tokio::test]
    async fn expired_foreign_or_broken_files_are_unusable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CredentialStore::new(dir.path());
        let (_, creds) = material();
        store.save(&creds).await.expect("save");
        let host: HostId = "h1".parse().expect("host");
        let after = UNIX_EPOCH + Duration::from_secs(1_000_001_000);
        let Stored::Unusable(why) = store.load(&host, after).await.expect("load") else { panic!("expired") };
        assert!(why.contains("expired"), "{why}");
        let before = UNIX_EPOCH + Duration::from_secs(1_000_000_999);
        let other: HostId = "h2".parse().expect("host");
        let Stored::Unusable(why) = store.load(&other, before).await.expect("load") else { panic!("other host") };
        assert!(why.contains("not h2"), "{why}");
        std::fs::write(store.path(KEY_FILE), "garbage").expect("write");
        let Stored::Unusable(why) = store.load(&host, before).await.expect("load") else { panic!("broken key") };
        assert!(why.contains("private key"), "{why}");

        std::fs::write(store.path(CA_FILE), creds.cert_pem()).expect("a leaf is not a CA");
        let err = store.load_ca().await.expect_err("not a CA");
        assert!(crate::error_chain(&err).contains("not a CA certificate"), "{err}");
    }
}
