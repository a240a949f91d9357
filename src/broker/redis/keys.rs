//! Key and channel names of a room. Every name of a room carries the room in a hash tag
//! (`{room}`), so that in a Redis Cluster all of them live in the room's slot: the
//! publish script touches them together and the sharded channel is served by the same
//! shard. Room names cannot contain braces (see the room-name rules).

use crate::protocol::RoomName;

/// Names derived from one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix` (e.g. `rc`).
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix of every name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}:{room}` followed by `parts`. The names of a room are made for every
    /// publish, so they are put together directly rather than through `format!`.
    fn room_key(&self, room: &RoomName, parts: &[&str]) -> String {
        let room = room.as_str();
        let length =
            self.prefix.len() + room.len() + 3 + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut name = String::with_capacity(length);
        name.push_str(&self.prefix);
        name.push_str(":{");
        name.push_str(room);
        name.push('}');
        for part in parts {
            name.push_str(part);
        }
        name
    }

    /// The room's position: hash with `epoch`, `seq`, `rid` (the Redis run id) and
    /// `renew` (when the publish function sets this hash's and the log's expiry next).
    pub fn meta(&self, room: &RoomName) -> String {
        self.room_key(room, &[":meta"])
    }

    /// The room's replay buffer (a stream; entry id `seq-0`).
    pub fn log(&self, room: &RoomName) -> String {
        self.room_key(room, &[":log"])
    }

    /// The record of one idempotency key of the room: a string holding the original
    /// ack, with the key's lifetime as its TTL.
    pub fn idempotency_record(&self, room: &RoomName, key: &str) -> String {
        self.room_key(room, &[":idem:", key])
    }

    /// The room's idempotency records as earlier builds kept them (a hash of publish key
    /// → original ack and its expiry): the publish function still reads it, so that a
    /// retry reaching this build during a rolling upgrade finds a key that an instance
    /// of an earlier build recorded (see `publish.lua`).
    pub fn legacy_idempotency(&self, room: &RoomName) -> String {
        self.room_key(room, &[":idem"])
    }

    /// The room's Pub/Sub channel.
    pub fn channel(&self, room: &RoomName) -> String {
        self.room_key(room, &[":ch"])
    }

    /// The room a channel name belongs to, if it is one of ours.
    pub fn room_of_channel(&self, channel: &[u8]) -> Option<RoomName> {
        let channel = std::str::from_utf8(channel).ok()?;
        let inner = channel
            .strip_prefix(&self.prefix)?
            .strip_prefix(":{")?
            .strip_suffix("}:ch")?;
        Some(RoomName::new_unchecked(inner))
    }

    /// The cluster's membership: hash, instance id → `written_ms record` (Redis time).
    /// `$` never occurs in a room name, so no room shares this hash tag.
    pub fn members(&self) -> String {
        format!("{}:{{$cluster}}:members", self.prefix)
    }

    /// The room's presence entries: hash, connection id → entry (JSON).
    pub fn presence(&self, room: &RoomName) -> String {
        self.room_key(room, &[":pr"])
    }

    /// When each presence entry expires: sorted set, connection id → ms (Redis time).
    pub fn presence_expiry(&self, room: &RoomName) -> String {
        self.room_key(room, &[":prx"])
    }

    /// Presence entries per user: hash, user → count (for the distinct-user count).
    pub fn presence_users(&self, room: &RoomName) -> String {
        self.room_key(room, &[":pru"])
    }

    /// The presence set's version, changed by every change of the set.
    pub fn presence_version(&self, room: &RoomName) -> String {
        self.room_key(room, &[":prv"])
    }

    /// The liveness-probe channel of one instance.
    pub fn probe_channel(&self, node_id: &str) -> String {
        format!("{}:{{probe-{}}}:ch", self.prefix, node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_the_room_hash_tag() {
        let keys = Keys::new("rc");
        let room = RoomName::new_unchecked("project:42");
        assert_eq!(keys.meta(&room), "rc:{project:42}:meta");
        assert_eq!(keys.log(&room), "rc:{project:42}:log");
        assert_eq!(
            keys.idempotency_record(&room, "client:u1:k"),
            "rc:{project:42}:idem:client:u1:k"
        );
        assert_eq!(keys.legacy_idempotency(&room), "rc:{project:42}:idem");
        assert_eq!(keys.channel(&room), "rc:{project:42}:ch");
        assert_eq!(
            keys.room_of_channel(keys.channel(&room).as_bytes()),
            Some(room)
        );
        assert_eq!(keys.room_of_channel(b"other:{x}:ch"), None);
    }
}
