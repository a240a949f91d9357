//! A Rust client for roomcast.
//!
//! - [`Connection`]: one WebSocket with typed frames, nothing automatic.
//! - [`EventConnection`]: the same over Server-Sent Events.
//! - [`Client`]: reconnects on its own (trying the given URLs in turn, with backoff;
//!   over Server-Sent Events when a WebSocket cannot connect, as behind a proxy that
//!   refuses `Upgrade`),
//!   re-subscribes every room with `since` = the last position it received, and retries
//!   unacknowledged publishes with their idempotency key, so an application sees each
//!   room's messages without gaps or duplicates across server failures.
//!
//! The client reports what it receives as [`Event`]s and does not filter anything: if the
//! server ever sent a duplicate, the application would see it (the tests rely on that).

mod connection;
mod events;
mod session;
mod tls;

pub use connection::{Connection, Received};
pub use events::EventConnection;

use crate::protocol::{Encoding, ErrorCode, ServerFrame};
use crate::stream::{Epoch, Position};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Client failures.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be opened.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(String),
    /// The server sent something this client cannot decode.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The server closed the connection with this code.
    #[error("connection closed (code {0:?})")]
    Closed(Option<u16>),
    /// The server refused the request.
    #[error("server error {}: {message}", code.name())]
    Server {
        /// Stable error code.
        code: ErrorCode,
        /// Explanation.
        message: String,
    },
    /// The client was stopped.
    #[error("client stopped")]
    Stopped,
}

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server URLs (`ws://host:port/ws`); the client moves to the next one on failure.
    pub urls: Vec<String>,
    /// Frame encoding.
    pub encoding: Encoding,
    /// Extra handshake headers (e.g. `Authorization`).
    pub headers: Vec<(String, String)>,
    /// First reconnect delay; doubled on each failed attempt.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// How long a request (subscribe, publish) may stay unanswered, across reconnects.
    pub request_timeout: Duration,
    /// Events buffered for the application before the client stops reading the socket.
    pub event_buffer: usize,
    /// Local address to connect from (`None`: the system's choice).
    pub local_address: Option<std::net::IpAddr>,
    /// When a WebSocket cannot connect to a URL (refused upgrade, a proxy that blocks
    /// it), try Server-Sent Events at the same server (`http://` for a `ws://` URL,
    /// `https://` for `wss://`). Frames are JSON there whatever `encoding` says.
    /// Default: on.
    pub sse_fallback: bool,
    /// A PEM file of CA certificates to trust for `wss://` (and the `https://` event
    /// stream) instead of the system's roots, e.g. a private CA. `None`: the system's.
    /// A file that does not load stops the client at start ([`Event::Stopped`]).
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl ClientConfig {
    /// Defaults for one server URL.
    pub fn new(url: impl Into<String>) -> Self {
        ClientConfig {
            urls: vec![url.into()],
            encoding: Encoding::MsgPack,
            headers: Vec::new(),
            reconnect_min: Duration::from_millis(25),
            reconnect_max: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            event_buffer: 4096,
            local_address: None,
            sse_fallback: true,
            tls_ca_file: None,
        }
    }
}

/// What the client reports to the application, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A connection was established (`reconnect`: not the first one).
    Connected {
        /// The server URL.
        url: String,
        /// Session id from `welcome`.
        session: String,
        /// Server instance id from `welcome`.
        server: String,
        /// Whether this replaces a lost connection.
        reconnect: bool,
        /// `"websocket"`, or `"sse"` (the fallback).
        transport: &'static str,
    },
    /// The connection was lost; the client reconnects unless the code forbids it.
    Disconnected {
        /// Close code, when the server sent one.
        code: Option<u16>,
    },
    /// A room subscription is (again) active.
    Subscribed {
        /// The room.
        room: String,
        /// Position live messages continue from.
        position: Position,
        /// Whether the resume was exact (false without `since` too).
        recovered: bool,
        /// Replayed messages that follow.
        replayed: u64,
        /// Whether this was a resume after a reconnect.
        resumed: bool,
    },
    /// A room message.
    Message {
        /// The room.
        room: String,
        /// Its epoch.
        epoch: Epoch,
        /// Its sequence number.
        seq: u64,
        /// Publish time (ms since the Unix epoch).
        time_ms: u64,
        /// The value.
        data: Value,
    },
    /// A room's continuity was lost; live messages continue after `position`.
    Reset {
        /// The room.
        room: String,
        /// The new position.
        position: Position,
        /// Why.
        reason: String,
    },
    /// A room's presence set, after each (re)subscribe with presence: it replaces
    /// whatever set the application held for the room.
    Presence {
        /// The room.
        room: String,
        /// Everyone in the room.
        clients: Vec<crate::presence::PresenceEntry>,
    },
    /// Joins and leaves of a room since the last `Presence` or `PresenceDiff`.
    PresenceDiff {
        /// The room.
        room: String,
        /// Entries that joined.
        joins: Vec<crate::presence::PresenceEntry>,
        /// Entries that left or expired.
        leaves: Vec<crate::presence::PresenceEntry>,
    },
    /// The client gave up: a close code that forbids reconnecting, it was stopped, or
    /// its settings can never connect (a `tls_ca_file` that does not load: the reason
    /// is logged and given to the requests made meanwhile).
    Stopped {
        /// The last close code.
        code: Option<u16>,
    },
}

/// A publish acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Assigned epoch and sequence number.
    pub position: Position,
    /// Publish time (ms).
    pub time_ms: u64,
    /// True when the server had already sequenced this key.
    pub duplicate: bool,
}

