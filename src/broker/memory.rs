//! The in-process broker of a single instance: every room's stream lives in this
//! process's memory. Nothing survives a restart (rooms then get new epochs, so resumes
//! after a restart correctly report `recovered: false`).

use super::{
    Broker, BrokerError, BrokerEvent, BrokerStatus, EventSender, HistoryPage, HistoryQuery,
    HistorySettings, Publication, PublishAck, PublishRequest,
};
use crate::protocol::RoomName;
use crate::stream::{DedupeWindow, Epoch, Position, ReplayBuffer, unix_ms};
use async_trait::async_trait;
use dashmap::{DashMap, DashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// One room's stream: the sequencer, its replay buffer and idempotency window.
struct RoomStream {
    epoch: Epoch,
    seq: u64,
    last_activity_ms: u64,
    buffer: ReplayBuffer<Arc<Publication>>,
    dedupe: DedupeWindow<PublishAck>,
}

impl RoomStream {
    fn new(settings: &HistorySettings, now_ms: u64) -> Self {
        RoomStream {
            epoch: Epoch::generate(),
            seq: 0,
            last_activity_ms: now_ms,
            buffer: ReplayBuffer::new(settings.size, settings.ttl_ms),
            dedupe: DedupeWindow::new(
                settings.idempotency_window_ms,
                settings.idempotency_max_keys,
            ),
        }
    }

    fn top(&self) -> Position {
        Position::new(self.epoch.clone(), self.seq)
    }
}

/// In-process [`Broker`].
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

struct Inner {
    settings: HistorySettings,
    /// Each stream behind its own lock: publishes to different rooms never contend, and
    /// a room's events are sent while its lock is held, so they leave in seq order.
    streams: DashMap<RoomName, Arc<Mutex<RoomStream>>>,
    subscribed: DashSet<RoomName>,
    events: EventSender,
}

impl MemoryBroker {
    /// A broker pushing events into `events`. Spawns a sweeper task (so it must be called
    /// inside a tokio runtime) that ends when the broker is dropped.
    pub fn new(settings: HistorySettings, events: EventSender) -> Self {
        let inner = Arc::new(Inner {
            settings,
            streams: DashMap::new(),
            subscribed: DashSet::new(),
            events,
        });
        tokio::spawn(sweep_periodically(Arc::downgrade(&inner)));
        MemoryBroker { inner }
    }

    /// Forgets idle streams and expired buffered publications as of `now_ms`. Runs
    /// periodically on its own; public so tests can drive it with a chosen clock.
    pub fn sweep(&self, now_ms: u64) {
        self.inner.sweep(now_ms);
    }
}

impl Inner {
    fn stream(&self, room: &RoomName, now_ms: u64) -> Arc<Mutex<RoomStream>> {
        if let Some(stream) = self.streams.get(room) {
            return stream.clone();
        }
        self.streams
            .entry(room.clone())
            .or_insert_with(|| Arc::new(Mutex::new(RoomStream::new(&self.settings, now_ms))))
            .clone()
    }

    fn sweep(&self, now_ms: u64) {
        let meta_ttl = self.settings.meta_ttl_ms;
        self.streams.retain(|_, stream| {
            let mut stream = lock(stream);
            stream.buffer.prune(now_ms);
            stream.dedupe.expire(now_ms);
            now_ms.saturating_sub(stream.last_activity_ms) <= meta_ttl
        });
    }
}

async fn sweep_periodically(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        inner.sweep(unix_ms());
    }
}

/// Locks a stream. A panic while holding it cannot leave the stream half-updated in a way
/// that matters (each field is updated by one statement), so poisoning is ignored.
fn lock(stream: &Mutex<RoomStream>) -> std::sync::MutexGuard<'_, RoomStream> {
    stream
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait]
impl Broker for MemoryBroker {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn publish(
        &self,
        room: &RoomName,
        request: PublishRequest,
    ) -> Result<PublishAck, BrokerError> {
        let now = unix_ms();
        let stream = self.inner.stream(room, now);
        let mut stream = lock(&stream);
        if let Some(key) = &request.idempotency_key
            && let Some(original) = stream.dedupe.get(key, now)
        {
            return Ok(PublishAck {
                duplicate: true,
                ..original
            });
        }
        stream.seq += 1;
        stream.last_activity_ms = now;
        let publication = Arc::new(Publication {
            room: room.clone(),
            epoch: stream.epoch.clone(),
            seq: stream.seq,
            time_ms: now,
            id: rand::random(),
            data: request.data,
            trace: request.trace,
        });
        let seq = stream.seq;
        stream.buffer.prune(now);
        stream
            .buffer
            .push(seq, now, publication.clone())
            .map_err(|e| BrokerError::Internal(e.to_string()))?;
        let ack = PublishAck {
            position: stream.top(),
            time_ms: now,
            duplicate: false,
        };
        if let Some(key) = request.idempotency_key {
            stream.dedupe.insert(key, ack.clone(), now);
        }
        if self.inner.subscribed.contains(room) {
            // Sent under the stream lock: events of one room leave in sequence order.
            // A closed channel means the instance is shutting down; nothing to deliver to.
            let _ = self
                .inner
                .events
                .send(BrokerEvent::Publication(publication));
        }
        Ok(ack)
    }

