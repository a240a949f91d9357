//! A plain roomcast connection: one WebSocket, typed frames in and out, no reconnect.
//! The building block of [`super::Client`], and what tests use to look at exact frames.

use super::ClientError;
use crate::protocol::{ClientFrame, CloseCode, Encoded, Encoding, ServerFrame};
use crate::transport::websocket;
use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An open connection.
pub struct Connection {
    socket: Socket,
    encoding: Encoding,
    close_code: Option<u16>,
}

/// What arrived from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A decoded frame.
    Frame(ServerFrame),
    /// The server closed the connection with this code (`None`: no close frame).
    Closed(Option<u16>),
}

impl Connection {
    /// Connects to `url` (e.g. `ws://127.0.0.1:8080/ws`) asking for `encoding` through
    /// its subprotocol; `None` offers no subprotocol (the server then speaks JSON).
    pub async fn connect(url: &str, encoding: Option<Encoding>) -> Result<Connection, ClientError> {
        Self::connect_with(url, encoding, &[]).await
    }

    /// Like [`Connection::connect`], with extra request headers (e.g. authorization).
    pub async fn connect_with(
        url: &str,
        encoding: Option<Encoding>,
        headers: &[(&str, &str)],
    ) -> Result<Connection, ClientError> {
        Self::connect_from(url, encoding, headers, None).await
    }

    /// Like [`Connection::connect_with`], from a chosen local address (load tests spread
    /// many sockets over several loopback addresses, past the ~28K ports of one).
    pub async fn connect_from(
        url: &str,
        encoding: Option<Encoding>,
        headers: &[(&str, &str)],
        local: Option<IpAddr>,
    ) -> Result<Connection, ClientError> {
        Self::connect_trusting(url, encoding, headers, local, None).await
    }

    /// Like [`Connection::connect_from`]; a `wss://` URL trusts the CA certificates of
    /// the PEM file `ca_file` instead of the system's roots.
    pub async fn connect_trusting(
        url: &str,
        encoding: Option<Encoding>,
        headers: &[(&str, &str)],
        local: Option<IpAddr>,
        ca_file: Option<&Path>,
    ) -> Result<Connection, ClientError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        if let Some(encoding) = encoding {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(encoding.subprotocol()),
            );
        }
        for (name, value) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName = name
                .parse()
                .map_err(|_| ClientError::Connect(format!("bad header {name}")))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| ClientError::Connect(e.to_string()))?;
            request.headers_mut().insert(name, value);
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let connect_error = |e: &dyn std::fmt::Display| ClientError::Connect(e.to_string());
        // Only a wss:// URL needs (and loads) TLS settings; tungstenite uses them then.
        let tls = match request.uri().scheme_str() {
            Some("wss") => Some(Connector::Rustls(super::tls::client_config(ca_file)?)),
            _ => None,
        };
        let (socket, response) = match local {
            None => {
                tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, tls)
                    .await
                    .map_err(|e| connect_error(&e))?
            }
            Some(local) => {
                let stream = tcp_from(request.uri(), local).await?;
                tokio_tungstenite::client_async_tls_with_config(request, stream, Some(config), tls)
                    .await
                    .map_err(|e| connect_error(&e))?
            }
        };
        let negotiated = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok());
        let (encoding, _) = Encoding::negotiate(negotiated);
        Ok(Connection {
            socket,
            encoding,
            close_code: None,
        })
    }

    /// The encoding the server agreed to.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Sends a frame.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let message = websocket::message(self.encoding.encode(frame));
        self.send_raw(message).await
    }

    /// Sends an arbitrary WebSocket message (tests use it for malformed input).
    pub async fn send_raw(&mut self, message: Message) -> Result<(), ClientError> {
        self.socket
            .send(message)
            .await
            .map_err(|e| ClientError::Io(e.to_string()))
    }

    /// Waits for the next frame or the close.
    pub async fn recv(&mut self) -> Result<Received, ClientError> {
        loop {
            let Some(message) = self.socket.next().await else {
                return Ok(Received::Closed(self.close_code));
            };
            match message {
                Ok(Message::Close(frame)) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    return Ok(Received::Closed(self.close_code));
                }
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                    let encoded = websocket::encoded(message).ok_or_else(|| {
                        ClientError::Protocol("invalid UTF-8 in a text frame".into())
                    })?;
                    let frame = self
                        .encoding
                        .decode_server(&encoded)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    return Ok(Received::Frame(frame));
                }
                Ok(_) => continue,
                Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => {
                    return Ok(Received::Closed(self.close_code));
                }
                Err(e) => return Err(ClientError::Io(e.to_string())),
            }
        }
    }

    /// Waits up to `timeout` for the next frame; closes are errors here.
    pub async fn next_frame(&mut self, timeout: Duration) -> Result<ServerFrame, ClientError> {
        frame_in_time(tokio::time::timeout(timeout, self.recv()).await)
    }

    /// Waits up to `timeout` for the next data frame, undecoded (benchmarks decode later
    /// to keep the measurement light).
    pub async fn next_raw(&mut self, timeout: Duration) -> Result<Encoded, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return Err(ClientError::Timeout),
                Ok(None) => return Err(ClientError::Closed(self.close_code)),
                Ok(Some(Ok(message @ (Message::Text(_) | Message::Binary(_))))) => {
                    return websocket::encoded(message).ok_or_else(|| {
                        ClientError::Protocol("invalid UTF-8 in a text frame".into())
                    });
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    return Err(ClientError::Closed(self.close_code));
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => return Err(ClientError::Io(e.to_string())),
            }
        }
    }

    /// Waits up to `timeout` for the server to close, skipping frames; returns the code.
    pub async fn closed(&mut self, timeout: Duration) -> Result<Option<u16>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Err(_) => return Err(ClientError::Timeout),
                Ok(Ok(Received::Closed(code))) => return Ok(code),
                Ok(Ok(Received::Frame(_))) => continue,
                Ok(Err(ClientError::Io(_))) => return Ok(self.close_code),
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// Closes the connection normally.
    pub async fn close(mut self) {
        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal.number().into(),
            reason: "bye".into(),
        };
        let _ = self.socket.close(Some(frame)).await;
    }
}

