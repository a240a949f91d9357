//! A room's local subscribers. The set lives outside the room actor, owned jointly by the
//! actor and its supervisor, so that a room actor that panics can be restarted with the
//! same subscribers and each one resumed from exactly where it was.

use crate::outbound::Outbound;
use crate::protocol::{DeltaFormat, Encoding};
use crate::stream::{Epoch, Position};
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One connection's subscription to one room.
#[derive(Debug)]
pub struct Subscriber {
    /// The connection's id (unique per instance).
    pub conn_id: u64,
    /// How the connection wants frames encoded.
    pub encoding: Encoding,
    /// The connection's outbound queue.
    pub outbound: Outbound,
    /// The delta format the subscription asked for (`None`: whole messages).
    pub delta: Option<DeltaFormat>,
    /// With `compress`: the instance's threshold (`connection.compress_above_bytes`);
    /// message data of at least this many bytes goes deflated. 0: never.
    pub compress_above: usize,
    /// With `delta`: the sequence number of the message whose text the client holds as
    /// the base of the next delta (0: none, the next message goes whole). Written only
    /// by the room actor.
    base_seq: AtomicU64,
    /// The last sequence number queued to this subscriber. Written only by the room
    /// actor; read again by a restarted actor to resume the subscriber exactly.
    last_seq: AtomicU64,
    /// Pending → active (the room took it) or pending → cancelled (the connection gave up
    /// waiting): whichever side moves first decides, so a subscribe that times out is
    /// either fully in place or fully absent, never half.
    stage: AtomicU8,
}

/// The forms a subscription asked for its messages in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forms {
    /// A delta format (`None`: whole messages).
    pub delta: Option<DeltaFormat>,
    /// Compress message data of at least this many bytes (0: never).
    pub compress_above: usize,
}

const PENDING: u8 = 0;
const ACTIVE: u8 = 1;
const CANCELLED: u8 = 2;

impl Subscriber {
    /// Asks the CPU to bring this subscriber into the cache ahead of a delivery: both
    /// ends of it, since it may straddle two cache lines.
    pub fn prefetch(&self) {
        let first = (self as *const Self).cast::<u8>();
        crate::outbound::prefetch(first);
        crate::outbound::prefetch(first.wrapping_add(std::mem::size_of::<Self>() - 1));
    }

    /// A subscriber that has seen nothing yet.
    pub fn new(conn_id: u64, encoding: Encoding, outbound: Outbound) -> Arc<Self> {
        Self::with_forms(conn_id, encoding, outbound, Forms::default())
    }

    /// A subscriber that has seen nothing yet and wants messages in `forms`.
    pub fn with_forms(
        conn_id: u64,
        encoding: Encoding,
        outbound: Outbound,
        forms: Forms,
    ) -> Arc<Self> {
        metrics::gauge!("roomcast_subscriptions").increment(1.0);
        Arc::new(Subscriber {
            conn_id,
            encoding,
            outbound,
            delta: forms.delta,
            compress_above: forms.compress_above,
            base_seq: AtomicU64::new(0),
            last_seq: AtomicU64::new(0),
            stage: AtomicU8::new(PENDING),
        })
    }

    /// Called by the room before it queues anything: false if the connection already
    /// cancelled this subscribe.
    pub fn activate(&self) -> bool {
        self.transition(ACTIVE) || self.stage.load(Ordering::Acquire) == ACTIVE
    }

    /// Called by the connection when it stops waiting: false if the room already
    /// activated the subscription (which then stands).
    pub fn cancel(&self) -> bool {
        self.transition(CANCELLED) || self.stage.load(Ordering::Acquire) == CANCELLED
    }

