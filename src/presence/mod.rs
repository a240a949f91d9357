//! Presence: who is in a room, across every instance.
//!
//! Opt-in per room pattern (`[presence] rooms`). Every subscriber of such a room has an
//! entry in the room's presence set — user, connection, instance, join time and the
//! optional `info` it gave at subscribe — kept in a [`PresenceStore`]: in process for the
//! embedded broker, in Redis (a hash and a sorted set of expiry times per room) for a
//! cluster. Each instance re-writes its own entries every heartbeat, so an entry of a
//! killed instance expires after `ttl_ms`, and a Redis that lost its data gets them back.
//!
//! Join/leave events are not pushed between instances: each instance reads the set of
//! every room in which one of its clients asked for events, once per window, and sends
//! those clients the difference to what it sent them before (`presence_diff`). One read
//! per room and window, one frame per subscriber and window, however many clients move.
//! The parts:
//!
//! - [`diff`]: the pure core — the difference between two sets of entries.
//! - [`memory`]: the in-process store.
//! - `hub`: the per-instance task that writes local entries (batched), heartbeats them,
//!   reads watched rooms every window and fans the differences out.
//! - [`Presence`]: the handle connections and the HTTP API use.

pub mod diff;
mod hub;
pub mod memory;

pub use crate::protocol::PresenceEntry;
pub use hub::{Member, Presence, Watcher};

use crate::broker::BrokerError;
use crate::protocol::RoomName;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
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

    /// Whether `room` has presence.
    pub fn enabled_for(&self, room: &str) -> bool {
        self.rooms
            .iter()
            .any(|pattern| crate::auth::pattern_matches(pattern, room))
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

/// Counts of a room's presence set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceStats {
    /// Entries (connections).
    pub clients: u64,
    /// Distinct users among them.
    pub users: u64,
}

/// A read of a room's set: its version, and the entries when the version differs from
/// the one the reader knew.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Changes with every change of the set; never repeats for a room, also across a
    /// Redis restart.
    pub version: u64,
    /// The live entries (expired ones are dropped by the read), unless unchanged.
    pub entries: Option<Vec<PresenceEntry>>,
}

/// Where presence sets live. Every implementation drops entries `ttl` after they were
/// last written, and every read drops expired entries before it answers.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Inserts or re-writes entries (keyed by `conn`); each lives `ttl` from now.
    async fn add(
        &self,
        room: &RoomName,
        entries: &[PresenceEntry],
        ttl: Duration,
    ) -> Result<(), BrokerError>;

    /// Removes the entries of these connections.
    async fn remove(&self, room: &RoomName, conns: &[String]) -> Result<(), BrokerError>;

    /// The room's version, with its entries unless `known` is that version.
    async fn read(&self, room: &RoomName, known: Option<u64>) -> Result<Snapshot, BrokerError>;

    /// Counts, without reading the entries.
    async fn stats(&self, room: &RoomName) -> Result<PresenceStats, BrokerError>;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rooms: &[&str]) -> PresenceConfig {
        PresenceConfig {
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            heartbeat_ms: 1000,
            ttl_ms: 3000,
            window_ms: 250,
            max_info_bytes: 256,
        }
    }

    #[test]
    fn rooms_match_by_segments() {
        let c = config(&["issue:*", "team:**"]);
        assert!(c.enabled_for("issue:1"));
        assert!(!c.enabled_for("issue:1:x"));
        assert!(!c.enabled_for("issues:1"));
        assert!(c.enabled_for("team:a:b"));
        assert!(!config(&[]).enabled_for("issue:1"));
    }

    #[test]
    fn ttl_must_cover_two_heartbeats() {
        let mut c = config(&[]);
        assert!(c.validate().is_ok());
        c.ttl_ms = 1500;
        assert_eq!(c.validate().unwrap_err().0, "presence.ttl_ms");
    }

    #[test]
    fn entries_omit_missing_info() {
        let entry = PresenceEntry {
            user: "alice".into(),
            conn: "c1".into(),
            node: "n1".into(),
            joined: 5,
            info: None,
        };
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            r#"{"user":"alice","conn":"c1","node":"n1","joined":5}"#
        );
    }
}