    async fn history(
        &self,
        room: &RoomName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, BrokerError> {
        let now = unix_ms();
        let stream = self.inner.stream(room, now);
        let mut stream = lock(&stream);
        stream.buffer.prune(now);
        let publications = match query {
            HistoryQuery::Latest { limit } => stream.buffer.latest(limit),
            HistoryQuery::After { seq, limit } => stream.buffer.after(seq, limit),
        };
        Ok(HistoryPage {
            top: stream.top(),
            first_seq: stream.buffer.first_seq(),
            publications,
        })
    }

    async fn subscribe(&self, room: &RoomName) -> Result<(), BrokerError> {
        self.inner.subscribed.insert(room.clone());
        Ok(())
    }

    async fn unsubscribe(&self, room: &RoomName) -> Result<(), BrokerError> {
        self.inner.subscribed.remove(room);
        Ok(())
    }

    async fn reset_epoch(&self, room: &RoomName, stale: &Epoch) -> Result<Position, BrokerError> {
        let stream = self.inner.stream(room, unix_ms());
        let mut stream = lock(&stream);
        if &stream.epoch == stale {
            stream.epoch = Epoch::generate();
            stream.seq = 0;
            stream.buffer.clear();
            stream.dedupe.clear();
        }
        Ok(stream.top())
    }

    fn status(&self) -> BrokerStatus {
        BrokerStatus {
            ready: true,
            detail: "embedded broker".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> HistorySettings {
        HistorySettings {
            size: 3,
            ttl_ms: 60_000,
            meta_ttl_ms: 120_000,
            idempotency_window_ms: 60_000,
            idempotency_max_keys: 100,
        }
    }

    fn request(n: u64, key: Option<&str>) -> PublishRequest {
        PublishRequest {
            data: json!({ "n": n }),
            idempotency_key: key.map(str::to_owned),
            trace: None,
            key_retention: Default::default(),
        }
    }

    #[tokio::test]
    async fn sequences_buffers_and_dedupes() {
        let (tx, mut rx) = crate::broker::event_channel(16);
        let broker = MemoryBroker::new(settings(), tx);
        let room = RoomName::new_unchecked("r");
        broker.subscribe(&room).await.unwrap();
        let first = broker.publish(&room, request(1, Some("a"))).await.unwrap();
        assert_eq!(first.position.seq, 1);
        let retry = broker.publish(&room, request(1, Some("a"))).await.unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.position, first.position);
        for n in 2..=5 {
            broker.publish(&room, request(n, None)).await.unwrap();
        }
        let page = broker
            .history(&room, HistoryQuery::After { seq: 0, limit: 10 })
            .await
            .unwrap();
        assert_eq!(page.top.seq, 5);
        assert_eq!(page.first_seq, Some(3), "count bound keeps 3");
        assert_eq!(page.publications.len(), 3);
        let mut seqs = Vec::new();
        while seqs.len() < 5 {
            match rx.recv().await {
                Some(BrokerEvent::Publication(p)) => seqs.push(p.seq),
                other => panic!("expected a publication, got {other:?}"),
            }
        }
        assert_eq!(seqs, vec![1, 2, 3, 4, 5], "one event per sequenced publish");
    }

    #[tokio::test]
    async fn idle_streams_are_forgotten_and_get_a_new_epoch() {
        let (tx, _rx) = crate::broker::event_channel(16);
        let broker = MemoryBroker::new(settings(), tx);
        let room = RoomName::new_unchecked("r");
        let ack = broker.publish(&room, request(1, None)).await.unwrap();
        broker.sweep(unix_ms() + 200_000);
        let page = broker
            .history(&room, HistoryQuery::Latest { limit: 10 })
            .await
            .unwrap();
        assert_ne!(page.top.epoch, ack.position.epoch);
        assert_eq!(page.top.seq, 0);
    }
}
