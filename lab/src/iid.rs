//! Instance identity documents the lab signs as AWS does: a JSON document and an RSA-2048
//! PKCS#7 SignedData carrying it (SHA-256, signed attributes, no certificates, BER with
//! indefinite lengths), made by the `openssl` CLI with a key and self-signed certificate the
//! lab makes. The controller trusts that certificate through `--iid-certs`.

use std::path::{Path, PathBuf};

use crate::{LabError, cmd};

/// A key and certificate that sign identity documents.
#[derive(Debug, Clone)]
pub struct IidSigner {
    dir: PathBuf,
    key: PathBuf,
    cert: PathBuf,
}

impl IidSigner {
    /// A new RSA-2048 key and a self-signed certificate for it, as `NAME.key` and
    /// `NAME.pem` in `dir`.
    pub async fn create(dir: &Path, name: &str) -> Result<IidSigner, LabError> {
        let key = dir.join(format!("{name}.key"));
        let cert = dir.join(format!("{name}.pem"));
        let (key_arg, cert_arg) = (key.display().to_string(), cert.display().to_string());
        cmd::run_text(
            "openssl",
            [
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                &format!("/C=US/ST=Washington State/L=Seattle/O=teefleet lab {name}"),
                "-keyout",
                &key_arg,
                "-out",
                &cert_arg,
            ],
        )
        .await?;
        Ok(IidSigner { dir: dir.to_owned(), key, cert })
    }

    /// The certificate (PEM), for `fleet-controller --iid-certs`.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// The signature IMDS would serve for `document`: base64 in lines, without PEM armour.
    pub async fn sign(&self, document: &str) -> Result<String, LabError> {
        let input = tempfile::Builder::new()
            .prefix("iid-document-")
            .tempfile_in(&self.dir)
            .map_err(|e| LabError::io("writing an identity document", e))?;
        std::fs::write(input.path(), document).map_err(|e| LabError::io("writing an identity document", e))?;
        let (input_arg, key_arg, cert_arg) =
            (input.path().display().to_string(), self.key.display().to_string(), self.cert.display().to_string());
        let pem = cmd::run_text(
            "openssl",
            [
                "cms",
                "-sign",
                "-nodetach",
                "-binary",
                "-stream",
                "-nocerts",
                "-md",
                "sha256",
                "-outform",
                "PEM",
                "-signer",
                &cert_arg,
                "-inkey",
                &key_arg,
                "-in",
                &input_arg,
            ],
        )
        .await?;
        let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        if body.is_empty() {
            return Err(LabError::Invalid(format!("openssl cms printed no signature: {pem}")));
        }
        Ok(body.join("\n"))
    }
}

/// An identity document as IMDS serves it (AWS's field order and layout).
pub fn document(account: &str, instance_id: &str, region: &str, private_ip: &str, pending_time: &str) -> String {
    format!(
        "{{\n  \"accountId\" : \"{account}\",\n  \"architecture\" : \"x86_64\",\n  \"availabilityZone\" : \"{region}a\",\n  \
         \"billingProducts\" : null,\n  \"devpayProductCodes\" : null,\n  \"marketplaceProductCodes\" : null,\n  \
         \"imageId\" : \"ami-0123456789abcdef0\",\n  \"instanceId\" : \"{instance_id}\",\n  \"instanceType\" : \"t3.micro\",\n  \
         \"kernelId\" : null,\n  \"pendingTime\" : \"{pending_time}\",\n  \"privateIp\" : \"{private_ip}\",\n  \
         \"ramdiskId\" : null,\n  \"region\" : \"{region}\",\n  \"version\" : \"2017-09-30\"\n}}"
    )
}
