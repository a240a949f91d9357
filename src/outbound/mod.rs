//! The bounded outbound queue of one connection, and the out-of-band close request.
//! Below both the rooms (which queue their messages here) and the session core (which
//! owns the queue of each client and hands its other end to the transport).
//!
//! Everything sent to a client goes through this queue: replies from the connection
//! actor and room messages from room actors, which push pre-encoded, shared frames with
//! `try_send` and never wait. A full queue means the client reads slower than its rooms
//! produce: the producer closes the connection with 4000 (slow consumer) through the
//! close request, which bypasses the full queue.
//!
//! A subscribe's `subscribed` frame and its replay travel as one [`Item::Batch`]: the
//! replay is bounded by the replay buffer, and the queue bound is about the live backlog,
//! so a client resuming far back is not mistaken for a slow one.
//!
//! The queue is a deque behind a mutex rather than a channel: an idle connection's
//! queue owns no buffer at all (a tokio channel allocates its first block of slots up
//! front, ~2 KiB per connection), and the socket task takes everything queued in one
//! lock, then writes it with one flush. Producers (one room actor per room, plus the
//! connection actor) and the one consumer hold the lock for a push or a swap only.
//!
//! The consumer's waker lives under the same lock: a producer that finds the queue empty
//! takes it and wakes the socket task after unlocking — one lock per delivery, where a
//! separate `Notify` would take a second one on each side.
//!
//! Between two writes a connection usually has exactly one item queued (a room's message
//! to a client that keeps up), so the queue ([`Items`]) holds one item inline and
//! allocates only from the second on: a delivery costs no allocation, and an idle queue
//! still owns no buffer. (A `VecDeque` allocated on every delivery — the producer's push
//! into the empty queue — and freed it after the write, often on the other thread:
//! 5 % of a server's CPU in the one-room reference run, see docs/performance.md.)
//!
//! **The direct path** ([`wire`]). On a plain-TCP WebSocket the socket can be written by
//! the producer itself: a room delivering to a connection whose socket task is parked
//! (waiting for items, holding none) with nothing queued and no bytes pending frames the
//! message and writes it with one non-blocking system call, under this queue's lock —
//! no queue entry, no wake, no turn of the socket task. What the socket does not take at
//! once is kept as pending bytes, and the socket task is woken to write them (and
//! anything queued behind them) as it writes everything else. Every write to the socket,
//! the socket task's included, goes through the same lock, so the bytes of two frames
//! never interleave, and a frame queued before a direct one is always written before it.

mod wire;

pub use wire::WireStream;

use crate::protocol::CloseCode;
use crate::protocol::Encoded;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// One entry of the outbound queue.
#[derive(Debug)]
pub enum Item {
    /// One frame.
    Frame(Encoded),
    /// Frames written back to back (a subscribe reply and its replay).
    Batch(Vec<Encoded>),
    /// Close the connection with this code once everything queued before is written
    /// (a drain: the client should get what it was sent, then go).
    Close(CloseCode),
}

/// Items in queue order: none, one held inline, or several in a deque. Only a second item
/// queued before the consumer takes the first allocates.
#[derive(Debug, Default)]
pub struct Items(Slots);

#[derive(Debug, Default)]
enum Slots {
    #[default]
    Empty,
    One(Item),
    Many(VecDeque<Item>),
}

impl Items {
    /// How many items there are.
    pub fn len(&self) -> usize {
        match &self.0 {
            Slots::Empty => 0,
            Slots::One(_) => 1,
            Slots::Many(items) => items.len(),
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `item` at the end.
    pub fn push_back(&mut self, item: Item) {
        self.0 = match mem::take(&mut self.0) {
            Slots::Empty => Slots::One(item),
            Slots::One(first) => Slots::Many(VecDeque::from([first, item])),
            Slots::Many(mut items) => {
                items.push_back(item);
                Slots::Many(items)
            }
        };
    }

    /// Puts `item` back at the front.
    pub fn push_front(&mut self, item: Item) {
        self.0 = match mem::take(&mut self.0) {
            Slots::Empty => Slots::One(item),
            Slots::One(second) => Slots::Many(VecDeque::from([item, second])),
            Slots::Many(mut items) => {
                items.push_front(item);
                Slots::Many(items)
            }
        };
    }

    /// Takes the first item.
    pub fn pop_front(&mut self) -> Option<Item> {
        match &mut self.0 {
            Slots::Empty => None,
            Slots::One(_) => match mem::take(&mut self.0) {
                Slots::One(item) => Some(item),
                _ => unreachable!("matched One"),
            },
            Slots::Many(items) => items.pop_front(),
        }
    }

    /// Moves every item of `other` to the end of these; `other` is left owning no buffer.
    pub fn append(&mut self, other: &mut Items) {
        for item in mem::take(other) {
            self.push_back(item);
        }
    }

    /// Drops every item (and any buffer).
    pub fn clear(&mut self) {
        self.0 = Slots::Empty;
    }
}

impl Iterator for Items {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        self.pop_front()
    }
}

/// Why an item could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The queue is at its bound: the client is a slow consumer.
    Full,
    /// The connection is closing or gone.
    Closed,
}

