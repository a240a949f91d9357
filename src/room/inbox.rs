//! The bound on a room actor's mailbox. ractor mailboxes are unbounded, and a room actor
//! waits on the broker inside its handlers (gap fills, resumes from the replay buffer),
//! so a busy room whose broker is slow would queue publications without limit.
//!
//! Policy, kept by the dispatcher (`room::dispatch`) with this counter beside each
//! actor:
//! - at most `rooms.queue_size` publications wait in one room's mailbox. Past that a
//!   publication is dropped (`roomcast_fanin_dropped_total{queue="rooms"}`) and the room
//!   is sent a `Resync` instead, which reads the broker's top and fills everything up to
//!   it from the replay buffer — the dropped publication included, even if no later one
//!   ever arrives. A drop delays delivery; it loses nothing the replay buffer still has;
//! - at most one such `Resync` waits in the mailbox: it is taken off the counter when the
//!   actor receives it, before it reads the top, so a drop after that point asks for
//!   another one and nothing falls between the two;
//! - other messages (subscribes, unsubscribes, timers) are never dropped: each has a
//!   sender that waits for its answer or is a timer of the actor itself, so they are
//!   bounded by their senders.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Highest number of publications seen waiting in one room's mailbox since start.
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The mailbox accounting of one room actor, shared by the actor and the dispatcher.
#[derive(Debug)]
pub struct Inbox {
    bound: usize,
    /// Publications cast to the actor and not yet received by it.
    queued: AtomicUsize,
    /// A resync cast by the dispatcher and not yet received.
    resync_queued: AtomicBool,
}

impl Inbox {
    /// An empty inbox holding at most `bound` publications (at least 1).
    pub fn new(bound: usize) -> Self {
        Inbox {
            bound: bound.max(1),
            queued: AtomicUsize::new(0),
            resync_queued: AtomicBool::new(false),
        }
    }

    /// Takes a place for one publication; false when the mailbox is at its bound (the
    /// caller drops the publication and asks for a resync).
    pub fn admit(&self) -> bool {
        let taken = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < self.bound).then_some(queued + 1)
            });
        match taken {
            Ok(before) => {
                crate::telemetry::metrics::per_publication()
                    .rooms_depth
                    .increment(1.0);
                let depth = before + 1;
                if PEAK.fetch_max(depth, Ordering::Relaxed) < depth {
                    metrics::gauge!("roomcast_fanin_queue_peak", "queue" => "rooms")
                        .set(depth as f64);
                }
                true
            }
            Err(_) => {
                metrics::counter!("roomcast_fanin_dropped_total", "queue" => "rooms").increment(1);
                false
            }
        }
    }

    /// The actor received a publication (or the cast of an admitted one failed).
    pub fn took_publication(&self) {
        let released = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                queued.checked_sub(1)
            });
        if released.is_ok() {
            crate::telemetry::metrics::per_publication()
                .rooms_depth
                .decrement(1.0);
        }
    }

    /// Whether the caller must cast a `Resync`: false when one already waits.
    pub fn request_resync(&self) -> bool {
        !self.resync_queued.swap(true, Ordering::AcqRel)
    }

    /// The actor received a `Resync` (or its cast failed).
    pub fn took_resync(&self) {
        self.resync_queued.store(false, Ordering::Release);
    }

    /// Publications waiting now.
    #[cfg(test)]
    pub fn depth(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

impl Drop for Inbox {
    /// An actor that stopped or failed takes its mailbox with it: what was still counted
    /// leaves the depth gauge too.
    fn drop(&mut self) {
        let left = *self.queued.get_mut();
        if left > 0 {
            crate::telemetry::metrics::per_publication()
                .rooms_depth
                .decrement(left as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_bound_and_again_after_a_take() {
        let inbox = Inbox::new(2);
        assert!(inbox.admit());
        assert!(inbox.admit());
        assert!(!inbox.admit(), "full");
        assert_eq!(inbox.depth(), 2);
        inbox.took_publication();
        assert!(inbox.admit());
        inbox.took_publication();
        inbox.took_publication();
        inbox.took_publication();
        assert_eq!(inbox.depth(), 0, "never below zero");
    }

    #[test]
    fn one_resync_waits_at_a_time() {
        let inbox = Inbox::new(1);
        assert!(inbox.request_resync(), "the first asks for a cast");
        assert!(!inbox.request_resync(), "coalesced while one waits");
        inbox.took_resync();
        assert!(inbox.request_resync(), "a drop after receipt asks again");
    }
}
