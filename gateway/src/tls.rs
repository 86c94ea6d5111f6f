//! TLS server configuration: the configured certificate, or a self-signed one generated
//! once into the data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::GatewayError;

fn tls_err(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Tls(e.to_string())
}

/// Where the certificate came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    Configured(PathBuf),
    SelfSignedExisting(PathBuf),
    SelfSignedGenerated(PathBuf),
}

/// Builds the rustls config. Without a configured pair, uses (or creates) a self-signed
/// certificate for `hostname` under `data_dir/tls`.
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    hostname: &str,
) -> Result<(Arc<ServerConfig>, CertSource), GatewayError> {
    let (cert_path, key_path, source) = match (cert, key) {
        (Some(c), Some(k)) => (
            c.to_path_buf(),
            k.to_path_buf(),
            CertSource::Configured(c.to_path_buf()),
        ),
        _ => {
            let dir = data_dir.join("tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if c.exists() && k.exists() {
                (c.clone(), k, CertSource::SelfSignedExisting(c))
            } else {
                generate_self_signed(&dir, hostname)?;
                (c.clone(), k, CertSource::SelfSignedGenerated(c))
            }
        }
    };
    let certs = load_certs(&cert_path)?;
    let key = load_key(&key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(tls_err)?;
    Ok((Arc::new(config), source))
}

fn generate_self_signed(dir: &Path, hostname: &str) -> Result<(), GatewayError> {
    std::fs::create_dir_all(dir)?;
    let names = vec![hostname.to_string(), "localhost".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).map_err(tls_err)?;
    write_private(
        &dir.join("key.pem"),
        certified.key_pair.serialize_pem().as_bytes(),
    )?;
    std::fs::write(dir.join("cert.pem"), certified.cert.pem())?;
    Ok(())
}

/// Writes a secret readable by the owner only.
fn write_private(path: &Path, data: &[u8]) -> Result<(), GatewayError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, GatewayError> {
    let in_file = |e: pem::Error| tls_err(format!("{}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(in_file)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(in_file)?;
    if certs.is_empty() {
        return Err(tls_err(format!("{}: no certificate found", path.display())));
    }
    Ok(certs)
}

/// The first private key in the file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, GatewayError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => tls_err(format!("{}: no private key found", path.display())),
        e => tls_err(format!("{}: {e}", path.display())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_pem_pair_loads_and_a_file_without_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        generate_self_signed(dir.path(), "relay.test").expect("generate");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let (_, source) =
            server_config(Some(&cert), Some(&key), dir.path(), "relay.test").expect("config");
        assert_eq!(source, CertSource::Configured(cert.clone()));
        // A chain: the same certificate twice, with text around it, as bundles often have.
        let pem = std::fs::read_to_string(&cert).expect("read");
        let chain = dir.path().join("chain.pem");
        std::fs::write(&chain, format!("leaf\n{pem}intermediate\n{pem}")).expect("write");
        assert_eq!(load_certs(&chain).expect("chain").len(), 2);
        let err = load_key(&cert).expect_err("no key in a certificate file");
        assert!(err.to_string().contains("no private key found"), "{err}");
        let err = load_certs(&key).expect_err("no certificate in a key file");
        assert!(err.to_string().contains("no certificate found"), "{err}");
        assert!(load_key(&dir.path().join("missing.pem")).is_err());
    }

    /// RUSTSEC-2025-0134: rustls-pemfile is unmaintained; PEM comes from rustls-pki-types.
    #[test]
    fn the_unmaintained_pem_crate_is_not_in_the_lockfile() {
        let lock = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock");
        let lock = std::fs::read_to_string(lock).expect("Cargo.lock");
        assert!(!lock.contains("name = \"rustls-pemfile\""));
    }
}
