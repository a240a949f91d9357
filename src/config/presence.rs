//! `[presence]`: which rooms have presence, and its timing.

use serde::Deserialize;
use std::time::Duration;

/// `[presence]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceConfig {
    /// Room patterns with presence (matched by `:` segments).
    pub rooms: Vec<String>,
    /// How often an instance re-writes its entries (ms).
    pub heartbeat_ms: u64,
    /// How long an entry lives without being re-written (ms).
    pub ttl_ms: u64,
    /// Join/leave events are gathered over this window (ms).
    pub window_ms: u64,
    /// Largest client `info` (bytes of JSON).
    pub max_info_bytes: usize,
}

impl PresenceConfig {
    /// Checks ranges; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.heartbeat_ms < 50 {
            return Err(("presence.heartbeat_ms", "must be at least 50"));
        }
        if self.ttl_ms < 2 * self.heartbeat_ms {
            return Err((
                "presence.ttl_ms",
                "must be at least twice presence.heartbeat_ms",
            ));
        }
        if !(10..=60_000).contains(&self.window_ms) {
            return Err(("presence.window_ms", "must be between 10 and 60000"));
        }
        if self.max_info_bytes > 4096 {
            return Err(("presence.max_info_bytes", "must be at most 4096"));
        }
        if self.rooms.iter().any(|p| p.is_empty()) {
            return Err(("presence.rooms", "patterns must not be empty"));
        }
        Ok(())
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// The lifetime of an entry that is not re-written.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// The event window.
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }
}
