//! Simulated users: each one is a resilient roomcast client subscribed to its rooms,
//! checking every room's sequence numbers into a ledger, measuring publish-to-receive
//! latency, and timing how long it takes to be whole again after losing its connection.

use crate::accounting::{RoomLedger, Tally};
use crate::stats::{Live, now_micros};
use roomcast::client::{Client, ClientConfig, Event};
use roomcast::stream::{Epoch, Position};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One room as one user sees it.
pub struct RoomSlot {
    /// Index of the room in the scenario.
    pub room: usize,
    /// Its name.
    pub name: String,
    /// The epoch the server told the user about.
    epoch: Option<Epoch>,
    /// What arrived.
    pub ledger: RoomLedger,
    /// Subscribed on the current connection.
    active: bool,
}

impl RoomSlot {
    /// Room number `room`, called `name`, before its first subscription.
    fn new(room: usize, name: String) -> RoomSlot {
        RoomSlot {
            room,
            name,
            epoch: None,
            ledger: RoomLedger::default(),
            active: false,
        }
    }

    /// The server said continuity was lost and live messages continue after `position`.
    fn announced_loss(&mut self, position: &Position) {
        if self.epoch.as_ref() == Some(&position.epoch) {
            self.ledger.reset(position.seq);
        } else {
            self.epoch = Some(position.epoch.clone());
            self.ledger.restart(position.seq);
        }
    }

    /// The verdict, given the room's highest acknowledged position.
    pub fn tally(&self, top: Option<&Position>) -> Tally {
        match top {
            Some(top) if Some(&top.epoch) == self.epoch.as_ref() => self.ledger.tally(top.seq),
            // Nothing acknowledged in the epoch this user follows: no tail is expected.
            _ => self.ledger.tally(self.ledger.last()),
        }
    }
}

/// What one user received, shared with the coordinator.
pub struct UserBook {
    /// The user's number.
    pub index: usize,
    /// Its rooms.
    pub rooms: Vec<RoomSlot>,
    /// Since when the user has been missing a connection or a room (after having had all).
    lost_at: Option<Instant>,
    /// Every room was subscribed at least once.
    ready: bool,
    /// Connections after the first (moves to another, or the same, instance).
    pub moves: usize,
}

/// A running simulated user.
pub struct User {
    /// What it received so far.
    pub book: Arc<Mutex<UserBook>>,
    client: Arc<Client>,
    task: JoinHandle<()>,
}

impl User {
    /// Starts a user that subscribes to `rooms` (index, name) through `config`.
    pub fn start(
        index: usize,
        config: ClientConfig,
        rooms: Vec<(usize, String)>,
        live: Arc<Live>,
        mut stop: watch::Receiver<bool>,
    ) -> User {
        let book = Arc::new(Mutex::new(UserBook {
            index,
            rooms: rooms
                .iter()
                .map(|(room, name)| RoomSlot::new(*room, name.clone()))
                .collect(),
            lost_at: None,
            ready: false,
            moves: 0,
        }));
        let (client, events) = Client::start(config);
        let client = Arc::new(client);
        let subscriber = client.clone();
        let subscribe_live = live.clone();
        let task_book = book.clone();
        let task = tokio::spawn(async move {
            let subscribe = async move {
                for (_, name) in &rooms {
                    if subscriber.subscribe(name).await.is_err() {
                        subscribe_live.gave_up.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            };
            let follow = follow_events(index, events, task_book, live);
            tokio::pin!(subscribe);
            tokio::pin!(follow);
            let mut subscribed = false;
            loop {
                tokio::select! {
                    _ = &mut subscribe, if !subscribed => subscribed = true,
                    _ = &mut follow => return,
                    _ = stop.changed() => return,
                }
            }
        });
        User { book, client, task }
    }

    /// Closes the user's connection.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        if let Ok(client) = Arc::try_unwrap(self.client) {
            client.stop().await;
        }
    }
}

async fn follow_events(
    index: usize,
    mut events: mpsc::Receiver<Event>,
    book: Arc<Mutex<UserBook>>,
    live: Arc<Live>,
) {
    while let Some(event) = events.recv().await {
        if let Event::Message { data, .. } = &event
            && let Some(sent) = data.get("t").and_then(|t| t.as_u64())
        {
            live.delivery(index, now_micros().saturating_sub(sent));
        }
        let mut book = book.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if book.apply(event, &live) {
            return;
        }
    }
}

