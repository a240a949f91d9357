//! Room name → room actor, for this instance. Read on every publication (routing) and
//! every subscribe; written only when a room actor starts or stops.

use super::members::SharedMembers;
use crate::protocol::RoomName;
use dashmap::DashMap;
use ractor::{ActorId, ActorRef, Message};

/// The running room actors of this instance (actors taking messages `M`).
pub struct Registry<M: Message> {
    rooms: DashMap<RoomName, (ActorRef<M>, SharedMembers)>,
}

impl<M: Message> Default for Registry<M> {
    fn default() -> Self {
        Registry {
            rooms: DashMap::new(),
        }
    }
}

impl<M: Message> Registry<M> {
    /// Registers (or replaces, after a restart) a room's actor and its subscriber set.
    pub fn insert(&self, room: RoomName, actor: ActorRef<M>, members: SharedMembers) {
        self.rooms.insert(room, (actor, members));
    }

    /// The actor of `room`, if one runs.
    pub fn get(&self, room: &str) -> Option<ActorRef<M>> {
        self.rooms.get(room).map(|entry| entry.value().0.clone())
    }

    /// Removes `room` if the actor `id` is still the one registered for it (a restarted
    /// actor may already have replaced it).
    pub fn remove_if_current(&self, room: &RoomName, id: ActorId) {
        self.rooms
            .remove_if(room, |_, (current, _)| current.get_id() == id);
    }

    /// Every running room actor.
    pub fn all(&self) -> Vec<ActorRef<M>> {
        self.rooms
            .iter()
            .map(|entry| entry.value().0.clone())
            .collect()
    }

    /// Each room's name, subscriber count and publications delivered so far.
    pub fn loads(&self) -> Vec<(RoomName, usize, u64)> {
        self.rooms
            .iter()
            .map(|entry| {
                let members = entry.value().1.lock();
                (
                    entry.key().clone(),
                    members.subscribers.len(),
                    members.publications,
                )
            })
            .collect()
    }

    /// Number of running room actors.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }
}
