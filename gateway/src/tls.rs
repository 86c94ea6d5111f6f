//! TLS server configuration: the configured certificate (files, or PEM in environment
//! variables), or a self-signed one generated once into the data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use baton_config::TlsPair;
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
    /// The variable that held the chain (the key's is beside it).
    Environment(String),
    SelfSignedExisting(PathBuf),
    SelfSignedGenerated(PathBuf),
}

/// Builds the rustls config from the configured pair. Without one, uses (or creates) a
/// self-signed certificate for `hostname` under `data_dir/tls`.
pub fn server_config(
    pair: TlsPair<'_>,
    data_dir: &Path,
    hostname: &str,
) -> Result<(Arc<ServerConfig>, CertSource), GatewayError> {
    let (certs, key, source) = match pair {
        TlsPair::Files { cert, key } => (
            load_certs(cert)?,
            load_key(key)?,
            CertSource::Configured(cert.to_path_buf()),
        ),
        TlsPair::Env { cert_var, key_var } => (
            certs_from_pem(&env_pem(cert_var)?, cert_var)?,
            key_from_pem(&env_pem(key_var)?, key_var)?,
            CertSource::Environment(cert_var.to_string()),
        ),
        TlsPair::SelfSigned => {
            let dir = data_dir.join("tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            let source = if c.exists() && k.exists() {
                CertSource::SelfSignedExisting(c.clone())
            } else {
                generate_self_signed(&dir, hostname)?;
                CertSource::SelfSignedGenerated(c.clone())
            };
            (load_certs(&c)?, load_key(&k)?, source)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(tls_err)?;
    Ok((Arc::new(config), source))
}

/// The PEM text an environment variable holds (errors name the variable, never the value).
fn env_pem(var: &str) -> Result<String, GatewayError> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| tls_err(format!("environment variable {var} is not set")))
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
    let pem = std::fs::read(path).map_err(|e| tls_err(format!("{}: {e}", path.display())))?;
    certs_from_pem(&pem, &path.display().to_string())
}

/// The first private key in the file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, GatewayError> {
    let pem = std::fs::read(path).map_err(|e| tls_err(format!("{}: {e}", path.display())))?;
    key_from_pem(&pem, &path.display().to_string())
}

/// Every certificate in `pem` (from `origin`, a file or a variable named in errors).
fn certs_from_pem(
    pem: impl AsRef<[u8]>,
    origin: &str,
) -> Result<Vec<CertificateDer<'static>>, GatewayError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_ref())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(format!("{origin}: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(format!("{origin}: no certificate found")));
    }
    Ok(certs)
}

fn key_from_pem(
    pem: impl AsRef<[u8]>,
    origin: &str,
) -> Result<PrivateKeyDer<'static>, GatewayError> {
    PrivateKeyDer::from_pem_slice(pem.as_ref()).map_err(|e| match e {
        pem::Error::NoItemsFound => tls_err(format!("{origin}: no private key found")),
        e => tls_err(format!("{origin}: {e}")),
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
        let pair = TlsPair::Files {
            cert: &cert,
            key: &key,
        };
        let (_, source) = server_config(pair, dir.path(), "relay.test").expect("config");
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
