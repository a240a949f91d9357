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
//! - [`crate::broker::presence`]: where the sets live ([`PresenceStore`]), in process
//!   or in Redis.
//! - `hub`: the per-instance task that writes local entries (batched), heartbeats them,
//!   reads watched rooms every window and fans the differences out.
//! - [`Presence`]: the handle connections and the HTTP API use.

pub mod diff;
mod hub;

pub use crate::config::PresenceConfig;
pub use crate::protocol::PresenceEntry;
pub use hub::{Member, Presence, Watcher};

pub use crate::broker::presence::{PresenceStats, PresenceStore, Snapshot};

impl PresenceConfig {
    /// Whether `room` has presence.
    pub fn enabled_for(&self, room: &str) -> bool {
        self.rooms
            .iter()
            .any(|pattern| crate::auth::pattern_matches(pattern, room))
    }
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
