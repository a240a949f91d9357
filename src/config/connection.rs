//! `[connection]`: what one client connection may hold and how it is kept alive.

use super::ConfigError;
use super::error::check;
use serde::Deserialize;
use std::time::Duration;

/// `[connection]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Time allowed for the WebSocket upgrade request (ms).
    pub handshake_timeout_ms: u64,
    /// Largest accepted client frame (bytes).
    pub max_frame_bytes: usize,
    /// Most rooms per connection.
    pub max_rooms: usize,
    /// Message data of at least this many bytes goes deflated to subscriptions with
    /// `compress` (0: never).
    pub compress_above_bytes: usize,
    /// Outbound queue bound (frames) before a slow-consumer close.
    pub outbound_queue: usize,
    /// Heartbeat interval (ms).
    pub heartbeat_ms: u64,
    /// SO_SNDBUF of client sockets; 0 keeps the OS default.
    pub send_buffer_bytes: usize,
    /// Pending-connection queue of the listener (capped by the kernel's somaxconn).
    pub listen_backlog: u32,
    /// Whether publishing requires a subscription.
    pub publish_requires_subscription: bool,
    /// Most WebSocket connections on this instance.
    pub max_connections: usize,
    /// Most connections of one user or service on this instance (0: no limit).
    pub max_connections_per_user: usize,
}

impl ConnectionConfig {
    /// Handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// Heartbeat interval as a duration.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// Checks ranges; the error names the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.handshake_timeout_ms >= 100,
            "connection.handshake_timeout_ms",
            "must be at least 100",
        )?;
        check(
            (256..=64 << 20).contains(&self.max_frame_bytes),
            "connection.max_frame_bytes",
            "must be between 256 and 67108864",
        )?;
        check(
            self.max_rooms >= 1,
            "connection.max_rooms",
            "must be at least 1",
        )?;
        check(
            (1..=65535).contains(&self.listen_backlog),
            "connection.listen_backlog",
            "must be between 1 and 65535",
        )?;
        check(
            self.heartbeat_ms >= 100,
            "connection.heartbeat_ms",
            "must be at least 100",
        )?;
        check(
            (8..=1 << 20).contains(&self.outbound_queue),
            "connection.outbound_queue",
            "must be between 8 and 1048576",
        )?;
        check(
            self.max_connections >= 1,
            "connection.max_connections",
            "must be at least 1",
        )
    }
}
