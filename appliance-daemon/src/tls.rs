//! TLS for the API on the LAN: the operator's certificate, or one the daemon makes on first
//! start (self-signed, kept in `DATA_DIR/tls/`), served with rustls. Its SHA-256
//! fingerprint is printed next to the pairing code so a client (the desktop app) can pin
//! it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// A loaded certificate and the server configuration built on it.
#[derive(Debug)]
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    /// `AB:CD:...`, SHA-256 of the certificate (as `openssl x509 -fingerprint -sha256`).
    pub fingerprint: String,
    pub cert_path: PathBuf,
    /// Made by the daemon (not the operator's).
    pub self_signed: bool,
}

/// The certificate's fingerprint as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The fingerprint of the first certificate in a PEM file.
pub fn fingerprint_of_file(path: &Path) -> Result<String> {
    let first = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .next()
        .with_context(|| format!("{} holds no certificate", path.display()))?
        .with_context(|| format!("{} holds a broken certificate", path.display()))?;
    Ok(fingerprint(&first))
}

/// Loads the operator's certificate and key, or the daemon's own (made on first start for
/// `names`: host names and IP addresses it answers on).
pub fn load_or_make(
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
    names: &[String],
) -> Result<Tls> {
    let (cert_path, key_path, self_signed) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf(), false),
        (None, None) => {
            let dir = data_dir.join("tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !(c.is_file() && k.is_file()) {
                make_self_signed(&dir, &c, &k, names)?;
            }
            (c, k, true)
        }
        _ => bail!("`tls_cert` and `tls_key` go together: give both or neither"),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("cannot read the certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("{}: not a PEM certificate: {e}", cert_path.display()))?;
    let Some(first) = certs.first() else {
        bail!("{} holds no certificate", cert_path.display());
    };
    let fingerprint = fingerprint(first.as_ref());
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| anyhow!("{}: not a PEM private key: {e}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "the key {} does not fit the certificate {}",
                key_path.display(),
                cert_path.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        fingerprint,
        cert_path,
        self_signed,
    })
}

fn make_self_signed(dir: &Path, cert: &Path, key: &Path, names: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let made = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| anyhow!("cannot make a certificate: {e}"))?;
    crate::auth::write_secret(key, made.signing_key.serialize_pem().trim_end())?;
    std::fs::write(cert, made.cert.pem())
        .with_context(|| format!("cannot write {}", cert.display()))?;
    tracing::info!(cert = %cert.display(), names = ?names, "made a self-signed TLS certificate");
    Ok(())
}

/// The peer's address (what the auth middleware reads), put in each request's extensions
/// by `server::http`.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let a = load_or_make(dir.path(), None, None, &names).unwrap_or_else(|e| panic!("{e:#}"));
        let b = load_or_make(dir.path(), None, None, &names).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        assert!(a.self_signed);
        let e = load_or_make(dir.path(), Some(&a.cert_path), None, &names)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("go together"), "{e}");
    }
}
