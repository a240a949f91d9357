//! The broker event channel: how a broker hands publications and resync requests to
//! this instance's rooms without waiting and without growing without limit.
//!
//! Overflow policy (the senders are the Pub/Sub tasks and the embedded broker, which
//! must never block: a blocked Pub/Sub reader stops its liveness probes too):
//! - publications go through a bounded queue (`rooms.event_queue_size`). When it is full
//!   the publication is dropped (`roomcast_fanin_dropped_total{queue="events"}`) and its
//!   room is marked for a resync instead: the room compares its position with the
//!   broker's top and fills what it missed from the replay buffer, the same path as a
//!   gap on Pub/Sub. A drop is a delay, never a silent loss, even when no later
//!   publication of that room ever comes;
//! - resync requests are control and are never dropped. They are coalesced (a room
//!   marked twice before the receiver looked is resynced once, `All` covers every room),
//!   so the set is bounded by the number of rooms, and the receiver hands them out
//!   before queued publications.

use super::{BrokerEvent, Publication, ResyncScope};
use crate::protocol::RoomName;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc};

/// A bounded event channel with room for `capacity` publications (at least 1).
pub fn channel(capacity: usize) -> (EventSender, EventReceiver) {
    let (publications, receiver) = mpsc::channel(capacity.max(1));
    let shared = Arc::new(Shared::default());
    (
        EventSender {
            publications,
            shared: shared.clone(),
        },
        EventReceiver {
            publications: receiver,
            shared,
        },
    )
}

/// What both halves share: the coalesced resync requests and the depth accounting.
#[derive(Default)]
struct Shared {
    resyncs: Mutex<Resyncs>,
    /// Wakes the receiver when a resync was requested.
    wake: Notify,
    /// Publications queued and not yet received.
    depth: AtomicUsize,
    /// Highest `depth` seen.
    peak: AtomicUsize,
}

/// Resyncs requested and not yet handed out.
#[derive(Default)]
struct Resyncs {
    all: bool,
    rooms: HashSet<RoomName>,
}

impl Resyncs {
    fn add(&mut self, scope: ResyncScope) {
        match scope {
            ResyncScope::All => self.all = true,
            ResyncScope::Rooms(rooms) => self.rooms.extend(rooms),
        }
    }

    fn take(&mut self) -> Option<ResyncScope> {
        if std::mem::take(&mut self.all) {
            self.rooms.clear();
            return Some(ResyncScope::All);
        }
        if self.rooms.is_empty() {
            return None;
        }
        Some(ResyncScope::Rooms(self.rooms.drain().collect()))
    }
}

/// Sending half, held by the broker (cheap to clone).
#[derive(Clone)]
pub struct EventSender {
    publications: mpsc::Sender<Arc<Publication>>,
    shared: Arc<Shared>,
}

impl EventSender {
    /// Hands an event to the rooms without waiting. Returns false when a publication
    /// did not fit (its room is resynced instead) or the receiver is gone.
    pub fn send(&self, event: BrokerEvent) -> bool {
        match event {
            BrokerEvent::Publication(publication) => {
                // Counted before the send so that the receiver's decrement never
                // comes first.
                let depth = self.shared.depth.fetch_add(1, Ordering::Relaxed) + 1;
                match self.publications.try_send(publication) {
                    Ok(()) => {
                        record_depth(&self.shared, depth);
                        true
                    }
                    Err(TrySendError::Full(publication)) => {
                        self.shared.depth.fetch_sub(1, Ordering::Relaxed);
                        metrics::counter!("roomcast_fanin_dropped_total", "queue" => "events")
                            .increment(1);
                        self.resync(ResyncScope::Rooms(vec![publication.room.clone()]));
                        false
                    }
                    Err(TrySendError::Closed(_)) => {
                        self.shared.depth.fetch_sub(1, Ordering::Relaxed);
                        false
                    }
                }
            }
            BrokerEvent::Resync(scope) => {
                self.resync(scope);
                !self.publications.is_closed()
            }
        }
    }

    fn resync(&self, scope: ResyncScope) {
        self.shared
            .resyncs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .add(scope);
        self.shared.wake.notify_one();
    }
}

/// Receiving half, read by the room dispatcher.
pub struct EventReceiver {
    publications: mpsc::Receiver<Arc<Publication>>,
    shared: Arc<Shared>,
}

