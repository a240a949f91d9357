//! The per-instance presence task and the handle to it.
//!
//! One task owns everything presence does on an instance, so there is one writer of the
//! local entries and one sender of each room's events:
//!
//! - joins and leaves of local connections arrive as commands; whatever is queued is
//!   taken at once and written per room in one store call each (a reconnect storm
//!   becomes a few batched writes, not one write per client);
//! - every heartbeat it re-writes all local entries (their expiry moves on; a Redis that
//!   lost them gets them back);
//! - every window it reads each room in which a local client asked for events (one read
//!   per room, answered without entries when the room's version did not change) and
//!   sends each such client one `presence_diff` with the difference since the last one.
//!
//! Concurrency contract: a client's `presence` snapshot and its later `presence_diff`s
//! come from the same per-room state, so applying the diffs in order to the snapshot
//! gives the set as this instance last read it. Events are not ordered relative to the
//! room's messages.

use super::diff::{Diff, Set, set_of};
use super::{PresenceConfig, PresenceEntry, PresenceStats, PresenceStore, now_ms};
use crate::auth::Principal;
use crate::broker::BrokerError;
use crate::outbound::Outbound;
use crate::protocol::{Encoding, RoomName, ServerFrame};
use futures_util::future::join_all;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Longest a subscribe or unsubscribe waits for its presence write.
const COMMAND_WAIT: Duration = Duration::from_secs(3);
/// Most commands taken in one batch.
const MAX_BATCH: usize = 4096;

/// A local client that asked for a room's join/leave events.
#[derive(Clone)]
pub struct Watcher {
    /// Instance-unique connection id.
    pub conn_id: u64,
    /// Its outbound queue.
    pub outbound: Outbound,
    /// Its encoding.
    pub encoding: Encoding,
}

/// What one connection holds in presence: who it is and the rooms it joined.
pub struct Member {
    user: String,
    conn: String,
    rooms: HashSet<RoomName>,
}

impl Member {
    /// The presence identity of a connection with this session id.
    pub fn new(session: &str, principal: &Principal) -> Member {
        let user = match principal {
            Principal::User { subject, .. } => subject.clone(),
            Principal::Service { name } => format!("service:{name}"),
            Principal::Anonymous => format!("anonymous:{session}"),
        };
        Member {
            user,
            conn: session.to_owned(),
            rooms: HashSet::new(),
        }
    }
}

