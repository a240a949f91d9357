//! TLS on the listener (`[tls]`), for deployments without a proxy that terminates it.
//! HTTP/1.1 only (ALPN `http/1.1`), so WebSocket upgrades work as on plain TCP. The
//! certificate is re-read on SIGHUP (a renewed certificate is used by new connections;
//! open ones keep theirs); a reload that fails keeps the certificate in use and says why.

use crate::config::{TlsConfig, TlsError};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// The listener's TLS: an acceptor whose certificate can be replaced while it runs.
pub struct ListenerTls {
    acceptor: TlsAcceptor,
    certificate: Arc<Reloadable>,
}

#[derive(Debug)]
struct Reloadable {
    config: TlsConfig,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("not poisoned").clone())
    }
}

impl ListenerTls {
    /// The listener's TLS when `[tls]` is configured.
    pub fn from_config(config: &TlsConfig) -> Result<Option<ListenerTls>, TlsError> {
        if !config.enabled() {
            return Ok(None);
        }
        let certificate = Arc::new(Reloadable {
            config: config.clone(),
            current: RwLock::new(config.load()?),
        });
        let mut server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(ListenerTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            certificate,
        }))
    }

    /// The acceptor for new connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Re-reads the certificate and key; on failure the current ones stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = self.certificate.config.load()?;
        *self.certificate.current.write().expect("not poisoned") = loaded;
        Ok(())
    }

    /// Reloads on every SIGHUP, for as long as the process runs.
    pub fn reload_on_hangup(self: &Arc<Self>) {
        #[cfg(unix)]
        {
            let tls = self.clone();
            let Ok(mut hangup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    match tls.reload() {
                        Ok(()) => {
                            metrics::counter!("roomcast_tls_reloads_total", "result" => "ok")
                                .increment(1);
                            tracing::info!(cert = %tls.certificate.config.cert_file, "TLS certificate reloaded");
                        }
                        Err(err) => {
                            metrics::counter!("roomcast_tls_reloads_total", "result" => "failed")
                                .increment(1);
                            tracing::error!(key = err.key, error = %err.message, "TLS certificate not reloaded: the previous one stays in use");
                        }
                    }
                }
            });
        }
    }
}
