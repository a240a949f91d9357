//! Room name → room actor, for this instance. Read on every publication (routing) and
//! every subscribe; written only when a room actor starts or stops. It keeps the
//! `roomcast_rooms_active` gauge.

use super::inbox::Inbox;
use super::members::SharedMembers;
use crate::protocol::RoomName;
use dashmap::DashMap;
use ractor::{ActorId, ActorRef, Message};
use std::sync::Arc;

/// A registered room actor: where to send, its subscribers, its mailbox bound.
struct Entry<M: Message> {
    actor: ActorRef<M>,
    members: SharedMembers,
    inbox: Arc<Inbox>,
}

/// The running room actors of this instance (actors taking messages `M`).
pub struct Registry<M: Message> {
    rooms: DashMap<RoomName, Entry<M>>,
}

impl<M: Message> Default for Registry<M> {
    fn default() -> Self {
        Registry {
            rooms: DashMap::new(),
        }
    }
}

impl<M: Message> Registry<M> {
    /// Registers (or replaces, after a restart) a room's actor, its subscriber set and
    /// its mailbox accounting.
    pub fn insert(
        &self,
        room: RoomName,
        actor: ActorRef<M>,
        members: SharedMembers,
        inbox: Arc<Inbox>,
    ) {
        let entry = Entry {
            actor,
            members,
            inbox,
        };
        if self.rooms.insert(room, entry).is_none() {
            metrics::gauge!("roomcast_rooms_active").increment(1.0);
        }
    }

    /// The actor of `room`, if one runs.
    pub fn get(&self, room: &str) -> Option<ActorRef<M>> {
        self.rooms.get(room).map(|entry| entry.actor.clone())
    }

    /// The actor of `room` and its mailbox accounting, if one runs.
    pub fn route(&self, room: &str) -> Option<(ActorRef<M>, Arc<Inbox>)> {
        self.rooms
            .get(room)
            .map(|entry| (entry.actor.clone(), entry.inbox.clone()))
    }

    /// The room and subscriber set of the actor `id`, if it is registered.
    pub fn find(&self, id: ActorId) -> Option<(RoomName, SharedMembers)> {
        self.rooms
            .iter()
            .find(|entry| entry.actor.get_id() == id)
            .map(|entry| (entry.key().clone(), entry.members.clone()))
    }

    /// Removes `room` if the actor `id` is still the one registered for it (a restarted
    /// actor may already have replaced it).
    pub fn remove_if_current(&self, room: &RoomName, id: ActorId) {
        if self
            .rooms
            .remove_if(room, |_, entry| entry.actor.get_id() == id)
            .is_some()
        {
            metrics::gauge!("roomcast_rooms_active").decrement(1.0);
        }
    }

    /// Every running room actor with its mailbox accounting.
    pub fn all(&self) -> Vec<(ActorRef<M>, Arc<Inbox>)> {
        self.rooms
            .iter()
            .map(|entry| (entry.actor.clone(), entry.inbox.clone()))
            .collect()
    }

    /// Each room's name, subscriber count and publications delivered so far.
    pub fn loads(&self) -> Vec<(RoomName, usize, u64)> {
        self.rooms
            .iter()
            .map(|entry| {
                // Counts, not the set: a room in the middle of a large fan-out holds
                // its lock for milliseconds.
                let (subscribers, publications) = entry.members.counts();
                (entry.key().clone(), subscribers, publications)
            })
            .collect()
    }

    /// Number of running room actors.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }
}
