//! `[tls]`: TLS on the listener, for deployments without a proxy that terminates it.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use std::sync::Arc;

/// `[tls]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first); empty: plain HTTP and WebSocket.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key_file: String,
}

/// Why the certificate or key could not be loaded, with the key that names the file.
#[derive(Debug)]
pub struct TlsError {
    /// `tls.cert_file` or `tls.key_file`.
    pub key: &'static str,
    /// What is wrong, naming the file.
    pub message: String,
}

impl TlsConfig {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty() || !self.key_file.is_empty()
    }

    /// Reads and checks the certificate chain and key (the key must match the leaf).
    /// Called at configuration check, at start and on every reload.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let fail = |key, message: String| TlsError { key, message };
        if self.cert_file.is_empty() || self.key_file.is_empty() {
            let missing = if self.cert_file.is_empty() {
                "tls.cert_file"
            } else {
                "tls.key_file"
            };
            return Err(fail(
                missing,
                "must be set: TLS needs both tls.cert_file and tls.key_file".into(),
            ));
        }
        let chain = CertificateDer::pem_file_iter(&self.cert_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                fail(
                    "tls.cert_file",
                    format!("cannot read {}: {e}", self.cert_file),
                )
            })?;
        if chain.is_empty() {
            return Err(fail(
                "tls.cert_file",
                format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    self.cert_file
                ),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key_file).map_err(|e| {
            fail(
                "tls.key_file",
                format!("cannot read a PEM private key from {}: {e}", self.key_file),
            )
        })?;
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
            fail(
                "tls.key_file",
                format!("{} is not a usable private key: {e}", self.key_file),
            )
        })?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified.keys_match().map_err(|e| {
            fail(
                "tls.key_file",
                format!(
                    "{} does not fit the certificate of {}: {e}",
                    self.key_file, self.cert_file
                ),
            )
        })?;
        Ok(Arc::new(certified))
    }
}