impl UserBook {
    /// Applies one client event; true when the client gave up.
    fn apply(&mut self, event: Event, live: &Live) -> bool {
        match event {
            Event::Message {
                room, epoch, seq, ..
            } => {
                if let Some(slot) = self.slot(&room) {
                    if slot.epoch.as_ref() == Some(&epoch) {
                        slot.ledger.message(seq);
                    } else {
                        slot.ledger.foreign_epoch();
                    }
                }
            }
            Event::Subscribed {
                room,
                position,
                recovered,
                resumed,
                ..
            } => {
                if let Some(slot) = self.slot(&room) {
                    if !resumed {
                        slot.epoch = Some(position.epoch.clone());
                        slot.ledger.subscribed(position.seq);
                    } else if !recovered {
                        slot.announced_loss(&position);
                    }
                    slot.active = true;
                }
                self.on_room_active(live);
            }
            Event::Reset { room, position, .. } => {
                if let Some(slot) = self.slot(&room) {
                    slot.announced_loss(&position);
                }
            }
            Event::Disconnected { .. } => {
                live.disconnects.fetch_add(1, Ordering::Relaxed);
                let was_whole = self.ready && self.lost_at.is_none();
                if was_whole {
                    live.connected.fetch_sub(1, Ordering::Relaxed);
                    self.lost_at = Some(Instant::now());
                }
                for slot in &mut self.rooms {
                    slot.active = false;
                }
            }
            Event::Stopped { .. } => {
                live.gave_up.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Event::Connected { reconnect, .. } => self.moves += usize::from(reconnect),
            Event::Presence { .. } | Event::PresenceDiff { .. } => {}
        }
        false
    }

    fn slot(&mut self, room: &str) -> Option<&mut RoomSlot> {
        self.rooms.iter_mut().find(|slot| slot.name == room)
    }

    /// Counts the user as connected once every room is active again.
    fn on_room_active(&mut self, live: &Live) {
        if !self.rooms.iter().all(|slot| slot.active) {
            return;
        }
        if !self.ready {
            self.ready = true;
            live.ready.fetch_add(1, Ordering::Relaxed);
            live.connected.fetch_add(1, Ordering::Relaxed);
        } else if let Some(lost_at) = self.lost_at.take() {
            live.resumed(lost_at.elapsed());
            live.connected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The verdict for every room, given the rooms' highest acknowledged positions.
    pub fn tallies<'a>(
        &'a self,
        tops: &'a [Option<Position>],
    ) -> impl Iterator<Item = (&'a RoomSlot, Tally)> + 'a {
        self.rooms.iter().map(move |slot| {
            (
                slot,
                slot.tally(tops.get(slot.room).and_then(Option::as_ref)),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn book(rooms: &[&str]) -> UserBook {
        UserBook {
            index: 0,
            rooms: rooms
                .iter()
                .enumerate()
                .map(|(room, name)| RoomSlot::new(room, (*name).to_owned()))
                .collect(),
            lost_at: None,
            ready: false,
            moves: 0,
        }
    }

    fn subscribed(room: &str, epoch: &str, seq: u64, resumed: bool, recovered: bool) -> Event {
        Event::Subscribed {
            room: room.into(),
            position: Position::new(Epoch::new(epoch), seq),
            recovered,
            replayed: 0,
            resumed,
        }
    }

    fn message(room: &str, epoch: &str, seq: u64) -> Event {
        Event::Message {
            room: room.into(),
            epoch: Epoch::new(epoch),
            seq,
            time_ms: 0,
            data: json!({}),
        }
    }

    #[test]
    fn a_user_is_connected_once_every_room_is_subscribed_and_resumes_are_timed() {
        let live = Live::default();
        let mut user = book(&["a", "b"]);
        user.apply(subscribed("a", "e", 0, false, false), &live);
        assert_eq!(live.connected.load(Ordering::Relaxed), 0);
        user.apply(subscribed("b", "e", 5, false, false), &live);
        assert_eq!(live.connected.load(Ordering::Relaxed), 1);
        user.apply(Event::Disconnected { code: None }, &live);
        assert_eq!(live.connected.load(Ordering::Relaxed), 0);
        user.apply(subscribed("a", "e", 0, true, true), &live);
        user.apply(subscribed("b", "e", 5, true, true), &live);
        assert_eq!(live.connected.load(Ordering::Relaxed), 1);
        assert_eq!(live.resume_times().len(), 1);
        assert_eq!(Live::get(&live.ready), 1);
    }

    #[test]
    fn messages_are_checked_per_room_and_epoch() {
        let live = Live::default();
        let mut user = book(&["a"]);
        user.apply(subscribed("a", "e1", 0, false, false), &live);
        for seq in [1, 2, 2] {
            user.apply(message("a", "e1", seq), &live);
        }
        user.apply(message("a", "e2", 1), &live);
        let tops = [Some(Position::new(Epoch::new("e1"), 3))];
        let (_, tally) = user.tallies(&tops).next().unwrap();
        assert_eq!(
            (tally.missing, tally.duplicated, tally.foreign_epoch),
            (1, 1, 1)
        );
    }

    #[test]
    fn an_unrecovered_resume_is_an_announced_loss() {
        let live = Live::default();
        let mut user = book(&["a"]);
        user.apply(subscribed("a", "e1", 0, false, false), &live);
        user.apply(message("a", "e1", 1), &live);
        user.apply(Event::Disconnected { code: None }, &live);
        user.apply(subscribed("a", "e2", 7, true, false), &live);
        user.apply(message("a", "e2", 8), &live);
        let tops = [Some(Position::new(Epoch::new("e2"), 8))];
        let (_, tally) = user.tallies(&tops).next().unwrap();
        assert!(tally.is_clean());
        assert_eq!(tally.announced_losses, 1);
    }
}
