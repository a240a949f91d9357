//! Publishes that wait at the same time go to Redis in one call (on one Redis or the one
//! the sentinels name; a Redis Cluster takes one call per publish, since one call's keys
//! must share a slot).
//!
//! Redis spends about a sixth of a publication's work per call, outside the function's
//! own code: reading and parsing the command, turning its arguments into Lua values,
//! the reply. Publishes from many connections arrive together (the answers to a
//! pipelined burst wake their connections together, and each sends its next), so one
//! task collects whatever is waiting, up to [`MAX_BATCH`], and sends it as one call of
//! `publish_many` (see `publish.lua`). Each publication keeps its own reply, ack or
//! error.
//!
//! At most [`MAX_CALLS_IN_FLIGHT`] calls that are not full are unanswered at a time, as
//! a database's group commit does it: while they are, what arrives waits and goes in
//! the next call. Under load a call so carries what arrived during the one before it;
//! at a low rate a publish finds no call in flight and goes at once, alone, with no
//! delay. A full call (when [`MAX_BATCH`] wait) gains nothing by waiting and goes at
//! once: the limit never caps the rate at so many publications per round trip, however
//! far Redis is.
//!
//! Order: a connection has at most one publish in flight per room (see
//! `connection/publishing.rs`), and publications of one call run in the order they
//! came, so nothing is reordered that was ordered before.

use super::commands::Commands;
use super::function::{PUBLISH, PublishCall, parse_ack};
use crate::broker::{BrokerError, PublishAck, PublishRequest};
use crate::protocol::RoomName;
use redis::Value;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Most publications in one call: past about 8, the share of the per-call work left is
/// small (Redis instructions per publication, `scripts/publish-cost.sh`: 126,000 alone,
/// 107,000 in calls of 8, 103,000 in calls of 32), and a call holds Redis for the time
/// of all of its publications.
pub(super) const MAX_BATCH: usize = 32;

/// Most calls that are not full unanswered at once: two, so Redis has the next call to
/// read while the instance takes in the answers to the one before.
const MAX_CALLS_IN_FLIGHT: usize = 2;

/// A publish waiting for its call.
struct Waiting {
    room: RoomName,
    request: PublishRequest,
    answer: oneshot::Sender<Result<PublishAck, BrokerError>>,
}

/// The handle publishes go through.
pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl Batcher {
    /// Starts the collecting task (so it must be called inside a tokio runtime).
    pub fn start(commands: Commands, call: PublishCall) -> Batcher {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(collect(waiting, commands, call));
        Batcher { queue }
    }

    /// Publishes `request` to `room` in the next call.
    pub async fn publish(
        &self,
        room: &RoomName,
        request: PublishRequest,
    ) -> Result<PublishAck, BrokerError> {
        let (answer, reply) = oneshot::channel();
        let waiting = Waiting {
            room: room.clone(),
            request,
            answer,
        };
        let gone = || BrokerError::Internal("the publish batcher is gone".into());
        self.queue.send(waiting).map_err(|_| gone())?;
        reply.await.map_err(|_| gone())?
    }
}

/// Takes what waits, up to [`MAX_BATCH`] at a time, and sends each lot as one call, in a
/// task of its own: a full lot at once, another once fewer than
/// [`MAX_CALLS_IN_FLIGHT`] such calls are unanswered. A publish whose publisher stopped
/// waiting (its deadline passed while it waited here) is not sent. Ends when the broker
/// is dropped.
async fn collect(
    mut waiting: mpsc::UnboundedReceiver<Waiting>,
    commands: Commands,
    call: PublishCall,
) {
    let calls = Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT));
    while let Some(first) = waiting.recv().await {
        // Publishes made in the same turn of the runtime, on other connections, join
        // this call rather than the next.
        tokio::task::yield_now().await;
        let slot = if 1 + waiting.len() >= MAX_BATCH {
            None
        } else {
            Some((calls.clone().acquire_owned().await).expect("the semaphore is never closed"))
        };
        let mut lot = Vec::with_capacity(MAX_BATCH.min(1 + waiting.len()));
        let mut next = Some(first);
        while let Some(publish) = next.take() {
            if !publish.answer.is_closed() {
                lot.push(publish);
            }
            if lot.len() < MAX_BATCH {
                next = waiting.try_recv().ok();
            }
        }
        if lot.is_empty() {
            continue;
        }
        let (commands, call) = (commands.clone(), call.clone());
        tokio::spawn(async move {
            send(lot, commands, call).await;
            drop(slot);
        });
    }
}

/// One call for `lot`, and each publication's answer.
async fn send(lot: Vec<Waiting>, commands: Commands, call: PublishCall) {
    let count = lot.len();
    let key = call.keys.meta(&lot[0].room);
    let mut answers = Vec::with_capacity(count);
    let mut publications = Vec::with_capacity(count);
    for Waiting {
        room,
        request,
        answer,
    } in lot
    {
        answers.push(answer);
        publications.push((room, request));
    }
    let command = if count == 1 {
        let (room, request) = publications.pop().expect("one publication");
        call.command(&room, request)
    } else {
        call.batch_command(publications)
    };
    let metrics = crate::telemetry::metrics::per_publication();
    metrics.publish_commands.increment(count as u64);
    metrics.publish_calls.increment(1);
    let reply = commands
        .call(&key, "publish", count as u64, async |connection| {
            PUBLISH.call(connection, &command).await
        })
        .await;
    let acks: Vec<Result<PublishAck, BrokerError>> = match reply {
        Err(err) => vec![Err(err); count],
        Ok(reply) if count == 1 => vec![parse_ack(reply)],
        Ok(Value::Array(replies)) if replies.len() == count => {
            let acks: Vec<_> = replies.into_iter().map(parse_ack).collect();
            let failed = acks.iter().filter(|ack| ack.is_err()).count();
            metrics::counter!("roomcast_broker_errors_total", "op" => "publish")
                .increment(failed as u64);
            acks
        }
        Ok(other) => {
            metrics::counter!("roomcast_broker_errors_total", "op" => "publish")
                .increment(count as u64);
            let unexpected = format!("unexpected reply to {count} publishes: {other:?}");
            vec![Err(BrokerError::Internal(unexpected)); count]
        }
    };
    for (answer, ack) in answers.into_iter().zip(acks) {
        // A publisher that stopped waiting (its own deadline) takes no answer.
        let _ = answer.send(ack);
    }
}
