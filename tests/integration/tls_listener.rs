//! TLS on the listener (`[tls]`): HTTPS and WSS with the configured certificate, plain
//! HTTP refused on that port, the certificate replaced on SIGHUP (and kept when the new
//! files do not load), and a key that does not fit its certificate refused by the
//! configuration check, naming the key.

use crate::support::process::{RoomcastProcess, run_to_exit};
use crate::support::tls::TestCa;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

/// A TLS connection to `addr` that trusts only the CA in `ca_file`.
async fn connect(addr: &str, ca_file: &str) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// `GET path` over HTTPS; the status and body.
async fn https_get(addr: &str, ca_file: &str, path: &str) -> std::io::Result<(u16, String)> {
    let stream = connect(addr, ca_file).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", addr)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Copies the CA's server certificate and key to `dir` (cert.pem, key.pem), the files
/// the server is configured with.
fn install(ca: &TestCa, dir: &Path) {
    std::fs::copy(ca.server_cert(), dir.join("cert.pem")).unwrap();
    std::fs::copy(ca.server_key(), dir.join("key.pem")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_speaks_https_and_wss_and_reloads_its_certificate_on_sighup() {
    let first = TestCa::new("listener-first");
    let second = TestCa::new("listener-second");
    let dir = first.dir.join("served");
    std::fs::create_dir_all(&dir).unwrap();
    install(&first, &dir);
    let cert = dir.join("cert.pem").to_str().unwrap().to_owned();
    let key = dir.join("key.pem").to_str().unwrap().to_owned();
    let mut server = RoomcastProcess::start(&[
        ("ROOMCAST_TLS__CERT_FILE", &cert),
        ("ROOMCAST_TLS__KEY_FILE", &key),
    ])
    .await;
    let addr = server.addr.clone();

    let (status, body) = https_get(&addr, &first.ca_cert(), "/healthz")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        connect(&addr, &second.ca_cert()).await.is_err(),
        "a client that does not trust the certificate's CA is refused"
    );

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"));

    // WSS: subscribe and publish over the encrypted WebSocket.
    let stream = connect(&addr, &first.ca_cert()).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/ws", port(&addr)), stream)
            .await
            .expect("WebSocket upgrade over TLS");
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    let send = |frame: Value| Message::Text(frame.to_string().into());
    ws.send(send(json!({"type": "subscribe", "id": 1, "room": "tls:1"})))
        .await
        .unwrap();
    ws.send(send(
        json!({"type": "publish", "id": 2, "room": "tls:1", "data": {"n": 1}, "key": "tls-1"}),
    ))
    .await
    .unwrap();
    let mut seen: Vec<Value> = Vec::new();
    while !seen.iter().any(|f| f["type"] == "message") {
        seen.push(next_json(&mut ws).await);
    }
    let message = seen.iter().find(|f| f["type"] == "message").unwrap();
    assert_eq!(message["data"], json!({"n": 1}), "{seen:?}");

    // SIGHUP with new files: new connections get the new certificate; the open
    // WebSocket is not disturbed.
    install(&second, &dir);
    server.signal("HUP");
    server
        .wait_for_log("TLS certificate reloaded", Duration::from_secs(10))
        .await;
    let (status, _) = https_get(&addr, &second.ca_cert(), "/healthz")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(connect(&addr, &first.ca_cert()).await.is_err());
    ws.send(Message::Ping(Bytes::from_static(b"still here")))
        .await
        .unwrap();

    // A file that does not load keeps the certificate in use.
    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    server.signal("HUP");
    let line = server
        .wait_for_log("TLS certificate not reloaded", Duration::from_secs(10))
        .await;
    assert!(line.contains("tls.cert_file"), "{line}");
    let (status, _) = https_get(&addr, &second.ca_cert(), "/healthz")
        .await
        .unwrap();
    assert_eq!(status, 200);
}

/// The next text frame, as JSON.
async fn next_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("readable");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

fn port(addr: &str) -> &str {
    addr.rsplit_once(':').unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_fit_the_certificate_is_refused_naming_the_key() {
    let first = TestCa::new("listener-mismatch-a");
    let second = TestCa::new("listener-mismatch-b");
    let (code, stderr) = run_to_exit(
        &["--check-config"],
        &[
            ("ROOMCAST_TLS__CERT_FILE", &first.server_cert()),
            ("ROOMCAST_TLS__KEY_FILE", &second.server_key()),
        ],
    )
    .await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("tls.key_file") && stderr.contains("does not fit"),
        "{stderr}"
    );
    let (code, stderr) = run_to_exit(
        &["--check-config"],
        &[("ROOMCAST_TLS__CERT_FILE", &first.server_cert())],
    )
    .await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("tls.key_file"), "{stderr}");
}