/// What the consumer gets from [`OutboundReceiver::recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Items were moved into the caller's batch.
    Items,
    /// A close was requested; queued items are dropped.
    Close(CloseCode),
}

#[derive(Debug, Default)]
struct State {
    items: Items,
    close: Option<CloseCode>,
    receiver_gone: bool,
    /// The socket task, when it waits for items or a close.
    waker: Option<Waker>,
    /// The socket, when producers may write to it themselves (see [`wire`]).
    wire: Option<wire::Wire>,
    /// The socket task waits in [`OutboundReceiver::recv`] and holds no items: nothing
    /// taken from the queue is on its way to the socket.
    parked: bool,
}

impl State {
    /// Writes `frame` to the socket now if nothing can be ahead of it: the socket task
    /// parked, nothing queued, no bytes pending. `None` when the frame must be queued;
    /// else whether the socket task must be woken (to write what the socket did not
    /// take).
    fn write_direct(&mut self, frame: &Encoded) -> Option<bool> {
        if !self.parked || !self.items.is_empty() {
            return None;
        }
        let wire = self.wire.as_mut()?;
        if wire.has_pending() {
            return None;
        }
        // A failed write is left to the socket task, whose own write will fail too.
        wire.write_frame(frame).ok()
    }

    /// Whether the socket task has something to do: items, or bytes a producer could
    /// not write.
    fn has_work(&self) -> bool {
        !self.items.is_empty() || self.wire.as_ref().is_some_and(wire::Wire::has_pending)
    }

    /// Stores the consumer's waker, cloning only when it changed.
    fn register(&mut self, cx: &Context<'_>) {
        match &self.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
    }
}

/// A hint to the CPU to load the cache line at `ptr`, for a fan-out loop that knows
/// what it reads next. It reads nothing the program sees and never faults, whatever
/// `ptr` is; elsewhere than on x86-64 it does nothing.
#[inline]
pub fn prefetch<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    prefetch_with::<{ std::arch::x86_64::_MM_HINT_T0 }, T>(ptr);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn prefetch_with<const HINT: i32, T>(ptr: *const T) {
    // SAFETY: a prefetch is a hint; it has no effect the program can observe.
    unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(ptr.cast()) };
}

/// Wakes the consumer, if it was waiting, once the lock is released.
fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; if something did, the deque is still valid.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Producer handle of a connection's outbound queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Outbound {
    shared: Arc<Shared>,
}

/// Consumer side, owned by the connection's socket task. Dropping it closes the queue.
#[derive(Debug)]
pub struct OutboundReceiver {
    shared: Arc<Shared>,
}

/// A queue holding at most `capacity` items.
pub fn channel(capacity: usize) -> (Outbound, OutboundReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        capacity,
    });
    (
        Outbound {
            shared: shared.clone(),
        },
        OutboundReceiver { shared },
    )
}

impl Outbound {
    /// Queues an item without waiting.
    pub fn try_send(&self, item: Item) -> Result<(), QueueError> {
        self.send(item, false)
    }

    /// Queues an item, or with `direct` writes a frame straight to the socket when the
    /// direct path is open (see the module's documentation).
    fn send(&self, item: Item, direct: bool) -> Result<(), QueueError> {
        let waker = {
            let mut state = self.shared.lock();
            if state.receiver_gone || state.close.is_some() {
                return Err(QueueError::Closed);
            }
            if let (true, Item::Frame(frame)) = (direct, &item) {
                match state.write_direct(frame) {
                    Some(false) => return Ok(()),
                    Some(true) => {
                        let waker = state.waker.take();
                        drop(state);
                        wake(waker);
                        return Ok(());
                    }
                    None => {}
                }
            }
            if state.items.len() >= self.shared.capacity {
                return Err(QueueError::Full);
            }
            state.items.push_back(item);
            // The consumer takes everything at once, so only the first item wakes it
            // (pending bytes woke it already).
            if state.items.len() == 1 {
                state.waker.take()
            } else {
                None
            }
        };
        wake(waker);
        Ok(())
    }

