//! The in-process presence store of a single instance (the embedded broker). Same
//! contract as the Redis one: entries expire `ttl` after their last write, every read
//! drops expired entries first, and a room's version never repeats.

use super::{PresenceStats, PresenceStore, Snapshot};
use crate::broker::BrokerError;
use crate::protocol::{PresenceEntry, RoomName};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct RoomSet {
    version: u64,
    entries: HashMap<String, (PresenceEntry, Instant)>,
    users: HashMap<String, u64>,
}

impl RoomSet {
    fn drop_conn(&mut self, conn: &str) -> bool {
        let Some((entry, _)) = self.entries.remove(conn) else {
            return false;
        };
        if let Some(count) = self.users.get_mut(&entry.user) {
            *count -= 1;
            if *count == 0 {
                self.users.remove(&entry.user);
            }
        }
        true
    }

    fn expire(&mut self, now: Instant) -> bool {
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(conn, _)| conn.clone())
            .collect();
        for conn in &expired {
            self.drop_conn(conn);
        }
        !expired.is_empty()
    }
}

#[derive(Default)]
struct State {
    rooms: HashMap<RoomName, RoomSet>,
    /// Versions come from one counter, so a room that is forgotten and comes back
    /// never shows a version it had before.
    next_version: u64,
}

impl State {
    fn bump(&mut self, room: &RoomName) {
        self.next_version += 1;
        let version = self.next_version;
        if let Some(set) = self.rooms.get_mut(room) {
            set.version = version;
        }
    }
}

/// Presence sets in process memory.
#[derive(Default)]
pub struct MemoryPresence {
    state: Mutex<State>,
}

impl MemoryPresence {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops expired entries of `room`; returns the room's version.
    fn expire(state: &mut State, room: &RoomName) -> u64 {
        let changed = state
            .rooms
            .get_mut(room)
            .is_some_and(|set| set.expire(Instant::now()));
        if changed {
            state.bump(room);
        }
        match state.rooms.get(room) {
            Some(set) if set.entries.is_empty() => {
                // An empty set is forgotten; its last version stays the reader's answer
                // until something joins again (with a newer version).
                let version = set.version;
                state.rooms.remove(room);
                version
            }
            Some(set) => set.version,
            None => 0,
        }
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn add(
        &self,
        room: &RoomName,
        entries: &[PresenceEntry],
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let until = Instant::now() + ttl;
        let mut state = self.lock();
        let set = state.rooms.entry(room.clone()).or_default();
        let mut changed = false;
        for entry in entries {
            match set.entries.get_mut(&entry.conn) {
                Some((old, expiry)) if old == entry => *expiry = until,
                _ => {
                    set.drop_conn(&entry.conn);
                    *set.users.entry(entry.user.clone()).or_default() += 1;
                    set.entries
                        .insert(entry.conn.clone(), (entry.clone(), until));
                    changed = true;
                }
            }
        }
        if changed {
            state.bump(room);
        }
        Ok(())
    }

    async fn remove(&self, room: &RoomName, conns: &[String]) -> Result<(), BrokerError> {
        let mut state = self.lock();
        let Some(set) = state.rooms.get_mut(room) else {
            return Ok(());
        };
        let mut changed = false;
        for conn in conns {
            changed |= set.drop_conn(conn);
        }
        if changed {
            state.bump(room);
        }
        Ok(())
    }

    async fn read(&self, room: &RoomName, known: Option<u64>) -> Result<Snapshot, BrokerError> {
        let mut state = self.lock();
        let version = Self::expire(&mut state, room);
        if known == Some(version) {
            return Ok(Snapshot {
                version,
                entries: None,
            });
        }
        let entries = state
            .rooms
            .get(room)
            .map(|set| set.entries.values().map(|(e, _)| e.clone()).collect())
            .unwrap_or_default();
        Ok(Snapshot {
            version,
            entries: Some(entries),
        })
    }

    async fn stats(&self, room: &RoomName) -> Result<PresenceStats, BrokerError> {
        let mut state = self.lock();
        Self::expire(&mut state, room);
        Ok(state.rooms.get(room).map_or(
            PresenceStats {
                clients: 0,
                users: 0,
            },
            |set| PresenceStats {
                clients: set.entries.len() as u64,
                users: set.users.len() as u64,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(conn: &str, user: &str) -> PresenceEntry {
        PresenceEntry {
            user: user.into(),
            conn: conn.into(),
            node: "n".into(),
            joined: 1,
            info: None,
        }
    }

    #[tokio::test]
    async fn add_refresh_remove_and_expire() {
        let store = MemoryPresence::default();
        let room = RoomName::new_unchecked("r");
        let long = Duration::from_secs(60);
        store
            .add(&room, &[entry("a", "u1"), entry("b", "u1")], long)
            .await
            .unwrap();
        store
            .add(&room, &[entry("c", "u2")], Duration::from_millis(30))
            .await
            .unwrap();
        let stats = store.stats(&room).await.unwrap();
        assert_eq!((stats.clients, stats.users), (3, 2));
        let first = store.read(&room, None).await.unwrap();
        assert_eq!(first.entries.as_ref().unwrap().len(), 3);
        // A refresh with the same contents changes nothing.
        store.add(&room, &[entry("a", "u1")], long).await.unwrap();
        let same = store.read(&room, Some(first.version)).await.unwrap();
        assert_eq!(same.entries, None);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let expired = store.read(&room, Some(first.version)).await.unwrap();
        assert_ne!(expired.version, first.version);
        assert_eq!(expired.entries.unwrap().len(), 2);
        store.remove(&room, &["a".into()]).await.unwrap();
        let stats = store.stats(&room).await.unwrap();
        assert_eq!((stats.clients, stats.users), (1, 1));
        store.remove(&room, &["b".into()]).await.unwrap();
        let empty = store.read(&room, None).await.unwrap();
        assert_eq!(empty.entries.unwrap(), vec![]);
        store.add(&room, &[entry("d", "u3")], long).await.unwrap();
        let again = store.read(&room, Some(empty.version)).await.unwrap();
        assert!(again.version > empty.version);
    }
}
