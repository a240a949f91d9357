//! A roomcast session over Server-Sent Events, for networks where WebSocket cannot
//! connect (a proxy that refuses `Upgrade`): server frames arrive as events of one
//! `GET /sse` response, client frames go up as `POST /sse/{session}` on a second,
//! kept-alive HTTP/1.1 connection (see `docs/protocol.md`, section 10). Frames are JSON.
//! The session opens without rooms: the [`super::Client`] subscribes (and resumes) with
//! posted `subscribe` frames, exactly as over WebSocket.
//!
//! A `ws://` URL falls back to `http://`, a `wss://` URL to `https://` at the same host
//! and port, trusting what the WebSocket would (the system's roots, or
//! [`super::ClientConfig::tls_ca_file`]).

use super::{ClientError, Received};
use crate::protocol::{ClientFrame, Encoded, Encoding, ServerFrame};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Longest a single event may grow while it is being read (a bound against a server
/// that never ends one).
const MAX_EVENT_BYTES: usize = 64 << 20;

/// An open event stream and the way to post to it.
pub struct EventConnection {
    /// Where the server is, and how to reach it.
    server: Server,
    /// `/sse` (or the path the WebSocket URL implies).
    path: String,
    headers: Vec<(String, String)>,
    body: Incoming,
    /// Bytes of events not yet complete.
    pending: Vec<u8>,
    /// The session id from `welcome` (where posts go).
    session: Option<String>,
    /// The connection posts go over, opened on first use and again after a failure.
    poster: Option<SendRequest<Full<Bytes>>>,
    close_code: Option<u16>,
}

impl EventConnection {
    /// Opens `GET /sse` at the server of the WebSocket URL `url` (`ws://host:port/ws`
    /// becomes `http://host:port/sse`, `wss://` becomes `https://`), with `headers`
    /// (e.g. authorization) on every request.
    pub async fn connect(
        url: &str,
        headers: &[(String, String)],
    ) -> Result<EventConnection, ClientError> {
        Self::connect_trusting(url, headers, None).await
    }

    /// Like [`EventConnection::connect`]; over `https://`, trusting the CA certificates
    /// of the PEM file `ca_file` instead of the system's roots.
    pub async fn connect_trusting(
        url: &str,
        headers: &[(String, String)],
        ca_file: Option<&Path>,
    ) -> Result<EventConnection, ClientError> {
        let (server, path) = event_stream_url(url, ca_file)?;
        let mut sender = server.open().await?;
        let request = request(&server.authority, headers, "GET", &path, Bytes::new())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        if !response.status().is_success() {
            return Err(ClientError::Connect(format!(
                "GET {path} answered {}",
                response.status()
            )));
        }
        Ok(EventConnection {
            server,
            path,
            headers: headers.to_vec(),
            body: response.into_body(),
            pending: Vec::new(),
            session: None,
            poster: None,
            close_code: None,
        })
    }

    /// Posts a frame to the session (after `welcome`).
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let Some(session) = &self.session else {
            return Err(ClientError::Protocol(
                "no session yet: wait for welcome".into(),
            ));
        };
        let path = format!("{}/{session}", self.path);
        let text = Encoding::Json.encode(frame);
        let body = Bytes::copy_from_slice(text.as_bytes());
        let request = request(&self.server.authority, &self.headers, "POST", &path, body)?;
        let mut sender = match self.poster.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self
                .server
                .open()
                .await
                .map_err(|e| ClientError::Io(e.to_string()))?,
        };
        sender
            .ready()
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let status = response.status();
        // Read the (empty) body so the connection can carry the next post.
        let _ = response.into_body().collect().await;
        if !status.is_success() {
            return Err(ClientError::Io(format!("POST {path} answered {status}")));
        }
        self.poster = Some(sender);
        Ok(())
    }

    /// Waits for the next frame or the end of the stream (a `close` event's code).
    pub async fn recv(&mut self) -> Result<Received, ClientError> {
        loop {
            if let Some(data) = self.next_event()? {
                if let Some(code) = close_code(&data) {
                    self.close_code = Some(code);
                    return Ok(Received::Closed(Some(code)));
                }
                let frame = Encoding::Json
                    .decode_server(&Encoded::text(data))
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                if let ServerFrame::Welcome { session, .. } = &frame {
                    self.session = Some(session.clone());
                }
                return Ok(Received::Frame(frame));
            }
            match self.body.frame().await {
                None => return Ok(Received::Closed(self.close_code)),
                Some(Err(err)) => return Err(ClientError::Io(err.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                    if self.pending.len() > MAX_EVENT_BYTES {
                        return Err(ClientError::Protocol("an event without end".into()));
                    }
                }
            }
        }
    }

    /// The data of the next complete event that has data (comments, `retry:` and `id:`
    /// are skipped: the client resumes with `since`, not with the event id).
    fn next_event(&mut self) -> Result<Option<String>, ClientError> {
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.pending.drain(..end + 2).collect();
            let block = std::str::from_utf8(&block)
                .map_err(|_| ClientError::Protocol("an event is not UTF-8".into()))?;
            let data: Vec<&str> = block
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|value| value.strip_prefix(' ').unwrap_or(value))
                .collect();
            if !data.is_empty() {
                return Ok(Some(data.join("\n")));
            }
        }
        Ok(None)
    }

    /// Waits up to `timeout` for the next frame; the end of the stream is an error here.
    pub async fn next_frame(&mut self, timeout: Duration) -> Result<ServerFrame, ClientError> {
        super::connection::frame_in_time(tokio::time::timeout(timeout, self.recv()).await)
    }
}

