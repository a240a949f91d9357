//! Room name → room actor, for this instance. Read on every publication (routing) and
//! every subscribe; written only when a room actor starts or stops.

use super::actor::RoomRef;
use crate::protocol::RoomName;
use dashmap::DashMap;
use ractor::ActorId;

/// The running room actors of this instance.
#[derive(Default)]
pub struct Registry {
    rooms: DashMap<RoomName, RoomRef>,
}

impl Registry {
    /// Registers (or replaces, after a restart) a room's actor.
    pub fn insert(&self, room: RoomName, actor: RoomRef) {
        self.rooms.insert(room, actor);
    }

    /// The actor of `room`, if one runs.
    pub fn get(&self, room: &str) -> Option<RoomRef> {
        self.rooms.get(room).map(|entry| entry.value().clone())
    }

    /// Removes `room` if the actor `id` is still the one registered for it (a restarted
    /// actor may already have replaced it).
    pub fn remove_if_current(&self, room: &RoomName, id: ActorId) {
        self.rooms
            .remove_if(room, |_, current| current.get_id() == id);
    }

    /// Every running room actor.
    pub fn all(&self) -> Vec<RoomRef> {
        self.rooms
            .iter()
            .map(|entry| entry.value().clone())
            .collect()
    }

    /// Number of running room actors.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }
}