impl EventReceiver {
    /// The next event: pending resyncs first, then queued publications. `None` once
    /// every sender is gone and nothing is left.
    pub async fn recv(&mut self) -> Option<BrokerEvent> {
        loop {
            if let Some(scope) = self.take_resync() {
                return Some(BrokerEvent::Resync(scope));
            }
            tokio::select! {
                biased;
                () = self.shared.wake.notified() => {}
                publication = self.publications.recv() => {
                    let Some(publication) = publication else {
                        return self.take_resync().map(BrokerEvent::Resync);
                    };
                    self.received();
                    return Some(BrokerEvent::Publication(publication));
                }
            }
        }
    }

    /// The next event if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Option<BrokerEvent> {
        if let Some(scope) = self.take_resync() {
            return Some(BrokerEvent::Resync(scope));
        }
        let publication = self.publications.try_recv().ok()?;
        self.received();
        Some(BrokerEvent::Publication(publication))
    }

    fn received(&self) {
        let depth = self.shared.depth.fetch_sub(1, Ordering::Relaxed) - 1;
        crate::telemetry::metrics::per_publication()
            .events_depth
            .set(depth as f64);
    }

    fn take_resync(&self) -> Option<ResyncScope> {
        self.shared
            .resyncs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

fn record_depth(shared: &Shared, depth: usize) {
    crate::telemetry::metrics::per_publication()
        .events_depth
        .set(depth as f64);
    if shared.peak.fetch_max(depth, Ordering::Relaxed) < depth {
        metrics::gauge!("roomcast_fanin_queue_peak", "queue" => "events").set(depth as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Epoch;

    fn publication(room: &str, seq: u64) -> BrokerEvent {
        BrokerEvent::Publication(Arc::new(Publication {
            room: RoomName::new_unchecked(room),
            epoch: Epoch::new("e"),
            seq,
            time_ms: 0,
            id: seq,
            data: serde_json::Value::Null,
            trace: None,
        }))
    }

    fn seq(event: BrokerEvent) -> u64 {
        match event {
            BrokerEvent::Publication(p) => p.seq,
            BrokerEvent::Resync(scope) => panic!("expected a publication, got {scope:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_publications_and_resyncs_their_room() {
        let (tx, mut rx) = channel(2);
        assert!(tx.send(publication("a", 1)));
        assert!(tx.send(publication("a", 2)));
        assert!(!tx.send(publication("a", 3)), "beyond the bound");
        assert!(!tx.send(publication("a", 4)));
        // The resync comes first, once for both drops, then what was queued.
        match rx.recv().await.unwrap() {
            BrokerEvent::Resync(ResyncScope::Rooms(rooms)) => {
                assert_eq!(rooms, vec![RoomName::new_unchecked("a")]);
            }
            other => panic!("expected a resync of room a, got {other:?}"),
        }
        assert_eq!(seq(rx.recv().await.unwrap()), 1);
        assert_eq!(seq(rx.recv().await.unwrap()), 2);
        assert!(tx.send(publication("a", 5)), "room again once drained");
        assert_eq!(seq(rx.recv().await.unwrap()), 5);
    }

    #[tokio::test]
    async fn resyncs_are_never_dropped_and_all_covers_rooms() {
        let (tx, mut rx) = channel(1);
        assert!(tx.send(publication("a", 1)));
        assert!(tx.send(BrokerEvent::Resync(ResyncScope::Rooms(vec![
            RoomName::new_unchecked("b")
        ]))));
        assert!(tx.send(BrokerEvent::Resync(ResyncScope::All)));
        assert!(matches!(
            rx.recv().await.unwrap(),
            BrokerEvent::Resync(ResyncScope::All)
        ));
        assert_eq!(seq(rx.recv().await.unwrap()), 1);
        drop(tx);
        assert!(
            rx.recv().await.is_none(),
            "closed when every sender is gone"
        );
    }

    #[tokio::test]
    async fn a_resync_wakes_a_waiting_receiver() {
        let (tx, mut rx) = channel(4);
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.send(BrokerEvent::Resync(ResyncScope::All));
        let event = waiting.await.unwrap();
        assert!(matches!(event, Some(BrokerEvent::Resync(ResyncScope::All))));
    }
}
