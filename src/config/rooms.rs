//! `[rooms]` and `[history]`: room actors, room names, and every room's replay buffer
//! and idempotency window.

use super::ConfigError;
use super::error::check;
use serde::Deserialize;

/// `[rooms]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsConfig {
    /// Longest room name (bytes).
    pub name_max_len: usize,
    /// Punctuation allowed in room names.
    pub name_extra_chars: String,
    /// Messages cached per room actor.
    pub cache_size: usize,
    /// Linger of an empty room actor (ms).
    pub linger_ms: u64,
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// Restart-intensity window (ms).
    pub restart_window_ms: u64,
    /// Publications waiting in one room actor's mailbox, at most.
    pub queue_size: usize,
    /// Publications waiting between the broker and the room dispatcher, at most.
    pub event_queue_size: usize,
}

/// `[history]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Replay buffer length per room.
    pub size: usize,
    /// Replay buffer age bound (s).
    pub ttl_secs: u64,
    /// Lifetime of an idle room's epoch and seq (s).
    pub meta_ttl_secs: u64,
    /// Idempotency window (s).
    pub idempotency_window_secs: u64,
    /// Idempotency keys remembered per room by the embedded broker (Redis keeps each
    /// key for its lifetime, however many a room has).
    pub idempotency_max_keys: usize,
    /// Most messages per history reply.
    pub max_page: usize,
}

impl RoomsConfig {
    /// Checks ranges and the characters room names may hold; the error names the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check(
            (1..=1024).contains(&self.name_max_len),
            "rooms.name_max_len",
            "must be between 1 and 1024",
        )?;
        check(
            self.name_extra_chars
                .chars()
                .all(|ch| ch.is_ascii_punctuation()),
            "rooms.name_extra_chars",
            "may only hold ASCII punctuation",
        )?;
        check(
            !self.name_extra_chars.contains(['{', '}']),
            "rooms.name_extra_chars",
            "may not contain braces (they delimit Redis hash tags)",
        )?;
        check(
            !self.name_extra_chars.contains('$'),
            "rooms.name_extra_chars",
            "may not contain `$` (it starts the server's internal rooms)",
        )?;
        check(
            self.restart_window_ms >= 1,
            "rooms.restart_window_ms",
            "must be at least 1",
        )?;
        check(
            (1..=1 << 20).contains(&self.queue_size),
            "rooms.queue_size",
            "must be between 1 and 1048576",
        )?;
        check(
            (1..=1 << 24).contains(&self.event_queue_size),
            "rooms.event_queue_size",
            "must be between 1 and 16777216",
        )
    }
}

impl HistoryConfig {
    /// Checks ranges; the error names the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check(self.size >= 1, "history.size", "must be at least 1")?;
        check(self.ttl_secs >= 1, "history.ttl_secs", "must be at least 1")?;
        check(
            self.meta_ttl_secs >= self.ttl_secs,
            "history.meta_ttl_secs",
            "must be at least history.ttl_secs",
        )?;
        check(self.max_page >= 1, "history.max_page", "must be at least 1")
    }
}
