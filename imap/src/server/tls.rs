//! TLS for the master: loading the certificate and key, and generating a
//! self-signed pair for a first run.
//!
//! The master runs every handshake (rustls with the ring provider). After
//! login a TLS 1.3 session's state moves to the worker with the TCP socket
//! (see `tls_handover`); a TLS 1.2 session stays in the master, which passes
//! the worker one end of a UNIX socket pair carrying the decrypted IMAP
//! stream (see [`super::tls_proxy`]).

use std::fs;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Errors loading or creating TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate or key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no certificate found (expected PEM \"BEGIN CERTIFICATE\")")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    #[error("{0}: no private key found (expected PEM PKCS#8, PKCS#1 or SEC1 key)")]
    NoPrivateKey(PathBuf),
    /// rustls refused the certificate/key pair.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// rcgen could not generate a self-signed certificate.
    #[error("generating self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TlsSetupError + '_ {
    move |source| TlsSetupError::Io { path: path.to_path_buf(), source }
}

/// Builds a rustls server configuration (ring provider, TLS 1.2 and 1.3,
/// no client certificates) from PEM files.
///
/// # Errors
/// Unreadable files, missing PEM sections, or a key not matching the certificate.
pub fn load_server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let cert_file = fs::File::open(cert_path).map_err(io_err(cert_path))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut BufReader::new(cert_file))
        .collect::<Result<_, _>>()
        .map_err(io_err(cert_path))?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate(cert_path.to_path_buf()));
    }
    let key_file = fs::File::open(key_path).map_err(io_err(key_path))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut BufReader::new(key_file))
        .map_err(io_err(key_path))?
        .ok_or_else(|| TlsSetupError::NoPrivateKey(key_path.to_path_buf()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// Writes a new self-signed certificate for `names` (DNS names or IP
/// addresses) to `cert_path` and its key to `key_path` (mode 0600), creating
/// parent directories. Existing files are left alone and `false` is
/// returned; `true` means a new pair was written.
///
/// # Errors
/// Generation or file-system errors.
pub fn ensure_self_signed(cert_path: &Path, key_path: &Path, names: &[String]) -> Result<bool, TlsSetupError> {
    if cert_path.exists() && key_path.exists() {
        return Ok(false);
    }
    let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
    for path in [cert_path, key_path] {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
    }
    write_private(key_path, certified.key_pair.serialize_pem().as_bytes())?;
    fs::write(cert_path, certified.cert.pem()).map_err(io_err(cert_path))?;
    tracing::info!(cert = %cert_path.display(), key = %key_path.display(), ?names, "generated self-signed TLS certificate");
    Ok(true)
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsSetupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(contents).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_loads() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls/cert.pem");
        let key = dir.path().join("tls/key.pem");
        assert!(ensure_self_signed(&cert, &key, &["localhost".into(), "127.0.0.1".into()]).unwrap());
        let mode = fs::metadata(&key).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        load_server_config(&cert, &key).unwrap();
        // A second call keeps the existing pair.
        let before = fs::read(&cert).unwrap();
        assert!(!ensure_self_signed(&cert, &key, &["localhost".into()]).unwrap());
        assert_eq!(fs::read(&cert).unwrap(), before);
    }

    #[test]
    fn missing_and_garbage_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        assert!(matches!(load_server_config(&cert, &key), Err(TlsSetupError::Io { .. })));
        fs::write(&cert, "not a certificate").unwrap();
        fs::write(&key, "not a key").unwrap();
        assert!(matches!(load_server_config(&cert, &key), Err(TlsSetupError::NoCertificate(_))));
        let other = dir.path().join("other");
        ensure_self_signed(&other.join("c.pem"), &other.join("k.pem"), &["localhost".into()]).unwrap();
        fs::copy(other.join("c.pem"), &cert).unwrap();
        assert!(matches!(load_server_config(&cert, &key), Err(TlsSetupError::NoPrivateKey(_))));
    }
}