/// Result of a subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Position live messages continue from.
    pub position: Position,
    /// Whether the requested resume was exact.
    pub recovered: bool,
    /// Replayed messages that follow.
    pub replayed: u64,
}

enum Command {
    Subscribe {
        room: String,
        since: Option<Position>,
        /// Presence events asked for, and the client's `info`.
        presence: (bool, Option<Value>),
        /// Receive messages as Fossil deltas (the client applies them), and large ones
        /// compressed (the client inflates them).
        forms: (bool, bool),
        reply: oneshot::Sender<Result<Subscription, ClientError>>,
    },
    /// `presence` (`stats` false) or `presence_stats` (`stats` true).
    Query {
        room: String,
        stats: bool,
        reply: oneshot::Sender<Result<ServerFrame, ClientError>>,
    },
    Publish {
        room: String,
        data: Value,
        key: String,
        reply: oneshot::Sender<Result<Ack, ClientError>>,
    },
    DropConnection,
    Stop,
}

/// A self-healing connection to a roomcast cluster. See the module documentation.
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Starts the client; it connects in the background. Events arrive on the receiver.
    pub fn start(config: ClientConfig) -> (Client, mpsc::Receiver<Event>) {
        let (events_tx, events_rx) = mpsc::channel(config.event_buffer.max(1));
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(session::run(config, commands_rx, events_tx));
        (Client { commands, task }, events_rx)
    }

    /// Subscribes to `room` (kept across reconnects).
    pub async fn subscribe(&self, room: &str) -> Result<Subscription, ClientError> {
        self.subscribe_from(room, None).await
    }

    /// Subscribes to `room`, resuming after `since`.
    pub async fn subscribe_from(
        &self,
        room: &str,
        since: Option<Position>,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_with(room, since, (false, None), (false, false))
            .await
    }

    /// Subscribes to `room` (a room with presence) with `info` in its presence set, and
    /// asks for its presence: [`Event::Presence`] after each (re)subscribe, then
    /// [`Event::PresenceDiff`] on joins and leaves.
    pub async fn subscribe_with_presence(
        &self,
        room: &str,
        info: Option<Value>,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_with(room, None, (true, info), (false, false))
            .await
    }

    /// Subscribes to `room` with `delta: "fossil"`: the server sends each message as a
    /// delta against the previous one where that is smaller, and the client applies it,
    /// so [`Event::Message`] carries whole values as usual. A delta that cannot be
    /// applied makes the client subscribe again from its last position.
    pub async fn subscribe_with_delta(
        &self,
        room: &str,
        since: Option<Position>,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_with(room, since, (false, None), (true, false))
            .await
    }

    /// Subscribes to `room` asking for the forms that save bytes on the wire: `delta`
    /// as [`Client::subscribe_with_delta`] when `delta`, and `compress: "deflate"` when
    /// `compress` (the server then sends large message data deflated, and the client
    /// inflates it, so [`Event::Message`] carries whole values as usual).
    pub async fn subscribe_with_forms(
        &self,
        room: &str,
        since: Option<Position>,
        delta: bool,
        compress: bool,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_with(room, since, (false, None), (delta, compress))
            .await
    }

    async fn subscribe_with(
        &self,
        room: &str,
        since: Option<Position>,
        presence: (bool, Option<Value>),
        forms: (bool, bool),
    ) -> Result<Subscription, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Subscribe {
            room: room.to_owned(),
            since,
            presence,
            forms,
            reply,
        })?;
        answer.await.map_err(|_| ClientError::Stopped)?
    }

    /// Who is in `room` now (retried across reconnects until the request timeout).
    pub async fn presence(
        &self,
        room: &str,
    ) -> Result<Vec<crate::presence::PresenceEntry>, ClientError> {
        match self.query(room, false).await? {
            ServerFrame::Presence { clients, .. } => Ok(clients),
            other => Err(ClientError::Protocol(format!(
                "expected presence, got {other:?}"
            ))),
        }
    }

    /// How many are in `room` now.
    pub async fn presence_stats(
        &self,
        room: &str,
    ) -> Result<crate::presence::PresenceStats, ClientError> {
        match self.query(room, true).await? {
            ServerFrame::PresenceStats { clients, users, .. } => {
                Ok(crate::presence::PresenceStats { clients, users })
            }
            other => Err(ClientError::Protocol(format!(
                "expected presence_stats, got {other:?}"
            ))),
        }
    }

    async fn query(&self, room: &str, stats: bool) -> Result<ServerFrame, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Query {
            room: room.to_owned(),
            stats,
            reply,
        })?;
        answer.await.map_err(|_| ClientError::Stopped)?
    }

    /// Publishes `data` to `room`, retried across reconnects with the same idempotency
    /// key (generated when `key` is `None`) until acknowledged or timed out.
    pub async fn publish(
        &self,
        room: &str,
        data: Value,
        key: Option<String>,
    ) -> Result<Ack, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Publish {
            room: room.to_owned(),
            data,
            key: key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            reply,
        })?;
        answer.await.map_err(|_| ClientError::Stopped)?
    }

    /// Drops the current connection without a close handshake (as a network failure
    /// would); the client then reconnects and resumes.
    pub fn drop_connection(&self) {
        let _ = self.commands.send(Command::DropConnection);
    }

    /// Closes the connection and stops the client.
    pub async fn stop(self) {
        let _ = self.commands.send(Command::Stop);
        let _ = self.task.await;
    }

    fn command(&self, command: Command) -> Result<(), ClientError> {
        self.commands
            .send(command)
            .map_err(|_| ClientError::Stopped)
    }
}