    fn transition(&self, to: u8) -> bool {
        self.stage
            .compare_exchange(PENDING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Last sequence number queued to this subscriber.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// Records that `seq` was queued.
    pub fn set_last_seq(&self, seq: u64) {
        self.last_seq.store(seq, Ordering::Release);
    }

    /// Makes `seq` the base of the next delta; returns the previous base (0: none).
    pub fn replace_base(&self, seq: u64) -> u64 {
        self.base_seq.swap(seq, Ordering::AcqRel)
    }

    /// The client holds no base any more (a reset, a restart of the room): the next
    /// message goes whole.
    pub fn forget_base(&self) {
        self.base_seq.store(0, Ordering::Release);
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        metrics::gauge!("roomcast_subscriptions").decrement(1.0);
    }
}

/// The subscriber set of one room and the epoch its subscribers are in.
#[derive(Debug, Default)]
pub struct Members {
    /// Current subscribers, in no particular order.
    pub subscribers: Vec<Arc<Subscriber>>,
    /// The epoch every subscriber's `last_seq` refers to (`None` before the first start),
    /// except those in `catching_up`.
    pub epoch: Option<Epoch>,
    /// Inherited subscribers a restarted room has not caught up yet, by connection, with
    /// the position they had reached (in an epoch that may have ended). A room that fails
    /// again during the catch-up resumes them from here, not from `epoch`.
    pub catching_up: HashMap<u64, Position>,
}

impl Members {
    /// Removes the subscriber of connection `conn_id`; true if it was there.
    pub fn remove(&mut self, conn_id: u64) -> bool {
        match self.subscribers.iter().position(|s| s.conn_id == conn_id) {
            Some(index) => {
                self.subscribers.swap_remove(index);
                true
            }
            None => false,
        }
    }
}

/// Shared handle to a room's [`Members`], whose counts can be read without its lock.
#[derive(Debug, Default, Clone)]
pub struct SharedMembers(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    members: Mutex<Members>,
    /// `subscribers.len()` as it was at the last unlock. A fan-out holds the lock while
    /// it writes to every subscriber (milliseconds in a large room); observers such as
    /// the cluster announcement read this instead of waiting for it on a runtime thread.
    subscribers: AtomicUsize,
    /// Publications the room delivered since it started here (for message rates).
    publications: AtomicU64,
}

impl SharedMembers {
    /// Locks the set. Only the room actor locks it while running (so the lock never
    /// contends); a supervisor reads it after the actor died. A panic while it was held
    /// leaves a structurally valid set, and every subscriber's `last_seq` says exactly
    /// what it received, so poisoning is ignored.
    pub fn lock(&self) -> MembersGuard<'_> {
        MembersGuard {
            members: self
                .0
                .members
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            shared: &self.0,
        }
    }

    /// Counts one publication delivered.
    pub fn count_publication(&self) {
        self.0.publications.fetch_add(1, Ordering::Relaxed);
    }

    /// The number of subscribers (as of the last time the set was unlocked) and of
    /// publications delivered. Never waits.
    pub fn counts(&self) -> (usize, u64) {
        (
            self.0.subscribers.load(Ordering::Relaxed),
            self.0.publications.load(Ordering::Relaxed),
        )
    }
}

/// The locked set; unlocking publishes its size (see [`SharedMembers::counts`]).
pub struct MembersGuard<'a> {
    members: MutexGuard<'a, Members>,
    shared: &'a Shared,
}

impl Deref for MembersGuard<'_> {
    type Target = Members;

    fn deref(&self) -> &Members {
        &self.members
    }
}

impl DerefMut for MembersGuard<'_> {
    fn deref_mut(&mut self) -> &mut Members {
        &mut self.members
    }
}

impl Drop for MembersGuard<'_> {
    fn drop(&mut self) {
        (self.shared.subscribers).store(self.members.subscribers.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::channel;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn counts_are_read_without_waiting_for_the_lock() {
        let shared = SharedMembers::default();
        let (outbound, _receiver) = channel(4);
        {
            let mut members = shared.lock();
            members
                .subscribers
                .push(Subscriber::new(1, Encoding::Json, outbound));
            shared.count_publication();
            assert_eq!(shared.counts(), (0, 1), "the size is published at unlock");
        }
        assert_eq!(shared.counts(), (1, 1));
        // While the set is locked (a fan-out), another thread reads the counts at once.
        let held = shared.lock();
        let (sender, answer) = mpsc::channel();
        let reader = shared.clone();
        let thread = std::thread::spawn(move || sender.send(reader.counts()).unwrap());
        let counts = answer.recv_timeout(Duration::from_secs(30));
        drop(held);
        thread.join().unwrap();
        assert_eq!(counts, Ok((1, 1)), "counts did not wait for the lock");
    }
}
