//! TLS for the client's `wss://` connections and for the `https://` event stream they
//! fall back to: the system's trusted roots, or instead the CA certificates of one PEM
//! file ([`super::ClientConfig::tls_ca_file`], e.g. a private CA in front of a test or
//! internal cluster).

use super::ClientError;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The TLS settings for connections that trust `ca_file`'s certificates, or the
/// system's roots without one (loaded once per process).
pub(super) fn client_config(
    ca_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    match ca_file {
        Some(path) => Ok(with_roots(roots_from(path)?)),
        None => {
            static SYSTEM: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
            Ok(SYSTEM.get_or_init(|| with_roots(system_roots())).clone())
        }
    }
}

fn with_roots(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    // The process's crypto provider (ring: the only one built in), as the server's
    // listener uses.
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// The certificates of a PEM file; an error names the file.
fn roots_from(path: &Path) -> Result<rustls::RootCertStore, ClientError> {
    let fail =
        |what: String| ClientError::Connect(format!("TLS CA file {}: {what}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))? {
        let cert = cert.map_err(|e| fail(e.to_string()))?;
        roots.add(cert).map_err(|e| fail(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fail("no certificate in it".into()));
    }
    Ok(roots)
}

/// The system's trusted roots (those that do not parse are skipped, as browsers do).
fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!(%error, "a system root certificate could not be loaded");
    }
    roots.add_parsable_certificates(found.certs);
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("roomcast-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = client_config(Some(&empty)).unwrap_err().to_string();
        assert!(
            error.contains("empty.pem") && error.contains("no certificate"),
            "{error}"
        );
        let missing = client_config(Some(&dir.join("missing.pem"))).unwrap_err();
        assert!(missing.to_string().contains("missing.pem"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
