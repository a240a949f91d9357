//! The broker: sequencing, replay buffer, idempotency and cross-instance fan-out behind
//! one small trait, so that the room and connection actors never know which one runs.
//!
//! - [`MemoryBroker`]: in-process, for a single instance (the default).
//! - [`RedisBroker`]: shared by every instance pointed at one Redis or Redis Cluster.
//!
//! Contract every implementation keeps (the conformance tests in `tests/` check it):
//! 1. `publish` assigns the room's next sequence number, stores the publication in the
//!    replay buffer and checks the idempotency key in one atomic step, and returns only
//!    after that step; a repeated key within the window returns the original ack.
//! 2. Every publication of a room this instance is subscribed to is sent as a
//!    [`BrokerEvent::Publication`], in sequence order per room — possibly with gaps (a
//!    lossy transport, or a full event queue, which resyncs the room instead: see
//!    [`event_channel`]), never reordered within one connection to the broker.
//! 3. `history` returns the room's top position and buffered publications; reading a
//!    room that never existed creates its epoch, so positions are always meaningful.
//! 4. `subscribe`/`unsubscribe` are idempotent set operations per room.

mod events;
pub mod membership;
mod memory;
pub mod presence;
mod redis;

pub use events::{EventReceiver, EventSender, channel as event_channel};
pub use memory::MemoryBroker;
pub use redis::{
    PUBLISH_BATCH_MAX, RedisBroker, RedisSettings, check_url as check_redis_url,
    publish_batch_command, publish_command, publish_library_load,
};

use crate::protocol::{ErrorCode, RoomName};
use crate::stream::{Epoch, Position};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;

/// One sequenced message of a room.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    /// The room.
    pub room: RoomName,
    /// The room's epoch when it was sequenced.
    pub epoch: Epoch,
    /// Its sequence number within the epoch.
    pub seq: u64,
    /// When it was sequenced, ms since the Unix epoch.
    pub time_ms: u64,
    /// Random id given at publish: tells a repeated delivery of this publication (same
    /// id) from a different publication that reused its sequence number (a rewound
    /// stream).
    pub id: u64,
    /// The published value.
    pub data: Value,
    /// W3C `traceparent` of the publish, when it was traced.
    pub trace: Option<String>,
}

impl Publication {
    /// The position right after this publication.
    pub fn position(&self) -> Position {
        Position::new(self.epoch.clone(), self.seq)
    }
}

/// What a publisher sends.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishRequest {
    /// The value to publish.
    pub data: Value,
    /// Idempotency key; a retry with the same key gets the original ack.
    pub idempotency_key: Option<String>,
    /// W3C `traceparent` of the publish, carried to every instance's fan-out.
    pub trace: Option<String>,
    /// How long the key is remembered.
    pub key_retention: KeyRetention,
}

/// How long a broker remembers a publish's idempotency key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyRetention {
    /// For the dedupe window (`history.idempotency_window_secs`): long enough for a
    /// client's retries.
    #[default]
    Window,
    /// As long as the room's epoch lives (`history.meta_ttl_secs` after its last
    /// publish; the room's count bound still applies): the outbox relay's keys, so that a
    /// relay that crashed between a publish and its bookkeeping never publishes the event
    /// twice, however late it comes back. The in-process broker loses its rooms with its
    /// process, so it keeps every key for the window only.
    Epoch,
}

/// The broker's answer to a publish: it is sequenced and stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    /// Epoch and sequence number assigned.
    pub position: Position,
    /// When it was sequenced, ms since the Unix epoch.
    pub time_ms: u64,
    /// True when the key had already been published (this is the original ack).
    pub duplicate: bool,
}

/// Which part of the replay buffer to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryQuery {
    /// The newest `limit` publications.
    Latest {
        /// Most publications returned.
        limit: usize,
    },
    /// Up to `limit` publications with a sequence number above `seq`, oldest first.
    After {
        /// Exclusive lower bound.
        seq: u64,
        /// Most publications returned.
        limit: usize,
    },
}

/// A read of a room's replay buffer.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The room's current top: its epoch and last assigned sequence number.
    pub top: Position,
    /// Sequence number of the oldest buffered publication (`None`: buffer empty).
    pub first_seq: Option<u64>,
    /// The requested publications, oldest first.
    pub publications: Vec<Arc<Publication>>,
}

/// What a broker pushes to its instance.
#[derive(Debug, Clone)]
pub enum BrokerEvent {
    /// A publication of a room this instance is subscribed to.
    Publication(Arc<Publication>),
    /// Messages of these rooms may have been lost or may be being lost (a fan-out
    /// connection died, was re-established, or a room's channel moved to another
    /// server): each room compares its position with the broker's top, fills what it
    /// missed, and until that succeeds checks with the broker before answering a
    /// subscribe.
    Resync(ResyncScope),
}

/// Which rooms a [`BrokerEvent::Resync`] concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResyncScope {
    /// Every room of this instance.
    All,
    /// These rooms only (those served by one failed part of the broker).
    Rooms(Vec<RoomName>),
}

/// Broker failures, as seen by callers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached; nothing was done.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker did not answer in time; the operation may or may not have happened.
    #[error("broker timed out: {0}")]
    Timeout(String),
    /// Anything else (a bug or corrupt data).
    #[error("broker error: {0}")]
    Internal(String),
}