/// The `code` of a `close` event (`{"type":"close","code":…,"reason":…}`), which exists
/// only on this transport; `None` for every server frame.
fn close_code(data: &str) -> Option<u16> {
    if !data.starts_with(r#"{"type":"close""#) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    value["code"]
        .as_u64()
        .and_then(|code| u16::try_from(code).ok())
}

/// The server of an event stream.
struct Server {
    /// `host:port`.
    authority: String,
    /// The host name TLS checks the certificate against; with `tls` only.
    host: String,
    /// `https://`: the TLS settings.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Server {
    /// A new HTTP/1.1 connection to the server.
    async fn open(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return handshake(tcp).await;
        };
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| ClientError::Connect(format!("{}: {e}", self.host)))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Connect(format!("TLS: {e}")))?;
        handshake(stream).await
    }
}

/// HTTP/1.1 over `stream`, its connection driven by a task of its own.
async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A request to the server, with the connection's headers.
fn request(
    authority: &str,
    headers: &[(String, String)],
    method: &str,
    path: &str,
    body: Bytes,
) -> Result<hyper::Request<Full<Bytes>>, ClientError> {
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority);
    request = match method {
        "GET" => request.header("accept", "text/event-stream"),
        _ => request.header("content-type", "text/plain"),
    };
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    request
        .body(Full::new(body))
        .map_err(|e| ClientError::Connect(e.to_string()))
}

/// `host:port` and the event stream path of a WebSocket URL.
fn event_stream_url(url: &str, ca_file: Option<&Path>) -> Result<(Server, String), ClientError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| ClientError::Connect(e.to_string()))?;
    let secure = match uri.scheme_str() {
        Some("ws" | "http") => false,
        Some("wss" | "https") => true,
        other => {
            return Err(ClientError::Connect(format!(
                "Server-Sent Events need a ws://, wss://, http:// or https:// URL, not {other:?}"
            )));
        }
    };
    // The authority keeps an IPv6 literal's brackets (a Host header and a socket address
    // text need them); `host` is without them.
    let bracketed = uri
        .host()
        .ok_or_else(|| ClientError::Connect(format!("no host in {url}")))?;
    let (host, port) = super::connection::host_and_port(&uri);
    let authority = format!("{bracketed}:{port}");
    let path = uri.path().trim_end_matches('/');
    let path = path.strip_suffix("/ws").unwrap_or(path);
    let server = Server {
        authority,
        host,
        tls: secure
            .then(|| super::tls::client_config(ca_file))
            .transpose()?,
    };
    Ok((server, format!("{path}/sse")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_map_to_event_stream_urls() {
        let url = |u: &str| {
            event_stream_url(u, None)
                .map(|(server, path)| (server.authority, server.tls.is_some(), path))
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            url("ws://127.0.0.1:8080/ws"),
            Ok(("127.0.0.1:8080".into(), false, "/sse".into()))
        );
        assert_eq!(
            url("ws://h/a/ws/"),
            Ok(("h:80".into(), false, "/a/sse".into()))
        );
        assert_eq!(url("wss://h/ws"), Ok(("h:443".into(), true, "/sse".into())));
        assert_eq!(
            url("wss://h:8443/x/ws"),
            Ok(("h:8443".into(), true, "/x/sse".into()))
        );
        let (server, _) = event_stream_url("wss://[::1]:9/ws", None).unwrap();
        assert_eq!(server.host, "::1");
        assert!(url("ftp://h/ws").is_err());
        assert_eq!(
            close_code(r#"{"type":"close","code":1012,"reason":"service_restart"}"#),
            Some(1012)
        );
        assert_eq!(close_code(r#"{"type":"pong"}"#), None);
    }
}
