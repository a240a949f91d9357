//! A TCP proxy in front of Redis that can make Pub/Sub connections go silent: the
//! socket stays established, but nothing the server sends arrives any more — the failure
//! that health checks based on "is the socket open" miss.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy; dropping it stops accepting (open connections die with the test).
pub struct SilencingProxy {
    /// Address clients connect to.
    pub port: u16,
    /// Connections accepted before this generation are silenced once they subscribed.
    silence_before: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl SilencingProxy {
    /// Proxies `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> SilencingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silence_before = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let (silence, count) = (silence_before.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let generation = count.fetch_add(1, Ordering::SeqCst) + 1;
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                tokio::spawn(pump(client, server, generation, silence.clone()));
            }
        });
        SilencingProxy {
            port,
            silence_before,
            accepted,
            task,
        }
    }

    /// From now on, Pub/Sub connections opened so far receive nothing.
    pub fn silence_pubsub(&self) {
        let current = self.accepted.load(Ordering::SeqCst);
        self.silence_before.store(current + 1, Ordering::SeqCst);
    }
}

impl Drop for SilencingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    client: TcpStream,
    server: TcpStream,
    generation: u64,
    silence_before: Arc<AtomicU64>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let subscribed = Arc::new(AtomicBool::new(false));
    let seen = subscribed.clone();
    let upstream = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // The command itself (a RESP bulk string), not the word inside some value
            // (a membership record's "subscribers").
            if buf[..n]
                .windows(15)
                .any(|w| w.eq_ignore_ascii_case(b"$9\r\nSUBSCRIBE\r\n"))
            {
                seen.store(true, Ordering::SeqCst);
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let silenced =
            subscribed.load(Ordering::SeqCst) && generation < silence_before.load(Ordering::SeqCst);
        if !silenced && client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    upstream.abort();
}

/// A TCP proxy that answers every request carrying an `Upgrade` header with `403` and
/// closes (as some corporate proxies treat WebSocket), and passes everything else
/// through. Dropping it stops it; [`UpgradeBlockingProxy::cut`] drops every connection.
pub struct UpgradeBlockingProxy {
    /// Address clients connect to (`127.0.0.1:port`).
    pub addr: String,
    refused: Arc<AtomicU64>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl UpgradeBlockingProxy {
    /// Proxies `upstream` (`host:port`).
    pub async fn start(upstream: String) -> UpgradeBlockingProxy {
        Self::start_with(upstream, None).await
    }

    /// Proxies `upstream` (plain) behind TLS with `acceptor`'s certificate, as a
    /// terminating proxy or load balancer does.
    pub async fn start_tls(
        upstream: String,
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> UpgradeBlockingProxy {
        Self::start_with(upstream, Some(acceptor)).await
    }

    async fn start_with(
        upstream: String,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> UpgradeBlockingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let refused = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, tracked) = (refused.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, count, tls) = (upstream.clone(), count.clone(), tls.clone());
                let handle = tokio::spawn(async move {
                    match tls {
                        None => pass_or_refuse(client, upstream, count).await,
                        Some(tls) => {
                            if let Ok(client) = tls.accept(client).await {
                                pass_or_refuse(client, upstream, count).await;
                            }
                        }
                    }
                });
                tracked.lock().unwrap().push(handle);
            }
        });
        UpgradeBlockingProxy {
            addr,
            refused,
            connections,
            task,
        }
    }

    /// Requests with `Upgrade` refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Drops every open connection (as a network failure would).
    pub fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

impl Drop for UpgradeBlockingProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Reads the request head; refuses an upgrade, else pipes both ways.
async fn pass_or_refuse<C>(mut client: C, upstream: String, refused: Arc<AtomicU64>)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let upgrade = String::from_utf8_lossy(&head)
        .lines()
        .any(|line| line.to_ascii_lowercase().starts_with("upgrade:"));
    if upgrade {
        refused.fetch_add(1, Ordering::SeqCst);
        let _ = client
            .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    if server.write_all(&head).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}
