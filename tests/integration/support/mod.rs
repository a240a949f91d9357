//! Test harness: real servers on ephemeral loopback ports, real WebSocket clients.

pub mod db;
pub mod http;
pub mod ledger;
pub mod openapi;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod tls;
pub mod tokens;

use roomcast::client::{ClientError, Connection};
use roomcast::config::Config;
use roomcast::protocol::{ClientFrame, Encoding, ErrorCode, ServerFrame};
use roomcast::server::Server;
use roomcast::stream::{Epoch, Position};
use serde_json::Value;
use std::time::Duration;

/// Default wait for anything a test expects to happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// An in-process server on `127.0.0.1:0`.
pub struct TestServer {
    server: Option<Server>,
    /// The WebSocket URL.
    pub url: String,
}

impl TestServer {
    /// A server with default configuration.
    pub async fn start() -> TestServer {
        Self::with(|_| {}).await
    }

    /// A server with configuration adjusted by `adjust` (on a fresh SQLite file).
    pub async fn with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        Self::on_database(&db::sqlite_url(), adjust).await
    }

    /// A server on the given database, with configuration adjusted by `adjust`.
    pub async fn on_database(database_url: &str, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::defaults();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.node_id = "test-node".into();
        config.database_url = database_url.to_owned();
        adjust(&mut config);
        config.validate().expect("test configuration is valid");
        roomcast::server::check_config(&config).expect("test configuration is valid");
        let server = Server::start(&config).await.expect("server starts");
        TestServer::wrap(server)
    }

    /// Wraps a server started by the test itself.
    pub fn wrap(server: Server) -> TestServer {
        let url = format!("ws://{}/ws", server.local_addr());
        TestServer {
            server: Some(server),
            url,
        }
    }

    /// The `host:port` of the listener.
    pub fn addr(&self) -> String {
        self.server().local_addr().to_string()
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    /// Shuts the server down.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// A connected client that has read its `welcome`.
pub struct TestClient {
    /// The connection.
    pub conn: Connection,
    /// Session id from `welcome`.
    pub session: String,
    next_id: u64,
}

impl TestClient {
    /// Connects with `encoding` and reads `welcome`.
    pub async fn connect(url: &str, encoding: Encoding) -> TestClient {
        Self::connect_offering(url, Some(encoding)).await
    }

    /// Connects offering `encoding` as subprotocol (`None`: none) and reads `welcome`.
    pub async fn connect_offering(url: &str, encoding: Option<Encoding>) -> TestClient {
        let mut conn = Connection::connect(url, encoding).await.expect("connects");
        let session = match conn.next_frame(WAIT).await.expect("welcome") {
            ServerFrame::Welcome { session, .. } => session,
            other => panic!("expected welcome, got {other:?}"),
        };
        TestClient {
            conn,
            session,
            next_id: 0,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends a frame.
    pub async fn send(&mut self, frame: ClientFrame) {
        self.conn.send(&frame).await.expect("send");
    }

    /// The next frame (fails on timeout or close).
    pub async fn next(&mut self) -> ServerFrame {
        self.conn.next_frame(WAIT).await.expect("a frame")
    }

    /// The next frame, or `None` when nothing arrives within `wait`.
    pub async fn maybe_next(&mut self, wait: Duration) -> Option<ServerFrame> {
        match self.conn.next_frame(wait).await {
            Ok(frame) => Some(frame),
            Err(ClientError::Timeout) => None,
            Err(err) => panic!("connection failed: {err}"),
        }
    }

    /// Subscribes and returns the `subscribed` frame's (position, recovered, replayed).
    pub async fn subscribe(&mut self, room: &str, since: Option<Position>) -> Subscribed {
        let id = self.id();
        self.send(ClientFrame::Subscribe {
            id: Some(id),
            room: room.into(),
            since,
            presence: false,
            info: None,
            delta: None,
            compress: None,
        })
        .await;
        match self.next().await {
            ServerFrame::Subscribed {
                id: reply_id,
                room: reply_room,
                epoch,
                seq,
                recovered,
                replayed,
                reason,
                ..
            } => {
                assert_eq!(reply_id, Some(id));
                assert_eq!(reply_room, room);
                Subscribed {
                    position: Position::new(epoch, seq),
                    recovered,
                    replayed,
                    reason,
                }
            }
            other => panic!("expected subscribed, got {other:?}"),
        }
    }

    /// Publishes and returns the ack's (position, duplicate). Other frames that arrive
    /// before the ack (room messages) are returned too, in order.
    pub async fn publish(
        &mut self,
        room: &str,
        data: Value,
        key: Option<&str>,
    ) -> (Position, bool, Vec<ServerFrame>) {
        let id = self.id();
        self.send(ClientFrame::Publish {
            id: Some(id),
            room: room.into(),
            data,
            key: key.map(str::to_owned),
        })
        .await;
        let mut others = Vec::new();
        loop {
            match self.next().await {
                ServerFrame::Ack {
                    id: ack_id,
                    epoch,
                    seq,
                    duplicate,
                    ..
                } if ack_id == Some(id) => return (Position::new(epoch, seq), duplicate, others),
                ServerFrame::Error { code, message, .. } => {
                    panic!("publish failed: {} {message}", code.name())
                }
                other => others.push(other),
            }
        }
    }

    /// Sends `frame` and expects an error with `code`; returns the error's id.
    pub async fn expect_error(&mut self, frame: ClientFrame, code: ErrorCode) -> Option<u64> {
        self.send(frame).await;
        self.expect_error_frame(code).await
    }

    /// Expects the next frame to be an error with `code`; returns its id.
    pub async fn expect_error_frame(&mut self, code: ErrorCode) -> Option<u64> {
        match self.next().await {
            ServerFrame::Error {
                id,
                code: got,
                name,
                message,
                ..
            } => {
                assert_eq!(got, code, "{message}");
                assert_eq!(name, code.name());
                assert!(!message.is_empty());
                id
            }
            other => panic!("expected error {}, got {other:?}", code.name()),
        }
    }

    /// Round trip proving the connection still works.
    pub async fn ping(&mut self) {
        let id = self.id();
        self.send(ClientFrame::Ping { id: Some(id) }).await;
        loop {
            match self.next().await {
                ServerFrame::Pong { id: got } if got == Some(id) => return,
                ServerFrame::Message { .. } => continue,
                other => panic!("expected pong, got {other:?}"),
            }
        }
    }

    /// The next `message` frame as (room, epoch, seq, data).
    pub async fn message(&mut self) -> (String, Epoch, u64, Value) {
        match self.next().await {
            ServerFrame::Message {
                room,
                epoch,
                seq,
                data,
                ..
            } => (room, epoch, seq, data),
            other => panic!("expected message, got {other:?}"),
        }
    }

    /// Waits for the server to close; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        self.conn.closed(WAIT).await.expect("server closes")
    }
}

/// A `subscribed` reply.
#[derive(Debug, Clone)]
pub struct Subscribed {
    /// Where live delivery continues.
    pub position: Position,
    /// Whether the resume was exact.
    pub recovered: bool,
    /// Replayed messages that follow.
    pub replayed: u64,
    /// Why the resume failed.
    pub reason: Option<String>,
}

/// Polls `condition` until it holds or `WAIT` passes.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of one series in a Prometheus text exposition (as `/metrics` gives it).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from /metrics"))
}

/// A minimal HTTP/1.1 GET; returns the whole response.
pub async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .unwrap()
    .unwrap();
    response
}

/// Waits until `GET /readyz` on `addr` answers 200.
pub async fn wait_ready(addr: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !http_get(addr, "/readyz").await.starts_with("HTTP/1.1 200") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