impl BrokerError {
    /// The protocol error code to report to a client.
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::Unavailable(_) => ErrorCode::Unavailable,
            BrokerError::Timeout(_) => ErrorCode::Timeout,
            BrokerError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Whether the broker is usable right now (for `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerStatus {
    /// True when publishes can be served.
    pub ready: bool,
    /// Short explanation for operators.
    pub detail: String,
}

/// How the fan-out connection is doing, as this instance sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PubSubHealth {
    /// Time since the latest liveness probe came back (`None`: none yet).
    pub probe_age: Option<std::time::Duration>,
    /// Lag of the latest publication received: from its sequencing to its arrival here.
    pub lag_seconds: f64,
}

/// Sequencing, replay buffer and fan-out. See the module documentation for the contract.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Short name for logs (`memory`, `redis`).
    fn kind(&self) -> &'static str;

    /// Sequences and stores a publication; see contract point 1.
    async fn publish(
        &self,
        room: &RoomName,
        request: PublishRequest,
    ) -> Result<PublishAck, BrokerError>;

    /// Reads the replay buffer; see contract point 3.
    async fn history(
        &self,
        room: &RoomName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, BrokerError>;

    /// Starts receiving the room's publications as events.
    async fn subscribe(&self, room: &RoomName) -> Result<(), BrokerError>;

    /// Stops receiving the room's publications.
    async fn unsubscribe(&self, room: &RoomName) -> Result<(), BrokerError>;

    /// Starts a new epoch for the room if its epoch is still `stale`; returns the top
    /// afterwards. Called when an instance sees the room's stream go backwards (a top
    /// below what it already delivered), so that reused sequence numbers can never be
    /// mistaken for ones clients already have.
    async fn reset_epoch(&self, room: &RoomName, stale: &Epoch) -> Result<Position, BrokerError>;

    /// Current health.
    fn status(&self) -> BrokerStatus;

    /// The fan-out connection's probe age and lag; `None` for a broker without one (the
    /// embedded broker).
    fn pubsub_health(&self) -> Option<PubSubHealth> {
        None
    }

    /// Where instances announce themselves to each other (called once at start). The
    /// embedded broker's store is in process: it knows only its own instance.
    fn membership_store(&self) -> Arc<dyn membership::MembershipStore> {
        Arc::new(membership::MemoryMembership::default())
    }

    /// A store for presence sets that every instance sharing this broker sees (called
    /// once at start). The embedded broker's is in process.
    fn presence_store(&self) -> Arc<dyn presence::PresenceStore> {
        Arc::new(presence::memory::MemoryPresence::default())
    }
}

/// Replay-buffer and idempotency settings shared by every broker implementation.
#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// Most publications buffered per room.
    pub size: usize,
    /// Longest a publication stays buffered (ms).
    pub ttl_ms: u64,
    /// How long an idle room keeps its epoch and seq (ms).
    pub meta_ttl_ms: u64,
    /// Idempotency window (ms).
    pub idempotency_window_ms: u64,
    /// Idempotency keys remembered per room by the embedded broker (Redis keeps each
    /// key for its lifetime, however many a room has).
    pub idempotency_max_keys: usize,
}

impl HistorySettings {
    /// Settings from the `[history]` configuration section.
    pub fn from_config(config: &crate::config::HistoryConfig) -> Self {
        HistorySettings {
            size: config.size,
            ttl_ms: config.ttl_secs * 1000,
            meta_ttl_ms: config.meta_ttl_secs * 1000,
            idempotency_window_ms: config.idempotency_window_secs * 1000,
            idempotency_max_keys: config.idempotency_max_keys,
        }
    }
}

/// A history read as clients see it (the WebSocket `history` frame and the HTTP history
/// route share it).
#[derive(Debug, Clone)]
pub struct HistoryReply {
    /// The room's top.
    pub top: Position,
    /// With `since`: whether the messages continue exactly from it.
    pub recovered: Option<bool>,
    /// Messages, oldest first (none when `since` could not be honoured).
    pub publications: Vec<Arc<Publication>>,
}

/// Reads up to `limit` messages after `since` (or the newest ones without it). When
/// `since` cannot be continued exactly, says so and returns no messages, never a partial
/// replay.
pub async fn read_history(
    broker: &dyn Broker,
    room: &RoomName,
    since: Option<&Position>,
    limit: usize,
) -> Result<HistoryReply, BrokerError> {
    let query = match since {
        Some(since) => HistoryQuery::After {
            seq: since.seq,
            limit,
        },
        None => HistoryQuery::Latest { limit },
    };
    let page = broker.history(room, query).await?;
    let recovered = since.map(|since| {
        matches!(
            crate::stream::recover(since, &page.top, page.first_seq),
            crate::stream::Recovery::UpToDate | crate::stream::Recovery::Replay { .. }
        )
    });
    Ok(HistoryReply {
        top: page.top,
        publications: if recovered == Some(false) {
            Vec::new()
        } else {
            page.publications
        },
        recovered,
    })
}

/// The broker the configuration asks for: Redis when `redis_url` is set, else the
/// embedded one. Must be called inside a tokio runtime.
pub fn from_config(
    config: &crate::config::Config,
    node_id: &str,
    events: EventSender,
) -> Result<Arc<dyn Broker>, BrokerError> {
    let history = HistorySettings::from_config(&config.history);
    if config.redis_url.is_empty() {
        Ok(Arc::new(MemoryBroker::new(history, events)))
    } else {
        Ok(Arc::new(RedisBroker::start(
            &config.redis_url,
            node_id,
            history,
            RedisSettings::from_config(&config.redis),
            events,
        )?))
    }
}
