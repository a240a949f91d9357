//! A connection's publishes, several in flight at once.
//!
//! Each room a connection publishes to gets a lane: a task that sends that room's
//! publishes to the broker one after another, in the order the client sent them, so the
//! sequence numbers of one client's publishes to one room follow its sending order.
//! Lanes of different rooms run side by side, so a publish to a room whose Redis node is
//! failing over does not hold up publishes to rooms on healthy nodes, and every queued
//! publish gets its own answer within the broker's bound instead of waiting its turn
//! behind a slow one.
//!
//! At most [`MAX_IN_FLIGHT`] publishes of one connection are unanswered at a time; past
//! that, the connection reads no further frames until one is answered (backpressure to
//! the client's socket, as for any other request). A lane ends when it has nothing left.

use super::context::ConnectionContext;
use crate::broker::PublishRequest;
use crate::outbound::Outbound;
use crate::protocol::{Encoding, ErrorCode, RoomName, ServerFrame};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Most unanswered publishes per connection.
pub const MAX_IN_FLIGHT: usize = 32;

/// The publish lanes of one connection (empty and unallocated until its first publish).
#[derive(Default)]
pub struct Publishing {
    lanes: HashMap<RoomName, Lane>,
    in_flight: Option<Arc<Semaphore>>,
}

/// The sending end of one room's lane.
struct Lane {
    jobs: mpsc::UnboundedSender<Job>,
    /// Publishes sent to the lane and not answered yet.
    pending: Arc<AtomicUsize>,
}

/// One publish waiting in a lane.
struct Job {
    id: Option<u64>,
    request: PublishRequest,
    _permit: OwnedSemaphorePermit,
}

/// Where a lane sends its answers.
#[derive(Clone)]
pub struct Replies {
    /// The connection, for logs.
    pub conn_id: u64,
    /// Its outbound queue.
    pub outbound: Outbound,
    /// Its encoding.
    pub encoding: Encoding,
}

impl Replies {
    /// Queues a frame to the client.
    pub fn send(&self, frame: &ServerFrame) {
        self.outbound.send_or_evict(self.encoding.encode(frame));
    }

    /// Queues an error answer, counted and logged at debug level.
    pub fn send_error(&self, id: Option<u64>, code: ErrorCode, message: impl Into<String>) {
        let message = message.into();
        tracing::debug!(conn = self.conn_id, code = code.name(), %message, "request refused");
        metrics::counter!("roomcast_protocol_errors_total", "code" => code.name()).increment(1);
        self.send(&ServerFrame::error(id, code, message));
    }
}

impl Publishing {
    /// Hands a publish to its room's lane; waits only while [`MAX_IN_FLIGHT`] publishes
    /// of this connection are unanswered.
    pub async fn submit(
        &mut self,
        context: &Arc<ConnectionContext>,
        replies: &Replies,
        room: RoomName,
        id: Option<u64>,
        request: PublishRequest,
    ) {
        let in_flight = self
            .in_flight
            .get_or_insert_with(|| Arc::new(Semaphore::new(MAX_IN_FLIGHT)))
            .clone();
        let permit = in_flight
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        // Lanes with nothing pending have finished their work: let them end.
        self.lanes
            .retain(|_, lane| lane.pending.load(Ordering::Acquire) > 0);
        let lane = self
            .lanes
            .entry(room.clone())
            .or_insert_with(|| Lane::start(context.clone(), replies.clone(), room));
        lane.pending.fetch_add(1, Ordering::AcqRel);
        let _ = lane.jobs.send(Job {
            id,
            request,
            _permit: permit,
        });
    }
}

impl Lane {
    fn start(context: Arc<ConnectionContext>, replies: Replies, room: RoomName) -> Lane {
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run_lane(context, replies, room, jobs_rx, pending.clone()));
        Lane { jobs, pending }
    }
}

/// Publishes the lane's jobs in order until its sender is dropped.
async fn run_lane(
    context: Arc<ConnectionContext>,
    replies: Replies,
    room: RoomName,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    pending: Arc<AtomicUsize>,
) {
    while let Some(job) = jobs.recv().await {
        match context.publisher.publish(&room, job.request).await {
            Ok(ack) => replies.send(&ServerFrame::Ack {
                id: job.id,
                room: room.to_string(),
                epoch: ack.position.epoch,
                seq: ack.position.seq,
                time: ack.time_ms,
                duplicate: ack.duplicate,
            }),
            Err(err) => replies.send_error(
                job.id,
                err.code(),
                format!("publish to {room} failed: {err}"),
            ),
        }
        pending.fetch_sub(1, Ordering::AcqRel);
    }
}