    /// Queues a frame; when the queue is full, closes the connection as a slow consumer
    /// instead. Returns false when the frame was not queued.
    pub fn send_or_evict(&self, frame: Encoded) -> bool {
        self.item_or_evict(Item::Frame(frame), false)
    }

    /// Like [`Outbound::send_or_evict`], but writes the frame to the socket at once when
    /// the direct path is open: for a room's delivery, the one frame a connection gets
    /// from it. Replies that come in bursts (acks) are queued instead, so that a burst
    /// leaves in one write.
    pub fn deliver_or_evict(&self, frame: Encoded) -> bool {
        self.item_or_evict(Item::Frame(frame), true)
    }

    /// Queues frames to be written back to back, as one queue entry; see
    /// [`Outbound::send_or_evict`].
    pub fn batch_or_evict(&self, frames: Vec<Encoded>) -> bool {
        self.item_or_evict(Item::Batch(frames), false)
    }

    fn item_or_evict(&self, item: Item, direct: bool) -> bool {
        match self.send(item, direct) {
            Ok(()) => true,
            Err(QueueError::Full) => {
                metrics::counter!("roomcast_slow_consumer_disconnects_total").increment(1);
                self.close(CloseCode::SlowConsumer);
                false
            }
            Err(QueueError::Closed) => false,
        }
    }

    /// Asks the socket task to close the connection with `code`. The first request wins;
    /// queued frames are dropped, since the client resumes from its last position.
    pub fn close(&self, code: CloseCode) {
        let waker = {
            let mut state = self.shared.lock();
            if state.close.is_some() {
                return;
            }
            state.close = Some(code);
            state.items.clear();
            state.waker.take()
        };
        wake(waker);
    }

    /// Queues `frame` and then a close with `code`, so both go out after everything
    /// already queued; when the queue has no room, closes at once instead.
    pub fn close_after(&self, frame: Encoded, code: CloseCode) {
        let queued = {
            let mut state = self.shared.lock();
            if state.receiver_gone || state.close.is_some() {
                return;
            }
            if state.items.len() + 2 > self.shared.capacity {
                None
            } else {
                state.items.push_back(Item::Frame(frame));
                state.items.push_back(Item::Close(code));
                Some(state.waker.take())
            }
        };
        match queued {
            Some(waker) => wake(waker),
            None => self.close(code),
        }
    }

    /// Asks the CPU to bring this queue's state into the cache ahead of a delivery, to
    /// be written (its lock is): the line is usually held by the core that last ran
    /// the connection's socket task.
    pub fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        prefetch_with::<{ std::arch::x86_64::_MM_HINT_ET0 }, _>(Arc::as_ptr(&self.shared));
    }

    /// True once the connection is closing or its socket task has stopped.
    pub fn is_closed(&self) -> bool {
        let state = self.shared.lock();
        state.receiver_gone || state.close.is_some()
    }
}

impl OutboundReceiver {
    /// Waits until items are queued or a close is requested. Items are swapped into
    /// `batch` (which must be empty) in one step.
    pub async fn recv(&mut self, batch: &mut Items) -> Received {
        poll_fn(|cx| self.poll_recv(cx, batch)).await
    }

    fn poll_recv(&mut self, cx: &Context<'_>, batch: &mut Items) -> Poll<Received> {
        let mut state = self.shared.lock();
        if let Some(code) = state.close {
            state.parked = false;
            return Poll::Ready(Received::Close(code));
        }
        if !state.has_work() {
            state.register(cx);
            state.parked = true;
            return Poll::Pending;
        }
        // Pending bytes alone also return: the caller's flush writes them.
        state.parked = false;
        std::mem::swap(&mut state.items, batch);
        Poll::Ready(Received::Items)
    }

    /// Lets producers write frames to `wire` themselves while this receiver is parked
    /// (see the module's documentation). The returned link is how the socket task's own
    /// writes take their turn; every write to the socket goes through it from now on.
    fn attach_wire(&self, wire: wire::Wire) -> wire::Link {
        self.shared.lock().wire = Some(wire);
        wire::Link::new(self.shared.clone())
    }

