//! The bounded outbound queue of one connection, and the out-of-band close signal.
//!
//! Everything sent to a client goes through this queue: replies from the connection
//! actor and room messages from room actors, which push pre-encoded, shared frames with
//! `try_send` and never wait. A full queue means the client reads slower than its rooms
//! produce: the producer closes the connection with 4000 (slow consumer) through the
//! close signal, which bypasses the full queue.
//!
//! A subscribe's `subscribed` frame and its replay travel as one [`Item::Batch`]: the
//! replay is bounded by the replay buffer, and the queue bound is about the live backlog,
//! so a client resuming far back is not mistaken for a slow one.

use crate::protocol::CloseCode;
use std::sync::{Arc, OnceLock};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;

/// One entry of the outbound queue.
#[derive(Debug)]
pub enum Item {
    /// One frame.
    Frame(Message),
    /// Frames written back to back (a subscribe reply and its replay).
    Batch(Vec<Message>),
}

/// Producer handle of a connection's outbound queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Outbound {
    tx: mpsc::Sender<Item>,
    control: Arc<CloseSignal>,
}

/// Consumer side, owned by the connection's socket task.
#[derive(Debug)]
pub struct OutboundReceiver {
    /// Frames to write, in order.
    pub frames: mpsc::Receiver<Item>,
    /// Set when a producer asked to close the connection.
    pub close: Arc<CloseSignal>,
}

/// A one-shot request to close the connection with a code, first request wins.
#[derive(Debug, Default)]
pub struct CloseSignal {
    code: OnceLock<CloseCode>,
    notify: Notify,
}

impl CloseSignal {
    /// Waits until a close was requested and returns its code.
    pub async fn requested(&self) -> CloseCode {
        loop {
            if let Some(code) = self.code.get() {
                return *code;
            }
            self.notify.notified().await;
        }
    }

    /// The requested close code, if any.
    pub fn code(&self) -> Option<CloseCode> {
        self.code.get().copied()
    }
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The queue is at its bound: the client is a slow consumer.
    Full,
    /// The connection is gone.
    Closed,
}

/// A queue holding at most `capacity` frames.
pub fn channel(capacity: usize) -> (Outbound, OutboundReceiver) {
    let (tx, frames) = mpsc::channel(capacity);
    let close = Arc::new(CloseSignal::default());
    (
        Outbound {
            tx,
            control: close.clone(),
        },
        OutboundReceiver { frames, close },
    )
}

impl Outbound {
    /// Queues an item without waiting.
    pub fn try_send(&self, item: Item) -> Result<(), QueueError> {
        self.tx.try_send(item).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => QueueError::Full,
            mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
        })
    }

    /// Queues a frame; when the queue is full, closes the connection as a slow consumer
    /// instead. Returns false when the frame was not queued.
    pub fn send_or_evict(&self, frame: Message) -> bool {
        self.item_or_evict(Item::Frame(frame))
    }

    /// Queues frames to be written back to back, as one queue entry; see
    /// [`Outbound::send_or_evict`].
    pub fn batch_or_evict(&self, frames: Vec<Message>) -> bool {
        self.item_or_evict(Item::Batch(frames))
    }

    fn item_or_evict(&self, item: Item) -> bool {
        match self.try_send(item) {
            Ok(()) => true,
            Err(QueueError::Full) => {
                metrics::counter!("roomcast_slow_consumer_disconnects_total").increment(1);
                self.close(CloseCode::SlowConsumer);
                false
            }
            Err(QueueError::Closed) => false,
        }
    }

    /// Asks the socket task to close the connection with `code` (the first request wins;
    /// queued frames are dropped, since the client resumes from its last position).
    pub fn close(&self, code: CloseCode) {
        if self.control.code.set(code).is_ok() {
            self.control.notify.notify_one();
        }
    }

    /// True once the socket task has stopped reading the queue.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// True once a close was requested.
    pub fn is_closing(&self) -> bool {
        self.control.code().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_evicts_with_slow_consumer() {
        let (outbound, receiver) = channel(2);
        assert!(outbound.send_or_evict(Message::text("1")));
        assert!(outbound.send_or_evict(Message::text("2")));
        assert!(!outbound.send_or_evict(Message::text("3")));
        assert_eq!(receiver.close.requested().await, CloseCode::SlowConsumer);
        outbound.close(CloseCode::InternalError);
        assert_eq!(
            receiver.close.code(),
            Some(CloseCode::SlowConsumer),
            "first close wins"
        );
    }

    #[tokio::test]
    async fn closed_receiver_is_reported() {
        let (outbound, receiver) = channel(2);
        drop(receiver);
        assert_eq!(
            outbound.try_send(Item::Frame(Message::text("x"))),
            Err(QueueError::Closed)
        );
        assert!(outbound.is_closed());
    }
}