enum Command {
    Join {
        room: RoomName,
        entry: PresenceEntry,
        watcher: Option<Watcher>,
        done: oneshot::Sender<()>,
    },
    Leave {
        room: RoomName,
        conn: String,
        conn_id: u64,
        done: Option<oneshot::Sender<()>>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// Handle to the presence of this instance. Cheap to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    config: PresenceConfig,
    node_id: String,
    store: Arc<dyn PresenceStore>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Presence {
    /// Starts the presence task of this instance over `store` (inside a tokio runtime).
    /// With no room patterns configured the task idles: nothing ever joins.
    pub fn start(config: PresenceConfig, node_id: String, store: Arc<dyn PresenceStore>) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        let hub = Hub {
            store: store.clone(),
            ttl: config.ttl(),
            local: HashMap::new(),
            watched: HashMap::new(),
        };
        tokio::spawn(hub.run(receiver, config.window(), config.heartbeat()));
        Presence {
            inner: Arc::new(Inner {
                config,
                node_id,
                store,
                commands,
            }),
        }
    }

    /// Whether `room` has presence.
    pub fn enabled_for(&self, room: &str) -> bool {
        self.inner.config.enabled_for(room)
    }

    /// Checks a subscribe's presence fields before the subscription is made: `events`
    /// and `info` need a room with presence, and `info` must fit the bound.
    pub fn check_subscribe(
        &self,
        room: &RoomName,
        events: bool,
        info: Option<&Value>,
    ) -> Result<(), String> {
        if !events && info.is_none() {
            return Ok(());
        }
        if !self.enabled_for(room.as_str()) {
            return Err(format!("presence is not enabled for {room}"));
        }
        let max = self.inner.config.max_info_bytes;
        if let Some(info) = info {
            let size = serde_json::to_vec(info).map_or(usize::MAX, |v| v.len());
            if size > max {
                return Err(format!(
                    "`info` is {size} bytes of JSON; at most {max} are allowed"
                ));
            }
        }
        Ok(())
    }

    /// Enters `member` into the presence set of `room` (when the room has presence) and,
    /// with a `watcher`, starts sending it the room's `presence` snapshot and events.
    /// Waits (bounded) until the entry is written.
    pub async fn join(
        &self,
        member: &mut Member,
        room: &RoomName,
        info: Option<Value>,
        watcher: Option<Watcher>,
    ) {
        if !self.enabled_for(room.as_str()) || !member.rooms.insert(room.clone()) {
            return;
        }
        let entry = PresenceEntry {
            user: member.user.clone(),
            conn: member.conn.clone(),
            node: self.inner.node_id.clone(),
            joined: now_ms(),
            info,
        };
        let (done, answer) = oneshot::channel();
        let command = Command::Join {
            room: room.clone(),
            entry,
            watcher,
            done,
        };
        if self.inner.commands.send(command).is_ok() {
            let _ = tokio::time::timeout(COMMAND_WAIT, answer).await;
        }
    }

    /// Takes `member` out of `room`; waits (bounded) until no presence frame of the room
    /// can follow and the removal is written.
    pub async fn leave(&self, member: &mut Member, room: &RoomName, conn_id: u64) {
        if !member.rooms.remove(room) {
            return;
        }
        let (done, answer) = oneshot::channel();
        let command = Command::Leave {
            room: room.clone(),
            conn: member.conn.clone(),
            conn_id,
            done: Some(done),
        };
        if self.inner.commands.send(command).is_ok() {
            let _ = tokio::time::timeout(COMMAND_WAIT, answer).await;
        }
    }

    /// Takes `member` out of every room, without waiting (a connection that ended).
    pub fn leave_all(&self, member: &mut Member, conn_id: u64) {
        for room in member.rooms.drain() {
            let _ = self.inner.commands.send(Command::Leave {
                room,
                conn: member.conn.clone(),
                conn_id,
                done: None,
            });
        }
    }

    /// The room's current set, read from the store (expired entries dropped).
    pub async fn entries(&self, room: &RoomName) -> Result<Vec<PresenceEntry>, BrokerError> {
        let mut entries = self
            .inner
            .store
            .read(room, None)
            .await?
            .entries
            .unwrap_or_default();
        entries.sort_by(|a, b| (a.joined, &a.conn).cmp(&(b.joined, &b.conn)));
        Ok(entries)
    }

    /// The room's counts.
    pub async fn stats(&self, room: &RoomName) -> Result<PresenceStats, BrokerError> {
        self.inner.store.stats(room).await
    }

    /// Removes every entry of this instance from the store and stops the task (a drain
    /// or shutdown: the entries go at once instead of expiring). Bounded wait.
    pub async fn shutdown(&self) {
        let (done, answer) = oneshot::channel();
        if self.inner.commands.send(Command::Shutdown(done)).is_ok() {
            let _ = tokio::time::timeout(COMMAND_WAIT, answer).await;
        }
    }
}

/// A room in which local clients asked for events.
#[derive(Default)]
struct Watched {
    watchers: HashMap<u64, Watcher>,
    /// What the watchers were sent last (version and set); `None` before the first read.
    known: Option<(u64, Set)>,
    /// `known` encoded as a `presence` frame, per encoding: during a storm many clients
    /// get the same snapshot, encoded once.
    snapshot: [Option<crate::protocol::Encoded>; 2],
}

/// Writes of one batch for one room.
#[derive(Default)]
struct Writes {
    adds: HashMap<String, PresenceEntry>,
    removes: HashSet<String>,
}

struct Hub {
    store: Arc<dyn PresenceStore>,
    ttl: Duration,
    /// Entries of local connections, by room and connection.
    local: HashMap<RoomName, HashMap<String, PresenceEntry>>,
    watched: HashMap<RoomName, Watched>,
}

impl Hub {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        window: Duration,
        heartbeat: Duration,
    ) {
        let mut window_tick = tokio::time::interval(window);
        window_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat_tick = tokio::time::interval(heartbeat);
        heartbeat_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    let mut batch = vec![command];
                    while batch.len() < MAX_BATCH {
                        match commands.try_recv() {
                            Ok(command) => batch.push(command),
                            Err(_) => break,
                        }
                    }
                    if let Some(done) = self.apply(batch).await {
                        self.remove_everything().await;
                        let _ = done.send(());
                        return;
                    }
                }
                // An instance with nothing to read or re-write does not wake for it
                // (the conditions are evaluated anew on every turn of the loop).
                _ = window_tick.tick(), if !self.watched.is_empty() => self.poll().await,
                _ = heartbeat_tick.tick(), if !self.local.is_empty() => self.heartbeat().await,
            }
        }
    }

    /// Applies a batch of commands: writes per room, then answers. Returns the shutdown
    /// request, if the batch held one.
    async fn apply(&mut self, batch: Vec<Command>) -> Option<oneshot::Sender<()>> {
        let mut writes: HashMap<RoomName, Writes> = HashMap::new();
        let mut new_watchers: Vec<(RoomName, Watcher)> = Vec::new();
        let mut answers = Vec::new();
        let mut shutdown = None;
        for command in batch {
            match command {
                Command::Join {
                    room,
                    entry,
                    watcher,
                    done,
                } => {
                    let w = writes.entry(room.clone()).or_default();
                    w.removes.remove(&entry.conn);
                    w.adds.insert(entry.conn.clone(), entry.clone());
                    self.local
                        .entry(room.clone())
                        .or_default()
                        .insert(entry.conn.clone(), entry);
                    if let Some(watcher) = watcher {
                        new_watchers.push((room, watcher));
                    }
                    answers.push(done);
                }
                Command::Leave {
                    room,
                    conn,
                    conn_id,
                    done,
                } => {
                    let w = writes.entry(room.clone()).or_default();
                    if w.adds.remove(&conn).is_none() {
                        w.removes.insert(conn.clone());
                    }
                    if let Some(local) = self.local.get_mut(&room) {
                        local.remove(&conn);
                        if local.is_empty() {
                            self.local.remove(&room);
                        }
                    }
                    new_watchers.retain(|(r, w)| !(r == &room && w.conn_id == conn_id));
                    if let Some(watched) = self.watched.get_mut(&room) {
                        watched.watchers.remove(&conn_id);
                    }
                    answers.extend(done);
                }
                Command::Shutdown(done) => shutdown = Some(done),
            }
        }
        self.write(writes).await;
        for (room, watcher) in new_watchers {
            self.watch(room, watcher).await;
        }
        for done in answers {
            let _ = done.send(());
        }
        shutdown
    }

    /// Writes the batch's changes to the store, the rooms concurrently. A failure is
    /// logged: removed entries expire, added ones are written again by the heartbeat.
    async fn write(&self, writes: HashMap<RoomName, Writes>) {
        let store = &self.store;
        let ttl = self.ttl;
        join_all(writes.into_iter().map(|(room, w)| async move {
        if !w.removes.is_empty() {
            let conns: Vec<String> = w.removes.into_iter().collect();
            if let Err(err) = store.remove(&room, &conns).await {
                tracing::warn!(%room, error = %err, "presence removal failed; the entries expire instead");
            }
        }
        if !w.adds.is_empty() {
            let entries: Vec<PresenceEntry> = w.adds.into_values().collect();
            if let Err(err) = store.add(&room, &entries, ttl).await {
                tracing::warn!(%room, error = %err, "presence write failed; the next heartbeat retries");
            }
        }
    }))
    .await;
    }

    /// Starts sending `room`'s events to `watcher`, beginning with the set the room's
    /// other watchers were last sent (read now when there are none).
    async fn watch(&mut self, room: RoomName, watcher: Watcher) {
        let watched = self.watched.entry(room.clone()).or_default();
        if watched.known.is_none() {
            match self.store.read(&room, None).await {
                Ok(snapshot) => {
                    let set = set_of(snapshot.entries.unwrap_or_default());
                    watched.known = Some((snapshot.version, set));
                }
                Err(err) => {
                    tracing::warn!(%room, error = %err, "presence read failed; the snapshot starts empty");
                    watched.known = Some((u64::MAX, Set::new()));
                }
            }
        }
        let slot = &mut watched.snapshot[watcher.encoding.index()];
        if slot.is_none() {
            let (_, set) = watched.known.as_ref().expect("just set");
            let mut clients: Vec<PresenceEntry> = set.values().cloned().collect();
            clients.sort_by(|a, b| (a.joined, &a.conn).cmp(&(b.joined, &b.conn)));
            let frame = ServerFrame::Presence {
                id: None,
                room: room.to_string(),
                clients,
            };
            *slot = Some(watcher.encoding.encode(&frame));
        }
        let message = slot.clone().expect("just set");
        if watcher.outbound.send_or_evict(message) {
            metrics::counter!("roomcast_presence_frames_total", "kind" => "snapshot").increment(1);
            watched.watchers.insert(watcher.conn_id, watcher);
        }
    }

    /// One read per watched room; one `presence_diff` per room to its watchers when the
    /// set changed.
    async fn poll(&mut self) {
        self.watched.retain(|_, w| {
            w.watchers
                .retain(|_, watcher| !watcher.outbound.is_closed());
            !w.watchers.is_empty()
        });
        if self.watched.is_empty() {
            return;
        }
        let store = &self.store;
        let reads = join_all(self.watched.iter().map(|(room, watched)| {
            let known = watched.known.as_ref().map(|(v, _)| *v);
            async move { (room.clone(), store.read(room, known).await) }
        }))
        .await;
        for (room, result) in reads {
            let snapshot = match result {
                Ok(snapshot) => snapshot,
                Err(err) => {
                    tracing::debug!(%room, error = %err, "presence read failed; retried next window");
                    continue;
                }
            };
            let Some(entries) = snapshot.entries else {
                continue;
            };
            let Some(watched) = self.watched.get_mut(&room) else {
                continue;
            };
            let after = set_of(entries);
            let diff = match &watched.known {
                Some((_, before)) => Diff::between(before, &after),
                None => Diff::between(&Set::new(), &after),
            };
            watched.known = Some((snapshot.version, after));
            watched.snapshot = [None, None];
            if diff.is_empty() {
                continue;
            }
            let frame = ServerFrame::PresenceDiff {
                room: room.to_string(),
                joins: diff.joins,
                leaves: diff.leaves,
            };
            let mut encoded: [Option<_>; 2] = [None, None];
            for watcher in watched.watchers.values() {
                let message = encoded[watcher.encoding.index()]
                    .get_or_insert_with(|| watcher.encoding.encode(&frame))
                    .clone();
                if watcher.outbound.send_or_evict(message) {
                    metrics::counter!("roomcast_presence_frames_total", "kind" => "diff")
                        .increment(1);
                }
            }
        }
    }

    /// Re-writes every local entry (new expiry; back after a Redis restart).
    async fn heartbeat(&mut self) {
        let store = &self.store;
        let ttl = self.ttl;
        join_all(self.local.iter().map(|(room, entries)| async move {
            let entries: Vec<PresenceEntry> = entries.values().cloned().collect();
            if let Err(err) = store.add(room, &entries, ttl).await {
                tracing::debug!(%room, error = %err, "presence heartbeat failed; retried next beat");
            }
        }))
        .await;
    }

    /// Removes every local entry from the store (drain or shutdown).
    async fn remove_everything(&mut self) {
        let store = &self.store;
        let local = std::mem::take(&mut self.local);
        join_all(local.into_iter().map(|(room, entries)| async move {
            let conns: Vec<String> = entries.into_keys().collect();
            if let Err(err) = store.remove(&room, &conns).await {
                tracing::warn!(%room, error = %err, "presence removal at shutdown failed; the entries expire instead");
            }
        }))
        .await;
        self.watched.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::presence::memory::MemoryPresence;
    use crate::outbound::{Item, Items, OutboundReceiver, channel};

    fn config(window_ms: u64) -> PresenceConfig {
        PresenceConfig {
            rooms: vec!["issue:*".into()],
            heartbeat_ms: 1000,
            ttl_ms: 3000,
            window_ms,
            max_info_bytes: 16,
        }
    }

    /// Every presence frame queued so far, decoded.
    async fn frames(receiver: &mut OutboundReceiver) -> Vec<ServerFrame> {
        let mut batch = Items::default();
        receiver.take_more(&mut batch);
        batch
            .map(|item| match item {
                Item::Frame(message) => Encoding::Json.decode_server(&message).unwrap(),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn info_is_bounded_and_needs_a_presence_room() {
        let presence = Presence::start(config(50), "n".into(), Arc::new(MemoryPresence::default()));
        let room = RoomName::new_unchecked("issue:1");
        assert!(presence.check_subscribe(&room, true, None).is_ok());
        assert!(
            presence
                .check_subscribe(&room, false, Some(&serde_json::json!("short")))
                .is_ok()
        );
        let big = serde_json::json!("far more than sixteen bytes");
        assert!(presence.check_subscribe(&room, false, Some(&big)).is_err());
        let lobby = RoomName::new_unchecked("lobby");
        assert!(presence.check_subscribe(&lobby, true, None).is_err());
        assert!(presence.check_subscribe(&lobby, false, None).is_ok());
    }

    #[tokio::test]
    async fn many_joins_in_one_window_are_one_diff_per_watcher() {
        let presence =
            Presence::start(config(200), "n".into(), Arc::new(MemoryPresence::default()));
        let room = RoomName::new_unchecked("issue:1");
        let (outbound, mut receiver) = channel(64);
        let mut watcher_member = Member::new("w", &Principal::Anonymous);
        let watcher = Watcher {
            conn_id: 1,
            outbound,
            encoding: Encoding::Json,
        };
        presence
            .join(&mut watcher_member, &room, None, Some(watcher))
            .await;
        match frames(&mut receiver).await.as_slice() {
            [ServerFrame::Presence { clients, .. }] => assert_eq!(clients.len(), 1),
            other => panic!("expected one snapshot, got {other:?}"),
        }
        // 50 joins at once, then the window passes.
        let mut members: Vec<Member> = (0..50)
            .map(|i| Member::new(&format!("c{i}"), &Principal::Anonymous))
            .collect();
        for member in &mut members {
            presence.join(member, &room, None, None).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = frames(&mut receiver).await;
        let joins: usize = got
            .iter()
            .map(|f| match f {
                ServerFrame::PresenceDiff { joins, leaves, .. } => {
                    assert!(leaves.is_empty());
                    joins.len()
                }
                other => panic!("unexpected {other:?}"),
            })
            .sum();
        assert_eq!(joins, 50);
        assert!(got.len() <= 2, "{} diffs for one burst", got.len());
        assert_eq!(presence.stats(&room).await.unwrap().clients, 51);
        // Everyone leaves; the watcher leaves last and hears nothing after its leave.
        for member in &mut members {
            presence.leave(member, &room, 0).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let left: usize = frames(&mut receiver)
            .await
            .iter()
            .map(|f| match f {
                ServerFrame::PresenceDiff { leaves, .. } => leaves.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(left, 50);
        presence.leave(&mut watcher_member, &room, 1).await;
        assert_eq!(presence.stats(&room).await.unwrap().clients, 0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(frames(&mut receiver).await.is_empty());
        // A shutdown removes what is left.
        presence.join(&mut watcher_member, &room, None, None).await;
        assert_eq!(presence.stats(&room).await.unwrap().clients, 1);
        presence.shutdown().await;
        assert_eq!(presence.stats(&room).await.unwrap().clients, 0);
    }
}
