//! A connection's publishes, several in flight at once.
//!
//! Each room a connection publishes to has a lane: that room's publishes go to the
//! broker one after another, in the order the client sent them, so the sequence numbers
//! of one client's publishes to one room follow its sending order. Lanes of different
//! rooms run side by side, so a publish to a room whose Redis node is failing over does
//! not hold up publishes to rooms on healthy nodes, and every queued publish gets its
//! own answer within the broker's bound instead of waiting its turn behind a slow one.
//!
//! All lanes of a connection are driven by one task, started at its first publish: a
//! lane is a publish in progress (a future in the task's set) and the publishes of the
//! same room queued behind it. One task rather than a task per lane because answers
//! come back from Redis in bursts (replies to pipelined calls arrive together): one
//! task woken once queues every ack of the burst before the connection's socket task
//! runs, so the acks leave in one write. A task per lane wakes the socket task after
//! each ack, and each ack costs a write of its own (a system call and a loopback
//! packet, several times what the rest of the ack costs).
//!
//! At most [`MAX_IN_FLIGHT`] publishes of one connection are unanswered at a time; past
//! that, the connection reads no further frames until one is answered (backpressure to
//! the client's socket, as for any other request). The task ends when the connection
//! has gone and every publish it handed over is answered.

use super::context::ConnectionContext;
use crate::broker::{BrokerError, PublishAck, PublishRequest};
use crate::outbound::Outbound;
use crate::protocol::{Encoding, ErrorCode, RoomName, ServerFrame};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Most unanswered publishes per connection.
pub const MAX_IN_FLIGHT: usize = 32;

/// The publishing side of one connection (empty and unallocated until its first
/// publish).
#[derive(Default)]
pub struct Publishing {
    started: Option<Started>,
}

/// What exists once the connection has published.
struct Started {
    jobs: mpsc::UnboundedSender<Job>,
    in_flight: Arc<Semaphore>,
}

/// One publish handed to the lanes.
struct Job {
    ticket: Ticket,
    request: PublishRequest,
}

/// What answering a publish takes: its room, its request id, and its place among the
/// connection's unanswered publishes (given back once the answer is queued).
struct Ticket {
    room: RoomName,
    id: Option<u64>,
    _permit: OwnedSemaphorePermit,
}

/// Where the lanes send their answers.
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
        let started = self.started.get_or_insert_with(|| {
            let (jobs, receiver) = mpsc::unbounded_channel();
            tokio::spawn(run_lanes(context.clone(), replies.clone(), receiver));
            Started {
                jobs,
                in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            }
        });
        let permit = started
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let _ = started.jobs.send(Job {
            ticket: Ticket {
                room,
                id,
                _permit: permit,
            },
            request,
        });
    }
}

/// A publish in progress; gives back its ticket with the outcome.
type InProgress = Pin<Box<dyn Future<Output = (Ticket, Result<PublishAck, BrokerError>)> + Send>>;

/// Drives every lane of one connection until the connection has gone (`jobs` closed)
/// and nothing is left in progress.
async fn run_lanes(
    context: Arc<ConnectionContext>,
    replies: Replies,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let mut in_progress: FuturesUnordered<InProgress> = FuturesUnordered::new();
    // Rooms with a publish in progress, and what waits behind it: at most
    // MAX_IN_FLIGHT lanes, so a list (no hashing of the room's name) and no allocation
    // for a lane with nothing waiting.
    let mut lanes: Vec<(RoomName, VecDeque<Job>)> = Vec::new();
    let mut open = true;
    let start = |job: Job| -> InProgress {
        let context = context.clone();
        Box::pin(async move {
            let Job { ticket, request } = job;
            let result = context.publisher.publish(&ticket.room, request).await;
            (ticket, result)
        })
    };
    while open || !in_progress.is_empty() {
        tokio::select! {
            job = jobs.recv(), if open => match job {
                Some(job) => match lanes.iter_mut().find(|(room, _)| *room == job.ticket.room) {
                    Some((_, queue)) => queue.push_back(job),
                    None => {
                        lanes.push((job.ticket.room.clone(), VecDeque::new()));
                        in_progress.push(start(job));
                    }
                },
                None => open = false,
            },
            Some((ticket, result)) = in_progress.next() => {
                answer(&replies, &ticket, result);
                let lane = lanes.iter().position(|(room, _)| *room == ticket.room);
                let lane = lane.expect("a publish in progress has its lane");
                match lanes[lane].1.pop_front() {
                    Some(next) => in_progress.push(start(next)),
                    None => {
                        lanes.swap_remove(lane);
                    }
                }
            }
        }
    }
}

/// Queues the answer to one publish.
fn answer(replies: &Replies, ticket: &Ticket, result: Result<PublishAck, BrokerError>) {
    let room = &ticket.room;
    match result {
        Ok(ack) => replies.send(&ServerFrame::Ack {
            id: ticket.id,
            room: room.to_string(),
            epoch: ack.position.epoch,
            seq: ack.position.seq,
            time: ack.time_ms,
            duplicate: ack.duplicate,
        }),
        Err(err) => replies.send_error(
            ticket.id,
            err.code(),
            format!("publish to {room} failed: {err}"),
        ),
    }
}