    /// The socket task stops taking items (its connection ends): producers queue from
    /// now on, behind whatever the ending writes (a close frame).
    pub fn unpark(&self) {
        self.shared.lock().parked = false;
    }

    /// Appends whatever is queued now to `batch`, without waiting.
    pub fn take_more(&mut self, batch: &mut Items) {
        let mut state = self.shared.lock();
        if state.close.is_none() {
            batch.append(&mut state.items);
        }
    }

    /// Waits until a close is requested.
    pub async fn close_requested(&self) -> CloseCode {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            match state.close {
                Some(code) => Poll::Ready(code),
                None => {
                    state.register(cx);
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_gone = true;
        state.parked = false;
        state.items.clear();
        state.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Item {
        Item::Frame(Encoded::text(s))
    }

    #[tokio::test]
    async fn items_arrive_in_order_in_one_batch() {
        let (outbound, mut receiver) = channel(8);
        outbound.try_send(text("1")).unwrap();
        outbound.try_send(text("2")).unwrap();
        let mut batch = Items::default();
        assert_eq!(receiver.recv(&mut batch).await, Received::Items);
        assert_eq!(batch.len(), 2);
        assert!(matches!(batch.next(), Some(Item::Frame(m)) if m.as_text() == Some("1")));
    }

    fn texts(items: Items) -> Vec<String> {
        items
            .map(|item| match item {
                Item::Frame(frame) => frame.as_text().unwrap().to_owned(),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn items_keep_their_order_whether_inline_or_in_a_deque() {
        let mut items = Items::default();
        assert!(items.is_empty());
        items.push_back(text("b"));
        items.push_front(text("a"));
        items.push_back(text("c"));
        let mut more = Items::default();
        more.push_back(text("d"));
        more.push_back(text("e"));
        items.append(&mut more);
        assert!(more.is_empty());
        assert_eq!(items.len(), 5);
        assert_eq!(texts(items), ["a", "b", "c", "d", "e"]);

        let mut one = Items::default();
        one.push_front(text("x"));
        assert_eq!(one.len(), 1);
        let first = one.pop_front().unwrap();
        assert!(one.pop_front().is_none());
        one.push_back(text("y"));
        one.push_front(first);
        assert_eq!(texts(one), ["x", "y"]);
    }

    #[tokio::test]
    async fn full_queue_evicts_with_slow_consumer_and_drops_the_backlog() {
        let (outbound, mut receiver) = channel(2);
        assert!(outbound.send_or_evict(Encoded::text("1")));
        assert!(outbound.send_or_evict(Encoded::text("2")));
        assert!(!outbound.send_or_evict(Encoded::text("3")));
        let mut batch = Items::default();
        assert_eq!(
            receiver.recv(&mut batch).await,
            Received::Close(CloseCode::SlowConsumer)
        );
        assert!(batch.is_empty());
        outbound.close(CloseCode::InternalError);
        assert_eq!(
            receiver.close_requested().await,
            CloseCode::SlowConsumer,
            "first wins"
        );
        assert_eq!(outbound.try_send(text("4")), Err(QueueError::Closed));
    }

    #[tokio::test]
    async fn a_dropped_receiver_closes_the_queue() {
        let (outbound, receiver) = channel(2);
        drop(receiver);
        assert_eq!(outbound.try_send(text("x")), Err(QueueError::Closed));
        assert!(outbound.is_closed());
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_producer() {
        let (outbound, mut receiver) = channel(4);
        let consumer = tokio::spawn(async move {
            let mut batch = Items::default();
            receiver.recv(&mut batch).await;
            batch.len()
        });
        tokio::task::yield_now().await;
        outbound.try_send(text("late")).unwrap();
        assert_eq!(consumer.await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_receiver_waiting_during_a_write_is_woken_by_a_close_only() {
        let (outbound, receiver) = channel(4);
        let consumer = tokio::spawn(async move { receiver.close_requested().await });
        tokio::task::yield_now().await;
        outbound.try_send(text("more")).unwrap();
        tokio::task::yield_now().await;
        assert!(!consumer.is_finished(), "new items do not end a write");
        outbound.close(CloseCode::ServiceRestart);
        assert_eq!(consumer.await.unwrap(), CloseCode::ServiceRestart);
    }
}