/// What a `recv` within a timeout gave, as a frame: the timeout and a close are errors.
pub(super) fn frame_in_time(
    received: Result<Result<Received, ClientError>, tokio::time::error::Elapsed>,
) -> Result<ServerFrame, ClientError> {
    match received {
        Err(_) => Err(ClientError::Timeout),
        Ok(Ok(Received::Frame(frame))) => Ok(frame),
        Ok(Ok(Received::Closed(code))) => Err(ClientError::Closed(code)),
        Ok(Err(e)) => Err(e),
    }
}

/// A TCP connection to `uri`'s host from the local address `local`.
async fn tcp_from(
    uri: &tokio_tungstenite::tungstenite::http::Uri,
    local: IpAddr,
) -> Result<tokio::net::TcpStream, ClientError> {
    let connect_error = |e: std::io::Error| ClientError::Connect(e.to_string());
    let (host, port) = host_and_port(uri);
    let remote = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(connect_error)?
        .find(|addr| addr.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| ClientError::Connect(format!("no address of {host} matches {local}")))?;
    let socket = if local.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(connect_error)?;
    socket
        .bind(SocketAddr::new(local, 0))
        .map_err(connect_error)?;
    let stream = socket.connect(remote).await.map_err(connect_error)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The host (an IPv6 literal without its brackets, as an address lookup and a TLS
/// server name want it) and the port of a URL, 443 by default for `wss://` and
/// `https://`, 80 otherwise.
pub(super) fn host_and_port(uri: &tokio_tungstenite::tungstenite::http::Uri) -> (String, u16) {
    let host = uri
        .host()
        .unwrap_or("127.0.0.1")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let default_port = match uri.scheme_str() {
        Some("wss" | "https") => 443,
        _ => 80,
    };
    (host, uri.port_u16().unwrap_or(default_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports_of_websocket_urls() {
        let of = |url: &str| host_and_port(&url.parse().unwrap());
        assert_eq!(of("ws://h/ws"), ("h".into(), 80));
        assert_eq!(of("wss://h/ws"), ("h".into(), 443));
        assert_eq!(of("wss://h:8443/ws"), ("h".into(), 8443));
        assert_eq!(of("https://h/sse"), ("h".into(), 443));
        assert_eq!(of("ws://[::1]:9000/ws"), ("::1".into(), 9000));
    }
}
