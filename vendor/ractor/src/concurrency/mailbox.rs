// Copyright (c) Sean Lawlor
//
// This source code is licensed under both the MIT license found in the
// LICENSE-MIT file in the root directory of this source tree.

//! An actor's unbounded input port (a roomcast change).
//!
//! In place of a tokio unbounded channel, which allocates its first block of 32 slots
//! and a channel header padded to cache lines (about 1.3 KiB for the message port)
//! when the actor is created, and keeps its last block for as long as the actor lives,
//! an actor's supervision and message ports are a queue under a mutex and a [Notify]:
//! about 100 bytes while empty. The queue allocates on its first message and gives its
//! buffer back when it drains after having grown beyond [IDLE_CAPACITY], so an actor
//! that waits holds almost nothing for its mailboxes.
//!
//! One sender (kept in the actor's properties) and one receiver (the actor's loop), with
//! the semantics of tokio's unbounded channel that ractor relies on: `send` fails once
//! the receiver closed or was dropped, `recv` returns what is queued and then `None`
//! once the receiver closed or the sender was dropped, and dropping the receiver drops
//! what is still queued.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc::error::{SendError, TryRecvError};
use tokio::sync::Notify;

/// Slots a drained queue keeps; beyond it, the buffer is freed when the queue empties.
const IDLE_CAPACITY: usize = 8;

struct Queue<T> {
    items: VecDeque<T>,
    /// The receiver closed or was dropped: sends fail.
    receiver_closed: bool,
    /// The sender was dropped: nothing more will come.
    sender_dropped: bool,
}

struct Shared<T> {
    queue: Mutex<Queue<T>>,
    notify: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        // Nothing user-defined runs under the lock, so a poisoned lock still holds a
        // valid queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending half of an actor's input port.
pub(crate) struct MailboxSender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving half of an actor's input port.
pub(crate) struct MailboxReceiver<T> {
    shared: Arc<Shared<T>>,
}

/// A new, empty input port: nothing is allocated for messages until the first one.
pub(crate) fn mailbox<T>() -> (MailboxSender<T>, MailboxReceiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            receiver_closed: false,
            sender_dropped: false,
        }),
        notify: Notify::new(),
    });
    (
        MailboxSender {
            shared: shared.clone(),
        },
        MailboxReceiver { shared },
    )
}

impl<T> MailboxSender<T> {
    /// Queues `value`; gives it back if the receiver closed or was dropped.
    pub(crate) fn send(&self, value: T) -> Result<(), SendError<T>> {
        {
            let mut queue = self.shared.lock();
            if queue.receiver_closed {
                return Err(SendError(value));
            }
            queue.items.push_back(value);
        }
        self.shared.notify.notify_one();
        Ok(())
    }
}

impl<T> Drop for MailboxSender<T> {
    fn drop(&mut self) {
        self.shared.lock().sender_dropped = true;
        self.shared.notify.notify_one();
    }
}

impl<T> MailboxReceiver<T> {
    /// The next value; `None` once the queue is empty and the port closed or its sender
    /// was dropped. Cancel-safe: a value is taken only when it is returned.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        loop {
            match self.try_recv() {
                Ok(value) => return Some(value),
                Err(TryRecvError::Disconnected) => return None,
                // One receiver: a send between this check and the wait leaves a permit
                // in the `Notify`, so the wait below returns at once.
                Err(TryRecvError::Empty) => self.shared.notify.notified().await,
            }
        }
    }

    /// The next value if one is queued.
    pub(crate) fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut queue = self.shared.lock();
        match queue.items.pop_front() {
            Some(value) => {
                if queue.items.is_empty() && queue.items.capacity() > IDLE_CAPACITY {
                    queue.items = VecDeque::new();
                }
                Ok(value)
            }
            None if queue.receiver_closed || queue.sender_dropped => {
                Err(TryRecvError::Disconnected)
            }
            None => Err(TryRecvError::Empty),
        }
    }

    /// Refuses further sends; what is queued can still be received.
    pub(crate) fn close(&mut self) {
        self.shared.lock().receiver_closed = true;
    }
}

impl<T> Drop for MailboxReceiver<T> {
    fn drop(&mut self) {
        // Dropped outside the lock: a queued message may own anything, a reference to
        // this very actor (and so its sender) among them.
        let queued = {
            let mut queue = self.shared.lock();
            queue.receiver_closed = true;
            std::mem::take(&mut queue.items)
        };
        drop(queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_in_order_then_ends_when_the_sender_is_dropped() {
        let (tx, mut rx) = mailbox();
        for i in 0..100 {
            tx.send(i).unwrap();
        }
        for i in 0..100 {
            assert_eq!(rx.recv().await, Some(i));
        }
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send_from_another_task() {
        let (tx, mut rx) = mailbox();
        let receiver = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.send(7u32).unwrap();
        assert_eq!(receiver.await.unwrap(), Some(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_senders_and_a_cancelled_receive_lose_nothing() {
        const SENDERS: u64 = 4;
        const EACH: u64 = 20_000;
        let (tx, mut rx) = mailbox();
        let tx = Arc::new(tx);
        for sender in 0..SENDERS {
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    tx.send((sender, i)).unwrap();
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            });
        }
        drop(tx);
        let mut next = [0u64; SENDERS as usize];
        let mut cancelled = 0u64;
        loop {
            // As in an actor's loop: the receive races other ports and is dropped when
            // one of them is ready first.
            tokio::select! {
                received = rx.recv() => match received {
                    Some((sender, i)) => {
                        assert_eq!(next[sender as usize], i, "sender {sender} out of order");
                        next[sender as usize] += 1;
                    }
                    None => break,
                },
                _ = tokio::task::yield_now() => cancelled += 1,
            }
        }
        assert_eq!(next, [EACH; SENDERS as usize]);
        assert!(cancelled > 0);
    }

    #[tokio::test]
    async fn close_refuses_sends_and_keeps_what_was_queued() {
        let (tx, mut rx) = mailbox();
        tx.send(1).unwrap();
        rx.close();
        assert_eq!(tx.send(2).unwrap_err().0, 2);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, None);
    }

    #[test]
    fn a_drained_queue_gives_its_buffer_back() {
        let (tx, mut rx) = mailbox();
        for i in 0..100 {
            tx.send(i).unwrap();
        }
        while rx.try_recv().is_ok() {}
        assert_eq!(rx.shared.lock().items.capacity(), 0);
    }

    #[test]
    fn dropping_the_receiver_drops_what_is_queued() {
        let (tx, rx) = mailbox();
        let value = Arc::new(());
        tx.send(value.clone()).unwrap();
        drop(rx);
        assert_eq!(Arc::strong_count(&value), 1);
        assert!(tx.send(value).is_err());
    }
}
